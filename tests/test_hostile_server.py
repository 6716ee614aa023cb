"""Hostile-server tests of nebula_sync._connection.Connection over real loopback sockets.

A scripted raw server (tests/rawserver.py) passes the version handshake and then answers the next
call with exactly the bytes a test chooses: wrong sequence ids and method names, exceptions,
oversized or truncated frames, garbage, silence. Every failure must surface as a typed
``NebulaError`` (``ProtocolError`` / ``OutcomeUnknown`` / ``RequestTimeout``, or ``IncompatibleServer``
/ ``ConnectionFailed`` from ``open()``), never hang, and leave the connection closed. The second half
fuzzes the reply path with hypothesis and checks the bytes ``Connection`` writes.
"""

from __future__ import annotations

import datetime
import signal
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawserver import (
    Close,
    ExpectEof,
    Handshake,
    RawServer,
    ReadFrame,
    Reply,
    Request,
    Reset,
    Send,
    Serve,
    Step,
    WaitFor,
    exception_reply,
    execute_reply,
    fake_request,
    parse_request,
    reply_frame,
    theader,
    verify_ok,
    verify_rejected,
)

from nebula_sync._connection import Connection
from nebula_sync._thrift import service, ttypes, wire
from nebula_sync.config import ConnectionConfig, HostAddress
from nebula_sync.errors import (
    ConnectionFailed,
    IncompatibleServer,
    NebulaError,
    OutcomeUnknown,
    ProtocolError,
    RequestTimeout,
)

TIMEOUT = 10.0  # bound on every call that should not time out
#: How long a call may take beyond what it should (its own deadline, or none when the bytes decide):
#: wide enough for a loaded 2-core machine, yet half of TIMEOUT, so a call that waited for a
#: TIMEOUT deadline it should never have reached still fails.
SLACK = TIMEOUT / 2
CFG = ConnectionConfig(connect_timeout=TIMEOUT, request_timeout=TIMEOUT, tcp_keepalive=False)
V = ttypes.Value
PLAIN_EXECUTE = [service.ExecuteResult, service.ExecuteResult.thrift_spec]


# ---- fixtures and helpers --------------------------------------------------------------------


def connect(server: RawServer, conns: list[Connection], **config: Any) -> Connection:
    conn = Connection(server.host_address, attrs.evolve(CFG, **config))
    conns.append(conn)
    conn.open(time.monotonic() + TIMEOUT)
    return conn


def run(conn: Connection, timeout: float = TIMEOUT) -> Any:
    """One ``executeWithParameter`` call; returns the decoded ``ExecutionResponse``."""
    return conn.execute(1, b"RETURN 1", None, time.monotonic() + timeout)


def answer(build: Callable[[Request], bytes]) -> list[Step]:
    """Pass the handshake, answer the next request with ``build(request)``, wait for the close."""
    return [Handshake(), ReadFrame(), Reply(build), ExpectEof()]


def answer_raw(data: bytes) -> list[Step]:
    return [Handshake(), ReadFrame(), Send(data), ExpectEof()]


def assert_discarded(conn: Connection, server: RawServer, eofs: int = 1) -> None:
    """The connection is unusable and its socket really closed (the server saw the EOF)."""
    assert not conn.is_usable
    server.wait_until(lambda s: s.eofs >= eofs)


def names(resp: Any) -> list[str]:
    """Column names as ``str`` (the plain-struct fallback decoder gives ``bytes``)."""
    return [c.decode() if isinstance(c, bytes) else c for c in resp.data.column_names]


GOOD = ttypes.ExecutionResponse(error_code=0, latency_in_us=5)


def good_body() -> bytes:
    return wire.encode_struct(service.ExecuteResult(success=GOOD), PLAIN_EXECUTE)


# ---- the version handshake ---------------------------------------------------------------------


def test_handshake_rejection_raises_incompatible_server(serve: Any, conns: list[Connection]) -> None:
    server = serve([Handshake(verify_rejected), ExpectEof()])
    with pytest.raises(IncompatibleServer, match="not accepted"):
        connect(server, conns)
    assert_discarded(conns[0], server)


# A handshake reply that is not an answer open() can use (another error code, the wrong sequence
# id): nothing but the handshake was sent, so the host is treated as unreachable (ConnectionFailed,
# which the client backs off and tries elsewhere), with the protocol error as the cause.


def test_handshake_other_error_is_a_connect_failure(serve: Any, conns: list[Connection]) -> None:
    server = serve([Handshake(lambda r: verify_rejected(r, code=-1, msg=b"odd")), ExpectEof()])
    with pytest.raises(ConnectionFailed, match="version handshake .* failed: .*odd") as info:
        connect(server, conns)
    assert isinstance(info.value.__cause__, ProtocolError)
    assert_discarded(conns[0], server)


def test_handshake_wrong_seqid_is_a_connect_failure(serve: Any, conns: list[Connection]) -> None:
    wrong = lambda r: reply_frame(  # noqa: E731
        r,
        service.VerifyClientVersionResult(success=ttypes.VerifyClientVersionResp(error_code=0)),
        seqid=r.seqid + 1,
    )
    server = serve([Handshake(wrong), ExpectEof()])
    with pytest.raises(ConnectionFailed, match="version handshake .* failed: .*sequence id") as info:
        connect(server, conns)
    assert isinstance(info.value.__cause__, ProtocolError)
    assert_discarded(conns[0], server)


def test_handshake_eof_is_connection_failed(serve: Any, conns: list[Connection]) -> None:
    server = serve([ReadFrame(), Close()])
    with pytest.raises(ConnectionFailed):
        connect(server, conns)
    assert not conns[0].is_usable


def test_handshake_silence_times_out_as_connection_failed(serve: Any, conns: list[Connection]) -> None:
    server = serve([ReadFrame(), ExpectEof()])  # reads the handshake, never answers
    start = time.monotonic()
    with pytest.raises(ConnectionFailed):
        connect(server, conns, connect_timeout=0.3)
    assert time.monotonic() - start < 0.3 + SLACK  # open()'s own deadline is TIMEOUT
    assert_discarded(conns[0], server)


