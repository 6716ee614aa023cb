"""The fast decoder (nebula_sync._thrift.fast): bytes on the wire to Python values."""

from __future__ import annotations

import datetime as dt
import gc
import math
import sys
from typing import Any

import pytest

from nebula_sync._result import ResultSet
from nebula_sync._thrift import fast, service, ttypes, wire
from nebula_sync._thrift import ttypes as T
from nebula_sync._values import (
    EMPTY,
    DataSetValue,
    Duration,
    LineString,
    Node,
    NullValue,
    Path,
    Point,
    Polygon,
    RawDate,
    RawDateTime,
    RawTime,
    Relationship,
    SetList,
    format_value,
    to_primitive,
)
from nebula_sync.errors import ProtocolError

UTC = dt.timezone.utc
V = T.Value


def enc_value(v: T.Value) -> bytes:
    return wire.encode_struct(v, [T.Value, T.Value.thrift_spec])


def decode(v: T.Value) -> Any:
    return fast.decode_value(enc_value(v))


def reply_bytes(resp: T.ExecutionResponse) -> bytes:
    return wire.encode_struct(
        service.ExecuteResult(success=resp), [service.ExecuteResult, service.ExecuteResult.thrift_spec]
    )


def _one_column_reply(*cells: T.Value) -> bytes:
    """A reply of one column ``c`` with one row per cell."""
    data = T.DataSet(column_names=[b"c"], rows=[T.Row(values=[c]) for c in cells])
    return reply_bytes(T.ExecutionResponse(error_code=0, latency_in_us=1, data=data))


def vertex(vid: T.Value, **tags: dict[bytes, T.Value]) -> T.Vertex:
    return T.Vertex(vid=vid, tags=[T.Tag(name=k.encode(), props=p) for k, p in tags.items()])


def s(text: str) -> T.Value:
    return V(sVal=text.encode())


# ---- scalars ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (V(nVal=0), None),
        (V(bVal=True), True),
        (V(bVal=False), False),
        (V(iVal=0), 0),
        (V(iVal=2**63 - 1), 2**63 - 1),
        (V(iVal=-(2**63)), -(2**63)),
        (V(fVal=0.1), 0.1),
        (V(fVal=-0.0), -0.0),
        (V(fVal=float("inf")), float("inf")),
        (V(sVal=b""), ""),
        (V(sVal="héllo wörld 日本語 🚀".encode()), "héllo wörld 日本語 🚀"),
        (V(dVal=T.Date(year=2024, month=2, day=29)), dt.date(2024, 2, 29)),
        (
            V(tVal=T.Time(hour=23, minute=59, sec=59, microsec=999999)),
            dt.time(23, 59, 59, 999999, tzinfo=UTC),
        ),
        (
            V(dtVal=T.DateTime(year=1, month=1, day=1, hour=0, minute=0, sec=0, microsec=0)),
            dt.datetime(1, 1, 1, tzinfo=UTC),
        ),
        (V(duVal=T.Duration(seconds=-5, microseconds=7, months=13)), Duration(13, -5, 7)),
    ],
)
def test_scalars(value: T.Value, expected: Any) -> None:
    got = decode(value)
    assert got == expected and type(got) is type(expected)


def test_exact_doubles_and_nan() -> None:
    for x in (5e-324, 1.7976931348623157e308, 0.1 + 0.2, -1e-300):
        assert decode(V(fVal=x)).hex() == x.hex()
    assert math.isnan(decode(V(fVal=float("nan"))))


def test_temporal_values_are_utc() -> None:
    t = decode(V(tVal=T.Time(hour=1, minute=2, sec=3, microsec=4)))
    d = decode(V(dtVal=T.DateTime(year=2020, month=5, day=6, hour=7, minute=8, sec=9, microsec=10)))
    assert t.tzinfo is UTC and d.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (V(dVal=T.Date(year=-44, month=3, day=15)), RawDate(-44, 3, 15)),
        (V(dVal=T.Date(year=0, month=1, day=1)), RawDate(0, 1, 1)),
        (V(dVal=T.Date(year=12000, month=1, day=1)), RawDate(12000, 1, 1)),
        (V(dVal=T.Date(year=2023, month=2, day=29)), RawDate(2023, 2, 29)),
        (V(tVal=T.Time(hour=24, minute=0, sec=0, microsec=0)), RawTime(24, 0, 0, 0)),
        (
            V(dtVal=T.DateTime(year=-1, month=12, day=31, hour=23, minute=59, sec=59, microsec=0)),
            RawDateTime(-1, 12, 31, 23, 59, 59, 0),
        ),
    ],
)
def test_out_of_range_temporal_values(value: T.Value, expected: Any) -> None:
    assert decode(value) == expected


