"""The fake graphd's statement engine, exercised over real sockets."""

from __future__ import annotations

import datetime
import json
import logging
import math
from typing import TYPE_CHECKING, Any, Callable

import pytest
from thrift.Thrift import TApplicationException

from nebula_sync._params import from_value, to_value
from nebula_sync._thrift import service, ttypes, wire
from nebula_sync._thrift.ttypes import NullType, Value
from nebula_sync.testing import FakeGraphd
from nebula_sync.testing._engine import MAX_NESTING

if TYPE_CHECKING:
    from conftest import RawClient

RawFactory = Callable[..., "RawClient"]


@pytest.fixture
def session(fake_graphd: FakeGraphd, raw_client: RawFactory) -> tuple[RawClient, int]:
    client = raw_client(fake_graphd)
    return client, client.session()


def run(session: tuple[RawClient, int], stmt: str, **params: Any) -> ttypes.ExecutionResponse:
    client, sid = session
    resp: ttypes.ExecutionResponse = client.execute(sid, stmt, {k: to_value(v) for k, v in params.items()})
    return resp


def one(session: tuple[RawClient, int], expr: str, **params: Any) -> Value:
    resp = run(session, f"RETURN {expr}", **params)
    assert resp.error_code == 0, (expr, resp.error_msg)
    assert len(resp.data.rows) == 1 and len(resp.data.rows[0].values) == 1
    value: Value = resp.data.rows[0].values[0]
    return value


EXPRESSIONS: list[tuple[str, Any]] = [
    # literals
    ("1", 1),
    ("-1", -1),
    ("0x1F", 31),
    ("9223372036854775807", 2**63 - 1),
    ("-9223372036854775808", -(2**63)),
    ("1.5", 1.5),
    ("1e3", 1000.0),
    (".25", 0.25),
    ("true", True),
    ("FALSE", False),
    ("null", None),
    ("NULL", None),
    ('"double"', "double"),
    ("'single'", "single"),
    (r'"esc\"aped\n\t\\"', 'esc"aped\n\t\\'),
    (r"'it\'s'", "it's"),
    (r'"\u00fc"', "ü"),
    ('"ünï©ødé"', "ünï©ødé"),
    ('"# not a comment"', "# not a comment"),
    ('"a;b"', "a;b"),
    ("[]", []),
    ("[1, 'a', null, [true]]", [1, "a", None, [True]]),
    ("{}", {}),
    ("{a: 1, `b c`: [2], \"d\": {e: null}}", {"a": 1, "b c": [2], "d": {"e": None}}),
    ("{1, 2, 2, 3}", {1, 2, 3}),
    # arithmetic and precedence
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("2 * 3 % 4", 2),
    ("7 / 2", 3),
    ("-7 / 2", -3),
    ("7 / -2", -3),
    ("7 % 3", 1),
    ("-7 % 3", -1),
    ("7 % -3", 1),
    ("7.0 / 2", 3.5),
    ("1 / 4.0", 0.25),
    ("5.5 % 2", 1.5),
    ("- (2 + 3)", -5),
    ("-(-2)", 2),
    ("+3", 3),
    ("1 + 2.5", 3.5),
    ("0.1 + 0.2", 0.1 + 0.2),
    # strings and lists
    ('"a" + "b"', "ab"),
    ("'n=' + 1", "n=1"),
    ("'f=' + 1.5", "f=1.5"),
    ("'f=' + 2.0", "f=2"),
    ("1 + 'x'", "1x"),
    ("'b=' + true", "b=true"),
    ("[1] + [2, 3]", [1, 2, 3]),
    ("[1] + 2", [1, 2]),
    ("0 + [1]", [0, 1]),
    # null propagation and comparisons
    ("null + 1", None),
    ("1 - null", None),
    ("1 == 1", True),
    ("1 == 1.0", True),
    ("1 <> 2", True),
    ("1 != 1", False),
    ("2 > 1 AND 1 < 2", True),
    ("'a' < 'b'", True),
    ("NOT (1 >= 2)", True),
    ("true XOR true", False),
    ("false OR true", True),
    ("null == 1", None),
]