# ---- replies that are not the answer -----------------------------------------------------------


def _compact_payload(r: Request) -> bytes:
    # fbthrift compact v2 envelope: 0x82, type/version 0x42 (REPLY << 5 | 2), seqid varint, name
    name = r.method.encode()
    return bytes((0x82, 0x42, r.seqid)) + bytes((len(name),)) + name + b"\x00"


WRONG_REPLIES: dict[str, Callable[[Request], bytes]] = {
    "seqid+1": lambda r: reply_frame(r, good_body(), seqid=r.seqid + 1),
    "stale seqid": lambda r: reply_frame(r, good_body(), seqid=r.seqid - 1),
    "seqid 0": lambda r: reply_frame(r, good_body(), seqid=0),
    "method execute": lambda r: reply_frame(r, good_body(), method="execute"),
    "method verifyClientVersion": lambda r: reply_frame(r, good_body(), method="verifyClientVersion"),
    "empty method": lambda r: reply_frame(r, good_body(), method=""),
    "type CALL": lambda r: reply_frame(r, good_body(), mtype=wire.CALL),
    "type ONEWAY": lambda r: reply_frame(r, good_body(), mtype=wire.ONEWAY),
    "type 0": lambda r: reply_frame(r, good_body(), mtype=0),
    "type 7": lambda r: reply_frame(r, good_body(), mtype=7),
    "TApplicationException": lambda r: exception_reply(r, "Unknown method executeWithParameter"),
    "bad exception body": lambda r: reply_frame(r, b"\x0b\x00\x01\x7f\xff\xff\xff", mtype=wire.EXCEPTION),
    "THeader compact id": lambda r: reply_frame(r, good_body(), proto_id=wire.PROTO_COMPACT),
    "THeader json id": lambda r: reply_frame(r, good_body(), proto_id=1),
    "THeader compact payload": lambda r: theader(_compact_payload(r), r.seqid, proto_id=wire.PROTO_COMPACT),
    "transform zlib": lambda r: reply_frame(r, good_body(), transforms=[1]),
    "transform zstd": lambda r: reply_frame(r, good_body(), transforms=[5]),
    "framed compact": lambda r: wire.framed_frame(_compact_payload(r)),
    "envelope version 2": lambda r: theader(struct.pack("!I", 0x80020002) + b"\0" * 40, r.seqid),
    "non-strict envelope": lambda r: theader(
        struct.pack("!I", len(r.method))
        + r.method.encode()
        + b"\x02"
        + struct.pack("!i", r.seqid)
        + good_body(),
        r.seqid,
    ),
    "name length 300": lambda r: theader(
        struct.pack("!Ii", 0x80010002, 300) + b"x" * 300 + b"\0" * 8, r.seqid
    ),
    "negative name length": lambda r: theader(struct.pack("!Ii", 0x80010002, -1) + b"\0" * 8, r.seqid),
    "envelope cut short": lambda r: theader(struct.pack("!Ii", 0x80010002, 20) + b"executeWith", r.seqid),
    "header words beyond frame": lambda r: struct.pack("!IHHIH", 10 + 4, 0x0FFF, 0, r.seqid, 100) + b"\0" * 4,
    "header varint never ends": lambda r: struct.pack("!IHHIH", 10 + 4, 0x0FFF, 0, r.seqid, 1) + b"\x80" * 4,
    "unknown magic": lambda r: wire.framed_frame(b"\x12\x34" + b"\0" * 30),
    "empty frame": lambda r: b"\0\0\0\0",
    "no success field": lambda r: reply_frame(r, b"\x00"),
    "success of the wrong type": lambda r: reply_frame(r, b"\x08\x00\x00" + b"\0\0\0\1" + b"\x00"),
    "struct never ends": lambda r: reply_frame(r, good_body()[:-1]),
    "unknown field type": lambda r: reply_frame(r, b"\x0c\x00\x00\x63\x00\x01\x00\x00"),
}


@pytest.mark.parametrize(
    "case",
    list(WRONG_REPLIES),
)
def test_wrong_reply_is_protocol_error_and_discards(serve: Any, conns: list[Connection], case: str) -> None:
    server = serve(answer(WRONG_REPLIES[case]))
    conn = connect(server, conns)
    start = time.monotonic()
    with pytest.raises(ProtocolError) as info:
        run(conn)
    assert time.monotonic() - start < SLACK  # decided from the bytes, not by a timeout
    assert info.value.host == server.address
    assert_discarded(conn, server)
    with pytest.raises(ConnectionFailed):
        run(conn)  # a discarded connection refuses further calls


@pytest.mark.parametrize("method", ["authenticate", "execute_json"])
def test_reply_without_result_discards_for_other_calls(
    serve: Any, conns: list[Connection], method: str
) -> None:
    server = serve(answer(lambda r: reply_frame(r, b"\x00")))  # a result struct without field 0
    conn = connect(server, conns)
    deadline = time.monotonic() + TIMEOUT
    with pytest.raises(ProtocolError, match="no result"):
        if method == "authenticate":
            conn.authenticate("root", "nebula", deadline)
        else:
            conn.execute_json(1, b"RETURN 1", None, deadline)
    assert_discarded(conn, server)


def test_application_exception_message_is_reported(serve: Any, conns: list[Connection]) -> None:
    server = serve(answer(lambda r: exception_reply(r, "Unknown method executeWithParameter")))
    with pytest.raises(ProtocolError, match="Unknown method executeWithParameter"):
        run(connect(server, conns))


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage!",  # read as a frame length of ~1.7 GB
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        struct.pack("!I", 3) + b"xyz",  # a small well-framed junk frame before the reply
        b"\0\0\0\0",  # an empty frame before the reply
    ],
)
def test_garbage_before_the_frame(serve: Any, conns: list[Connection], garbage: bytes) -> None:
    server = serve([Handshake(), ReadFrame(), Reply(lambda r: garbage + execute_reply(r)), ExpectEof()])
    conn = connect(server, conns)
    with pytest.raises(ProtocolError):
        run(conn)
    assert_discarded(conn, server)