# ---- nulls and unions ------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5, 6, 7, 99, -1, 2**31 - 1])
def test_null_kinds_and_unknown_codes(code: int) -> None:
    got = decode(V(nVal=code))
    assert isinstance(got, NullValue) and got.code == code


def test_empty_union_is_empty() -> None:
    assert decode(V()) is EMPTY
    # an empty geography union, inside a list, next to values
    got = decode(V(lVal=T.NList(values=[V(), V(ggVal=T.Geography()), V(iVal=1)])))
    assert got == [EMPTY, EMPTY, 1]


def test_unknown_value_member_is_skipped() -> None:
    # a Value with a member id this client does not know (field 40, i32) and nothing else
    raw = bytes([8, 0, 40]) + (7).to_bytes(4, "big") + b"\x00"
    assert fast.decode_value(raw) is EMPTY


# ---- containers ------------------------------------------------------------------------------


def test_list_map_set() -> None:
    assert decode(V(lVal=T.NList(values=[V(iVal=1), s("a"), V(nVal=0)]))) == [1, "a", None]
    assert decode(V(lVal=T.NList(values=[]))) == []
    assert decode(V(mVal=T.NMap(kvs={b"k": V(iVal=1), "ключ".encode(): s("v")}))) == {"k": 1, "ключ": "v"}
    got = decode(V(uVal=T.NSet(values={V(iVal=1), s("x")})))
    assert got == {1, "x"} and type(got) is set
    assert decode(V(uVal=T.NSet(values=set()))) == set()


def test_set_with_unhashable_members_becomes_a_set_list() -> None:
    got = decode(
        V(
            uVal=T.NSet(
                values={
                    V(lVal=T.NList(values=[V(iVal=1)])),
                    V(mVal=T.NMap(kvs={b"a": V(iVal=2)})),
                    V(iVal=3),
                }
            )
        )
    )
    assert isinstance(got, SetList)
    assert sorted(map(repr, got)) == sorted(map(repr, [[1], {"a": 2}, 3]))
    nested = decode(V(uVal=T.NSet(values={V(uVal=T.NSet(values={V(iVal=1)}))})))
    assert nested == [{1}] and isinstance(nested, SetList)


def test_set_members_python_takes_as_equal_are_all_kept_in_wire_order() -> None:
    # graphd keeps 1, 1.0 and true apart (and 0, false); a Python set would merge them
    members = [V(iVal=1), V(bVal=True), V(fVal=1.0), V(iVal=0), V(bVal=False)]
    raw = enc_value(V(uVal=T.NSet(values=members)))  # type: ignore[arg-type]  # a list keeps the wire order
    for _ in range(5):  # the same bytes always give the same, wire-ordered members
        got = fast.decode_value(raw)
        assert isinstance(got, SetList)
        assert [(type(m), m) for m in got] == [(int, 1), (bool, True), (float, 1.0), (int, 0), (bool, False)]
    assert decode(V(uVal=T.NSet(values=[V(iVal=1), V(iVal=2)]))) == {1, 2}  # type: ignore[arg-type]


def test_a_set_list_keeps_the_wire_order() -> None:
    members = [V(lVal=T.NList(values=[V(iVal=i)])) for i in (5, 3, 9, 1, 7, 2)]
    raw = enc_value(V(uVal=T.NSet(values=members)))  # type: ignore[arg-type]
    for _ in range(5):
        assert list.__eq__(fast.decode_value(raw), [[5], [3], [9], [1], [7], [2]])