@pytest.mark.parametrize(("expr", "expected"), EXPRESSIONS)
def test_expressions(session: tuple[RawClient, int], expr: str, expected: Any) -> None:
    value = one(session, expr)
    got = from_value(value)
    if isinstance(expected, float):
        assert value.fVal is not None and math.isclose(got, expected), (expr, value)
    else:
        assert got == expected, (expr, value)
        assert type(got) is type(expected), (expr, value)


SPECIAL_NULLS = [
    ("1 / 0", NullType.DIV_BY_ZERO),
    ("1 % 0", NullType.DIV_BY_ZERO),
    ("9223372036854775807 + 1", NullType.ERR_OVERFLOW),
    ("-9223372036854775808 - 1", NullType.ERR_OVERFLOW),
    ("4611686018427387904 * 2", NullType.ERR_OVERFLOW),
    ("-9223372036854775808 / -1", NullType.ERR_OVERFLOW),
    ("-(-9223372036854775808)", NullType.ERR_OVERFLOW),
    ("'a' * 2", NullType.BAD_TYPE),
    ("true + 1", NullType.BAD_TYPE),
    ("'a' - 'b'", NullType.BAD_TYPE),
    ("-'a'", NullType.BAD_TYPE),
    ("1 AND true", NullType.BAD_TYPE),
    ("{a: 1} + 1", NullType.BAD_TYPE),
]


@pytest.mark.parametrize(("expr", "kind"), SPECIAL_NULLS)
def test_value_errors_are_special_nulls(session: tuple[RawClient, int], expr: str, kind: int) -> None:
    assert one(session, expr) == Value(nVal=kind)


def test_float_division_by_zero_follows_ieee(session: tuple[RawClient, int]) -> None:
    assert one(session, "1.0 / 0").fVal == math.inf
    assert one(session, "-1 / 0.0").fVal == -math.inf


@pytest.mark.parametrize(
    ("stmt", "columns"),
    [
        ("RETURN 1", ["1"]),
        ("RETURN 1+2", ["1+2"]),
        ("RETURN  1 + 2 ", ["1 + 2"]),
        ("YIELD 1 AS a, 'x' AS `weird name`, $p", ["a", "weird name", "$p"]),
        ("RETURN [1, 2] AS pair, {k: 1}", ["pair", "{k: 1}"]),
        ("RETURN 1 AS `list`", ["list"]),  # a reserved word, backquoted
        ("RETURN 1 AS limit", ["limit"]),  # reserved in the docs, not in graphd 3.x's grammar
        ("return (1) as A", ["A"]),
    ],
)
def test_column_names(session: tuple[RawClient, int], stmt: str, columns: list[str]) -> None:
    resp = run(session, stmt, p=1)
    assert resp.error_code == 0, resp.error_msg
    assert resp.data.column_names == [c.encode() for c in columns]


def test_several_columns_in_one_row(session: tuple[RawClient, int]) -> None:
    resp = run(session, "YIELD 1 AS a, 2.5 AS b, 'c' AS c, null AS d")
    assert [from_value(v) for v in resp.data.rows[0].values] == [1, 2.5, "c", None]


PARAMS: list[Any] = [
    0,
    -(2**63),
    2**63 - 1,
    3.25,
    True,
    None,
    "text with 'quotes' and \"more\"",
    [1, [2, [3]]],
    {"k": {"nested": [1.5, None]}},
    {1, 2},
    datetime.date(2024, 2, 29),
    datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
    datetime.time(1, 2, 3, 4, tzinfo=datetime.timezone.utc),
]


@pytest.mark.parametrize("param", PARAMS, ids=repr)
def test_parameters_come_back_unchanged(session: tuple[RawClient, int], param: Any) -> None:
    value = one(session, "$p", p=param)
    assert value == to_value(param)
    assert from_value(value) == param


def test_parameters_in_arithmetic(session: tuple[RawClient, int]) -> None:
    assert from_value(one(session, "$a * ($b + 1)", a=6, b=6)) == 42
    assert from_value(one(session, "$name + '!'", name="Tim")) == "Tim!"