# ---- THeader variants graphd may legitimately send ----------------------------------------------


def test_theader_info_headers_and_padding_are_accepted(serve: Any, conns: list[Connection]) -> None:
    def with_info(r: Request) -> bytes:
        msg = wire.binary_message(r.method.encode(), wire.REPLY, r.seqid, good_body())
        info = b"\x01\x01\x03key\x05value"  # one key/value info header
        return theader(msg, r.seqid, info=info + b"\0" * 8)  # plus more padding words than needed

    server = serve(
        [Handshake(), ReadFrame(), Reply(with_info), ReadFrame(), Reply(execute_reply), ExpectEof()]
    )
    conn = connect(server, conns)
    assert run(conn).latency_in_us == 5
    assert run(conn).latency_in_us == 7  # still in step


def test_framed_request_accepts_theader_reply(serve: Any, conns: list[Connection]) -> None:
    def theader_reply(r: Request) -> bytes:
        return reply_frame(r, good_body(), framing=wire.Framing.THEADER)

    server = serve([Handshake(), ReadFrame(), Reply(theader_reply), ExpectEof()])
    conn = connect(server, conns, framing="framed")
    assert run(conn).latency_in_us == 5


# ---- sizes and limits --------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0x7FFFFFFF, 0xFFFFFFFF, 256 * 1024 * 1024 + 1])
def test_oversized_frame_length_is_rejected_without_allocating(
    serve: Any, conns: list[Connection], length: int
) -> None:
    server = serve(answer_raw(struct.pack("!I", length) + b"\x0f\xff\x00\x00"))
    conn = connect(server, conns)
    tracemalloc.start()
    try:
        start = time.monotonic()
        with pytest.raises(ProtocolError, match="max_frame_size"):
            run(conn)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < SLACK  # not read up to its deadline (the memory bound is the real check)
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a {length}-byte claim"
    assert_discarded(conn, server)


def test_frame_length_claim_within_limit_is_not_allocated_up_front(
    serve: Any, conns: list[Connection]
) -> None:
    claim = 200 * 1024 * 1024
    server = serve([Handshake(), ReadFrame(), Send(struct.pack("!I", claim) + b"\x0f\xff"), Close()])
    conn = connect(server, conns)
    tracemalloc.start()
    try:
        with pytest.raises(OutcomeUnknown):
            run(conn)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak // 1024 // 1024} MiB for 6 bytes received"


def _padded_reply(r: Request, frame_size: int) -> bytes:
    """A valid reply whose frame (after its 4-byte length) is exactly ``frame_size`` bytes."""
    base = execute_reply(r, ttypes.ExecutionResponse(error_code=0, latency_in_us=5, comment=b""))
    pad = frame_size - (len(base) - 4)
    assert pad >= 0
    return execute_reply(r, ttypes.ExecutionResponse(error_code=0, latency_in_us=5, comment=b"c" * pad))


@pytest.mark.parametrize(("size", "ok"), [(4096, True), (4097, False)])
def test_max_frame_size_boundary(serve: Any, conns: list[Connection], size: int, ok: bool) -> None:
    server = serve(answer(lambda r: _padded_reply(r, size)))
    conn = connect(server, conns, max_frame_size=4096, max_string_length=1 << 20)
    if ok:
        assert run(conn).comment.startswith(b"ccc")
        conn.close()
    else:
        with pytest.raises(ProtocolError, match="max_frame_size"):
            run(conn)
    assert_discarded(conn, server)


@pytest.mark.parametrize(
    ("where", "size", "ok"),
    [("error_msg", 64, True), ("error_msg", 65, False), ("cell", 64, True), ("cell", 65, False)],
)
def test_max_string_length(serve: Any, conns: list[Connection], where: str, size: int, ok: bool) -> None:
    text = b"s" * size
    if where == "error_msg":
        resp = ttypes.ExecutionResponse(error_code=-1005, latency_in_us=1, error_msg=text)
    else:
        data = ttypes.DataSet(column_names=[b"c"], rows=[ttypes.Row(values=[V(sVal=text)])])
        resp = ttypes.ExecutionResponse(error_code=0, latency_in_us=1, data=data)
    server = serve(answer(lambda r: execute_reply(r, resp)))
    conn = connect(server, conns, max_string_length=64)
    if ok:
        got = run(conn)
        cell = got.error_msg if where == "error_msg" else got.data.rows[0][0]
        assert getattr(cell, "sVal", cell) in (text, text.decode())
        conn.close()
    else:
        with pytest.raises(ProtocolError, match="limit"):
            run(conn)
    assert_discarded(conn, server)


@pytest.mark.parametrize(
    ("kind", "size", "ok"),
    [("row", 16, True), ("row", 17, False), ("map", 16, True), ("map", 17, False), ("set", 17, False)],
)
def test_max_container_length(serve: Any, conns: list[Connection], kind: str, size: int, ok: bool) -> None:
    if kind == "row":
        row = [V(iVal=i) for i in range(size)]
    elif kind == "map":
        row = [V(mVal=ttypes.NMap(kvs={b"k%d" % i: V(iVal=i) for i in range(size)}))]
    else:
        row = [V(uVal=ttypes.NSet(values={V(iVal=i) for i in range(size)}))]
    data = ttypes.DataSet(column_names=[b"c"], rows=[ttypes.Row(values=row)])
    resp = ttypes.ExecutionResponse(error_code=0, latency_in_us=1, data=data)
    server = serve(answer(lambda r: execute_reply(r, resp)))
    conn = connect(server, conns, max_container_length=16)
    if ok:
        got = run(conn)
        assert len(got.data.rows[0]) == len(row)
        conn.close()
    else:
        # (thrift's C decoder words an oversized map as "got wrong ttype": still a ProtocolError)
        with pytest.raises(ProtocolError):
            run(conn)
    assert_discarded(conn, server)