def test_nested_dataset() -> None:
    inner = T.DataSet(column_names=[b"a", b"b"], rows=[T.Row(values=[V(iVal=1), s("x")]), T.Row(values=[])])
    got = decode(V(gVal=inner))
    assert got == DataSetValue(["a", "b"], [[1, "x"], []])


def test_deeply_nested() -> None:
    v = V(iVal=7)
    for _ in range(25):
        v = V(lVal=T.NList(values=[v]))
    got = decode(v)
    for _ in range(25):
        got = got[0]
    assert got == 7


def test_nesting_beyond_the_decoder_limit_is_a_protocol_error() -> None:
    # Value{lVal: NList{values: [Value{...}]}} written by hand, 200 levels deep
    head = bytes([12, 0, 12]) + bytes([15, 0, 1, 12]) + (1).to_bytes(4, "big")
    raw = head * 200 + bytes([10, 0, 3]) + (1).to_bytes(8, "big") + b"\x00" + b"\x00\x00" * 200
    with pytest.raises(ProtocolError):
        fast.decode_value(raw)


# ---- geography -------------------------------------------------------------------------------


def c(x: float, y: float) -> T.Coordinate:
    return T.Coordinate(x=x, y=y)


def test_geography() -> None:
    assert decode(V(ggVal=T.Geography(ptVal=T.Point(coord=c(1.5, -2))))) == Point(1.5, -2)
    line = decode(V(ggVal=T.Geography(lsVal=T.LineString(coordList=[c(0, 0), c(1, 1)]))))
    assert line == LineString([(0, 0), (1, 1)])
    poly = decode(V(ggVal=T.Geography(pgVal=T.Polygon(coordListList=[[c(0, 0), c(1, 0), c(0, 0)]]))))
    assert poly == Polygon([[(0, 0), (1, 0), (0, 0)]])
    assert poly.wkt == "POLYGON((0 0, 1 0, 0 0))"


# ---- graph elements --------------------------------------------------------------------------


def test_vertex() -> None:
    got = decode(V(vVal=vertex(s("v1"), player={b"name": s("Tim"), b"age": V(iVal=42)}, team={})))
    assert got == Node("v1", {"player": {"name": "Tim", "age": 42}, "team": {}})
    assert got.tags == ("player", "team")
    assert decode(V(vVal=T.Vertex(vid=V(iVal=5), tags=[]))) == Node(5)
    # a tag name repeated: the last one wins (as dict() over (name, props) pairs would)
    twice = T.Vertex(vid=s("v2"), tags=[T.Tag(name=b"t", props={b"a": V(iVal=1)}), T.Tag(name=b"u", props={}),
                                        T.Tag(name=b"t", props={b"b": V(iVal=2)})])  # fmt: skip
    got = decode(V(vVal=twice))
    assert got.tags == ("t", "u") and got.properties("t") == {"b": 2}
    # vertices in one reply never share their tag maps
    cells = [V(vVal=vertex(s(f"v{i}"), player={b"n": V(iVal=i)})) for i in range(3)]
    reply = fast.decode_execute_reply(_one_column_reply(*cells), 0)
    nodes = [r[0] for r in reply.success.data.rows]
    assert [n.properties("player") for n in nodes] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert len({id(n._tags) for n in nodes}) == 3


def test_edge_positive_and_negative_types() -> None:
    fwd = decode(
        V(eVal=T.Edge(src=s("a"), dst=s("b"), type=3, name=b"follow", ranking=7, props={b"w": V(fVal=0.5)}))
    )
    assert (fwd.src, fwd.dst, fwd.edge_type) == ("a", "b", 3)
    # graphd sends an edge reached backwards with a negative type and src/dst swapped
    back = decode(
        V(eVal=T.Edge(src=s("b"), dst=s("a"), type=-3, name=b"follow", ranking=7, props={b"w": V(fVal=0.5)}))
    )
    assert (back.src, back.dst, back.edge_type) == ("a", "b", 3)
    assert back == fwd
    assert fwd == Relationship("a", "b", "follow", 7, {"w": 0.5})


