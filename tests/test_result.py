"""ResultSet, Record, plan descriptions and table printing (nebula_sync._result)."""

from __future__ import annotations

import builtins
import datetime as dt
import io
from typing import Any

import pytest

from nebula_sync import _result, _values
from nebula_sync._result import PlanDescription, Record, ResultSet
from nebula_sync._thrift import fast, service, wire
from nebula_sync._thrift import ttypes as T
from nebula_sync._values import EMPTY, Node, NullValue, Path, Relationship, ValueWrapper, format_value

UTC = dt.timezone.utc


def result(names: list[str], rows: list[list[Any]], **kw: Any) -> ResultSet:
    return ResultSet(names, rows, **kw)


def decoded(resp: T.ExecutionResponse) -> fast.DecodedResponse:
    raw = wire.encode_struct(
        service.ExecuteResult(success=resp), [service.ExecuteResult, service.ExecuteResult.thrift_spec]
    )
    reply = fast.decode_execute_reply(raw, 0).success
    assert reply is not None
    return reply


# ---- from_response ---------------------------------------------------------------------------


def test_from_response_metadata_and_rows() -> None:
    data = T.DataSet(
        column_names=[b"a", b"b"],
        rows=[
            T.Row(values=[T.Value(iVal=1), T.Value(sVal=b"x")]),
            T.Row(values=[T.Value(nVal=0), T.Value()]),
        ],
    )
    resp = T.ExecutionResponse(
        error_code=0, latency_in_us=120, data=data, space_name=b"nba", comment=b"note", error_msg=None
    )
    rs = ResultSet.from_response(
        decoded(resp), statement="RETURN 1", host="h:9669", elapsed_us=300, timezone_offset=3600
    )
    assert rs.column_names == ["a", "b"] == rs.keys()
    assert len(rs) == 2 and not rs.is_empty()
    assert (rs.latency_us, rs.elapsed_us, rs.space_name, rs.comment) == (120, 300, "nba", "note")
    assert (rs.error_code, rs.error_msg, rs.is_succeeded) == (0, "", True)
    assert (rs.statement, rs.host, rs.timezone_offset) == ("RETURN 1", "h:9669", 3600)
    assert rs.rows() == [(1, "x"), (None, EMPTY)]
    assert rs.plan_desc is None
    assert repr(rs) == "<ResultSet 2 rows x 2 columns, latency 120 us>"


def test_from_response_of_a_plain_struct_and_errors() -> None:
    plain = T.ExecutionResponse(
        error_code=-1009,
        latency_in_us=5,
        error_msg=b"SemanticError: bad \xff",
        data=T.DataSet(column_names=[b"c"], rows=[T.Row(values=[T.Value(sVal=b"\xff")])]),
    )
    rs = ResultSet.from_response(plain, statement=None, host=None, elapsed_us=9)
    assert rs.error_code == -1009 and not rs.is_succeeded
    assert rs.error_msg == "SemanticError: bad \\xff"
    assert rs.rows() == [("\\xff",)]
    empty = ResultSet.from_response(
        decoded(T.ExecutionResponse(error_code=0, latency_in_us=1)),
        statement="USE x",
        host=None,
        elapsed_us=2,
    )
    assert empty.column_names == [] and len(empty) == 0 and empty.is_empty()
    assert empty.space_name == "" and empty.comment == ""
    assert empty.as_primitive_by_row() == [] and empty.as_primitive_by_column() == {}
    assert empty.table() == "Execution succeeded (time spent 1/2 us)"


# ---- rows and records ------------------------------------------------------------------------