def test_deeply_nested_values_are_a_protocol_error(serve: Any, conns: list[Connection]) -> None:
    """5000 nested lists (thrift's encoder refuses to build them, so the bytes are written here)."""
    depth = 5000
    st_, lst = b"\x0c", b"\x0f"
    one = struct.pack("!i", 1)
    body = st_ + b"\0\0" + st_ + b"\0\3"  # result.success, response.data
    body += lst + b"\0\2" + st_ + one  # data.rows: one Row
    body += lst + b"\0\1" + st_ + one  # row.values: one Value
    body += (st_ + b"\0\x0c" + lst + b"\0\1" + st_ + one) * depth  # Value.lVal -> NList.values
    body += b"\x0a\0\3" + struct.pack("!q", 1) + b"\0"  # the innermost Value: iVal 1
    body += b"\0\0" * depth + b"\0" * 4  # close every struct
    server = serve(answer(lambda r: reply_frame(r, body)))
    conn = connect(server, conns)
    with pytest.raises(ProtocolError, match="recursion"):
        run(conn)
    assert_discarded(conn, server)


# ---- truncation, EOF, reset ----------------------------------------------------------------------


def _cut_points() -> list[int]:
    n = len(execute_reply(fake_request()))
    return sorted({0, 1, 2, 3, 4, 5, 13, 14, 17, 18, 21, 30, n // 2, n - 2, n - 1})


@pytest.mark.parametrize("cut", _cut_points())
@pytest.mark.parametrize("ending", ["close", "reset"])
def test_eof_or_reset_mid_reply_is_outcome_unknown(
    serve: Any, conns: list[Connection], cut: int, ending: str
) -> None:
    last: Step = Close() if ending == "close" else Reset()
    server = serve([Handshake(), ReadFrame(), Reply(lambda r: execute_reply(r)[:cut]), last])
    conn = connect(server, conns)
    start = time.monotonic()
    with pytest.raises(OutcomeUnknown) as info:
        run(conn)
    assert type(info.value) is OutcomeUnknown  # EOF / reset, not a timeout
    assert time.monotonic() - start < SLACK
    assert not conn.is_usable


# ---- timeouts ----------------------------------------------------------------------------------


def test_read_timeout_closes_and_a_late_reply_is_never_returned(serve: Any, conns: list[Connection]) -> None:
    late = Reply(lambda r: execute_reply(r, latency_in_us=111))
    slow = [Handshake(), ReadFrame(), WaitFor("late"), late, ExpectEof()]
    fresh = [Handshake(), ReadFrame(), Reply(lambda r: execute_reply(r, latency_in_us=222)), ExpectEof()]
    server = serve(handlers=[slow, fresh])
    conn = connect(server, conns)
    limit = 0.3
    start = time.monotonic()
    with pytest.raises(RequestTimeout):
        run(conn, limit)
    elapsed = time.monotonic() - start
    assert limit <= elapsed < limit + SLACK
    assert not conn.is_usable
    server.event("late").set()  # the late reply goes out only now, after the timeout
    server.wait_until(lambda s: s.eofs == 1)  # ... to a socket the client had closed
    with pytest.raises(ConnectionFailed):
        run(conn)  # the timed-out connection never reads it
    other = connect(server, conns)
    assert run(other).latency_in_us == 222  # a new connection gets its own answer
    other.close()
    server.wait_until(lambda s: s.eofs == 2)


def test_slow_trickle_still_times_out_on_the_deadline(serve: Any, conns: list[Connection]) -> None:
    """A server sending one byte every 50 ms never lets a read block past the overall deadline."""

    def trickle(conn: socket.socket, server: RawServer) -> None:
        req = server.read_request(conn)
        assert req is not None
        conn.sendall(verify_ok(req))
        req = server.read_request(conn)
        assert req is not None
        for byte in execute_reply(req):
            conn.sendall(bytes((byte,)))
            if server.stopping.wait(0.05):  # a server-side delay: the injected fault
                return

    server = serve(trickle)
    conn = connect(server, conns)
    limit = 0.3
    start = time.monotonic()
    with pytest.raises(RequestTimeout):
        run(conn, limit)
    assert limit <= time.monotonic() - start < limit + SLACK
    assert not conn.is_usable


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_periodic_signals_do_not_stretch_the_deadline(serve: Any, conns: list[Connection]) -> None:
    """A signal with a Python handler interrupts the wait and CPython retries it: the retried wait
    must still end at the deadline (a kernel socket timeout would start over on every retry)."""
    assert threading.current_thread() is threading.main_thread()  # where Python runs handlers
    server = serve([Handshake(), ReadFrame(), WaitFor("never"), ExpectEof()])
    conn = connect(server, conns)
    ticks = []
    previous = signal.signal(signal.SIGALRM, lambda *_: ticks.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)  # more often than the timeout
    try:
        limit = 0.3
        start = time.monotonic()
        with pytest.raises(RequestTimeout):
            run(conn, limit)
        elapsed = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(ticks) >= 2 and limit <= elapsed < limit + SLACK


def test_a_slowly_read_send_stops_at_the_deadline(serve: Any, conns: list[Connection]) -> None:
    """A peer that reads the request slowly never lets the write run past the deadline (a kernel
    send timeout limits each send() of a sendall(), not the whole), and nothing ran."""

    def slow_reader(conn: socket.socket, server: RawServer) -> None:
        req = server.read_request(conn)
        assert req is not None
        conn.sendall(verify_ok(req))
        while not server.stopping.is_set():  # about 1 MB/s, never answers
            try:
                if not conn.recv(32768):
                    return
            except OSError:
                return
            server.stopping.wait(0.03)  # a server-side delay: the injected fault

    server = serve(slow_reader)
    conn = connect(server, conns)
    stmt = b"RETURN '" + b"x" * (16 << 20) + b"'"  # far more than the socket buffers hold
    limit = 0.5
    start = time.monotonic()
    with pytest.raises(ConnectionFailed, match="did not finish within the request timeout"):
        conn.execute(1, stmt, None, time.monotonic() + limit)
    assert limit <= time.monotonic() - start < limit + SLACK
    assert not conn.is_usable


@pytest.mark.parametrize("params", [None, {b"p": V(iVal=1)}], ids=["fast-path", "general-path"])
def test_a_passed_deadline_sends_nothing(serve: Any, conns: list[Connection], params: Any) -> None:
    # nothing is written once the deadline has passed: "not sent" (it cannot run), not "may still run"
    server = serve([Handshake(), ReadFrame(), Reply(lambda r: execute_reply(r)), ExpectEof()])
    conn = connect(server, conns)
    start = time.monotonic()
    with pytest.raises(ConnectionFailed, match="no time left to send executeWithParameter.*not sent"):
        conn.execute(1, b"RETURN 1", params, time.monotonic() - 1)
    assert time.monotonic() - start < SLACK
    assert conn.is_usable and run(conn).error_code == 0  # the request the server read is the next one


class _SignalingSocket:
    """Wraps a socket and sets ``entered`` once the request is written (the call then waits for the
    reply: in ``poll()`` or ``recv()``, whichever the connection uses)."""

    def __init__(self, sock: socket.socket, entered: threading.Event) -> None:
        self._sock = sock
        self._entered = entered

    def send(self, data: bytes) -> int:
        sent = self._sock.send(data)
        self._entered.set()
        return sent

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)
        self._entered.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_close_from_another_thread_aborts_a_blocked_call(serve: Any, conns: list[Connection]) -> None:
    server = serve([Handshake(), ReadFrame(), ExpectEof()])  # never answers the call
    conn = connect(server, conns)
    reading = threading.Event()
    conn._sock = _SignalingSocket(conn._sock, reading)  # type: ignore[assignment, arg-type]
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            run(conn)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    assert reading.wait(TIMEOUT)  # the caller is waiting (or about to) for the reply; shutdown wakes it
    start = time.monotonic()
    conn.close()
    caller.join(TIMEOUT)
    assert not caller.is_alive()
    assert time.monotonic() - start < SLACK  # woken at once, long before its deadline (TIMEOUT)
    assert type(outcome[0]) is OutcomeUnknown, repr(outcome[0])
    assert not conn.is_usable
    server.wait_until(lambda s: s.eofs == 1)


class _CloseAfterWrite:
    """A socket that replays one interleaving deterministically: another thread's ``close()`` of
    the connection lands right after the request was written and before the reply is read."""

    def __init__(self, conn: Connection, real: socket.socket) -> None:
        self._conn = conn
        self._real = real

    def sendall(self, data: bytes) -> None:
        self._real.sendall(data)
        self._conn.close()

    def send(self, data: bytes) -> int:
        sent = self._real.send(data)
        self._conn.close()
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("path", ["statement path", "general path"])
def test_close_between_write_and_read_is_a_typed_error(
    serve: Any, conns: list[Connection], path: str
) -> None:
    server = serve([Handshake(), ReadFrame(), ExpectEof()])
    conn = connect(server, conns)
    real = conn._sock
    assert real is not None
    conn._sock = _CloseAfterWrite(conn, real)  # type: ignore[assignment]
    # without a deadline a statement takes the general path (_call, _read_frame)
    deadline = time.monotonic() + TIMEOUT if path == "statement path" else None
    start = time.monotonic()
    with pytest.raises(OutcomeUnknown) as info:
        conn.execute(1, b"RETURN 1", None, deadline)
    assert type(info.value) is OutcomeUnknown  # not a RequestTimeout: the close was noticed at once
    assert time.monotonic() - start < SLACK
    assert "was closed while waiting for executeWithParameter" in str(info.value)
    assert not conn.is_usable
    server.wait_until(lambda s: s.eofs == 1)


class _InterruptedRecv:
    """A socket whose ``recv`` is interrupted (as by Ctrl-C); everything else is the real one."""

    def __init__(self, real: socket.socket) -> None:
        self._real = real

    def recv(self, size: int) -> bytes:
        raise KeyboardInterrupt

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _InterruptedPoll:
    """A poller whose wait is interrupted (as by Ctrl-C); it stands in for ``select.poll()``."""

    def poll(self, *timeout: Any) -> list[Any]:
        raise KeyboardInterrupt

    def register(self, fd: Any, events: int) -> None:
        pass

    def unregister(self, fd: Any) -> None:
        pass


def test_an_interrupt_while_waiting_for_the_reply_closes_the_connection(
    serve: Any, conns: list[Connection]
) -> None:
    # the reply may still come: the connection must never be reused
    server = serve([Handshake(), ReadFrame(), ExpectEof()])
    conn = connect(server, conns)
    real = conn._sock
    assert real is not None
    conn._sock = _InterruptedRecv(real)  # type: ignore[assignment]
    conn._poller = _InterruptedPoll()  # the wait is a poll() before the recv on a plain socket
    with pytest.raises(KeyboardInterrupt):
        run(conn)
    assert not conn.is_usable
    real.close()


# ---- the bytes Connection writes ---------------------------------------------------------------


def _calls(conn: Connection) -> None:
    deadline = time.monotonic() + TIMEOUT
    conn.open(deadline)
    assert conn.authenticate("root", "nebula", deadline).session_id == 42
    conn.execute(42, b"RETURN $p", {b"p": V(iVal=1)}, deadline)
    conn.execute_json(42, b"RETURN 1", None, deadline)
    conn.ping()
    conn.signout(42)
    conn.close()


EXPECTED_CALLS = [
    ("verifyClientVersion", wire.CALL),
    ("authenticate", wire.CALL),
    ("executeWithParameter", wire.CALL),
    ("executeJsonWithParameter", wire.CALL),
    ("execute", wire.CALL),
    ("signout", wire.ONEWAY),
]


def _check_args(reqs: list[Request], version: bytes) -> None:
    args = [r.args() for r in reqs]
    assert args[0].req.version == version
    assert (args[1].username, args[1].password) == (b"root", b"nebula")
    assert (args[2].sessionId, args[2].stmt, args[2].parameterMap) == (42, b"RETURN $p", {b"p": V(iVal=1)})
    assert (args[3].sessionId, args[3].stmt) == (42, b"RETURN 1")
    assert (args[4].sessionId, args[4].stmt) == (0, b"YIELD 1")
    assert args[5].sessionId == 42


def test_theader_request_frames_byte_by_byte(serve: Any) -> None:
    server = serve([Serve()])
    conn = Connection(server.host_address, attrs.evolve(CFG, handshake_key="3.8.0"))
    _calls(conn)
    server.wait_until(lambda s: s.eofs == 1)
    reqs = server.requests
    assert [(r.method, r.mtype) for r in reqs] == EXPECTED_CALLS
    for i, r in enumerate(reqs):
        f = r.frame
        assert struct.unpack_from("!I", f, 0)[0] == len(f) - 4
        magic, flags, header_seq, words = struct.unpack_from("!HHIH", f, 4)
        assert (magic, flags, words) == (0x0FFF, 0, 1)
        assert f[14:18] == b"\x00\x00\x00\x00"  # protocol id 0 (binary), 0 transforms, 2 padding
        version, name_len = struct.unpack_from("!Ii", f, 18)
        assert version == 0x80010000 | EXPECTED_CALLS[i][1]  # strict binary envelope
        assert f[26 : 26 + name_len] == EXPECTED_CALLS[i][0].encode()
        (seqid,) = struct.unpack_from("!i", f, 26 + name_len)
        assert seqid == header_seq == r.seqid == i + 1  # header seq id = envelope seqid, increasing
    _check_args(reqs, b"3.8.0")


def test_framed_request_frames_byte_by_byte(serve: Any) -> None:
    server = serve([Serve()])
    conn = Connection(server.host_address, attrs.evolve(CFG, framing="framed"))
    _calls(conn)
    server.wait_until(lambda s: s.eofs == 1)
    reqs = server.requests
    assert [(r.method, r.mtype) for r in reqs] == EXPECTED_CALLS
    for i, r in enumerate(reqs):
        f = r.frame
        assert r.framing is wire.Framing.FRAMED
        assert struct.unpack_from("!I", f, 0)[0] == len(f) - 4
        version, name_len = struct.unpack_from("!Ii", f, 4)
        assert version == 0x80010000 | EXPECTED_CALLS[i][1]
        assert f[12 : 12 + name_len] == EXPECTED_CALLS[i][0].encode()
        assert struct.unpack_from("!i", f, 12 + name_len)[0] == i + 1
    _check_args(reqs, b"3.0.0")


# ---- a rich reply, and fuzzing the reply path ----------------------------------------------------


def rich_response() -> ttypes.ExecutionResponse:
    """An ``ExecutionResponse`` whose DataSet holds every kind of graph value."""
    T = ttypes
    C = T.Coordinate
    ann = T.Vertex(
        vid=V(sVal=b"v1"), tags=[T.Tag(name=b"person", props={b"name": V(sVal=b"Ann"), b"age": V(iVal=30)})]
    )
    two = T.Vertex(vid=V(iVal=2), tags=[])
    edge = T.Edge(
        src=V(sVal=b"v1"), dst=V(iVal=2), type=-3, name=b"knows", ranking=7, props={b"since": V(iVal=2020)}
    )
    step = T.Step(dst=two, type=3, name=b"knows", ranking=0, props={b"w": V(fVal=0.5)})
    ring = [C(x=0.0, y=0.0), C(x=1.0, y=0.0), C(x=0.0, y=1.0), C(x=0.0, y=0.0)]
    values = [
        V(nVal=0), V(nVal=1), V(nVal=99), V(), V(bVal=True), V(iVal=-5), V(fVal=1.5),
        V(sVal="café".encode()), V(sVal=b"\xff\xfe bad"),
        V(dVal=T.Date(year=2024, month=2, day=29)), V(dVal=T.Date(year=-1, month=13, day=40)),
        V(tVal=T.Time(hour=12, minute=30, sec=15, microsec=500)),
        V(dtVal=T.DateTime(year=2024, month=1, day=2, hour=3, minute=4, sec=5, microsec=6)),
        V(vVal=ann), V(eVal=edge), V(pVal=T.Path(src=ann, steps=[step])),
        V(lVal=T.NList(values=[V(iVal=1), V(sVal=b"x"), V(lVal=T.NList(values=[]))])),
        V(mVal=T.NMap(kvs={b"k": V(iVal=1), b"n": V(nVal=0)})),
        V(uVal=T.NSet(values={V(iVal=1), V(sVal=b"two")})),
        V(uVal=T.NSet(values={V(lVal=T.NList(values=[V(iVal=1)])), V(vVal=two)})),
        V(gVal=T.DataSet(column_names=[b"c"], rows=[T.Row(values=[V(iVal=1)])])),
        V(ggVal=T.Geography(ptVal=T.Point(coord=C(x=1.0, y=2.0)))),
        V(ggVal=T.Geography(lsVal=T.LineString(coordList=ring[:2]))),
        V(ggVal=T.Geography(pgVal=T.Polygon(coordListList=[ring]))),
        V(duVal=T.Duration(seconds=3600, microseconds=1, months=2)),
    ]  # fmt: skip
    plan = T.PlanDescription(
        plan_node_descs=[
            T.PlanNodeDescription(
                name=b"Project", id=1, output_var=b"v", description=[T.Pair(key=b"k", value=b"v")],
                profiles=[T.ProfilingStats(rows=1, exec_duration_in_us=2, total_duration_in_us=3)],
                branch_info=T.PlanNodeBranchInfo(is_do_branch=True, condition_node_id=0), dependencies=[0],
            )
        ],
        node_index_map={1: 0}, format=b"row", optimize_time_in_us=5,
    )  # fmt: skip
    data = T.DataSet(
        column_names=[b"c%d" % i for i in range(len(values))],
        rows=[T.Row(values=values), T.Row(values=[V(iVal=i) for i in range(len(values))])],
    )
    return T.ExecutionResponse(
        error_code=0, latency_in_us=1234, data=data, space_name=b"test", comment=b"hi", plan_desc=plan
    )


RICH = rich_response()
#: the rich reply as graphd would send it to this client's second call (seqid 2, after the handshake)
VALID = execute_reply(fake_request("executeWithParameter", 2), RICH)


def test_rich_reply_decodes(serve: Any, conns: list[Connection]) -> None:
    server = serve(answer(lambda r: execute_reply(r, RICH)))
    resp = run(connect(server, conns))
    assert (resp.error_code, resp.latency_in_us) == (0, 1234)
    assert names(resp) == [f"c{i}" for i in range(25)]
    assert len(resp.data.rows) == 2 and resp.data.rows[1] == list(range(25))
    row = resp.data.rows[0]
    if row[0] is None:  # the fast decoder (docs/internals.md): plain Python values
        assert row[4:8] == [True, -5, 1.5, "café"]
        assert row[9] == datetime.date(2024, 2, 29)
        assert row[12] == datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)
        assert row[16] == [1, "x", []]
        assert row[17] == {"k": 1, "n": None}
        assert row[18] == {1, "two"}
    else:  # the plain-struct fallback
        assert row[4:8] == [V(bVal=True), V(iVal=-5), V(fVal=1.5), V(sVal="café".encode())]


