"""Python values to graph Values and back, parameter maps, nGQL literals and templates."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import numpy as np  # installed with pandas, a test dependency
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nebula_sync._params import (
    from_value,
    render_literal,
    render_template,
    template_names,
    to_parameter_map,
    to_value,
)
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
)

UTC = dt.timezone.utc
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def canon(x: Any) -> Any:
    """A comparable form of a value: exact for floats (NaN equals NaN, -0.0 differs from 0.0) and
    types (1, True and 1.0 differ), recursive through containers and vertices."""
    if isinstance(x, float):
        return ("float", "nan" if math.isnan(x) else x.hex())
    if isinstance(x, (bool, int, str)) or x is None:
        return (type(x).__name__, x)
    if isinstance(x, SetList):  # a set: members in no particular order
        return ("setlist", tuple(sorted((canon(v) for v in x), key=repr)))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(canon(v) for v in x))
    if isinstance(x, (set, frozenset)):
        return ("set", frozenset(canon(v) for v in x))
    if isinstance(x, dict):
        return ("dict", tuple((k, canon(v)) for k, v in x.items()))
    if isinstance(x, Node):
        return ("node", canon(x.vid), canon({t: dict(p) for t, p in x.tag_properties.items()}))
    return (type(x).__name__, x)


def same(a: Any, b: Any) -> bool:
    return bool(canon(a) == canon(b))


# ---- to_value: the wire form -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (None, T.Value(nVal=0)),
        (True, T.Value(bVal=True)),
        (0, T.Value(iVal=0)),
        (I64_MAX, T.Value(iVal=I64_MAX)),
        (I64_MIN, T.Value(iVal=I64_MIN)),
        (2.5, T.Value(fVal=2.5)),
        ("ü", T.Value(sVal="ü".encode())),
        (b"\xff", T.Value(sVal=b"\xff")),
        (bytearray(b"ab"), T.Value(sVal=b"ab")),
        ([1, "a"], T.Value(lVal=T.NList(values=[T.Value(iVal=1), T.Value(sVal=b"a")]))),
        ((1,), T.Value(lVal=T.NList(values=[T.Value(iVal=1)]))),
        ({"k": None}, T.Value(mVal=T.NMap(kvs={b"k": T.Value(nVal=0)}))),
        (OrderedDict(k=1), T.Value(mVal=T.NMap(kvs={b"k": T.Value(iVal=1)}))),
        ({1}, T.Value(uVal=T.NSet(values={T.Value(iVal=1)}))),
        (frozenset({"a"}), T.Value(uVal=T.NSet(values={T.Value(sVal=b"a")}))),
        (NullValue(5), T.Value(nVal=5)),
        (EMPTY, T.Value()),
        (dt.date(2024, 2, 29), T.Value(dVal=T.Date(year=2024, month=2, day=29))),
        (dt.time(1, 2, 3, 4), T.Value(tVal=T.Time(hour=1, minute=2, sec=3, microsec=4))),
        (
            dt.timedelta(seconds=61, microseconds=5),
            T.Value(duVal=T.Duration(seconds=61, microseconds=5, months=0)),
        ),
        (Duration(3, -4, 5), T.Value(duVal=T.Duration(seconds=-4, microseconds=5, months=3))),
        (Point(1, 2), T.Value(ggVal=T.Geography(ptVal=T.Point(coord=T.Coordinate(x=1.0, y=2.0))))),
        (RawDate(-5, 1, 2), T.Value(dVal=T.Date(year=-5, month=1, day=2))),
        (RawTime(25, 0, 0, 0), T.Value(tVal=T.Time(hour=25, minute=0, sec=0, microsec=0))),
        (np.int64(-7), T.Value(iVal=-7)),  # numpy scalars, as pandas hands them out
        (RawDate(np.int64(2020), np.int8(1), 2), T.Value(dVal=T.Date(year=2020, month=1, day=2))),
        (np.bool_(False), T.Value(bVal=False)),
        ([np.float32(0.5)], T.Value(lVal=T.NList(values=[T.Value(fVal=0.5)]))),
    ],
)
def test_to_value_wire_form(obj: Any, expected: T.Value) -> None:
    assert to_value(obj) == expected


def test_datetime_is_checked_before_date() -> None:
    # nebula3-python 3.8.3 tests date first and truncates datetimes (nebula-python#378)
    v = to_value(dt.datetime(2024, 5, 6, 7, 8, 9, 10))
    assert v.dtVal == T.DateTime(year=2024, month=5, day=6, hour=7, minute=8, sec=9, microsec=10)
    assert v.dVal is None


def test_aware_values_are_converted_to_utc() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    v = to_value(dt.datetime(2024, 1, 1, 0, 30, tzinfo=cet))
    assert (v.dtVal.year, v.dtVal.month, v.dtVal.day, v.dtVal.hour, v.dtVal.minute) == (2023, 12, 31, 23, 30)
    t = to_value(dt.time(0, 30, tzinfo=cet)).tVal
    assert (t.hour, t.minute) == (23, 30)
    west = to_value(dt.time(23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-2)))).tVal
    assert (west.hour, west.minute) == (1, 0)


def test_graph_values_to_value() -> None:
    rel = Relationship("b", "a", "e", 1, {"w": 1})  # edge_type unknown: sent as 1
    v = to_value(rel)
    assert (v.eVal.src, v.eVal.dst, v.eVal.type, v.eVal.name, v.eVal.ranking) == (
        T.Value(sVal=b"b"),
        T.Value(sVal=b"a"),
        1,
        b"e",
        1,
    )
    a, b = Node("a", {"t": {"k": 1}}), Node("b")
    p = to_value(Path([a, b], [rel])).pVal  # b -> a walked from a: a backwards step
    assert p.src.vid == T.Value(sVal=b"a") and p.src.tags == [T.Tag(name=b"t", props={b"k": T.Value(iVal=1)})]
    assert p.steps[0].type == -1 and p.steps[0].dst.vid == T.Value(sVal=b"b")
    g = to_value(DataSetValue(["c"], [[1]])).gVal
    assert g == T.DataSet(column_names=[b"c"], rows=[T.Row(values=[T.Value(iVal=1)])])


# ---- to_value: errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "exc", "message"),
    [
        (2**63, ValueError, r"^p: integer 9223372036854775808 does not fit"),
        (-(2**63) - 1, ValueError, "does not fit in a signed 64-bit"),
        (object(), TypeError, r"^p: cannot send a value of type builtins\.object"),
        (Decimal("1.5"), TypeError, r"decimal\.Decimal"),
        ({1: 2}, TypeError, r"^p: map keys must be str, not int"),
        ([1, [2, object()]], TypeError, r"^p\[1\]\[1\]: cannot send"),
        ({"a": {"b": 2**70}}, ValueError, r"^p\['a'\]\['b'\]: integer"),
        ("\ud800", ValueError, "not valid Unicode"),
        (RawDate(40000, 1, 1), ValueError, "year 40000 is out of range"),
        (Duration(2**31, 0, 0), ValueError, "months"),
        (Node("a", {"t": {"k": object()}}), TypeError, r"^p\.k: cannot send"),
        (np.datetime64("2024-01-01"), TypeError, r"^p: cannot send a value of type numpy\.datetime64"),
        (dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(-dt.timedelta(hours=5))), ValueError, "in UTC"),
    ],
)
def test_to_value_errors_name_the_parameter(obj: Any, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message):
        to_value(obj, "p")


def test_to_value_default_name() -> None:
    with pytest.raises(TypeError, match="^value: "):
        to_value(object())


# ---- from_value ------------------------------------------------------------------------------


def test_from_value_matches_the_decoder() -> None:
    assert from_value(T.Value(sVal=b"\xff")) == "\\xff"
    assert from_value(T.Value()) is EMPTY
    assert from_value(T.Value(nVal=0)) is None
    assert from_value(T.Value(tVal=T.Time(hour=1, minute=0, sec=0, microsec=0))) == dt.time(1, tzinfo=UTC)
    with pytest.raises(TypeError, match="ttypes.Value"):
        from_value(5)  # type: ignore[arg-type]


_ROUND_TRIP = [
    None,
    NullValue(7),
    NullValue(123),
    EMPTY,
    True,
    I64_MIN,
    I64_MAX,
    -0.0,
    float("nan"),
    "日本語",
    [1, [2, ["x"]], {"k": {1, 2}}],
    {"a": None, "b": [dt.date(1, 1, 1)]},
    {1, "a", 2.5},
    SetList([[1], {"a": 1}]),
    dt.date(9999, 12, 31),
    dt.time(23, 59, 59, 999999, tzinfo=UTC),
    dt.datetime(2024, 2, 29, 12, 0, tzinfo=UTC),
    Duration(-3, 100, -7),
    Point(-180, 90),
    LineString([(0, 0), (1.5, 2.5)]),
    Polygon([[(0, 0), (1, 0), (1, 1), (0, 0)]]),
    Node("v", {"t1": {"a": 1}, "t2": {}}),
    Node(42),
    Relationship("a", "b", "e", -7, {"d": dt.date(2020, 1, 1)}),
    Path([Node("a"), Node("b"), Node("c")], [Relationship("a", "b", "e"), Relationship("c", "b", "f", 3)]),
    DataSetValue(["x", "y"], [[1, "a"], [None, [2]]]),
    RawDate(-100, 2, 30),
    RawTime(24, 61, 0, 0),
    RawDateTime(0, 1, 1, 0, 0, 0, 0),
]


@pytest.mark.parametrize("obj", _ROUND_TRIP, ids=lambda o: type(o).__name__)
def test_round_trip(obj: Any) -> None:
    assert same(from_value(to_value(obj)), obj)


def test_naive_temporal_values_come_back_as_utc() -> None:
    assert from_value(to_value(dt.datetime(2020, 1, 1, 5))) == dt.datetime(2020, 1, 1, 5, tzinfo=UTC)
    assert from_value(to_value(dt.time(5))) == dt.time(5, tzinfo=UTC)
    assert from_value(to_value((1, 2))) == [1, 2]
    assert from_value(to_value(frozenset({1}))) == {1}
    assert from_value(to_value(b"ab")) == "ab"
    assert from_value(to_value(dt.timedelta(days=1))) == Duration(0, 86400, 0)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(I64_MIN, I64_MAX)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.dates()
    | st.datetimes(timezones=st.just(UTC))
    | st.times(timezones=st.just(UTC))
    | st.builds(
        Duration,
        st.integers(-(2**31), 2**31 - 1),
        st.integers(I64_MIN // 10**6, I64_MAX // 10**6),
        st.integers(0, 999_999),
    )
    | st.builds(Point, st.floats(-180, 180), st.floats(-90, 90))
    | st.sampled_from([NullValue(k) for k in range(1, 8)] + [EMPTY])
)
_hashable = st.none() | st.booleans() | st.integers(I64_MIN, I64_MAX) | st.text() | st.dates()
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        | st.builds(
            Node,
            _hashable,
            st.dictionaries(
                st.text(min_size=1, max_size=5),
                st.dictionaries(st.text(max_size=5), inner, max_size=3),
                max_size=2,
            ),
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_round_trip_property(obj: Any) -> None:
    assert same(from_value(to_value(obj)), obj)


@settings(max_examples=100, deadline=None)
@given(st.sets(_hashable, max_size=6))
def test_set_round_trip_property(obj: set[Any]) -> None:
    assert from_value(to_value(obj)) == obj


# ---- parameter maps --------------------------------------------------------------------------


def test_to_parameter_map() -> None:
    got = to_parameter_map({"a": 1, "b_2": [None], "_c": dt.datetime(2020, 1, 1)})
    assert got == {
        b"a": T.Value(iVal=1),
        b"b_2": T.Value(lVal=T.NList(values=[T.Value(nVal=0)])),
        b"_c": T.Value(dtVal=T.DateTime(year=2020, month=1, day=1, hour=0, minute=0, sec=0, microsec=0)),
    }
    assert to_parameter_map({}) == {}


@pytest.mark.parametrize(
    ("params", "exc", "message"),
    [
        ({1: 2}, TypeError, "parameter names must be str"),
        ({"a b": 1}, ValueError, "not an identifier"),
        ({"1a": 1}, ValueError, "not an identifier"),
        ({"": 1}, ValueError, "not an identifier"),
        ({"x": object()}, TypeError, "^x: cannot send"),
        ([("a", 1)], TypeError, "must be a mapping"),
    ],
)
def test_parameter_map_errors(params: Any, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message):
        to_parameter_map(params)


# ---- literals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "literal"),
    [
        (None, "NULL"),
        (NullValue(0), "NULL"),
        (True, "true"),
        (False, "false"),
        (-(2**63), "-9223372036854775808"),
        (1.0, "1.0"),
        (-0.5, "-0.5"),
        (1e100, "1" + "0" * 100 + ".0"),
        (1.5e-7, "0.00000015"),
        ("plain", '"plain"'),
        ('a"b\\c\nd\te\rf', '"a\\"b\\\\c\\nd\\te\\rf"'),
        ("it's", '"it\'s"'),
        (b"bytes", '"bytes"'),
        ([1, "a", [None]], '[1, "a", [NULL]]'),
        ((1, 2), "[1, 2]"),
        ({3, 1, 2}, "[1, 2, 3]"),
        (
            {"a": 1, "b c": 2, "match": 3, "_ok1": 4, "日本": 5},
            "{a: 1, `b c`: 2, `match`: 3, _ok1: 4, `日本`: 5}",
        ),
        (  # graphd lowercases an unreserved keyword ({Status: 1} has the key "status"), so a key
            # with a capital letter is always backquoted; so are the join words
            {"Status": 1, "Data": 2, "camelCase": 3, "left": 4, "status": 5},
            "{`Status`: 1, `Data`: 2, `camelCase`: 3, `left`: 4, status: 5}",
        ),
        (dt.date(2024, 1, 2), 'date("2024-01-02")'),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 6), 'datetime("2024-01-02T03:04:05.000006+00:00")'),
        (
            dt.datetime(2024, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            'datetime("2023-12-31T23:00:00.000000+00:00")',
        ),
        (dt.time(3, 4, 5), 'time("03:04:05.000000+00:00")'),
        (dt.time(3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))), 'time("08:04:05.000000+00:00")'),
        (RawTime(25, 0, 0, 0), 'time("25:00:00.000000+00:00")'),
        (RawDateTime(5, 1, 2, 3, 4, 5, 6), 'datetime("0005-01-02T03:04:05.000006+00:00")'),
        (RawDate(-5, 1, 2), "date({year: -5, month: 1, day: 2})"),  # graphd: negative years as a map
        (np.float64(1.5), "1.5"),  # a float subclass whose repr() is np.float64(1.5)
        (np.float64(-1e-7), "-0.0000001"),
        (np.int64(7), "7"),
        (np.bool_(True), "true"),
        ([np.uint8(3), np.float32(0.5)], "[3, 0.5]"),
        ({"profile": 1, "Explain": 2, "geography": 3}, "{`profile`: 1, `Explain`: 2, `geography`: 3}"),
        (Duration(1, 2, 3), "duration({months: 1, seconds: 2, microseconds: 3})"),
        (Duration(), "duration({seconds: 0})"),
        (dt.timedelta(minutes=1), "duration({seconds: 60})"),
        (Point(1, 2.5), 'ST_GeogFromText("POINT(1 2.5)")'),
        (LineString([(0, 0), (1, 1)]), 'ST_GeogFromText("LINESTRING(0 0, 1 1)")'),
        (RawDate(12000, 1, 1), 'date("12000-01-01")'),
    ],
)
def test_render_literal(obj: Any, literal: str) -> None:
    assert render_literal(obj) == literal


@pytest.mark.parametrize(
    ("obj", "exc", "message"),
    [
        (float("nan"), ValueError, "NaN and infinity"),
        (float("inf"), ValueError, "NaN and infinity"),
        ([1, float("-inf")], ValueError, r"^v\[1\]: "),
        (2**64, ValueError, "does not fit"),
        (b"\xff", ValueError, "not UTF-8"),
        (Node("a"), TypeError, "pass it as a \\$parameter"),
        (object(), TypeError, "has no nGQL literal"),
        ({1: 2}, TypeError, "map keys must be str"),
        ({"a`b": 1}, ValueError, "cannot be written"),
        (NullValue(3), ValueError, "has no nGQL literal"),
        ("a\ud800", ValueError, r"^v: string is not valid Unicode text \(surrogates not allowed\)"),
        ({"k\udcff": 1}, ValueError, "^v: string is not valid Unicode text"),
        ([1, "\ud800"], ValueError, r"^v\[1\]: .*surrogates"),
        (Point(float("nan"), 0), ValueError, "not finite"),
        (RawDateTime(-5, 1, 2, 3, 4, 5, 6), ValueError, r"^v: datetime year -5 .*\$parameter"),
        (dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))), ValueError, "^v: .*in UTC"),
        (np.datetime64("2024-01-01"), TypeError, "has no nGQL literal"),
    ],
)
def test_render_literal_errors(obj: Any, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message):
        render_literal(obj, "v")


def parse_ngql_string(literal: str) -> str:
    """Read a double-quoted nGQL string literal the way graphd's lexer does."""
    assert literal[0] == literal[-1] == '"'
    body, out, i = literal[1:-1], [], 0
    simple = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
    while i < len(body):
        ch = body[i]
        assert ch not in '"\n', f"raw {ch!r} inside a literal"
        if ch == "\\":
            nxt = body[i + 1]
            assert not nxt.isdigit(), "digit escapes are octal/errors in nGQL"
            out.append(simple.get(nxt, nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",))))
def test_string_literals_read_back_exactly(text: str) -> None:
    assert parse_ngql_string(render_literal(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_literals_are_plain_decimals_that_read_back(x: float) -> None:
    lit = render_literal(x)
    assert re.fullmatch(r"-?\d+\.\d+", lit), lit
    assert float(lit) == x


# ---- templates -------------------------------------------------------------------------------


def test_render_template_basics() -> None:
    stmt = "MATCH (v) WHERE id(v) == {{ vid }} AND v.age > {{age}} RETURN {{vid}}"
    assert render_template(stmt, {"vid": 'a"b', "age": 3}) == (
        'MATCH (v) WHERE id(v) == "a\\"b" AND v.age > 3 RETURN "a\\"b"'
    )
    assert render_template("RETURN 1", {}) == "RETURN 1"
    assert render_template("RETURN {{x}}", {"x": None, "unused": object()}) == "RETURN NULL"


def test_placeholders_inside_strings_and_comments_are_left_alone() -> None:
    stmt = (
        "RETURN '{{a}}', \"{{a}}\", `{{a}}`, \"esc \\\" {{a}}\", 'it\\'s {{a}}', {{a}} "
        "# {{b}} in a comment\n// {{b}}\n/* {{b}} */ {{a}}"
    )
    out = render_template(stmt, {"a": 1})
    assert out == stmt.replace("', {{a}} #", "', 1 #").replace("*/ {{a}}", "*/ 1")
    assert template_names(stmt) == ["a", "a"]


def test_missing_placeholders_are_all_named_before_rendering() -> None:
    with pytest.raises(KeyError) as info:
        render_template("RETURN {{a}}, {{ b }}, {{a}}, {{c}}", {"c": 1})
    assert str(info.value) == "template placeholder(s) without a value: {{a}}, {{b}}"


def test_only_simple_names_are_placeholders() -> None:
    # no Jinja: expressions and filters are not placeholders; nested map literals are untouched
    stmt = "RETURN {{a.b}}, {{ x | upper }}, {{k: 1}}, {{1}}"
    assert render_template(stmt, {}) == stmt


def test_unterminated_string_swallows_the_rest() -> None:
    assert render_template("RETURN 'abc {{a}}", {}) == "RETURN 'abc {{a}}"


def test_template_errors_name_the_placeholder() -> None:
    with pytest.raises(ValueError, match=r"^x: string is not valid Unicode text \(surrogates not allowed\)"):
        render_template("RETURN {{x}}", {"x": "a\ud800"})
    with pytest.raises(ValueError, match="^y: nan has no nGQL literal"):
        render_template("RETURN {{x}}, {{y}}", {"x": 1, "y": float("nan")})


def test_values_are_rendered_not_templated_again() -> None:
    assert render_template("RETURN {{a}}", {"a": "{{b}}"}) == 'RETURN "{{b}}"'
    with pytest.raises(TypeError):
        render_template(b"RETURN 1", {})  # type: ignore[arg-type]