def test_path_directions() -> None:
    path = T.Path(
        src=vertex(s("a"), t={}),
        steps=[
            T.Step(dst=vertex(s("b")), type=2, name=b"e", ranking=0, props={}),
            T.Step(dst=vertex(s("c")), type=-2, name=b"e", ranking=1, props={b"p": V(iVal=1)}),
        ],
    )
    got = decode(V(pVal=path))
    assert isinstance(got, Path) and len(got) == 2
    assert [n.vid for n in got.nodes] == ["a", "b", "c"]
    assert got.relationships[0] == Relationship("a", "b", "e", 0, {})
    assert got.relationships[1] == Relationship("c", "b", "e", 1, {"p": 1})  # logical direction
    assert got.reversed_steps() == (False, True)
    assert str(got) == '<("a" :t{})-[:e@0 {}]->("b")<-[:e@1 {p: 1}]-("c")>'
    single = decode(V(pVal=T.Path(src=vertex(s("a")), steps=[])))
    assert len(single) == 0 and single.start_node == single.end_node == Node("a")


# ---- invalid UTF-8 ---------------------------------------------------------------------------

BAD = b"ok\xff\xfe"


def test_invalid_utf8_in_values_never_raises() -> None:
    assert decode(V(sVal=BAD)) == "ok\\xff\\xfe"
    got = decode(V(mVal=T.NMap(kvs={BAD: V(sVal=BAD)})))
    assert got == {"ok\\xff\\xfe": "ok\\xff\\xfe"}
    n = decode(V(vVal=vertex(V(sVal=BAD), **{"t": {BAD: V(iVal=1)}})))
    assert n.vid == "ok\\xff\\xfe" and n.properties("t") == {"ok\\xff\\xfe": 1}
    e = decode(V(eVal=T.Edge(src=s("a"), dst=s("b"), type=1, name=BAD, ranking=0, props={BAD: V(iVal=1)})))
    assert e.edge_name == "ok\\xff\\xfe" and e.props == {"ok\\xff\\xfe": 1}


def _rich_response(bad: bool = False) -> T.ExecutionResponse:
    name = BAD if bad else b"name"
    rows = [
        T.Row(values=[V(iVal=1), V(sVal=name), V(vVal=vertex(s("v"), t={name: V(iVal=2)}))]),
        T.Row(values=[V(nVal=0), V(), V(uVal=T.NSet(values={V(iVal=1)}))]),
    ]
    data = T.DataSet(column_names=[b"a", name, "日本".encode()], rows=rows)
    return T.ExecutionResponse(
        error_code=0, latency_in_us=12, data=data, space_name=b"sp", error_msg=None, comment=b"c"
    )


def test_both_spec_trees_and_the_reply_decoder_agree() -> None:
    raw = reply_bytes(_rich_response())
    safe = wire.decode_struct(raw, 0, fast.EXECUTE_RESULT).success
    utf8 = wire.decode_struct(raw, 0, fast.EXECUTE_RESULT_FAST).success
    best = fast.decode_execute_reply(raw, 0).success
    for r in (safe, utf8, best):
        assert r.data.column_names == ["a", "name", "日本"]
        assert r.data.rows == [[1, "name", Node("v", {"t": {"name": 2}})], [None, EMPTY, {1}]]
        assert (r.error_code, r.latency_in_us, r.space_name, r.comment) == (0, 12, b"sp", b"c")


def test_reply_with_invalid_utf8_in_names_falls_back_to_safe_decoding() -> None:
    raw = reply_bytes(_rich_response(bad=True))
    # thrift's C decoder turns invalid UTF-8 in names into U+FFFD; the fast tree notices
    with pytest.raises(ProtocolError) as info:
        wire.decode_struct(raw, 0, fast.EXECUTE_RESULT_FAST)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    got = fast.decode_execute_reply(raw, 0).success
    assert got.data.column_names[1] == "ok\\xff\\xfe"
    assert got.data.rows[0][1] == "ok\\xff\\xfe"
    assert got.data.rows[0][2].properties("t") == {"ok\\xff\\xfe": 2}


