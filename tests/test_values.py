"""Graph value types, nGQL text, primitives and ValueWrapper (nebula_sync._values)."""

from __future__ import annotations

import datetime as dt
import math
import pickle

import attrs
import pytest

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
    ValueWrapper,
    format_value,
    to_primitive,
)

UTC = dt.timezone.utc


def node(vid: object, **tags: dict[str, object]) -> Node:
    return Node(vid, tags)


# ---- NullValue -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (0, "__NULL__"),
        (1, "NaN"),
        (2, "BAD_DATA"),
        (3, "BAD_TYPE"),
        (4, "ERR_OVERFLOW"),
        (5, "UNKNOWN_PROP"),
        (6, "DIV_BY_ZERO"),
        (7, "OUT_OF_RANGE"),
        (42, "UNKNOWN(42)"),
        (None, "EMPTY"),
    ],
)
def test_null_kinds(code: int | None, kind: str) -> None:
    n = NullValue(code)
    assert n.kind == kind
    assert n.code == code
    assert not n
    assert n == NullValue(code)
    if code is None or code <= 7:
        assert n is NullValue(code)  # known kinds are interned
    assert n != None  # noqa: E711 - a null kind is not Python's None
    assert pickle.loads(pickle.dumps(n)) == n
    if code is not None and code <= 7:
        assert NullValue(kind) is n


def test_unknown_null_codes_do_not_grow_the_intern_table_forever() -> None:
    many = [NullValue(1000 + i) for i in range(2000)]
    assert len(NullValue._interned) <= 256
    assert NullValue(2999) == many[-1] and NullValue(2999).kind == "UNKNOWN(2999)"
    assert NullValue(3) is NullValue(3)


def test_null_value_is_immutable_and_validated() -> None:
    with pytest.raises(AttributeError):
        NullValue(3).code = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown null kind"):
        NullValue("NOPE")
    with pytest.raises(TypeError):
        NullValue(1.5)  # type: ignore[arg-type]
    assert EMPTY.is_empty and not NullValue(2).is_empty
    assert str(EMPTY) == "__EMPTY__"
    assert str(NullValue(6)) == "DIV_BY_ZERO"
    assert {NullValue(1), NullValue(1), NullValue(2)} == {NullValue(1), NullValue(2)}


# ---- Node / Relationship / Path ----------------------------------------------------------------


def test_node_accessors() -> None:
    n = node("p1", player={"name": "Tim", "age": 42}, bachelor={"speciality": "psychology"})
    assert n.vid == "p1"
    assert n.tags == ("player", "bachelor") == n.labels
    assert n.has_tag("player") and not n.has_tag("team")
    assert n.properties("player") == {"name": "Tim", "age": 42}
    assert n.prop_names("bachelor") == ["speciality"]
    assert n.prop_values("player") == ["Tim", 42]
    with pytest.raises(KeyError, match="2 tags"):
        n.properties()
    with pytest.raises(KeyError, match="no tag .*team"):
        n.properties("team")
    single = node(7, t={"k": 1})
    assert single.properties() == {"k": 1}