class _Plan:
    """What the fuzz server sends next: set by the test before each connection (one at a time)."""

    payload = b""
    hold = False  # keep the connection open after sending (else close it)


def _fuzz_handler(conn: socket.socket, server: RawServer) -> None:
    frame = server.read_frame(conn)
    if frame is None:
        return
    conn.sendall(verify_ok(parse_request(frame)))
    frame = server.read_frame(conn)
    if frame is None:
        return
    req = parse_request(frame)
    assert (req.method, req.seqid) == ("executeWithParameter", 2), req
    conn.sendall(_Plan.payload)
    if _Plan.hold:
        while conn.recv(65536):  # until the client gives up and closes
            pass


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[RawServer]:
    with RawServer(_fuzz_handler, recv_timeout=TIMEOUT) as server:
        yield server
    assert not server.errors, server.errors[:3]


FUZZ_LIMITS = wire.Limits(max_frame_size=64 * 1024, max_string_length=4096, max_container_length=1024)
FUZZ_CFG = attrs.evolve(
    CFG,
    max_frame_size=FUZZ_LIMITS.max_frame_size,
    max_string_length=FUZZ_LIMITS.max_string_length,
    max_container_length=FUZZ_LIMITS.max_container_length,
)
FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=datetime.timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _model(payload: bytes) -> tuple[bool, Any]:
    """An independent expectation: whether ``payload`` is a complete, matching, decodable reply,
    and the plain-struct decode if so (the same bytes through ``ttypes``, not the fast decoder)."""
    if len(payload) < 4 or struct.unpack_from("!I", payload)[0] != len(payload) - 4:
        return False, None
    if len(payload) - 4 > FUZZ_LIMITS.max_frame_size:
        return False, None
    try:
        info = wire.parse_frame(payload, 4)
        if info.proto_id != wire.PROTO_BINARY or info.transforms:
            return False, None
        name, mtype, seqid, body = wire.parse_message_header(payload, info.offset)
        if (name, mtype, seqid) != ("executeWithParameter", wire.REPLY, 2):
            return False, None
        result = wire.decode_struct(payload, body, PLAIN_EXECUTE, FUZZ_LIMITS)
    except ProtocolError:
        return False, None
    return result.success is not None, result.success