@pytest.mark.parametrize(
    "where", ["cell", "vid", "prop", "list", "set", "map value", "edge src", "nested row"]
)
def test_invalid_utf8_in_value_strings_of_a_reply_falls_back_to_safe_decoding(where: str) -> None:
    bad = V(sVal=BAD)
    cell = {
        "cell": bad,
        "vid": V(vVal=vertex(bad)),
        "prop": V(vVal=vertex(s("v"), t={b"p": bad})),
        "list": V(lVal=T.NList(values=[s("x"), bad])),
        "set": V(uVal=T.NSet(values={bad})),
        "map value": V(mVal=T.NMap(kvs={b"k": bad})),
        "edge src": V(eVal=T.Edge(src=bad, dst=s("b"), type=1, name=b"e", ranking=0, props={})),
        "nested row": V(gVal=T.DataSet(column_names=[b"c"], rows=[T.Row(values=[bad])])),
    }[where]
    raw = _one_column_reply(cell)
    # the fast tree (strings decoded by C, lossy) notices the U+FFFD it produced ...
    with pytest.raises(ProtocolError) as info:
        wire.decode_struct(raw, 0, fast.EXECUTE_RESULT_FAST)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    # ... and the reply decoder gives the same value as the safe tree: the bytes stay visible
    got = fast.decode_execute_reply(raw, 0).success.data.rows[0][0]
    assert got == decode(cell)
    assert "xff" in repr(got) and "\ufffd" not in repr(got)


def test_genuine_replacement_character_in_a_value_survives_the_second_pass() -> None:
    text = "caf\ufffd \u65e5\u672c"
    row = T.Row(values=[V(sVal=text.encode()), V(sVal="\u65e5".encode())])
    data = T.DataSet(column_names=[b"c", b"d"], rows=[row])
    raw = reply_bytes(T.ExecutionResponse(error_code=0, latency_in_us=1, data=data))
    assert fast.decode_execute_reply(raw, 0).success.data.rows == [[text, "\u65e5"]]


def test_remembered_property_names_are_bounded_and_never_hold_a_replacement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fast, "_CLEAN_NAMES", set())
    monkeypatch.setattr(fast, "_known_clean", fast._CLEAN_NAMES.issuperset)
    monkeypatch.setattr(fast, "_CLEAN_NAMES_MAX", 10)
    cells = [V(vVal=vertex(s(f"v{i}"), t={f"p{i}".encode(): V(iVal=i)})) for i in range(30)]
    got = fast.decode_execute_reply(_one_column_reply(*cells), 0).success.data.rows
    assert [r[0].properties("t") for r in got] == [{f"p{i}": i} for i in range(30)]
    assert 0 < len(fast._CLEAN_NAMES) <= 10  # stops growing at the bound
    # a remembered name does not excuse a bad one next to it
    bad = V(vVal=vertex(s("v"), t={b"p0": V(iVal=0), BAD: V(iVal=1)}))
    node = fast.decode_execute_reply(_one_column_reply(bad), 0).success.data.rows[0][0]
    assert node.properties("t") == {"p0": 0, "ok\\xff\\xfe": 1}
    assert not any("\ufffd" in n for n in fast._CLEAN_NAMES)


def test_genuine_replacement_character_in_names_survives_the_second_pass() -> None:
    name = "a\ufffdb".encode()
    data = T.DataSet(column_names=[name], rows=[T.Row(values=[V(mVal=T.NMap(kvs={name: V(sVal=name)}))])])
    raw = reply_bytes(T.ExecutionResponse(error_code=0, latency_in_us=1, data=data))
    got = fast.decode_execute_reply(raw, 0).success.data
    assert got.column_names == ["a\ufffdb"]
    assert got.rows == [[{"a\ufffdb": "a\ufffdb"}]]