def test_node_is_immutable_and_copies_out() -> None:
    n = node("a", t={"k": [1]})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        n.vid = "b"  # type: ignore[misc]
    got = n.properties("t")
    got["k"] = 2
    assert n.properties("t") == {"k": [1]}
    view = n.tag_properties
    assert view == {"t": {"k": [1]}}
    with pytest.raises(TypeError):
        view["t"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        view["t"]["k"] = 3  # type: ignore[index]
    source = {"t": {"k": 1}}
    m = Node("a", source)
    source["t"]["k"] = 2  # the node keeps its own copy
    assert m.properties("t") == {"k": 1}
    r = Relationship("a", "b", "e", 0, {"w": 1})
    with pytest.raises(TypeError):
        r.props["w"] = 2  # type: ignore[index]
    assert r.props == {"w": 1}


def test_node_equality_and_hash() -> None:
    a = node("a", t={"k": [1, 2]})  # an unhashable property value is fine
    b = node("a", t={"k": [1, 2]})
    c = node("a", t={"k": [3]})
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert node(1) != node("1")


def test_node_text() -> None:
    assert str(node("id", tag={"k": "v", "n": 1})) == '("id" :tag{k: "v", n: 1})'
    assert str(node(5)) == "(5)"
    assert str(node("a", t1={}, t2={"x": None})) == '("a" :t1{} :t2{x: __NULL__})'


def test_relationship() -> None:
    r = Relationship("a", "b", "follow", 3, {"degree": 90}, edge_type=5)
    assert (r.src, r.dst, r.edge_name, r.ranking) == ("a", "b", "follow", 3)
    assert r.rank == 3 and r.name == "follow"
    assert r.start_vertex_id == "a" and r.end_vertex_id == "b"
    assert r.properties() == {"degree": 90} and r.keys() == ["degree"] and r.values() == [90]
    assert str(r) == '[:follow "a"->"b" @3 {degree: 90}]'
    # the numeric type id is informational
    assert r == Relationship("a", "b", "follow", 3, {"degree": 90})
    assert hash(r) == hash(Relationship("a", "b", "follow", 3, {"degree": 90}))
    assert r != Relationship("b", "a", "follow", 3, {"degree": 90})
    assert r != Relationship("a", "b", "follow", 4, {"degree": 90})


def test_path_structure_and_text() -> None:
    a, b, c = node("a", t={}), node("b"), node("c")
    forward = Relationship("a", "b", "e", 0, {})
    backward = Relationship("c", "b", "e", 1, {"w": 1.5})  # walked against the edge
    p = Path([a, b, c], [forward, backward])
    assert len(p) == 2 == p.length
    assert p.start_node == a and p.end_node == c
    assert p.reversed_steps() == (False, True)
    assert list(p.segments()) == [(a, forward, b), (b, backward, c)]
    assert p.contains_node(b) and p.contains_relationship(backward)
    assert str(p) == '<("a" :t{})-[:e@0 {}]->("b")<-[:e@1 {w: 1.5}]-("c")>'
    assert p == Path((a, b, c), (forward, backward)) and hash(p) == hash(Path([a, b, c], [forward, backward]))
    assert len(Path([a], [])) == 0


def test_path_validates_shape() -> None:
    with pytest.raises(ValueError, match="one more node"):
        Path([node("a")], [Relationship("a", "b", "e")])
    with pytest.raises(ValueError):
        Path([], [])


# ---- Duration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "iso"),
    [
        (Duration(), "PT0S"),
        (Duration(14, 0, 0), "P1Y2M"),
        (Duration(0, 3 * 86400 + 4 * 3600 + 5 * 60 + 6, 500_000), "P3DT4H5M6.5S"),
        (Duration(0, 0, 1), "PT0.000001S"),
        (Duration(0, -90, 0), "-PT1M30S"),
        (Duration(-1, -1, 0), "-P1MT1S"),
        (Duration(1, -5, 0), "P1MT-5S"),
        (Duration(0, 1, 2_500_000), "PT3.5S"),
    ],
)
def test_duration_iso(duration: Duration, iso: str) -> None:
    assert duration.iso == iso == str(duration)


def test_duration_equality_and_timedelta() -> None:
    assert Duration(0, 1, 0) == Duration(0, 0, 1_000_000)
    assert hash(Duration(0, 1, 0)) == hash(Duration(0, 0, 1_000_000))
    assert Duration(1, 0, 0) != Duration(0, 30 * 86400, 0)
    assert Duration(0, 90, 5).to_timedelta() == dt.timedelta(seconds=90, microseconds=5)
    with pytest.raises(ValueError, match="months"):
        Duration(1, 0, 0).to_timedelta()
    td = dt.timedelta(days=-1, seconds=5, microseconds=7)
    assert Duration.from_timedelta(td).to_timedelta() == td
    assert Duration(0, 3, 4).total_microseconds == 3_000_004


# ---- geography -------------------------------------------------------------------------------


def test_geography_wkt_and_geo_interface() -> None:
    p = Point(3, 8.5)
    assert p.wkt == "POINT(3 8.5)" == str(p)
    assert p.__geo_interface__ == {"type": "Point", "coordinates": (3.0, 8.5)}
    line = LineString([(0, 1), (2.25, -3)])
    assert line.wkt == "LINESTRING(0 1, 2.25 -3)"
    assert line.__geo_interface__["coordinates"] == ((0.0, 1.0), (2.25, -3.0))
    poly = Polygon([[(0, 0), (1, 0), (1, 1), (0, 0)], [(0.2, 0.2), (0.3, 0.2), (0.2, 0.2)]])
    assert poly.wkt == "POLYGON((0 0, 1 0, 1 1, 0 0), (0.2 0.2, 0.3 0.2, 0.2 0.2))"
    assert poly.__geo_interface__["type"] == "Polygon"
    assert hash(poly) == hash(Polygon(poly.rings)) and poly == Polygon(poly.rings)
    assert Point(1e300, -0.1).wkt == "POINT(1e+300 -0.1)"