def test_records_and_access() -> None:
    n = Node("v", {"t": {"k": 1}})
    rs = result(
        ["id", "node", "when"], [[1, n, dt.date(2020, 1, 2)], [2, None, NullValue(3)]], timezone_offset=60
    )
    recs = list(rs)
    assert len(recs) == 2 and all(isinstance(r, Record) for r in recs)
    r0 = recs[0]
    assert r0[0].as_int() == 1 and r0["node"].as_node() == n and r0[-1].as_date() == dt.date(2020, 1, 2)
    assert r0["node"].timezone_offset == 60
    assert r0.get("nope") is None and r0.get("nope", 5) == 5 and r0.get(10) is None
    assert r0.value("id") == 1 and r0.value(1) is n
    assert r0.keys() == ["id", "node", "when"] and len(r0) == 3 and "id" in r0
    assert [w.cast() for w in r0.values()] == [1, n, dt.date(2020, 1, 2)]
    assert [(k, w.cast()) for k, w in r0.items()] == [("id", 1), ("node", n), ("when", dt.date(2020, 1, 2))]
    assert r0.as_tuple() == (1, n, dt.date(2020, 1, 2))
    assert r0.as_dict() == {
        "id": 1,
        "node": {"vid": "v", "tags": ["t"], "properties": {"t": {"k": 1}}},
        "when": "2020-01-02",
    }
    assert recs[1].as_dict() == {"id": 2, "node": None, "when": None}
    assert recs[1]["when"].null_kind == "BAD_TYPE"
    assert repr(recs[1]) == "<Record id=2 node=__NULL__ when=BAD_TYPE>"
    assert r0 == rs.row_values(0) == rs[0] and r0 != recs[1]
    with pytest.raises(KeyError, match="no column 'x'"):
        r0["x"]
    with pytest.raises(IndexError, match="out of range"):
        r0[3]
    with pytest.raises(TypeError):
        r0[1.5]  # type: ignore[index]
    with pytest.raises(IndexError, match="row index 5"):
        rs.row_values(5)
    assert rs[-1] == recs[1] and rs[:1] == [r0] and rs[::-1] == [recs[1], r0] and rs[5:] == []
    numpy = pytest.importorskip("numpy")
    assert rs[numpy.int64(1)] == recs[1]  # any integer, as a list takes
    with pytest.raises(TypeError, match="row index must be an int, not str"):
        rs.row_values("id")  # type: ignore[arg-type]


def test_one_scalar_and_columns() -> None:
    rs = result(["a", "b"], [[1, "x"]])
    assert rs.one()["b"].as_string() == "x"
    assert rs.one_or_none() is not None
    assert rs.scalar() == 1
    assert result(["a"], []).one_or_none() is None
    assert result(["a"], []).scalar() is None
    many = result(["a"], [[1], [2]])
    with pytest.raises(ValueError, match="exactly one row, got 2"):
        many.one()
    with pytest.raises(ValueError, match="at most one row, got 2"):
        many.one_or_none()
    with pytest.raises(ValueError, match="exactly one row, got 0"):
        result(["a"], []).one()
    assert many.column("a") == [1, 2] == many.column(0)
    assert [w.as_int() for w in many.column_values("a")] == [1, 2]
    with pytest.raises(KeyError, match="no column 'z'"):
        many.column("z")
    with pytest.raises(IndexError):
        many.column(3)


def test_duplicate_column_names_resolve_to_the_first() -> None:
    rs = result(["x", "x"], [[1, 2]])
    assert rs.one()["x"].as_int() == 1
    assert rs.one()[1].as_int() == 2
    assert rs.rows() == [(1, 2)]


def test_iterating_twice_and_concurrently_is_independent() -> None:
    rs = result(["a"], [[1], [2], [3]])
    outer = []
    for r in rs:
        inner = [x["a"].as_int() for x in rs]
        outer.append((r["a"].as_int(), inner))
    assert outer == [(1, [1, 2, 3]), (2, [1, 2, 3]), (3, [1, 2, 3])]
    assert [r["a"].as_int() for r in rs.records()] == [1, 2, 3]


# ---- primitive conversions -------------------------------------------------------------------