@pytest.mark.parametrize("where", ["column", "map key", "tag", "prop", "edge", "edge prop", "step", "nested"])
def test_every_name_position_is_checked(where: str) -> None:
    bad = BAD
    vert = vertex(s("v"), **({"t": {bad: V(iVal=1)}} if where == "prop" else {}))
    if where == "tag":
        vert = T.Vertex(vid=s("v"), tags=[T.Tag(name=bad, props={})])
    cell = {
        "column": V(iVal=1),
        "map key": V(mVal=T.NMap(kvs={bad: V(iVal=1)})),
        "tag": V(vVal=vert),
        "prop": V(vVal=vert),
        "edge": V(eVal=T.Edge(src=s("a"), dst=s("b"), type=1, name=bad, ranking=0, props={})),
        "edge prop": V(
            eVal=T.Edge(src=s("a"), dst=s("b"), type=1, name=b"e", ranking=0, props={bad: V(iVal=1)})
        ),
        "step": V(
            pVal=T.Path(
                src=vertex(s("a")), steps=[T.Step(dst=vertex(s("b")), type=1, name=bad, ranking=0, props={})]
            )
        ),
        "nested": V(gVal=T.DataSet(column_names=[bad], rows=[T.Row(values=[V(iVal=1)])])),
    }[where]
    cols = [bad if where == "column" else b"c"]
    raw = reply_bytes(
        T.ExecutionResponse(
            error_code=0, latency_in_us=1, data=T.DataSet(column_names=cols, rows=[T.Row(values=[cell])])
        )
    )
    if where != "column":  # the reply's own column names are checked by decode_execute_reply
        with pytest.raises(ProtocolError):
            wire.decode_struct(raw, 0, fast.EXECUTE_RESULT_FAST)
    got = fast.decode_execute_reply(raw, 0).success.data
    text = " ".join(got.column_names) + " " + " ".join(format_value(c) for r in got.rows for c in r)
    assert "ok\\xff\\xfe" in text and "\ufffd" not in text


# ---- the response struct ---------------------------------------------------------------------


def test_response_without_data_and_with_plan() -> None:
    plan = T.PlanDescription(
        plan_node_descs=[
            T.PlanNodeDescription(
                name=b"Project", id=1, output_var=b"__Project_1", description=[T.Pair(key=b"k", value=b"v")],
                profiles=[
                    T.ProfilingStats(rows=1, exec_duration_in_us=2, total_duration_in_us=3, other_stats={})
                ],
                branch_info=None, dependencies=[0],
            )
        ],
        node_index_map={1: 0}, format=b"row", optimize_time_in_us=5,
    )  # fmt: skip
    resp = T.ExecutionResponse(error_code=-1005, latency_in_us=9, error_msg=b"boom", plan_desc=plan)
    got = fast.decode_execute_reply(reply_bytes(resp), 0).success
    assert got.data is None and got.error_code == -1005 and got.error_msg == b"boom"
    assert isinstance(got.plan_desc, ttypes.PlanDescription)
    assert got.plan_desc.plan_node_descs[0].name == b"Project"
    assert got.space_name is None and got.comment is None


def test_reply_at_an_offset_and_unknown_fields() -> None:
    body = reply_bytes(T.ExecutionResponse(error_code=0, latency_in_us=1))
    # add an unknown i32 field 99 to the ExecutionResponse: insert before its STOP byte
    patched = body[:-2] + bytes([8, 0, 99]) + (5).to_bytes(4, "big") + body[-2:]
    got = fast.decode_execute_reply(b"xxxx" + patched, 4).success
    assert (got.error_code, got.latency_in_us) == (0, 1)


def test_missing_success_field() -> None:
    got = fast.decode_execute_reply(b"\x00", 0)
    assert got.success is None


@pytest.mark.parametrize("cut", [1, 5, 20, 60])
def test_truncated_reply_is_a_protocol_error(cut: int) -> None:
    raw = reply_bytes(_rich_response())
    with pytest.raises(ProtocolError):
        fast.decode_execute_reply(raw[:-cut], 0)


def test_wrong_wire_type_for_a_value_is_skipped_not_crashing() -> None:
    # Value field 3 (iVal) sent as a string: the decoder skips it, leaving an empty value
    raw = bytes([11, 0, 3]) + (2).to_bytes(4, "big") + b"hi" + b"\x00"
    assert fast.decode_value(raw) is EMPTY


# ---- GC pause --------------------------------------------------------------------------------