# ---- other values ------------------------------------------------------------------------------


def test_dataset_value() -> None:
    d = DataSetValue(["a", "b"], [[1, "x"], [2, None]])
    assert d.column_names == ("a", "b") and d.rows == ((1, "x"), (2, None))
    assert len(d) == 2
    assert d.as_dicts() == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    assert str(d) == '[{a: 1, b: "x"}, {a: 2, b: __NULL__}]'
    same = DataSetValue(("a", "b"), ((1, "x"), (2, None)))
    assert d == same and hash(d) == hash(same)
    assert d != DataSetValue(["a", "b"], [[1, "x"]])


def test_raw_temporal_text() -> None:
    assert str(RawDate(-12, 3, 4)) == "-0012-03-04"
    assert str(RawDate(12000, 1, 2)) == "12000-01-02"
    assert str(RawTime(25, 0, 0, 1)) == "25:00:00.000001"
    assert str(RawDateTime(0, 1, 2, 3, 4, 5, 6)) == "0000-01-02T03:04:05.000006"


def test_set_list_is_a_list() -> None:
    s = SetList([[1], [2]])
    assert s == [[1], [2]] and isinstance(s, list)
    assert repr(s) == "SetList([[1], [2]])"


def test_set_lists_compare_as_sets_of_members() -> None:
    a = SetList([[1], {"k": 2}, [1]])
    assert a == SetList([{"k": 2}, [1], [1]])  # any order, each member as many times
    assert not a != SetList([[1], [1], {"k": 2}])
    assert a != SetList([[1], {"k": 2}, {"k": 2}])
    assert a != SetList([[1], {"k": 2}])
    assert SetList([1, 2]) == {2, 1} and SetList([1, True]) != {1}  # as a set of members
    assert SetList([1, True]) != SetList([1, 1]) and SetList([1, 1.0]) != SetList([1, 1])  # typed
    assert SetList([[1], True]) != SetList([[1], 1])  # typed on the pairwise path too
    nan = float("nan")
    assert SetList([nan, [1]]) == SetList([[1], nan]) and SetList([nan, 2]) == SetList([2, nan])
    big = SetList(range(20_000))
    assert big == SetList(reversed(range(20_000)))  # hashable members: counted, not paired (O(n))
    assert SetList([2, 1]) == frozenset({1, 2}) and SetList([2, 1]) != {1, 3}
    assert SetList([[2], [1]]) != [[1], [2]]  # against a plain list: a list's comparison
    with pytest.raises(TypeError):
        hash(a)


def test_duration_fields_must_be_ints() -> None:
    with pytest.raises(TypeError, match=r"^Duration seconds must be an int, not float \(1.5\)"):
        Duration(seconds=1.5)  # type: ignore[arg-type]
    numpy = pytest.importorskip("numpy")
    assert Duration(seconds=numpy.int64(5)) == Duration(seconds=5)
    assert type(Duration(seconds=numpy.int64(5)).seconds) is int
    with pytest.raises(OverflowError, match="beyond a timedelta"):
        Duration(0, 2**62, 0).to_timedelta()
    assert Duration(0, 86_400, 5).to_timedelta() == dt.timedelta(days=1, microseconds=5)