def exchange(server: RawServer, payload: bytes, *, hold: bool = False, timeout: float = TIMEOUT) -> None:
    """Send ``payload`` as the reply to one call and check the outcome.

    It is either a decoded response that agrees with :func:`_model`, or a typed ``NebulaError``
    after which the connection is discarded; never another exception, never a hang.
    """
    _Plan.payload, _Plan.hold = payload, hold
    conn = Connection(server.host_address, FUZZ_CFG)
    try:
        conn.open(time.monotonic() + TIMEOUT)
        start = time.monotonic()
        try:
            resp = run(conn, timeout)
        except NebulaError as exc:
            assert isinstance(exc, (ProtocolError, OutcomeUnknown)), repr(exc)  # RequestTimeout included
            if not hold:
                # The server closed after sending: every outcome is decided by bytes or EOF.
                assert not isinstance(exc, RequestTimeout), repr(exc)
            assert not conn.is_usable
            assert time.monotonic() - start < timeout + 2.0
            expected_ok, _ = _model(payload)
            assert not expected_ok, f"rejected a valid reply: {exc!r}"
            return
        expected_ok, plain = _model(payload)
        assert expected_ok, f"accepted an invalid reply: {resp!r}"
        assert resp.error_code == (plain.error_code or 0)
        assert resp.latency_in_us == (plain.latency_in_us or 0)
        assert (resp.data is None) == (plain.data is None)
        if resp.data is not None:
            assert len(resp.data.rows) == len(plain.data.rows or [])
            assert len(resp.data.column_names) == len(plain.data.column_names or [])
    finally:
        conn.close()