def test_gc_paused_is_reentrant_and_restores_state() -> None:
    assert gc.isenabled()
    with fast.gc_paused():
        assert not gc.isenabled()
        with fast.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with fast.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # was disabled before: stays disabled
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), fast.gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_gc_is_resumed_when_a_large_reply_fails_to_decode() -> None:
    large = _one_column_reply(*[V(sVal=b"x" * 100)] * (3 * fast.GC_PAUSE_THRESHOLD // 100))
    truncated = large[: len(large) // 2]
    assert len(truncated) >= fast.GC_PAUSE_THRESHOLD  # big enough to be decoded with the GC paused
    with pytest.raises(ProtocolError):
        fast.decode_execute_reply(truncated, 0)
    assert gc.isenabled()


def test_decoding_keeps_no_reference_to_the_reply_and_leaves_no_garbage() -> None:
    raw = reply_bytes(_rich_response())
    reader = wire.Reader()
    before = sys.getrefcount(raw)
    fast.read_execute_reply(reader, raw, 0)
    assert sys.getrefcount(raw) == before  # the reader let the reply go
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            fast.read_execute_reply(reader, raw, 0)
            fast.decode_execute_reply(raw, 0)  # a one-off reader
            wire.decode_struct(raw, 0, fast.EXECUTE_RESULT)
        assert gc.collect() == 0  # no reference cycles: reference counting freed everything
    finally:
        gc.enable()


def test_a_reader_reads_bytearray_frames_and_recovers_after_a_malformed_one() -> None:
    raw = reply_bytes(_rich_response())
    reader = wire.Reader()
    with pytest.raises(ProtocolError):
        fast.read_execute_reply(reader, raw[: len(raw) // 2], 0)
    got = fast.read_execute_reply(reader, bytearray(raw), 0).success
    assert got.data.column_names == ["a", "name", "日本"]


def test_large_replies_are_decoded_with_gc_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real = wire.Reader.decode

    def spy(reader: wire.Reader, buf: bytes, pos: int, spec: Any) -> Any:
        seen.append(gc.isenabled())
        return real(reader, buf, pos, spec)

    monkeypatch.setattr(wire.Reader, "decode", spy)
    small = reply_bytes(T.ExecutionResponse(error_code=0, latency_in_us=1))
    rows = [T.Row(values=[V(sVal=b"x" * 100)]) for _ in range(fast.GC_PAUSE_THRESHOLD // 100 + 1)]
    large = reply_bytes(
        T.ExecutionResponse(error_code=0, latency_in_us=1, data=T.DataSet(column_names=[b"c"], rows=rows))
    )
    fast.decode_execute_reply(small, 0)
    got = fast.decode_execute_reply(large, 0)
    assert seen == [True, False]
    assert gc.isenabled()
    assert len(got.success.data.rows) == len(rows)


# ---- plain replies -----------------------------------------------------------------------------


def _decoded_rows(*cells: T.Value) -> fast.DecodedResponse:
    reply = fast.decode_execute_reply(_one_column_reply(*cells), 0).success
    assert reply is not None
    return reply


def test_a_reply_of_primitives_and_graph_elements_is_plain() -> None:
    props = {b"name": s("Tim"), b"age": V(iVal=42), b"score": V(fVal=0.5), b"ok": V(bVal=True)}
    props[b"gone"] = V(nVal=0)
    edge = T.Edge(src=V(iVal=1), dst=V(iVal=2), type=1, name=b"e", ranking=0, props={b"w": V(iVal=3)})
    step = T.Step(dst=vertex(s("b")), type=1, name=b"e", ranking=0, props={})
    path = T.Path(src=vertex(s("a")), steps=[step])
    node = V(vVal=vertex(s("v"), t=props))
    reply = _decoded_rows(s("x"), V(iVal=1), V(nVal=0), node, V(eVal=edge), V(pVal=path))
    assert reply.plain
    nodes = [r[0] for r in reply.data.rows[3:4]]
    assert nodes[0].properties("t") == {"name": "Tim", "age": 42, "score": 0.5, "ok": True, "gone": None}


@pytest.mark.parametrize(
    "complex_prop",
    [V(dVal=T.Date(year=2020, month=1, day=2)), V(), V(nVal=1), V(lVal=T.NList(values=[V(iVal=1)])),
     V(mVal=T.NMap(kvs={b"k": V(iVal=1)})), V(uVal=T.NSet(values={V(iVal=1)})),
     V(duVal=T.Duration(seconds=1, microseconds=0, months=0)),
     V(ggVal=T.Geography(ptVal=T.Point(coord=T.Coordinate(x=1.0, y=2.0))))],
    ids=["date", "EMPTY", "NaN", "list", "map", "set", "duration", "geography"],
)  # fmt: skip
def test_any_other_value_makes_a_reply_not_plain_and_is_still_converted(complex_prop: T.Value) -> None:
    cells = [V(vVal=vertex(s(f"v{i}"), t={b"p": complex_prop if i == 2 else V(iVal=i)})) for i in range(4)]
    reply = _decoded_rows(*cells)
    assert not reply.plain
    rs = ResultSet.from_response(reply, statement=None, host=None, elapsed_us=0)
    got = [row["c"]["properties"]["t"]["p"] for row in rs.as_primitive_by_row()]
    assert got[:2] + got[3:] == [0, 1, 3]
    assert got[2] == to_primitive(decode(complex_prop))
    # the same vertex as a vid is seen too
    assert not _decoded_rows(V(vVal=T.Vertex(vid=complex_prop, tags=[]))).plain


def test_plain_conversion_equals_the_checked_one() -> None:
    # one tag (the usual case) and two tags take different paths in the plain conversion
    cells = [V(vVal=vertex(s(f"v{i}"), t={b"a": V(iVal=i), b"b": s("x")}, **({"u": {}} if i % 2 else {})))
             for i in range(50)]  # fmt: skip
    reply = _decoded_rows(*cells)
    assert reply.plain
    plain = ResultSet.from_response(reply, statement=None, host=None, elapsed_us=0)
    checked = ResultSet(["c"], reply.data.rows)  # built by hand: never assumed plain
    assert plain.as_primitive_by_row() == checked.as_primitive_by_row()
    assert plain.as_primitive_by_column() == checked.as_primitive_by_column()
    first = plain.as_primitive_by_row()[0]["c"]
    first["properties"]["t"]["a"] = "changed"  # a copy: the decoded vertex is untouched
    assert plain[0][0].as_node().properties("t")["a"] == 0


def test_a_complex_value_counted_elsewhere_meanwhile_makes_a_reply_not_plain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = wire.Reader.decode

    def with_concurrent_decode(reader: wire.Reader, buf: bytes, pos: int, spec: Any) -> Any:
        out = real(reader, buf, pos, spec)
        fast._note_complex()  # as another thread's decode of a date would
        return out

    monkeypatch.setattr(wire.Reader, "decode", with_concurrent_decode)
    assert not _decoded_rows(V(vVal=vertex(s("v"), t={b"a": V(iVal=1)}))).plain


@pytest.mark.parametrize("where", ["prop", "vid", "edge src", "edge prop"])
def test_a_graph_element_nested_in_a_graph_element_makes_a_reply_not_plain(where: str) -> None:
    # graphd never nests them so, but a reply that does must still convert to primitives
    inner = V(vVal=vertex(s("in"), t={b"a": V(iVal=1)}))
    cell = {
        "prop": V(vVal=vertex(s("v"), t={b"p": inner})),
        "vid": V(vVal=T.Vertex(vid=inner, tags=[])),
        "edge src": V(eVal=T.Edge(src=inner, dst=s("b"), type=1, name=b"e", ranking=0, props={})),
        "edge prop": V(eVal=T.Edge(src=s("a"), dst=s("b"), type=1, name=b"e", ranking=0,
                                   props={b"p": inner})),  # fmt: skip
    }[where]
    reply = _decoded_rows(cell, cell)
    assert not reply.plain
    rs = ResultSet.from_response(reply, statement=None, host=None, elapsed_us=0)
    converted = rs.as_primitive_by_row()[0]["c"]
    assert converted == to_primitive(decode(cell))
    assert "Node" not in repr(converted)  # nothing but primitives
