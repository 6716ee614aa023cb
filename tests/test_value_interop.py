"""Interop with nebula3-python 3.8.3's own generated code, in both directions.

1. Replies encoded by nebula3 (its ``nebula3.fbthrift`` binary protocol) decode in nebula_sync's
   fast path to the same values nebula3's own decoder and wrappers give.
2. What nebula_sync encodes (``to_value`` → our binary encoding of ``ExecuteWithParameterArgs``)
   decodes in nebula3's generated code to the same values.

Values are compared by meaning through a canonical form built independently on each side: from
nebula3's ``ValueWrapper`` API, and from nebula_sync's decoded Python values.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

nebula3 = pytest.importorskip("nebula3")

from nebula3.common import ttypes as N  # noqa: E402
from nebula3.data.DataObject import ValueWrapper as N3Wrapper  # noqa: E402
from nebula3.data.ResultSet import ResultSet as N3ResultSet  # noqa: E402
from nebula3.fbthrift.protocol.TBinaryProtocol import TBinaryProtocolFactory  # noqa: E402
from nebula3.fbthrift.protocol.TCompactProtocol import TCompactProtocolFactory  # noqa: E402
from nebula3.fbthrift.util.Serializer import deserialize, serialize  # noqa: E402
from nebula3.graph import ttypes as NG  # noqa: E402
from nebula3.graph.GraphService import executeWithParameter_args, executeWithParameter_result  # noqa: E402

from nebula_sync._params import from_value, to_parameter_map, to_value  # noqa: E402
from nebula_sync._result import ResultSet  # noqa: E402
from nebula_sync._thrift import fast, service, wire  # noqa: E402
from nebula_sync._values import (  # noqa: E402
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
)

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
UTC = dt.timezone.utc


# ---- canonical meaning, nebula3 side (its wrapper API only) ------------------------------------


def _f(x: float) -> Any:
    return ("float", "nan" if math.isnan(x) else x.hex())


def _sorted(items: list[Any]) -> list[Any]:
    return sorted(items, key=repr)


def n3_node(node: Any) -> Any:
    tags = tuple((t, {k: n3_meaning(w) for k, w in node.properties(t).items()}) for t in node.tags())
    return ("vertex", n3_meaning(node.get_id()), tags)


def n3_edge(rel: Any) -> Any:
    props = {k: n3_meaning(w) for k, w in rel.properties().items()}
    return (
        "edge",
        n3_meaning(rel.start_vertex_id()),
        n3_meaning(rel.end_vertex_id()),
        rel.edge_name(),
        rel.ranking(),
        props,
    )


def n3_meaning(w: Any) -> Any:
    """Meaning of a nebula3 ValueWrapper, through nebula3's own accessors."""
    if w.is_empty():
        return ("empty",)
    if w.is_null():
        return ("null", w.as_null()._type)
    if w.is_bool():
        return ("bool", w.as_bool())
    if w.is_int():
        return ("int", w.as_int())
    if w.is_double():
        return _f(w.as_double())
    if w.is_string():
        return ("str", w.as_string())
    if w.is_list():
        return ("list", [n3_meaning(x) for x in w.as_list()])
    if w.is_set():
        return ("set", _sorted([n3_meaning(x) for x in w.as_set()]))
    if w.is_map():
        return ("map", {k: n3_meaning(v) for k, v in w.as_map().items()})
    if w.is_time():
        t = w.as_time()
        return ("time", t.get_hour(), t.get_minute(), t.get_sec(), t.get_microsec())
    if w.is_date():
        d = w.as_date()
        return ("date", d.get_year(), d.get_month(), d.get_day())
    if w.is_datetime():
        d = w.as_datetime()
        return (
            "datetime",
            d.get_year(),
            d.get_month(),
            d.get_day(),
            d.get_hour(),
            d.get_minute(),
            d.get_sec(),
            d.get_microsec(),
        )
    if w.is_vertex():
        return n3_node(w.as_node())
    if w.is_edge():
        return n3_edge(w.as_relationship())
    if w.is_path():
        p = w.as_path()
        return ("path", [n3_node(n) for n in p.nodes()], [n3_edge(r) for r in p.relationships()])
    if w.is_geography():
        # nebula3 3.8.3's PointWrapper/LineStringWrapper are handed the whole Point/LineString struct
        # instead of coordinates, so read its decoded geography structs directly
        g = w.get_value().get_ggVal()
        if g.getType() == N.Geography.PTVAL:
            c = g.get_ptVal().coord
            return ("point", _f(c.x), _f(c.y))
        if g.getType() == N.Geography.LSVAL:
            return ("line", [(_f(c.x), _f(c.y)) for c in g.get_lsVal().coordList])
        rings = g.get_pgVal().coordListList
        return ("polygon", [[(_f(c.x), _f(c.y)) for c in ring] for ring in rings])
    if w.is_duration():
        d = w.as_duration()
        return ("duration", d.get_months(), d.get_seconds(), d.get_microseconds())
    raw = w.get_value()
    if raw.getType() == N.Value.GVAL:  # nebula3's wrapper has no data set accessor
        ds = raw.get_gVal()
        rows = [[n3_meaning(N3Wrapper(v)) for v in r.values] for r in ds.rows]
        return ("dataset", [c.decode() for c in ds.column_names], rows)
    raise AssertionError(f"unhandled nebula3 value {raw!r}")