def test_the_valid_reply_passes_the_model(fuzz_server: RawServer) -> None:
    assert _model(VALID)[0]
    exchange(fuzz_server, VALID)


def test_every_cut_point_of_a_valid_reply(fuzz_server: RawServer) -> None:
    for cut in range(len(VALID)):
        exchange(fuzz_server, VALID[:cut])


@FUZZ_SETTINGS
@given(data=st.binary(max_size=600))
def test_fuzz_random_bytes(fuzz_server: RawServer, data: bytes) -> None:
    exchange(fuzz_server, data)


@FUZZ_SETTINGS
@given(body=st.binary(max_size=600), framing=st.sampled_from(["theader", "framed", "envelope"]))
def test_fuzz_random_body_in_a_valid_frame(fuzz_server: RawServer, body: bytes, framing: str) -> None:
    if framing == "theader":
        payload = theader(body, 2)
    elif framing == "framed":
        payload = wire.framed_frame(body)
    else:
        payload = theader(wire.binary_message(b"executeWithParameter", wire.REPLY, 2, body), 2)
    exchange(fuzz_server, payload)


@FUZZ_SETTINGS
@given(bits=st.lists(st.integers(0, len(VALID) * 8 - 1), min_size=1, max_size=4, unique=True))
def test_fuzz_bit_flips_of_a_rich_reply(fuzz_server: RawServer, bits: list[int]) -> None:
    mutated = bytearray(VALID)
    for bit in bits:
        mutated[bit // 8] ^= 1 << (bit % 8)
    exchange(fuzz_server, bytes(mutated))


@FUZZ_SETTINGS
@given(
    index=st.integers(0, len(VALID) - 1),
    value=st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]) | st.integers(0, 255),
)
def test_fuzz_byte_overwrites_of_a_rich_reply(fuzz_server: RawServer, index: int, value: int) -> None:
    mutated = bytearray(VALID)
    mutated[index] = value
    exchange(fuzz_server, bytes(mutated))