def test_primitive_conversions() -> None:
    n = Node("v", {"t": {"d": dt.date(2020, 1, 1)}})
    e = Relationship("a", "b", "e", 0, {})
    rows = [
        [
            1,
            1.5,
            "s",
            True,
            dt.date(2020, 1, 2),
            dt.datetime(2020, 1, 2, 3, tzinfo=UTC),
            n,
            e,
            {1, 2},
            NullValue(1),
        ],
        [None, EMPTY, "t", False, None, None, None, None, [], None],
    ]
    names = ["i", "f", "s", "b", "d", "dt", "n", "e", "set", "null"]
    rs = result(names, rows)
    by_row = rs.as_primitive_by_row()
    assert by_row[0] == {
        "i": 1,
        "f": 1.5,
        "s": "s",
        "b": True,
        "d": "2020-01-02",
        "dt": "2020-01-02T03:00:00+00:00",
        "n": {"vid": "v", "tags": ["t"], "properties": {"t": {"d": "2020-01-01"}}},
        "e": {"src": "a", "dst": "b", "type": "e", "rank": 0, "properties": {}},
        "set": [1, 2],
        "null": None,
    }
    assert by_row[1] == dict.fromkeys(names, None) | {"s": "t", "b": False, "set": []}
    by_col = rs.as_primitive_by_column()
    assert list(by_col) == names
    assert by_col["d"] == ["2020-01-02", None] and by_col["f"] == [1.5, None]
    assert [dict(zip(by_col, vals)) for vals in zip(*by_col.values())] == by_row
    # the decoded rows are not modified by conversion
    assert rs.rows()[0][4] == dt.date(2020, 1, 2)


def test_primitive_columns_are_not_copied_value_by_value() -> None:
    rows = [[i, str(i)] for i in range(10)]
    rs = result(["a", "b"], rows)
    by_col = rs.as_primitive_by_column()
    assert by_col == {"a": list(range(10)), "b": [str(i) for i in range(10)]}


@pytest.mark.parametrize("width", [1, 2, 5, 64, 65, 130])
def test_row_dicts_match_dict_zip_at_every_width(width: int) -> None:
    names = [f"c{i}" for i in range(width)]
    rows = [[r * 1000 + c for c in range(width)] for r in range(7)]
    by_row = result(names, rows).as_primitive_by_row()
    assert by_row == [dict(zip(names, r)) for r in rows]
    assert all(list(d) == names for d in by_row)  # column order kept


def test_row_dicts_with_duplicate_and_odd_column_names() -> None:
    # graphd may repeat a column name (RETURN 1, 1); the last value wins, as with dict(zip())
    names = ["x", "x", "k0", "c0", "names", "columns", "{}", "a b"]
    rows = [list(range(8)), list(range(10, 18))]
    assert result(names, rows).as_primitive_by_row() == [dict(zip(names, r)) for r in rows]


def test_row_dicts_tolerate_rows_shorter_than_the_header() -> None:
    rs = result(["a", "b", "c"], [[1, 2], [3, 4]])
    assert rs.as_primitive_by_row() == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert result(["a"], [[], []]).as_primitive_by_row() == []


#: rows of the Node-column results below (nebula3's as_primitive is O(rows x cols^2): at 64
#: columns a per-row rebuild of the whole row would convert each cell 64 times)
NODE_ROWS = 2000


def node_columns(width: int) -> tuple[list[str], list[list[Node]]]:
    names = [f"c{c}" for c in range(width)]
    rows = [[Node(f"v{r}-{c}", {"t": {"r": r, "c": c}}) for c in range(width)] for r in range(NODE_ROWS)]
    return names, rows


def node_primitive(r: int, c: int) -> dict[str, Any]:
    return {"vid": f"v{r}-{c}", "tags": ["t"], "properties": {"t": {"r": r, "c": c}}}


