"""Without thrift's C extension the client warns once at import and keeps working (pure Python)."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nebula_sync._thrift import fast, service, ttypes, wire
from nebula_sync.errors import ProtocolError, ReplyTooLarge
from nebula_sync.testing import FakeGraphd

ROOT = Path(__file__).resolve().parent.parent
V = ttypes.Value


def _rich_response() -> ttypes.ExecutionResponse:
    coord = ttypes.Coordinate
    vertex = ttypes.Vertex(vid=V(sVal=b"v1"), tags=[ttypes.Tag(name=b"player", props={b"age": V(iVal=42)})])
    edge = ttypes.Edge(src=V(sVal=b"v1"), dst=V(sVal=b"v2"), type=-3, name=b"follow", ranking=2,
                       props={b"w": V(fVal=0.5)})  # fmt: skip
    path = ttypes.Path(src=vertex, steps=[ttypes.Step(dst=ttypes.Vertex(vid=V(sVal=b"v2"), tags=[]), type=3,
                                                      name=b"follow", ranking=0, props={})])  # fmt: skip
    values = [
        V(nVal=0), V(nVal=1), V(bVal=True), V(iVal=-(2**63)), V(fVal=math.pi), V(sVal="naïve ✓".encode()),
        V(sVal=b"\xff bad"), V(dVal=ttypes.Date(year=2024, month=2, day=29)),
        V(tVal=ttypes.Time(hour=1, minute=2, sec=3, microsec=4)),
        V(dtVal=ttypes.DateTime(year=2024, month=1, day=2, hour=3, minute=4, sec=5, microsec=6)),
        V(vVal=vertex), V(eVal=edge), V(pVal=path), V(lVal=ttypes.NList(values=[V(iVal=1), V(sVal=b"x")])),
        V(mVal=ttypes.NMap(kvs={b"k": V(bVal=False)})), V(uVal=ttypes.NSet(values={V(iVal=7)})),
        V(gVal=ttypes.DataSet(column_names=[b"c"], rows=[ttypes.Row(values=[V(iVal=1)])])),
        V(ggVal=ttypes.Geography(lsVal=ttypes.LineString(coordList=[coord(x=1.0, y=2.0), coord(x=3, y=4)]))),
        V(duVal=ttypes.Duration(seconds=61, microseconds=5, months=14)), V(),
    ]  # fmt: skip
    names = [f"c{i}".encode() for i in range(len(values))]
    data = ttypes.DataSet(column_names=names, rows=[ttypes.Row(values=values)])
    return ttypes.ExecutionResponse(error_code=0, latency_in_us=9, space_name=b"s", comment=b"hi", data=data)


def _reply(resp: ttypes.ExecutionResponse) -> bytes:
    spec = [service.ExecuteResult, service.ExecuteResult.thrift_spec]
    return wire.encode_struct(service.ExecuteResult(success=resp), spec)


@pytest.fixture
def no_c_extension(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(wire, "_fastbinary", None)
    yield


def test_pure_python_decode_matches_the_c_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _reply(_rich_response())
    with_c = fast.decode_execute_reply(body, 0).success
    monkeypatch.setattr(wire, "_fastbinary", None)
    without = fast.decode_execute_reply(body, 0).success
    assert without.data.column_names == with_c.data.column_names
    row_c, row_py = with_c.data.rows[0], without.data.rows[0]
    assert len(row_py) == len(row_c) == 20
    for a, b in zip(row_c, row_py):
        same = (isinstance(a, float) and math.isnan(a) and math.isnan(b)) or a == b
        assert same and type(a) is type(b), (a, b)
    assert (without.space_name, without.comment, without.latency_in_us) == (b"s", b"hi", 9)


@pytest.mark.usefixtures("no_c_extension")
def test_pure_python_decode_rejects_bad_bytes_as_protocol_errors() -> None:
    body = _reply(_rich_response())
    for cut in (1, len(body) // 3, len(body) - 1):
        with pytest.raises(ProtocolError):
            fast.decode_execute_reply(body[:cut], 0)


@pytest.mark.usefixtures("no_c_extension")
def test_client_runs_statements_without_the_c_extension(fake_graphd: FakeGraphd) -> None:
    from nebula_sync import NebulaClient

    with NebulaClient(fake_graphd.address, "root", "x") as client:
        rs = client.execute("RETURN $x + 1 AS y, [1, 'a'] AS l, {k: 2.5} AS m", {"x": 41})
        assert rs.rows() == [(42, [1, "a"], {"k": 2.5})]


def _one_value_reply(value: ttypes.Value) -> bytes:
    data = ttypes.DataSet(column_names=[b"v"], rows=[ttypes.Row(values=[value])])
    return _reply(ttypes.ExecutionResponse(error_code=0, data=data))


_SMALL_STRINGS = wire.Limits(max_string_length=16)
_SMALL_CONTAINERS = wire.Limits(max_container_length=16)
_BEYOND = {
    "string": (V(sVal=b"x" * 100), _SMALL_STRINGS),
    "list": (V(lVal=ttypes.NList(values=[V(iVal=i) for i in range(40)])), _SMALL_CONTAINERS),
    "set": (V(uVal=ttypes.NSet(values={V(iVal=i) for i in range(40)})), _SMALL_CONTAINERS),
    # the C decoder reports this one as a type error, like a malformed map
    "map": (V(mVal=ttypes.NMap(kvs={b"k%d" % i: V(iVal=i) for i in range(40)})), _SMALL_CONTAINERS),
}


@pytest.mark.parametrize("decoder", ["C", "pure Python"])
@pytest.mark.parametrize("kind", list(_BEYOND))
def test_a_string_or_container_beyond_the_limits_is_reply_too_large(
    monkeypatch: pytest.MonkeyPatch, decoder: str, kind: str
) -> None:
    # ReplyTooLarge is never retried (graphd would answer as much again), unlike a garbled reply
    value, limits = _BEYOND[kind]
    body = _one_value_reply(value)
    if decoder == "pure Python":
        monkeypatch.setattr(wire, "_fastbinary", None)
    with pytest.raises(ReplyTooLarge):
        fast.decode_execute_reply(body, 0, limits)


@pytest.mark.parametrize("decoder", ["C", "pure Python"])
def test_a_corrupted_length_field_is_garbage_not_a_reply_too_large(
    monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    # a 77-byte string whose length field claims 2**31 - 1 bytes the reply does not hold
    body = _one_value_reply(V(sVal=b"y" * 77))
    at = body.index(struct.pack("!i", 77))
    body = body[:at] + struct.pack("!i", 2**31 - 1) + body[at + 4 :]
    if decoder == "pure Python":
        monkeypatch.setattr(wire, "_fastbinary", None)
    with pytest.raises(ProtocolError) as info:
        fast.decode_execute_reply(body, 0)
    assert not isinstance(info.value, ReplyTooLarge), repr(info.value)


def test_missing_c_extension_warns_once_at_import() -> None:
    code = textwrap.dedent(
        """
        import sys, warnings
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "thrift.protocol.fastbinary":
                    raise ImportError("blocked for the test")
                return None
        sys.meta_path.insert(0, Block())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import nebula_sync
            import nebula_sync._thrift.wire as wire
        assert wire._fastbinary is None
        msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(msgs) == 1 and "fastbinary" in msgs[0], msgs
        print("ok")
        """
    )
    args = [sys.executable, "-c", code]
    out: Any = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