# ---- canonical meaning, nebula_sync side (decoded Python values) --------------------------------


def our_node(n: Node) -> Any:
    tags = tuple((t, {k: our_meaning(v) for k, v in p.items()}) for t, p in n.tag_properties.items())
    return ("vertex", our_meaning(n.vid), tags)


def our_edge(r: Relationship) -> Any:
    props = {k: our_meaning(v) for k, v in r.props.items()}
    return ("edge", our_meaning(r.src), our_meaning(r.dst), r.edge_name, r.ranking, props)


def our_meaning(v: Any) -> Any:
    if v is EMPTY:
        return ("empty",)
    if v is None:
        return ("null", 0)
    if isinstance(v, NullValue):
        return ("null", v.code)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, float):
        return _f(v)
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, (set, SetList)):
        return ("set", _sorted([our_meaning(x) for x in v]))
    if isinstance(v, list):
        return ("list", [our_meaning(x) for x in v])
    if isinstance(v, dict):
        return ("map", {k: our_meaning(x) for k, x in v.items()})
    if isinstance(v, (dt.time, RawTime)):
        if isinstance(v, dt.time):
            assert v.tzinfo is UTC
            return ("time", v.hour, v.minute, v.second, v.microsecond)
        return ("time", v.hour, v.minute, v.sec, v.microsec)
    if isinstance(v, dt.datetime):
        assert v.tzinfo is UTC
        return ("datetime", v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)
    if isinstance(v, RawDateTime):
        return ("datetime", v.year, v.month, v.day, v.hour, v.minute, v.sec, v.microsec)
    if isinstance(v, (dt.date, RawDate)):
        return ("date", v.year, v.month, v.day)
    if isinstance(v, Node):
        return our_node(v)
    if isinstance(v, Relationship):
        return our_edge(v)
    if isinstance(v, Path):
        return ("path", [our_node(n) for n in v.nodes], [our_edge(r) for r in v.relationships])
    if isinstance(v, Point):
        return ("point", _f(v.x), _f(v.y))
    if isinstance(v, LineString):
        return ("line", [(_f(x), _f(y)) for x, y in v.coordinates])
    if isinstance(v, Polygon):
        return ("polygon", [[(_f(x), _f(y)) for x, y in ring] for ring in v.rings])
    if isinstance(v, Duration):
        return ("duration", v.months, v.seconds, v.microseconds)
    if isinstance(v, DataSetValue):
        return ("dataset", list(v.column_names), [[our_meaning(x) for x in r] for r in v.rows])
    raise AssertionError(f"unhandled value {v!r}")


# ---- an independent Python → nebula3 Value builder (nebula3's generated classes) ----------------