@pytest.mark.parametrize("width", [4, 64])
def test_as_primitive_converts_each_cell_exactly_once(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    # Linear in rows x columns, checked by counting instead of timing: a result built from values
    # (not decoded as plain) converts a Node column through _values._TO_PRIMITIVE[Node].
    calls = 0
    node_to_primitive = _values._node_primitive

    def counting(node: Node) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return node_to_primitive(node)

    monkeypatch.setitem(_values._TO_PRIMITIVE, Node, counting)
    monkeypatch.setattr(_values, "_node_primitive", counting)  # any other route to it counts too
    names, rows = node_columns(width)
    rs = result(names, rows)
    last = NODE_ROWS - 1

    by_row = rs.as_primitive_by_row()
    assert calls == NODE_ROWS * width
    assert len(by_row) == NODE_ROWS and list(by_row[last]) == names
    assert by_row[0]["c0"] == node_primitive(0, 0)
    assert by_row[last][names[-1]] == node_primitive(last, width - 1)

    calls = 0
    by_column = rs.as_primitive_by_column()
    assert calls == NODE_ROWS * width
    assert list(by_column) == names and by_column[names[-1]][last] == node_primitive(last, width - 1)

    calls = 0
    assert rs.as_primitive_by_row() == by_row  # no cache that a second call could miss
    assert calls == NODE_ROWS * width


@pytest.mark.parametrize("width", [4, 64])
def test_as_primitive_of_a_decoded_reply_converts_each_column_once(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    # The path a reply from graphd takes: decoded as plain (its vertices hold primitives only),
    # each Node column goes through _nodes_primitive_plain once. (Fewer rows: encoding the
    # reply is slow, and a per-row rebuild shows as more batches at any row count.)
    rows = 250
    batches: list[int] = []
    plain = _result._nodes_primitive_plain

    def counting(nodes: Any) -> list[dict[str, Any]]:
        nodes = list(nodes)
        batches.append(len(nodes))
        return plain(nodes)

    monkeypatch.setattr(_result, "_nodes_primitive_plain", counting)
    data = T.DataSet(
        column_names=[f"c{c}".encode() for c in range(width)],
        rows=[
            T.Row(values=[
                T.Value(vVal=T.Vertex(vid=T.Value(sVal=f"v{r}-{c}".encode()), tags=[
                    T.Tag(name=b"t", props={b"r": T.Value(iVal=r), b"c": T.Value(iVal=c)})
                ]))
                for c in range(width)
            ])
            for r in range(rows)
        ],
    )  # fmt: skip
    rs = ResultSet.from_response(
        decoded(T.ExecutionResponse(error_code=0, latency_in_us=1, data=data)),
        statement=None,
        host=None,
        elapsed_us=1,
    )
    assert rs._plain
    by_row = rs.as_primitive_by_row()
    assert batches == [rows] * width
    assert by_row[rows - 1][f"c{width - 1}"] == node_primitive(rows - 1, width - 1)
    batches.clear()
    assert list(rs.as_primitive_by_column()) == [f"c{c}" for c in range(width)]
    assert batches == [rows] * width


def test_large_conversions_pause_the_gc() -> None:
    import gc

    rows = [[i, dt.date(2020, 1, 1)] for i in range(fast.GC_PAUSE_THRESHOLD // 8)]
    seen: list[bool] = []
    real = builtins.dict

    class Spy(ResultSet):
        __slots__ = ()

        def _primitive_columns(self) -> Any:
            seen.append(gc.isenabled())
            return super()._primitive_columns()

    rs = Spy(["a", "d"], rows)
    out = rs.as_primitive_by_row()
    assert len(out) == len(rows) and out[0] == real(a=0, d="2020-01-01")
    small = Spy(["a"], [[1]])
    small.as_primitive_by_column()
    assert seen == [False, True] and gc.isenabled()


def test_as_data_frame() -> None:
    pd = pytest.importorskip("pandas")
    rs = result(["a", "d", "a"], [[1, dt.date(2020, 1, 1), "x"], [2, None, "y"]])
    frame = rs.as_data_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["a", "d", "a"]
    assert frame.iloc[0, 1] == "2020-01-01" and frame.iloc[1, 2] == "y"
    native = rs.as_data_frame(primitive=False)
    assert native.iloc[0, 1] == dt.date(2020, 1, 1)
    assert list(result(["a"], []).as_data_frame().columns) == ["a"]


def test_as_data_frame_without_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pandas(name: str, *args: Any, **kw: Any) -> Any:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"needs pandas: pip install 'nebula-sync\[pandas\]'"):
        result(["a"], [[1]]).as_data_frame()


# ---- printing --------------------------------------------------------------------------------


def test_table_as_nebula_console_prints_it() -> None:
    a = Node("a", {"player": {"name": "Tim", "age": 42}})
    b = Node("b")
    e = Relationship("a", "b", "follow", 0, {"degree": 95})
    rs = result(
        ["v", "e", "p", "n", "s"],
        [[a, e, Path([a, b], [e]), None, "x"], [b, None, None, 1.5, 'q"uote']],
        latency_us=11,
        elapsed_us=22,
    )
    border = (
        "+-------------------------------------+------------------------------------+"
        "-----------------------------------------------------------------------+----------+-----------+"
    )
    expected = "\n".join(
        [
            border,
            "| v                                   | e                                  |"
            " p                                                                     | n        | s         |",
            border,
            '| ("a" :player{name: "Tim", age: 42}) | [:follow "a"->"b" @0 {degree: 95}] |'
            ' <("a" :player{name: "Tim", age: 42})-[:follow@0 {degree: 95}]->("b")> | __NULL__ | "x"       |',
            '| ("b")                               | __NULL__                           |'
            " __NULL__                                                              | 1.5      |"
            ' "q\\"uote" |',
            border,
            "Got 2 rows (time spent 11/22 us)",
        ]
    )
    assert str(rs) == expected
    buf = io.StringIO()
    rs.print(file=buf)
    assert buf.getvalue() == expected + "\n"


def test_control_characters_are_escaped_in_tables() -> None:
    rs = result(["s"], [["a\tb\rc\x1b[2Jd\ne\x7f"]])
    line = str(rs).splitlines()[3]
    assert line == '| "a\\tb\\rc\\x1b[2Jd\\ne\\x7f" |'
    assert str(Node("x\ty")) == '("x\\ty")'
    # names too: map keys, tags, properties, edges
    assert format_value({"k\tx": 1}) == "{k\\tx: 1}"
    assert str(Node("v", {"t\x1b": {"p\r": 1}})) == '("v" :t\\x1b{p\\r: 1})'
    assert str(Relationship("a", "b", "e\n", 0, {})).startswith("[:e\\n ")


def test_table_limits_are_checked() -> None:
    rs = result(["s"], [["a"], ["b"]])
    for bad in ({"max_rows": -1}, {"max_width": 0}, {"max_rows": 1.5}):
        with pytest.raises(ValueError, match=f"^{next(iter(bad))} must be None or an int"):
            rs.table(**bad)  # type: ignore[arg-type]
    assert rs.table(max_rows=0).splitlines()[-2] == "(2 more rows not shown)"
    numpy = pytest.importorskip("numpy")
    assert rs.table(max_rows=numpy.int64(1)).splitlines()[-2] == "(1 more rows not shown)"


def test_print_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    result(["x"], [[1]], latency_us=1, elapsed_us=2).print()
    assert capsys.readouterr().out == "+---+\n| x |\n+---+\n| 1 |\n+---+\nGot 1 row (time spent 1/2 us)\n"


def test_table_is_wide_character_aware() -> None:
    rs = result(["名前", "n"], [["日本", 1], ["ab", 22]])
    lines = rs.table().splitlines()
    assert lines[1] == "| 名前   | n  |"
    assert lines[3] == '| "日本" | 1  |'
    assert lines[4] == '| "ab"   | 22 |'
    # every line of the table has the same display width
    from nebula_sync._result import _width

    assert len({_width(line) for line in lines[:-1]}) == 1


def test_long_cells_are_truncated_with_a_marker() -> None:
    rs = result(["s"], [["x" * 200], ["界" * 100]])
    lines = rs.table(max_width=20).splitlines()
    assert lines[3] == '| "xxxxxxxxxxxxxxxxxx… |'
    assert lines[4] == '| "界界界界界界界界界… |'
    assert "x" * 200 in rs.table(max_width=None)
    shown = rs.table(max_rows=1)
    assert "(1 more rows not shown)" in shown and "Got 2 rows" in shown


def test_multiline_cells() -> None:
    rs = result(["s"], [["a\nb"]])
    assert '"a\\nb"' in rs.table()  # strings keep escapes: one line per row


# ---- plan descriptions -----------------------------------------------------------------------


def _plan() -> T.PlanDescription:
    return T.PlanDescription(
        plan_node_descs=[
            T.PlanNodeDescription(
                name=b"Project",
                id=2,
                output_var=b"__Project_2",
                description=[T.Pair(key=b"columns", value=b'["$-.x"]')],
                profiles=[
                    T.ProfilingStats(
                        rows=1, exec_duration_in_us=5, total_duration_in_us=9, other_stats={b"k": b"v"}
                    )
                ],
                branch_info=None,
                dependencies=[1],
            ),
            T.PlanNodeDescription(
                name=b"Start",
                id=1,
                output_var=b"__Start_1",
                description=None,
                profiles=None,
                branch_info=T.PlanNodeBranchInfo(is_do_branch=True, condition_node_id=7),
                dependencies=None,
            ),
        ],
        node_index_map={2: 0, 1: 1},
        format=b"row",
        optimize_time_in_us=33,
    )


PLAN_TABLE = """\
+----+---------+--------------+--------------------------------------+-------------------------+
| id | name    | dependencies | profiling data                       | operator info           |
+----+---------+--------------+--------------------------------------+-------------------------+
| 2  | Project | 1            | rows: 1, exec: 5us, total: 9us, k: v | outputVar: __Project_2  |
|    |         |              |                                      | columns: ["$-.x"]       |
+----+---------+--------------+--------------------------------------+-------------------------+
| 1  | Start   |              |                                      | outputVar: __Start_1    |
|    |         |              |                                      | branch: True, nodeId: 7 |
+----+---------+--------------+--------------------------------------+-------------------------+"""


def test_plan_description_view() -> None:
    resp = decoded(T.ExecutionResponse(error_code=0, latency_in_us=1, plan_desc=_plan()))
    rs = ResultSet.from_response(resp, statement="PROFILE ...", host=None, elapsed_us=1)
    plan = rs.plan_desc
    assert isinstance(plan, PlanDescription) and plan is rs.plan_desc
    assert plan.format == "row" and plan.optimize_time_us == 33
    project = plan.node(2)
    assert project.name == "Project" and project.output_var == "__Project_2"
    assert project.description == {"columns": '["$-.x"]'}
    assert project.profiles == [
        {"rows": 1, "exec_duration_us": 5, "total_duration_us": 9, "other_stats": {"k": "v"}}
    ]
    assert project.dependencies == [1] and project.branch_info is None
    assert plan.node(1).branch_info == (True, 7)
    with pytest.raises(KeyError):
        plan.node(99)
    table = plan.table()
    assert table == PLAN_TABLE
    assert str(plan) == table
    assert plan.dot() == "\n".join(
        [
            "digraph exec_plan {",
            "    rankdir=BT;",
            "    node [shape=box];",
            '    "2" [label="Project (id 2)"];',
            '    "1" [label="Start (id 1)"];',
            '    "1" -> "2";',
            "}",
        ]
    )
    assert "2 nodes" in repr(plan)


def test_wrapper_type_on_record() -> None:
    rec = result(["a"], [[[1, 2]]]).one()
    assert isinstance(rec["a"], ValueWrapper)
    assert [w.as_int() for w in rec["a"].as_list()] == [1, 2]
    assert rec.as_dict() == {"a": [1, 2]}