@pytest.mark.parametrize(
    ("stmt", "code", "message"),
    [
        ("RETURN", -1004, "SyntaxError: syntax error near `RETURN'"),
        ("RETURN 1 +", -1004, "SyntaxError: syntax error near `+'"),
        ("RETURN (1", -1004, "SyntaxError: syntax error near `1'"),
        ("RETURN 1 1", -1004, "SyntaxError: syntax error near `1'"),
        ("RETURN [1, ]", -1004, "SyntaxError: syntax error near `]'"),
        ("RETURN 'unterminated", -1004, "SyntaxError: syntax error near `'unterminated'"),
        ("RETURN 1 AS", -1004, "SyntaxError: syntax error near `AS'"),
        ("RETURN 9223372036854775808", -1004, "SyntaxError: Out of range: near `9223372036854775808'"),
        ("RETURN 12abc", -1004, "SyntaxError: syntax error near `12abc'"),
        ("RETURN foo", -1004, "SyntaxError: syntax error near `foo'"),
        ("MATCH (v) RETURN v", -1004, "SyntaxError: syntax error near `MATCH'"),
        ("SHOW HOSTS", -1004, "SyntaxError: syntax error near `HOSTS'"),
        ("USE", -1004, "SyntaxError: syntax error near `USE'"),
        ("USE match", -1004, "SyntaxError: syntax error near `match'"),  # a reserved word: backquote it
        ("RETURN 1 ?", -1004, "SyntaxError: syntax error near `?'"),
        ("RETURN $missing", -1009, "SemanticError: Undefined parameters: `$missing'"),
        ("USE nowhere", -1005, "SpaceNotFound: SpaceName `nowhere'"),
        ("", -1006, "StatementEmpty: "),
        ("   ", -1006, "StatementEmpty: "),
        (";;", -1006, "StatementEmpty: "),
        ("# only a comment", -1006, "StatementEmpty: "),
        ("/* block */ // line", -1006, "StatementEmpty: "),
    ],
)
def test_errors(session: tuple[RawClient, int], stmt: str, code: int, message: str) -> None:
    resp = run(session, stmt)
    assert (resp.error_code, resp.error_msg) == (code, message.encode())
    assert resp.data is None
    assert resp.space_name == b""  # filled on errors too


_DEEP = 2000  # far beyond both MAX_NESTING and Python's recursion limit
_TOO_DEEP = "SyntaxError: Nested more than 64 levels deep: near "


@pytest.mark.parametrize(
    ("stmt", "message"),
    [
        # str.isdigit() and regex \d take these for digits; graphd's lexer does not
        ("RETURN \u00b2", "SyntaxError: syntax error near `\u00b2'"),
        ("RETURN \u0663", "SyntaxError: syntax error near `\u0663'"),
        # longer than Python's int() accepts (4300 digits)
        ("RETURN " + "1" * 5000, "SyntaxError: Out of range: near `" + "1" * 5000 + "'"),
        ("RETURN -" + "9" * 30, "SyntaxError: Out of range: near `" + "9" * 30 + "'"),
        ("RETURN " + "(" * _DEEP + "1" + ")" * _DEEP, _TOO_DEEP + "`('"),
        ("RETURN " + "-" * 3000 + "1", _TOO_DEEP + "`-'"),
        ("RETURN " + "NOT " * _DEEP + "true", _TOO_DEEP + "`NOT'"),
        ("RETURN " + "[" * _DEEP + "]" * _DEEP, _TOO_DEEP + "`['"),
        ("RETURN " + "{a: " * _DEEP + "1" + "}" * _DEEP, _TOO_DEEP + "`{'"),
        ('RETURN "\\ud800"', "SyntaxError: syntax error near `\"\\ud800\"'"),  # a lone surrogate
        ("RETURN { # the rest is a comment", "SyntaxError: syntax error near `{'"),
    ],
    ids=["superscript", "arabic-indic", "5000-digits", "-30-digits", "parens", "minus", "not", "lists",
         "maps", "lone-surrogate", "open-brace-at-end"],
)
def test_inputs_graphd_rejects_get_a_syntax_error(
    session: tuple[RawClient, int], caplog: pytest.LogCaptureFixture, stmt: str, message: str
) -> None:
    # these used to crash the fake's handler: an ERROR traceback and the connection dropped unanswered
    resp = run(session, stmt)
    assert (resp.error_code, resp.error_msg) == (-1004, message.encode())
    assert from_value(one(session, "1")) == 1  # the connection still works
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_nesting_up_to_the_limit_and_long_chains_work(session: tuple[RawClient, int]) -> None:
    depth = MAX_NESTING
    assert from_value(one(session, "(" * depth + "7" + ")" * depth)) == 7
    assert from_value(one(session, "-" * depth + "7")) == 7  # an even number of minus signs
    assert from_value(one(session, "NOT " * depth + "true")) is True
    nested = from_value(one(session, "[" * 25 + "1" + "]" * 25))  # deeper values cannot be encoded
    for _ in range(25):
        assert isinstance(nested, list) and len(nested) == 1
        nested = nested[0]
    assert nested == 1
    # a chain of binary operators nests as deep as it is long, but is no nesting in the source
    assert from_value(one(session, " + ".join(["1"] * 5000))) == 5000
    assert from_value(one(session, " AND ".join(["$t"] * 5000), t=True)) is True