@FUZZ_SETTINGS
@given(length=st.integers(0, len(VALID) + 64) | st.integers(0, 2**32 - 1))
def test_fuzz_frame_lengths(fuzz_server: RawServer, length: int) -> None:
    exchange(fuzz_server, struct.pack("!I", length) + VALID[4:])


@settings(FUZZ_SETTINGS, max_examples=12)
@given(cut=st.integers(0, len(VALID) - 1), flip=st.integers(0, len(VALID) * 8 - 1))
def test_fuzz_with_the_connection_held_open(fuzz_server: RawServer, cut: int, flip: int) -> None:
    """The server sends a broken reply and keeps the socket open: a short deadline ends the wait."""
    mutated = bytearray(VALID)
    mutated[flip // 8] ^= 1 << (flip % 8)
    exchange(fuzz_server, bytes(mutated[:cut]), hold=True, timeout=0.2)


# ---- the statement path's single-function case (Connection.execute without parameters) -----------


class _ScriptedSocket:
    """Stands in for a connected socket: keeps what is sent, hands out ``replies`` in ``pieces``."""

    def __init__(self, piece: int) -> None:
        self.piece = piece
        self.sent: list[bytes] = []
        self.pending = b""
        self.reply_for: Callable[[bytes], bytes] = lambda frame: b""

    def settimeout(self, timeout: float | None) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)
        self.pending += self.reply_for(data)

    def recv(self, size: int) -> bytes:
        n = min(size, self.piece, len(self.pending))
        chunk, self.pending = self.pending[:n], self.pending[n:]
        return chunk

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


def _scripted_conn(
    piece: int, resp: ttypes.ExecutionResponse, **config: Any
) -> tuple[Connection, _ScriptedSocket]:
    conn = Connection(HostAddress("127.0.0.1", 9669), attrs.evolve(CFG, **config))
    sock = _ScriptedSocket(piece)
    sock.reply_for = lambda frame: execute_reply(parse_request(frame), resp)
    conn._sock = sock  # type: ignore[assignment]
    conn._broken = False
    return conn, sock


@pytest.mark.parametrize("stmt", ["RETURN 1", "", "RETURN 'ü' + \"\\u0000\"", "x" * 70_000])
def test_statement_frame_is_what_thrift_encodes(stmt: str) -> None:
    conn, sock = _scripted_conn(1 << 20, ttypes.ExecutionResponse(error_code=0, latency_in_us=1))
    for seqid in (1, 2):
        conn.execute(123_456_789_012, stmt.encode(), None, time.monotonic() + TIMEOUT)
        args = service.ExecuteWithParameterArgs(
            sessionId=123_456_789_012, stmt=stmt.encode(), parameterMap={}
        )
        body = wire.encode_struct(args, [type(args), type(args).thrift_spec])
        message = wire.binary_message(b"executeWithParameter", wire.CALL, seqid, body)
        expected = wire.theader_frame(message, seqid)
        assert sock.sent[-1] == expected


@pytest.mark.parametrize("piece", [1, 3, 4, 17, 50, 1 << 20])
def test_reply_arriving_in_pieces_decodes_whole(piece: int) -> None:
    data = ttypes.DataSet(column_names=[b"a"], rows=[ttypes.Row(values=[V(sVal=b"v" * 300)])])
    conn, sock = _scripted_conn(piece, ttypes.ExecutionResponse(error_code=0, latency_in_us=7, data=data))
    for _ in range(2):  # the second call on the same connection: nothing was left over
        resp = conn.execute(1, b"RETURN 1", None, time.monotonic() + TIMEOUT)
        assert (resp.latency_in_us, resp.data.rows[0][0]) == (7, "v" * 300)
        assert sock.pending == b"" and conn.is_usable


def test_reply_cut_short_by_eof_is_outcome_unknown_and_closes() -> None:
    conn, sock = _scripted_conn(5, ttypes.ExecutionResponse(error_code=0, latency_in_us=1))
    full = sock.reply_for
    sock.reply_for = lambda frame: full(frame)[:-3]  # then recv() returns b"": the peer closed
    with pytest.raises(OutcomeUnknown, match="closed the connection before replying"):
        conn.execute(1, b"RETURN 1", None, time.monotonic() + TIMEOUT)
    assert not conn.is_usable