def n3v(obj: Any) -> N.Value:
    """Build a nebula3 ``Value`` for a test value with nebula3's own generated classes."""
    if obj is EMPTY:
        return N.Value()
    if obj is None:
        return N.Value(nVal=0)
    if isinstance(obj, NullValue):
        return N.Value(nVal=obj.code)
    if isinstance(obj, bool):
        return N.Value(bVal=obj)
    if isinstance(obj, int):
        return N.Value(iVal=obj)
    if isinstance(obj, float):
        return N.Value(fVal=obj)
    if isinstance(obj, str):
        return N.Value(sVal=obj.encode())
    if isinstance(obj, (set, SetList)):
        return N.Value(uVal=N.NSet(values={n3v(x) for x in obj}))
    if isinstance(obj, list):
        return N.Value(lVal=N.NList(values=[n3v(x) for x in obj]))
    if isinstance(obj, dict):
        return N.Value(mVal=N.NMap(kvs={k.encode(): n3v(x) for k, x in obj.items()}))
    if isinstance(obj, dt.datetime):
        return N.Value(
            dtVal=N.DateTime(
                year=obj.year, month=obj.month, day=obj.day, hour=obj.hour, minute=obj.minute,
                sec=obj.second, microsec=obj.microsecond,
            )
        )  # fmt: skip
    if isinstance(obj, dt.date):
        return N.Value(dVal=N.Date(year=obj.year, month=obj.month, day=obj.day))
    if isinstance(obj, dt.time):
        return N.Value(
            tVal=N.Time(hour=obj.hour, minute=obj.minute, sec=obj.second, microsec=obj.microsecond)
        )
    if isinstance(obj, RawDate):
        return N.Value(dVal=N.Date(year=obj.year, month=obj.month, day=obj.day))
    if isinstance(obj, Duration):
        return N.Value(
            duVal=N.Duration(seconds=obj.seconds, microseconds=obj.microseconds, months=obj.months)
        )
    if isinstance(obj, Point):
        return N.Value(ggVal=N.Geography(ptVal=N.Point(coord=N.Coordinate(x=obj.x, y=obj.y))))
    if isinstance(obj, LineString):
        line = N.LineString(coordList=[N.Coordinate(x=x, y=y) for x, y in obj.coordinates])
        return N.Value(ggVal=N.Geography(lsVal=line))
    if isinstance(obj, Polygon):
        rings = [[N.Coordinate(x=x, y=y) for x, y in r] for r in obj.rings]
        return N.Value(ggVal=N.Geography(pgVal=N.Polygon(coordListList=rings)))
    if isinstance(obj, Node):
        return N.Value(vVal=n3_vertex(obj))
    if isinstance(obj, tuple) and obj and obj[0] == "edge":  # ("edge", src, dst, type, name, rank, props)
        _, src, dst, etype, name, rank, props = obj
        props = {k.encode(): n3v(x) for k, x in props.items()}
        return N.Value(
            eVal=N.Edge(src=n3v(src), dst=n3v(dst), type=etype, name=name.encode(), ranking=rank, props=props)
        )
    if (
        isinstance(obj, tuple) and obj and obj[0] == "path"
    ):  # ("path", src node, [(node, type, name, rank, props)])
        steps = [
            N.Step(
                dst=n3_vertex(n), type=etype, name=name.encode(), ranking=rank,
                props={k.encode(): n3v(x) for k, x in props.items()},
            )
            for n, etype, name, rank, props in obj[2]
        ]  # fmt: skip
        return N.Value(pVal=N.Path(src=n3_vertex(obj[1]), steps=steps))
    if isinstance(obj, DataSetValue):
        rows = [N.Row(values=[n3v(x) for x in r]) for r in obj.rows]
        return N.Value(gVal=N.DataSet(column_names=[c.encode() for c in obj.column_names], rows=rows))
    raise AssertionError(f"no nebula3 builder for {obj!r}")


def n3_vertex(n: Node) -> N.Vertex:
    tags = [
        N.Tag(name=t.encode(), props={k.encode(): n3v(x) for k, x in p.items()})
        for t, p in n.tag_properties.items()
    ]
    return N.Vertex(vid=n3v(n.vid), tags=tags)


# ---- the values -------------------------------------------------------------------------------

PLAYER = Node("player100", {"player": {"name": "Tim Duncan", "age": 42}, "bachelor": {"speciality": "psy"}})
TEAM = Node("team204", {"team": {"name": "Spurs"}})
NO_TAGS = Node(7)

EVERY_KIND: list[tuple[str, Any]] = [
    ("empty", EMPTY),
    ("null", None),
    *[(f"null-{k}", NullValue(k)) for k in range(1, 8)],
    ("null-unknown", NullValue(99)),
    ("bool", True),
    ("bool-false", False),
    ("int-min", I64_MIN),
    ("int-max", I64_MAX),
    ("int-zero", 0),
    ("double", 0.1 + 0.2),
    ("double-tiny", 5e-324),
    ("double-max", 1.7976931348623157e308),
    ("double-neg-zero", -0.0),
    ("double-nan", float("nan")),
    ("double-inf", float("inf")),
    ("double-ninf", float("-inf")),
    ("string", "plain"),
    ("string-empty", ""),
    ("string-unicode", "héllo 日本語 🚀 \u0000 \U0010ffff"),
    ("date", dt.date(2024, 2, 29)),
    ("date-min", dt.date(1, 1, 1)),
    ("date-out-of-range", RawDate(-2000, 1, 1)),
    ("time", dt.time(23, 59, 59, 999999)),
    ("datetime", dt.datetime(2024, 1, 2, 3, 4, 5, 6)),
    ("vertex", PLAYER),
    ("vertex-no-tags", NO_TAGS),
    ("edge", ("edge", "player100", "team204", 3, "serve", 0, {"start_year": 1997, "end_year": 2016})),
    ("edge-reversed", ("edge", "team204", "player100", -3, "serve", 5, {})),
    (
        "path",
        ("path", PLAYER, [(TEAM, 3, "serve", 0, {"y": 1997}), (Node("player101"), -4, "teammate", 2, {})]),
    ),
    ("list", [1, "a", None, [2.5, [True]]]),
    ("map", {"a": 1, "b": {"c": [None, "d"]}, "ключ": EMPTY}),
    ("set", {1, 2, "x"}),
    ("set-unhashable", SetList([[1, 2], {"k": 1}])),
    ("dataset", DataSetValue(["x", "y"], [[1, "a"], [None, [PLAYER]]])),
    ("point", Point(-122.4, 37.7)),
    ("line", LineString([(0, 0), (1.5, -2.25), (1e-10, 1e10)])),
    ("polygon", Polygon([[(0, 0), (4, 0), (4, 4), (0, 0)], [(1, 1), (2, 1), (1, 1)]])),
    ("duration", Duration(14, 3 * 86400 + 5, 123456)),
    ("duration-negative", Duration(-1, -5, -7)),
]