def test_a_value_too_deep_to_encode_gets_an_application_exception(
    session: tuple[RawClient, int], caplog: pytest.LogCaptureFixture
) -> None:
    # thrift's binary codec stops at 64 nested structs: a list 40 deep parses but cannot be sent
    client, sid = session
    reply = client.call("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=("RETURN " + "[" * 40 + "]" * 40).encode(), parameterMap={}))  # fmt: skip
    assert reply.mtype == wire.EXCEPTION
    assert reply.body.type == TApplicationException.INTERNAL_ERROR
    assert "cannot encode" in reply.body.message
    assert from_value(one(session, "1")) == 1  # the connection still works
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_integer_literals_with_leading_zeros_and_surrogate_pairs(session: tuple[RawClient, int]) -> None:
    assert from_value(one(session, "0" * 40 + "9223372036854775807")) == 2**63 - 1
    assert from_value(one(session, "-" + "0" * 40 + "9223372036854775808")) == -(2**63)
    # JSON-style UTF-16 pairs make one character beyond U+FFFF
    assert from_value(one(session, '"\\ud83d\\ude00!"')) == "\U0001f600!"


def test_comments_are_ignored(session: tuple[RawClient, int]) -> None:
    resp = run(session, "/* lead */ RETURN 1 AS a # trailing\n// more")
    assert resp.error_code == 0 and resp.data.column_names == [b"a"]


def test_use_and_space_name(session: tuple[RawClient, int]) -> None:
    assert run(session, "RETURN 1").space_name == b""
    resp = run(session, "USE test")
    assert (resp.error_code, resp.space_name, resp.data) == (0, b"test", None)
    assert run(session, "RETURN 1").space_name == b"test"
    failed = run(session, "RETURN $nope")
    assert failed.space_name == b"test"
    assert run(session, "use `basketballplayer`").space_name == b"basketballplayer"
    bad = run(session, "USE missing")
    assert (bad.error_code, bad.space_name) == (-1005, b"basketballplayer")


def test_multi_statement_returns_the_last_result(session: tuple[RawClient, int]) -> None:
    resp = run(session, "USE test; RETURN 1 AS a; RETURN 'last' AS b;")
    assert resp.error_code == 0
    assert resp.space_name == b"test"
    assert resp.data.column_names == [b"b"]
    assert from_value(resp.data.rows[0].values[0]) == "last"
    resp = run(session, "RETURN 1; USE basketballplayer")
    assert (resp.data, resp.space_name) == (None, b"basketballplayer")


def test_a_failing_request_runs_none_of_its_statements(session: tuple[RawClient, int]) -> None:
    for stmt in ("USE test; RETURN 1 +", "USE test; RETURN $missing", "USE test; USE missing"):
        resp = run(session, stmt)
        assert resp.error_code != 0
        assert resp.space_name == b"", stmt


def test_space_is_per_session(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    a, b = client.session(), client.session()
    client.execute(a, "USE test")
    assert client.execute(b, "RETURN 1").space_name == b""
    assert client.execute(a, "RETURN 1").space_name == b"test"


def test_show_spaces(fake_graphd_factory: Callable[..., FakeGraphd], raw_client: RawFactory) -> None:
    server = fake_graphd_factory(spaces=["zeta", "alpha"])
    client = raw_client(server)
    sid = client.session()
    resp = client.execute(sid, "SHOW SPACES")
    assert resp.data.column_names == [b"Name"]
    assert [r.values[0].sVal for r in resp.data.rows] == [b"alpha", b"zeta"]
    server.add_space("mid")
    assert client.execute(sid, "USE mid").error_code == 0
    server.drop_space("zeta")
    assert client.execute(sid, "USE zeta").error_code == -1005
    assert server.spaces == ["alpha", "mid"]


def test_default_spaces(fake_graphd: FakeGraphd) -> None:
    assert fake_graphd.spaces == ["basketballplayer", "test"]


def test_json_reply_shape(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    sid = client.session()
    raw = client.execute(sid, "USE test; RETURN 1 AS a, 'x' AS b, [1, null] AS c",
                         method="executeJsonWithParameter")  # fmt: skip
    doc = json.loads(raw)
    assert doc["errors"] == [{"code": 0}]
    (result,) = doc["results"]
    assert result["errors"] == {"code": 0}
    assert result["columns"] == ["a", "b", "c"]
    assert result["data"] == [{"row": [1, "x", [1, None]], "meta": [None, None, [None, None]]}]
    assert result["spaceName"] == "test"
    assert isinstance(result["latencyInUs"], int)
    failed = json.loads(client.execute(sid, "RETURN 1 +", method="executeJson"))
    err = {"code": -1004, "message": "SyntaxError: syntax error near `+'"}
    assert failed["errors"] == [err]
    assert failed["results"][0]["errors"] == err
    assert "columns" not in failed["results"][0]
    assert failed["results"][0]["spaceName"] == "test"


def test_json_with_parameters(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    sid = client.session()
    raw = client.execute(sid, "RETURN $d AS d, $t AS t", {
        "d": to_value(datetime.date(2021, 12, 21)),
        "t": to_value(datetime.datetime(2021, 12, 21, 13, 30, 15, tzinfo=datetime.timezone.utc)),
    }, method="executeJsonWithParameter")  # fmt: skip
    result = json.loads(raw)["results"][0]
    assert result["data"] == [{"row": ["2021-12-21", "2021-12-21T13:30:15.0Z"],
                               "meta": [{"type": "date"}, {"type": "datetime"}]}]  # fmt: skip


def test_statement_log(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    sid = client.session()
    client.execute(sid, "RETURN $x", {"x": Value(iVal=1)})
    client.execute(sid, "RETURN 2", method="execute")
    client.execute(0, "YIELD 1")  # pings are not statements
    log = fake_graphd.statement_log()
    assert [(e.session_id, e.statement, e.method) for e in log] == [
        (sid, "RETURN $x", "executeWithParameter"),
        (sid, "RETURN 2", "execute"),
    ]
    assert log[0].parameters == {"x": Value(iVal=1)}


def test_json_graph_values(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    tag = ttypes.Tag(name=b"player", props={b"age": Value(iVal=1)})
    v1 = ttypes.Vertex(vid=Value(sVal=b"v1"), tags=[tag])
    v2 = ttypes.Vertex(vid=Value(iVal=2), tags=[])
    edge = ttypes.Edge(src=Value(sVal=b"v1"), dst=Value(iVal=2), type=5, name=b"follow", ranking=3,
                       props={b"w": Value(fVal=0.5)})  # fmt: skip
    path = ttypes.Path(src=v1, steps=[ttypes.Step(dst=v2, type=-5, name=b"follow", ranking=0,
                                                  props={b"w": Value(nVal=0)})])  # fmt: skip
    fake_graphd.script("GRAPH", columns=["v", "e", "p", "m", "t", "du", "g", "empty"], rows=[[
        Value(vVal=v1), Value(eVal=edge), Value(pVal=path),
        {"when": datetime.date(2020, 1, 2), "n": 1},
        datetime.time(1, 2, 3, 4, tzinfo=datetime.timezone.utc),
        Value(duVal=ttypes.Duration(seconds=61, microseconds=500000, months=2)),
        Value(ggVal=ttypes.Geography(lsVal=ttypes.LineString(coordList=[
            ttypes.Coordinate(x=0.0, y=1.0), ttypes.Coordinate(x=2.5, y=3.0)]))),
        Value(),
    ]])  # fmt: skip
    client = raw_client(fake_graphd)
    doc = json.loads(client.execute(client.session(), "GRAPH", method="executeJson"))
    (data,) = doc["results"][0]["data"]
    assert data["row"] == [
        {"player.age": 1},
        {"w": 0.5},
        [{"player.age": 1}, {"w": None}, {}],
        {"when": "2020-01-02", "n": 1},
        "01:02:03.000004Z",
        "P2MT61.5S",
        "LINESTRING(0 1, 2.5 3)",
        "__EMPTY__",
    ]
    edge_id = {"name": "follow", "src": "v1", "dst": 2, "type": 5, "ranking": 3}
    assert data["meta"] == [
        {"id": "v1", "type": "vertex"},
        {"id": edge_id, "type": "edge"},
        [{"id": "v1", "type": "vertex"},
         {"id": {"name": "follow", "src": 2, "dst": "v1", "type": -5, "ranking": 0}, "type": "edge"},
         {"id": 2, "type": "vertex"}],
        {"when": {"type": "date"}, "n": None},
        {"type": "time"},
        {"type": "duration"},
        None,
        None,
    ]  # fmt: skip


def test_json_plan_description(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    plan = ttypes.PlanDescription(
        plan_node_descs=[ttypes.PlanNodeDescription(
            name=b"Start", id=0, output_var=b"__Start_0",
            description=[ttypes.Pair(key=b"k", value=b"v")],
            profiles=[ttypes.ProfilingStats(rows=1, exec_duration_in_us=2, total_duration_in_us=3,
                                            other_stats={b"a": b"b"})],
            branch_info=ttypes.PlanNodeBranchInfo(is_do_branch=True, condition_node_id=7),
            dependencies=[1, 2])],
        node_index_map={0: 0}, format=b"row", optimize_time_in_us=9)  # fmt: skip
    fake_graphd.script("PROFILE X", columns=["a"], rows=[], plan_desc=plan, comment="note")
    client = raw_client(fake_graphd)
    result = json.loads(client.execute(client.session(), "PROFILE X", method="executeJson"))["results"][0]
    assert result["comment"] == "note"
    assert result["planDesc"] == {
        "planNodeDescs": [{
            "name": "Start", "id": 0, "outputVar": "__Start_0", "description": [{"k": "v"}],
            "profiles": [{"rows": 1, "execDurationInUs": 2, "totalDurationInUs": 3,
                          "otherStats": {"a": "b"}}],
            "branchInfo": {"isDoBranch": True, "conditionNodeId": 7}, "dependencies": [1, 2],
        }],
        "nodeIndexMap": {"0": 0}, "format": "row", "optimize_time_in_us": 9,
    }  # fmt: skip


def test_statement_log_is_bounded(fake_graphd_factory: Callable[..., FakeGraphd],
                                  raw_client: RawFactory) -> None:  # fmt: skip
    server = fake_graphd_factory(log_size=3)
    client = raw_client(server)
    sid = client.session()
    for n in range(5):
        client.execute(sid, f"RETURN {n}")
    assert [e.statement for e in server.statement_log()] == ["RETURN 2", "RETURN 3", "RETURN 4"]
    assert server.stats().statements == 5
