"""The fake graphd's wire protocol: framings, protocols, envelopes, malformed input."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Callable

import pytest
from thrift.protocol.TProtocol import TProtocolException
from thrift.Thrift import TApplicationException

from nebula_sync._thrift import service, ttypes, wire
from nebula_sync.errors import ProtocolError
from nebula_sync.testing import CompactV2Protocol, FakeGraphd, compact_message, parse_compact_message

if TYPE_CHECKING:
    from conftest import RawClient

RawFactory = Callable[..., "RawClient"]

VARIANTS = [("theader", "binary"), ("theader", "compact"), ("framed", "binary"), ("framed", "compact")]


@pytest.mark.parametrize(("framing", "protocol"), VARIANTS)
def test_full_conversation_in_each_framing_and_protocol(
    fake_graphd: FakeGraphd, raw_client: RawFactory, framing: str, protocol: str
) -> None:
    client = raw_client(fake_graphd, framing=framing, protocol=protocol)
    assert client.verify().error_code == 0
    sid = client.session()
    resp = client.execute(sid, "USE test; RETURN 1.5 AS f, 'x' AS s, [1, {a: true}] AS l")
    assert resp.error_code == 0, resp
    assert resp.space_name == b"test"
    assert resp.data.column_names == [b"f", b"s", b"l"]
    row = resp.data.rows[0].values
    assert row[0] == ttypes.Value(fVal=1.5)
    assert row[1] == ttypes.Value(sVal=b"x")
    assert row[2].lVal.values[1].mVal.kvs == {b"a": ttypes.Value(bVal=True)}
    as_json = client.execute(sid, "RETURN 1 AS a", method="executeJsonWithParameter")
    assert b'"columns": ["a"]' in as_json
    ping = client.execute(0, "YIELD 1;", method="execute")
    assert (ping.error_code, ping.error_msg) == (-1002, b"Invalid session id")
    client.signout(sid)
    # signout is oneway: nothing comes back, and the next call on the stream still lines up
    assert client.verify().error_code == 0
    stats = fake_graphd.stats()
    assert stats.signouts == 1 and stats.sessions_open == 0


@pytest.mark.parametrize(("framing", "protocol"), VARIANTS)
def test_reply_mirrors_framing_protocol_and_seqids(
    fake_graphd: FakeGraphd, raw_client: RawFactory, framing: str, protocol: str
) -> None:
    client = raw_client(fake_graphd, framing=framing, protocol=protocol)
    args = service.VerifyClientVersionArgs(req=ttypes.VerifyClientVersionReq(version=b"3.0.0"))
    for seqid in (7, 8, 0, -5, 2**31 - 1):
        client.send("verifyClientVersion", args, seqid=seqid, header_seqid=seqid & 0xFFFFFFFF)
        reply = client.recv("verifyClientVersion")
        assert reply.name == "verifyClientVersion"
        assert reply.mtype == wire.REPLY
        assert reply.seqid == seqid
        assert reply.framing is (wire.Framing.THEADER if framing == "theader" else wire.Framing.FRAMED)
        assert reply.proto_id == (wire.PROTO_COMPACT if protocol == "compact" else wire.PROTO_BINARY)
        if framing == "theader":
            assert reply.header_seqid == seqid & 0xFFFFFFFF
        assert reply.success.error_code == 0


def test_header_seqid_is_echoed_independently_of_envelope(
    fake_graphd: FakeGraphd, raw_client: RawFactory
) -> None:
    client = raw_client(fake_graphd)
    args = service.VerifyClientVersionArgs(req=ttypes.VerifyClientVersionReq())
    client.send("verifyClientVersion", args, seqid=3, header_seqid=99)
    reply = client.recv("verifyClientVersion")
    assert (reply.seqid, reply.header_seqid) == (3, 99)


def test_compact_request_bytes_match_the_official_client(fake_graphd: FakeGraphd) -> None:
    # fbthrift compact v2: 0x82, then CALL (1) << 5 | version 2 = 0x22, seqid varint, name length 19
    msg = compact_message("verifyClientVersion", wire.CALL, 0,
                          service.VerifyClientVersionArgs(req=ttypes.VerifyClientVersionReq()))  # fmt: skip
    assert msg[:4] == bytes([0x82, 0x22, 0x00, 0x13])
    assert msg[4:23] == b"verifyClientVersion"


def test_compact_doubles_are_big_endian(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd, protocol="compact")
    sid = client.session()
    client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=b"RETURN 1.5 AS f", parameterMap={}))  # fmt: skip
    frame = client.recv_frame()
    assert struct.pack(">d", 1.5) in frame
    assert struct.pack("<d", 1.5) not in frame


def test_compact_parameters_round_trip(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd, protocol="compact")
    sid = client.session()
    params = {
        "f": ttypes.Value(fVal=-0.1),
        "i": ttypes.Value(iVal=-(2**63)),
        "s": ttypes.Value(sVal="ü".encode()),
        "l": ttypes.Value(lVal=ttypes.NList(values=[ttypes.Value(bVal=False)])),
        "d": ttypes.Value(dtVal=ttypes.DateTime(year=2024, month=2, day=29, hour=1, minute=2,
                                                sec=3, microsec=4)),  # fmt: skip
        "u": ttypes.Value(uVal=ttypes.NSet(values={ttypes.Value(iVal=1), ttypes.Value(iVal=2)})),
    }
    resp = client.execute(sid, "RETURN $f, $i, $s, $l, $d, $u", params)
    assert resp.error_code == 0, resp
    assert resp.data.rows[0].values == [params[k] for k in "fisldu"]


def test_apache_compact_v1_is_rejected(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    from thrift.protocol.TCompactProtocol import TCompactProtocol
    from thrift.transport.TTransport import TMemoryBuffer

    buf = TMemoryBuffer()
    proto = TCompactProtocol(buf)
    proto.writeMessageBegin("verifyClientVersion", wire.CALL, 0)
    args = service.VerifyClientVersionArgs(req=ttypes.VerifyClientVersionReq())
    proto.writeStruct(args, args.thrift_spec)
    proto.writeMessageEnd()
    client = raw_client(fake_graphd, protocol="compact")
    client.sock.sendall(client.frame(buf.getvalue()))
    with pytest.raises(EOFError):
        client.recv_frame()


def test_compact_v2_codec_rejects_version_1() -> None:
    msg = bytearray(compact_message("x", wire.CALL, 0, None))
    msg[1] = 0x21
    with pytest.raises(ProtocolError, match=r"Bad version: 1 \(expect 2\)") as info:
        parse_compact_message(bytes(msg), None)
    cause = info.value.__cause__
    assert isinstance(cause, TProtocolException) and cause.type == TProtocolException.BAD_VERSION
    assert CompactV2Protocol.VERSION == 2


def test_zlib_transform_is_mirrored(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd, transforms=(1,))
    reply = client.call("verifyClientVersion",
                        service.VerifyClientVersionArgs(req=ttypes.VerifyClientVersionReq()))  # fmt: skip
    assert reply.transforms == (1,)
    assert reply.success.error_code == 0


def test_unknown_transform_closes_connection(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    payload = client.message("verifyClientVersion", service.VerifyClientVersionArgs(), seqid=1)
    header = bytes([0, 1, 3, 0])  # binary, one transform: snappy (3)
    frame = struct.pack("!IHHIH", 10 + len(header) + len(payload), 0x0FFF, 0, 1, 1) + header + payload
    client.sock.sendall(frame)
    with pytest.raises(EOFError):
        client.recv_frame()


@pytest.mark.parametrize("mtype", [wire.CALL, wire.ONEWAY])
@pytest.mark.parametrize(("framing", "protocol"), VARIANTS)
def test_signout_is_never_answered(
    fake_graphd: FakeGraphd, raw_client: RawFactory, framing: str, protocol: str, mtype: int
) -> None:
    client = raw_client(fake_graphd, framing=framing, protocol=protocol)
    sid = client.session()
    client.signout(sid, mtype=mtype)
    fake_graphd.wait_for(lambda s: s.signouts == 1)
    # the first frame after the signout is the answer to the next request, not to the signout
    seqid = client.send("verifyClientVersion",
                        service.VerifyClientVersionArgs(req=ttypes.VerifyClientVersionReq()))  # fmt: skip
    reply = client.recv("verifyClientVersion")
    assert (reply.name, reply.seqid) == ("verifyClientVersion", seqid)
    assert client.execute(sid, "RETURN 1").error_code == -1002


def test_unknown_method_gets_application_exception(
    fake_graphd: FakeGraphd, raw_client: RawFactory
) -> None:
    client = raw_client(fake_graphd)
    client.send("health", service.SignoutArgs(sessionId=1), seqid=5)
    frame = client.recv_frame()
    info = wire.parse_frame(frame)
    name, mtype, seqid, pos = wire.parse_message_header(frame, info.offset)
    assert (name, mtype, seqid) == ("health", wire.EXCEPTION, 5)
    exc = wire.decode_application_exception(frame, pos)
    assert exc.type == TApplicationException.UNKNOWN_METHOD
    assert client.verify().error_code == 0  # the connection is still usable


@pytest.mark.parametrize(
    ("protocol", "name", "shown"),
    [
        ("binary", "ex\u00e9cute".encode(), "ex\\xc3\\xa9cute"),
        ("binary", b"\xff\xfe\x01", "\\xff\\xfe\\x01"),  # not UTF-8 at all
        ("compact", "ex\u00e9cute".encode(), "ex\\xc3\\xa9cute"),
        ("compact", b"\xff\xfe\x01", "\\xff\\xfe\\x01"),  # used to close the connection
    ],
)
def test_non_ascii_method_name_gets_application_exception(
    fake_graphd: FakeGraphd, raw_client: RawFactory, caplog: pytest.LogCaptureFixture,
    protocol: str, name: bytes, shown: str,
) -> None:  # fmt: skip
    # the binary case used to crash the handler (UnicodeEncodeError): ERROR traceback, no reply
    client = raw_client(fake_graphd, protocol=protocol)
    if protocol == "binary":
        payload = wire.binary_message(name, wire.CALL, 5, b"\x00")
    else:
        text = name.decode("utf-8", "surrogateescape")
        payload = compact_message(text, wire.CALL, 5, service.SignoutArgs(sessionId=1))
    client.sock.sendall(client.frame(payload))
    frame = client.recv_frame()
    info = wire.parse_frame(frame)
    if protocol == "binary":
        (name_len,) = struct.unpack_from("!i", frame, info.offset + 4)
        echoed = frame[info.offset + 8 : info.offset + 8 + name_len]
        _, mtype, seqid, pos = wire.parse_message_header(frame, info.offset)
        exc = wire.decode_application_exception(frame, pos)
    else:
        text, mtype, seqid, exc = parse_compact_message(frame[info.offset :], None)
        echoed = text.encode("utf-8", "surrogateescape")
    assert (echoed, mtype, seqid) == (name, wire.EXCEPTION, 5)  # the envelope echoes the name as sent
    assert exc.type == TApplicationException.UNKNOWN_METHOD
    assert exc.message == f"Method name {shown} not found"
    assert client.verify().error_code == 0  # the connection is still usable
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_malformed_arguments_get_protocol_error(
    fake_graphd: FakeGraphd, raw_client: RawFactory, protocol: str
) -> None:
    client = raw_client(fake_graphd, protocol=protocol)
    good = client.message("authenticate", service.AuthenticateArgs(username=b"u", password=b"p"),
                          seqid=1)  # fmt: skip
    client.sock.sendall(client.frame(good[: len(good) - 6]))  # cut inside the struct
    reply = client.recv("authenticate")
    assert reply.mtype == wire.EXCEPTION
    assert isinstance(reply.body, TApplicationException)
    assert reply.body.type == TApplicationException.PROTOCOL_ERROR
    assert client.verify().error_code == 0


def test_wrong_message_type_is_rejected(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    reply = client.call("verifyClientVersion", service.VerifyClientVersionArgs(), mtype=wire.REPLY)
    assert reply.body.type == TApplicationException.INVALID_MESSAGE_TYPE


@pytest.mark.parametrize(
    "data",
    [
        b"\x7f\xff\xff\xff",  # absurd frame length
        b"\x00\x00\x00\x00",  # empty frame
        b"\x00\x00\x00\x04abcd",  # neither THeader nor a thrift message
        b"POST / HTTP/1.1\r\n\r\n",  # HTTP
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2 preface (graphd drops it)
        struct.pack("!IHHIH", 14, 0x0FFF, 0, 0, 1) + bytes([7, 0, 0, 0]),  # unknown protocol id 7
    ],
)
def test_garbage_closes_the_connection(fake_graphd: FakeGraphd, raw_client: RawFactory,
                                       data: bytes) -> None:  # fmt: skip
    client = raw_client(fake_graphd)
    client.sock.sendall(data)
    with pytest.raises((EOFError, ConnectionResetError)):
        client.recv_frame()
    fake_graphd.wait_for(lambda s: s.connections_open == 0)


def test_frame_size_limit(fake_graphd_factory: Callable[..., FakeGraphd], raw_client: RawFactory) -> None:
    server = fake_graphd_factory(max_frame_size=1024)
    client = raw_client(server)
    sid = client.session()
    assert client.execute(sid, "RETURN '" + "x" * 500 + "'").error_code == 0
    client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=b"RETURN '" + b"x" * 2000 + b"'", parameterMap={}))  # fmt: skip
    with pytest.raises((EOFError, ConnectionResetError)):
        client.recv_frame()


@contextlib.contextmanager
def _traced_peak() -> Iterator[list[int]]:
    """Trace Python allocations (every thread's) in the block; the list gets the peak, in bytes."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        yield peak
        peak.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


def test_declared_frame_length_is_not_allocated_up_front(fake_graphd: FakeGraphd) -> None:
    # Each connection claims a frame of almost 64 MiB (the default max_frame_size), sends 10 bytes
    # of it and hangs up. The fake used to allocate the whole claimed size before reading.
    with _traced_peak() as peak:
        for _ in range(2):
            with socket.create_connection((fake_graphd.host, fake_graphd.port), timeout=10) as sock:
                sock.sendall(struct.pack("!I", (64 << 20) - 1) + b"x" * 10)
        # the server has read (and given up on) both frames once both connections are closed
        fake_graphd.wait_for(lambda s: s.connections_accepted == 2 and s.connections_open == 0)
    assert peak[0] < 4 << 20, f"{peak[0] / 2**20:.1f} MiB allocated for 20 bytes received"


def _zlib_frame(payload: bytes, level: int = 6) -> bytes:
    """A THeader frame (binary protocol) carrying ``payload`` with the zlib transform."""
    body = zlib.compress(payload, level)
    header = bytes((wire.PROTO_BINARY, 1, 1, 0))  # protocol, one transform: zlib (1), padding
    return struct.pack("!IHHIH", 10 + len(header) + len(body), 0x0FFF, 0, 1, len(header) // 4) + header + body


def test_zlib_payload_is_bounded_by_max_frame_size(
    fake_graphd_factory: Callable[..., FakeGraphd], raw_client: RawFactory
) -> None:
    server = fake_graphd_factory(max_frame_size=4096)
    client = raw_client(server)
    sid = client.session()

    def message(size: int) -> bytes:
        """An executeWithParameter message of exactly ``size`` bytes (a statement padded with blanks)."""
        def make(pad: int) -> bytes:
            args = service.ExecuteWithParameterArgs(sessionId=sid, stmt=b"RETURN 1 AS a" + b" " * pad,
                                                    parameterMap={})  # fmt: skip
            return client.message("executeWithParameter", args, seqid=9)
        return make(size - len(make(0)))

    fits = message(4096)
    assert len(fits) == 4096 and len(_zlib_frame(fits)) < 200
    client.sock.sendall(_zlib_frame(fits))
    assert client.recv("executeWithParameter").success.error_code == 0
    # one byte more once inflated: rejected like any frame over max_frame_size, although the
    # frame on the wire is tiny
    client.sock.sendall(_zlib_frame(message(4097)))
    with pytest.raises((EOFError, ConnectionResetError)):
        client.recv_frame()


def test_zlib_bomb_is_not_inflated(fake_graphd_factory: Callable[..., FakeGraphd]) -> None:
    server = fake_graphd_factory(max_frame_size=1 << 20)
    bomb = wire.binary_message(b"executeWithParameter", wire.CALL, 1, b"") + bytes(32 << 20)
    frame = _zlib_frame(bomb, 9)
    assert len(frame) < 64 << 10  # 32 MiB of zeros compress to ~32 KiB
    with _traced_peak() as peak:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(frame)
            assert sock.recv(100) == b""  # closed without an answer
        server.wait_for(lambda s: s.connections_open == 0)
    assert peak[0] < 8 << 20, f"{peak[0] / 2**20:.1f} MiB allocated for a {len(frame)}-byte frame"


def test_many_requests_on_one_connection_and_many_connections(
    fake_graphd: FakeGraphd, raw_client: RawFactory
) -> None:
    clients = [raw_client(fake_graphd, protocol=("binary", "compact")[i % 2]) for i in range(5)]
    sids = [c.session() for c in clients]
    for n in range(20):
        for client, sid in zip(clients, sids):
            resp = client.execute(sid, f"RETURN {n} * 2 AS v")
            assert resp.data.rows[0].values[0].iVal == n * 2
    stats = fake_graphd.stats()
    assert stats.connections_open == 5 and stats.connections_accepted == 5
    assert stats.statements == 100
    assert stats.statements_by_session == {sid: 20 for sid in sids}


def _every_value_kind() -> list[ttypes.Value]:
    vertex = ttypes.Vertex(vid=ttypes.Value(sVal=b"v"), tags=[
        ttypes.Tag(name=b"t", props={b"p": ttypes.Value(fVal=-1.25)})])  # fmt: skip
    return [
        ttypes.Value(nVal=3), ttypes.Value(bVal=False), ttypes.Value(iVal=-(2**63)),
        ttypes.Value(fVal=1e-300), ttypes.Value(sVal=b"\x00\xff"),
        ttypes.Value(dVal=ttypes.Date(year=-5, month=1, day=31)),
        ttypes.Value(tVal=ttypes.Time(hour=23, minute=59, sec=59, microsec=999999)),
        ttypes.Value(dtVal=ttypes.DateTime(year=2024, month=2, day=29, hour=0, minute=0, sec=0,
                                           microsec=1)),  # fmt: skip
        ttypes.Value(vVal=vertex),
        ttypes.Value(eVal=ttypes.Edge(src=ttypes.Value(iVal=1), dst=ttypes.Value(iVal=2), type=-3,
                                      name=b"e", ranking=9, props={})),  # fmt: skip
        ttypes.Value(pVal=ttypes.Path(src=vertex, steps=[ttypes.Step(dst=vertex, type=1, name=b"e",
                                                                     ranking=0, props={})])),
        ttypes.Value(lVal=ttypes.NList(values=[ttypes.Value(iVal=1)])),
        ttypes.Value(mVal=ttypes.NMap(kvs={b"k": ttypes.Value(bVal=True)})),
        ttypes.Value(uVal=ttypes.NSet(values={ttypes.Value(iVal=1), ttypes.Value(sVal=b"x")})),
        ttypes.Value(gVal=ttypes.DataSet(column_names=[b"c"], rows=[ttypes.Row(values=[ttypes.Value()])])),
        ttypes.Value(ggVal=ttypes.Geography(pgVal=ttypes.Polygon(coordListList=[[
            ttypes.Coordinate(x=0.1, y=0.2), ttypes.Coordinate(x=1.0, y=0.0)]]))),
        ttypes.Value(duVal=ttypes.Duration(seconds=-1, microseconds=2, months=3)),
    ]


def test_compact_codec_interoperates_with_fbthrift() -> None:
    from nebula3.fbthrift.protocol.TCompactProtocol import TCompactProtocol as FbCompact
    from nebula3.fbthrift.transport.TTransport import TMemoryBuffer as FbBuffer
    from nebula3.graph import GraphService

    values = _every_value_kind()
    resp = ttypes.ExecutionResponse(error_code=0, latency_in_us=1, space_name=b"s", data=ttypes.DataSet(
        column_names=[str(i).encode() for i in range(len(values))], rows=[ttypes.Row(values=values)]))
    ours = compact_message("executeWithParameter", wire.REPLY, 11, service.ExecuteResult(success=resp))
    # fbthrift (what graphd and nebula3 use) reads what we write ...
    fb_proto = FbCompact(FbBuffer(ours))
    assert fb_proto.readMessageBegin() == (b"executeWithParameter", wire.REPLY, 11)
    fb_result = GraphService.executeWithParameter_result()
    fb_result.read(fb_proto)
    # ... and writes exactly the same bytes back, which we read into the same structs
    out = FbBuffer()
    fb_out = FbCompact(out)
    fb_out.writeMessageBegin("executeWithParameter", wire.REPLY, 11)
    fb_result.write(fb_out)
    fb_out.writeMessageEnd()
    theirs = out.getvalue()
    name, mtype, seqid, decoded = parse_compact_message(theirs, service.ExecuteResult)
    assert (name, mtype, seqid) == ("executeWithParameter", wire.REPLY, 11)
    assert decoded.success == resp
    if len(theirs) == len(ours):  # set/map order may differ; the content must not
        assert sorted(theirs) == sorted(ours)


def test_drop_mid_reply_with_reset(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("HALF", drop="mid_reply", reset=True, columns=["a"], rows=[["x" * 100]])
    client = raw_client(fake_graphd)
    sid = client.session()
    client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=b"HALF", parameterMap={}))  # fmt: skip
    with pytest.raises((ConnectionResetError, EOFError)):
        client.recv_frame()