def n3_reply(values: list[Any], protocol: Any) -> bytes:
    rows = [N.Row(values=[n3v(v) for v in values])]  # one row, every value a column
    data = N.DataSet(column_names=[f"c{i}".encode() for i in range(len(values))], rows=rows)
    resp = NG.ExecutionResponse(error_code=0, latency_in_us=42, data=data, space_name=b"nba", comment=b"hi")
    return serialize(protocol, executeWithParameter_result(success=resp))  # type: ignore[no-any-return]


def n3_decode(raw: bytes, protocol: Any) -> list[Any]:
    result = deserialize(protocol, raw, executeWithParameter_result())
    rs = N3ResultSet(result.success, 0)
    return [n3_meaning(w) for w in rs.row_values(0)]


def our_decode(raw: bytes) -> list[Any]:
    resp = fast.decode_execute_reply(raw, 0).success
    rs = ResultSet.from_response(resp, statement=None, host=None, elapsed_us=0)
    return [our_meaning(w.cast()) for w in rs.one()]


# ---- direction 1: nebula3 encodes, nebula_sync decodes ----------------------------------------


@pytest.mark.parametrize(("name", "value"), EVERY_KIND, ids=[n for n, _ in EVERY_KIND])
def test_nebula3_encoded_value_decodes_the_same(name: str, value: Any) -> None:
    raw = n3_reply([value], TBinaryProtocolFactory())
    assert our_decode(raw) == n3_decode(raw, TBinaryProtocolFactory())


def test_every_kind_in_one_reply() -> None:
    raw = n3_reply([v for _, v in EVERY_KIND], TBinaryProtocolFactory())
    ours = our_decode(raw)
    theirs = n3_decode(raw, TBinaryProtocolFactory())
    assert ours == theirs
    resp = fast.decode_execute_reply(raw, 0).success
    assert (resp.error_code, resp.latency_in_us, resp.space_name, resp.comment) == (0, 42, b"nba", b"hi")


def test_all_seventeen_value_members_are_covered() -> None:
    members = set()
    for _, v in EVERY_KIND:
        value = n3v(v)
        members.add(value.getType())
    assert members >= set(range(1, 18))  # nVal .. duVal
    assert N.Value.__EMPTY__ in members


def test_negative_edge_type_is_presented_in_its_logical_direction() -> None:
    raw = n3_reply([("edge", "b", "a", -3, "e", 0, {})], TBinaryProtocolFactory())
    rel = fast.decode_execute_reply(raw, 0).success.data.rows[0][0]
    assert (rel.src, rel.dst) == ("a", "b")  # as nebula3's start_vertex_id / end_vertex_id
    theirs = n3_decode(raw, TBinaryProtocolFactory())[0]
    assert theirs[1:3] == (("str", "a"), ("str", "b"))


def test_same_meaning_as_nebula3_natural_compact_decoding() -> None:
    # nebula3 talks compact to graphd; its compact decode of the same reply means the same too
    values = [v for _, v in EVERY_KIND]
    compact = n3_decode(n3_reply(values, TCompactProtocolFactory()), TCompactProtocolFactory())
    assert our_decode(n3_reply(values, TBinaryProtocolFactory())) == compact


def test_primitives_agree_with_nebula3_as_primitive_for_plain_values() -> None:
    values = [1, "a", True, None, 1.5, [1, [2]], {"k": [None]}]
    raw = n3_reply(values, TBinaryProtocolFactory())
    result = deserialize(TBinaryProtocolFactory(), raw, executeWithParameter_result())
    theirs = N3ResultSet(result.success, 0).as_primitive()
    resp = fast.decode_execute_reply(raw, 0).success
    ours = ResultSet.from_response(resp, statement=None, host=None, elapsed_us=0).as_primitive_by_row()
    assert ours == theirs