# ---- nGQL text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "__NULL__"),
        (NullValue(3), "BAD_TYPE"),
        (EMPTY, "__EMPTY__"),
        (True, "true"),
        (False, "false"),
        (-(2**63), "-9223372036854775808"),
        (1.5, "1.5"),
        (float("nan"), "NaN"),
        (float("-inf"), "-inf"),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        ("日本", '"日本"'),
        ([1, "a", None], '[1, "a", __NULL__]'),
        ({"k": [1]}, "{k: [1]}"),
        ({1}, "{1}"),
        (SetList([[1]]), "{[1]}"),
        (dt.date(2024, 2, 29), "2024-02-29"),
        (dt.time(1, 2, 3, 4, tzinfo=UTC), "01:02:03.000004"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "2024-01-02T03:04:05.000006"),
        (Duration(0, 60, 0), "PT1M"),
        (Point(1, 2), "POINT(1 2)"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


# ---- primitives ------------------------------------------------------------------------------


def test_to_primitive_scalars_and_containers() -> None:
    assert to_primitive(None) is None
    assert to_primitive(NullValue(2)) is None
    assert to_primitive(EMPTY) is None
    assert to_primitive([1, {2}, (3,)]) == [1, [2], [3]]
    assert to_primitive({"a": dt.date(2020, 1, 2)}) == {"a": "2020-01-02"}
    assert to_primitive(dt.datetime(2020, 1, 2, 3, 4, tzinfo=UTC)) == "2020-01-02T03:04:00+00:00"
    assert to_primitive(dt.time(3, 4, tzinfo=UTC)) == "03:04:00+00:00"
    assert to_primitive(Duration(1, 2, 0)) == "P1MT2S"
    assert to_primitive(Polygon([[(0, 0), (1, 1), (0, 0)]])) == "POLYGON((0 0, 1 1, 0 0))"
    assert to_primitive(RawDate(-1, 1, 1)) == "-0001-01-01"
    assert to_primitive(DataSetValue(["a"], [[NullValue(1)]])) == [{"a": None}]
    assert to_primitive(SetList([[1]])) == [[1]]


def test_to_primitive_graph_elements() -> None:
    n = node("a", t={"d": dt.date(2020, 1, 1), "k": 1})
    assert to_primitive(n) == {"vid": "a", "tags": ["t"], "properties": {"t": {"d": "2020-01-01", "k": 1}}}
    r = Relationship("a", "b", "e", 2, {"w": [1]})
    assert to_primitive(r) == {"src": "a", "dst": "b", "type": "e", "rank": 2, "properties": {"w": [1]}}
    p = Path([n, node("b")], [r])
    prim = to_primitive(p)
    assert prim["length"] == 1
    assert prim["nodes"][1] == {"vid": "b", "tags": [], "properties": {}}
    assert prim["relationships"] == [to_primitive(r)]


def test_to_primitive_subclasses() -> None:
    class MyInt(int):
        pass

    class MyDict(dict):  # type: ignore[type-arg]
        pass

    assert type(to_primitive(MyInt(3))) is int
    assert to_primitive(MyDict(a=dt.date(2000, 1, 1))) == {"a": "2000-01-01"}


# ---- ValueWrapper ----------------------------------------------------------------------------

_KINDS = {
    "null": None,
    "bad": NullValue(3),
    "empty": EMPTY,
    "bool": True,
    "int": 5,
    "float": 1.5,
    "string": "s",
    "list": [1],
    "set": {1},
    "setlist": SetList([[1]]),
    "map": {"a": 1},
    "time": dt.time(1, tzinfo=UTC),
    "date": dt.date(2020, 1, 1),
    "datetime": dt.datetime(2020, 1, 1, tzinfo=UTC),
    "vertex": node("a"),
    "edge": Relationship("a", "b", "e"),
    "path": Path([node("a")], []),
    "geography": Point(0, 0),
    "duration": Duration(0, 1, 0),
    "dataset": DataSetValue([], []),
}

_TESTS = {
    "null": {"null", "bad"},
    "empty": {"empty"},
    "bool": {"bool"},
    "int": {"int"},
    "float": {"float"},
    "string": {"string"},
    "list": {"list"},
    "set": {"set", "setlist"},
    "map": {"map"},
    "time": {"time"},
    "date": {"date"},
    "datetime": {"datetime"},
    "vertex": {"vertex"},
    "edge": {"edge"},
    "path": {"path"},
    "geography": {"geography"},
    "duration": {"duration"},
    "dataset": {"dataset"},
}


@pytest.mark.parametrize("test", sorted(_TESTS))
def test_wrapper_is_methods_are_exclusive(test: str) -> None:
    for kind, value in _KINDS.items():
        got = getattr(ValueWrapper(value), f"is_{test}")()
        assert got == (kind in _TESTS[test]), (test, kind)


def test_wrapper_casts() -> None:
    w = ValueWrapper
    assert w(True).as_bool() is True
    assert w(5).as_int() == 5
    assert w(1.5).as_float() == 1.5 == w(1.5).as_double()
    assert w("s").as_string() == "s"
    assert [x.as_int() for x in w([1, 2]).as_list()] == [1, 2]
    assert sorted(x.as_int() for x in w({1, 2}).as_set()) == [1, 2]
    assert w(SetList([[1]])).as_set()[0].as_list()[0].as_int() == 1
    assert w({"a": 1}).as_map()["a"].as_int() == 1
    assert w(dt.date(2020, 1, 1)).as_date() == dt.date(2020, 1, 1)
    assert w(RawDate(0, 1, 1)).as_date() == RawDate(0, 1, 1)
    assert w(node("a")).as_node() == node("a") == w(node("a")).as_vertex()
    assert w(Point(0, 1)).as_geography() == Point(0, 1)
    assert w(Duration(1, 0, 0)).as_duration() == Duration(1, 0, 0)
    assert w(DataSetValue(["a"], [])).as_dataset().column_names == ("a",)
    assert w([1]).cast() == [1]
    assert w(node("a", t={"k": 1})).cast_primitive() == {
        "vid": "a",
        "tags": ["t"],
        "properties": {"t": {"k": 1}},
    }


@pytest.mark.parametrize(
    ("value", "method", "message"),
    [
        ("x", "as_node", "value is a string, not a node"),
        (None, "as_int", "value is NULL, not an int"),
        (NullValue(3), "as_string", r"value is NULL \(BAD_TYPE\), not a string"),
        (EMPTY, "as_bool", "value is EMPTY, not a bool"),
        (True, "as_int", "value is a bool, not an int"),
        (1, "as_float", "value is an int, not a float"),
        (dt.datetime(2020, 1, 1), "as_date", "value is a datetime, not a date"),
        ([1], "as_set", "value is a list, not a set"),
        (Relationship("a", "b", "e"), "as_path", "value is a relationship, not a path"),
        ({"a": 1}, "as_list", "value is a map, not a list"),
    ],
)
def test_wrapper_wrong_cast_says_what_it_is(value: object, method: str, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        getattr(ValueWrapper(value), method)()


def test_wrapper_null_kind_and_text() -> None:
    assert ValueWrapper(None).null_kind == "__NULL__"
    assert ValueWrapper(NullValue(6)).null_kind == "DIV_BY_ZERO"
    assert ValueWrapper(EMPTY).null_kind == "EMPTY"
    assert ValueWrapper(0).null_kind is None
    assert str(ValueWrapper("a")) == '"a"' and repr(ValueWrapper(1)) == "ValueWrapper(1)"
    assert ValueWrapper(1) == ValueWrapper(1) and ValueWrapper(1) != ValueWrapper(True)
    assert hash(ValueWrapper([1, {"a": 2}])) == hash(ValueWrapper([1, {"a": 2}]))
    assert ValueWrapper("x").type_name() == "a string"


def test_local_time_views_use_a_real_date() -> None:
    # 00:30 UTC seen from UTC-01:00 is 23:30 the previous day: year-1 arithmetic would overflow
    w = ValueWrapper(dt.time(0, 30, tzinfo=UTC), timezone_offset=-3600)
    local = w.as_local_time()
    assert (local.hour, local.minute) == (23, 30)
    assert local.utcoffset() == dt.timedelta(hours=-1)
    assert ValueWrapper(dt.time(23, 0, tzinfo=UTC)).as_local_time(5 * 3600 + 1800).hour == 4
    d = ValueWrapper(dt.datetime(2024, 1, 1, 0, 30, tzinfo=UTC), timezone_offset=8 * 3600).as_local_datetime()
    assert d == dt.datetime(2024, 1, 1, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert d.utcoffset() == dt.timedelta(hours=8)
    early = ValueWrapper(dt.datetime(1, 1, 1, tzinfo=UTC), timezone_offset=-60)
    with pytest.raises(ValueError, match="out of range"):
        early.as_local_datetime()
    with pytest.raises(ValueError, match="no local view"):
        ValueWrapper(RawTime(25, 0, 0, 0)).as_local_time()


def test_float_nan_text_and_primitive() -> None:
    assert math.isnan(to_primitive(float("nan")))