# ---- direction 2: nebula_sync encodes, nebula3 decodes ----------------------------------------


def our_args(params: dict[str, Any]) -> bytes:
    args = service.ExecuteWithParameterArgs(
        sessionId=7, stmt=b"RETURN $p", parameterMap=to_parameter_map(params)
    )
    return wire.encode_struct(
        args, [service.ExecuteWithParameterArgs, service.ExecuteWithParameterArgs.thrift_spec]
    )


def n3_params(raw: bytes) -> dict[str, Any]:
    args = deserialize(TBinaryProtocolFactory(), raw, executeWithParameter_args())
    assert args.sessionId == 7 and args.stmt == b"RETURN $p"
    return {k.decode(): n3_meaning(N3Wrapper(v)) for k, v in args.parameterMap.items()}


def _python(value: Any) -> Any:
    """The Python value nebula_sync would hand back for a test value."""
    if isinstance(value, tuple) and value and value[0] in ("edge", "path"):
        return from_value(_n3_to_ours(n3v(value)))
    return value


def _n3_to_ours(v: N.Value) -> Any:
    # nebula3 → bytes → our ttypes.Value, only to build graph values the tests describe as tuples
    raw = serialize(TBinaryProtocolFactory(), v)
    from nebula_sync._thrift import ttypes

    return wire.decode_struct(raw, 0, [ttypes.Value, ttypes.Value.thrift_spec])


@pytest.mark.parametrize(("name", "value"), EVERY_KIND, ids=[n for n, _ in EVERY_KIND])
def test_nebula_sync_encoded_parameters_decode_the_same_in_nebula3(name: str, value: Any) -> None:
    python = _python(value)
    expected = our_meaning(from_value(to_value(python)))
    assert n3_params(our_args({"p": python})) == {"p": expected}


def test_temporal_parameters_are_utc_and_not_truncated() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    got = n3_params(our_args({"d": dt.datetime(2024, 1, 1, 0, 30, tzinfo=cet), "t": dt.time(12, tzinfo=cet)}))
    assert got["d"] == ("datetime", 2023, 12, 31, 23, 30, 0, 0)
    assert got["t"] == ("time", 11, 0, 0, 0)


# ---- property-based, both directions ----------------------------------------------------------

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(I64_MIN, I64_MAX)
    | st.floats()
    | st.text()
    | st.dates()
    | st.times()
    | st.datetimes()
    | st.sampled_from([NullValue(k) for k in (1, 2, 3, 4, 5, 6, 7, 50)] + [EMPTY])
    | st.builds(
        Duration,
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**40), 2**40),
        st.integers(-999_999, 999_999),
    )
    | st.builds(Point, st.floats(), st.floats())
)
_key = st.text(max_size=6)
_value = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_key, inner, max_size=4)
        | st.builds(
            Node,
            st.integers(I64_MIN, I64_MAX) | st.text(max_size=8),
            st.dictionaries(
                st.text(min_size=1, max_size=5), st.dictionaries(_key, inner, max_size=3), max_size=2
            ),
        )
    ),
    max_leaves=10,
)


def _normalise_times(v: Any) -> Any:
    """Naive times and datetimes are UTC; the decoded values carry ``tzinfo=UTC``."""
    if isinstance(v, dt.datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    if isinstance(v, dt.time) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    if isinstance(v, list):
        return [_normalise_times(x) for x in v]
    if isinstance(v, dict):
        return {k: _normalise_times(x) for k, x in v.items()}
    if isinstance(v, Node):
        return Node(
            _normalise_times(v.vid), {t: _normalise_times(dict(p)) for t, p in v.tag_properties.items()}
        )
    return v


@settings(max_examples=200, deadline=None)
@given(st.lists(_value, min_size=1, max_size=4))
def test_property_nebula3_encoded_rows_decode_the_same(values: list[Any]) -> None:
    raw = n3_reply(values, TBinaryProtocolFactory())
    ours = our_decode(raw)
    assert ours == n3_decode(raw, TBinaryProtocolFactory())
    assert ours == [our_meaning(_normalise_times(v)) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), _value, max_size=4))
def test_property_nebula_sync_parameters_decode_the_same_in_nebula3(params: dict[str, Any]) -> None:
    theirs = n3_params(our_args(params))
    assert theirs == {k: our_meaning(_normalise_times(v)) for k, v in params.items()}
