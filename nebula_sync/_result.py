"""Statement results: :class:`ResultSet`, :class:`Record`, plan descriptions and table printing.

A :class:`ResultSet` wraps a decoded ``ExecutionResponse`` (``nebula_sync._thrift.fast``) whose
rows already hold plain Python values. Nothing is converted up front: :class:`Record` and
:class:`~nebula_sync.ValueWrapper` objects are created only for the rows and cells you touch, and
the bulk conversions (:meth:`ResultSet.rows`, :meth:`ResultSet.as_primitive_by_row`, ...) work
column by column, skipping columns that hold only primitives.

Results are not thread-safe: use one from one thread at a time.
"""

from __future__ import annotations

import functools
import operator
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, overload

from nebula_sync._thrift import ttypes
from nebula_sync._thrift.fast import DecodedResponse as _DecodedResponse
from nebula_sync._thrift.fast import gc_paused
from nebula_sync._values import (
    _TO_PRIMITIVE,
    Node,
    ValueWrapper,
    _nodes_primitive_plain,
    format_value,
    to_primitive,
)
from nebula_sync.errors import redact_statement

__all__ = [
    "PlanDescription",
    "PlanNode",
    "Record",
    "ResultSet",
]

_PRIMITIVE_TYPES = frozenset((type(None), bool, int, float, str))
#: conversions of at least this many cells run with the cyclic GC paused (see fast.gc_paused)
_GC_PAUSE_CELLS = 1024
_MISSING: Any = object()
_new_result = object.__new__


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", "backslashreplace")


# ---- per-column primitive conversion ---------------------------------------------------------


def _primitive_column(column: Sequence[Any], plain: bool = False) -> Sequence[Any]:
    """``column`` with every value made primitive; returned as is when it already is.

    ``plain``: the values come from a reply decoded as plain (graph elements hold primitives only).
    """
    kinds = set(map(type, column))
    if kinds <= _PRIMITIVE_TYPES:
        return column
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if plain and kind is Node:
            return _nodes_primitive_plain(column)
        conv = _TO_PRIMITIVE.get(kind)
        if conv is not None:
            return list(map(conv, column))
    return list(map(to_primitive, column))


#: widths up to this get a generated row-dict builder (see _row_builder)
_MAX_BUILT_WIDTH = 64


@functools.lru_cache(maxsize=_MAX_BUILT_WIDTH)
def _row_builder(width: int) -> Callable[[Sequence[str], Sequence[Sequence[Any]]], list[dict[str, Any]]]:
    """A function turning ``width`` columns into row dicts with a dict display.

    ``{k0: c0, k1: c1}`` in a comprehension costs a fraction of ``dict(zip(names, row))`` per row
    (no zip object and no generic dict-from-iterable path). Only variable names are generated; the
    column names are passed in as values, so any name is safe. Duplicate names keep the last
    value, as ``dict(zip())`` does.
    """
    keys = ", ".join(f"k{i}" for i in range(width))
    cols = ", ".join(f"c{i}" for i in range(width))
    pairs = ", ".join(f"k{i}: c{i}" for i in range(width))
    source = (
        "def build(names, columns):\n"
        f"    {keys}, = names\n"
        f"    return [{{{pairs}}} for {cols}, in zip(*columns)]\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # the source holds only generated variable names
    return namespace["build"]  # type: ignore[no-any-return]


def _row_dicts(names: Sequence[str], columns: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Row dicts ``{name: value}`` from equally long ``columns``."""
    width = len(names)
    if len(columns) != width:  # malformed rows (shorter than the header): zip() truncates
        return [dict(zip(names, r)) for r in zip(*columns)]
    if width == 1:
        name = names[0]
        return [{name: v} for v in columns[0]]
    if 1 < width <= _MAX_BUILT_WIDTH:
        return _row_builder(width)(names, columns)
    return [dict(zip(names, r)) for r in zip(*columns)]


# ---- plan description ------------------------------------------------------------------------


class PlanNode:
    """One operator of an execution plan (``EXPLAIN`` / ``PROFILE``). Immutable once built;
    thread-safe."""

    __slots__ = ("branch_info", "dependencies", "description", "id", "name", "output_var", "profiles")

    def __init__(self, raw: ttypes.PlanNodeDescription) -> None:
        #: operator id
        self.id: int = raw.id or 0
        #: operator name, e.g. ``"Project"``
        self.name: str = _text(raw.name)
        #: the variable the operator writes
        self.output_var: str = _text(raw.output_var)
        #: operator info (key → value)
        self.description: dict[str, str] = {_text(p.key): _text(p.value) for p in raw.description or ()}
        #: profiling stats (``PROFILE`` only): one dict per execution, with ``rows``,
        #: ``exec_duration_us``, ``total_duration_us`` and ``other_stats``
        self.profiles: list[dict[str, Any]] = [
            {
                "rows": p.rows,
                "exec_duration_us": p.exec_duration_in_us,
                "total_duration_us": p.total_duration_in_us,
                "other_stats": {_text(k): _text(v) for k, v in (p.other_stats or {}).items()},
            }
            for p in raw.profiles or ()
        ]
        info = raw.branch_info
        #: ``(is_do_branch, condition_node_id)`` for operators inside a loop or select, else None
        self.branch_info: tuple[bool, int] | None = (
            (bool(info.is_do_branch), info.condition_node_id or 0) if info is not None else None
        )
        #: ids of the operators this one reads from
        self.dependencies: list[int] = list(raw.dependencies or ())

    def __repr__(self) -> str:
        return f"PlanNode(id={self.id}, name={self.name!r}, dependencies={self.dependencies})"


class PlanDescription:
    """A structured execution plan: :attr:`nodes`, :meth:`table` (as nebula-console prints it) and
    :meth:`dot` (a Graphviz graph). Immutable once built; thread-safe."""

    __slots__ = ("format", "nodes", "optimize_time_us")

    def __init__(self, raw: ttypes.PlanDescription) -> None:
        #: the format the statement asked for (``"row"``, ``"dot"``, ...)
        self.format: str = _text(raw.format)
        #: optimiser time, microseconds
        self.optimize_time_us: int = raw.optimize_time_in_us or 0
        #: operators, in server order
        self.nodes: list[PlanNode] = [PlanNode(n) for n in raw.plan_node_descs or ()]

    def node(self, node_id: int) -> PlanNode:
        """The operator with id ``node_id`` (``KeyError`` if none)."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no plan node with id {node_id}")

    def table(self) -> str:
        """The plan as a text table: id, name, dependencies, profiling data, operator info."""
        header = ["id", "name", "dependencies", "profiling data", "operator info"]
        rows = []
        for n in self.nodes:
            prof = "\n".join(
                f"rows: {p['rows']}, exec: {p['exec_duration_us']}us, total: {p['total_duration_us']}us"
                + "".join(f", {k}: {v}" for k, v in p["other_stats"].items())
                for p in n.profiles
            )
            info = [f"outputVar: {n.output_var}"] if n.output_var else []
            info += [f"{k}: {v}" for k, v in n.description.items()]
            if n.branch_info is not None:
                info.append(f"branch: {n.branch_info[0]}, nodeId: {n.branch_info[1]}")
            rows.append([str(n.id), n.name, ",".join(map(str, n.dependencies)), prof, "\n".join(info)])
        return _render_table(header, rows, max_width=None)

    def dot(self) -> str:
        """The plan as a Graphviz DOT graph (edges point from a dependency to its consumer)."""
        lines = ["digraph exec_plan {", "    rankdir=BT;", "    node [shape=box];"]
        for n in self.nodes:
            label = f"{n.name} (id {n.id})".replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'    "{n.id}" [label="{label}"];')
        for n in self.nodes:
            for dep in n.dependencies:
                lines.append(f'    "{dep}" -> "{n.id}";')
        lines.append("}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.dot() if self.format == "dot" else self.table()

    def __repr__(self) -> str:
        return f"<PlanDescription {len(self.nodes)} nodes, format {self.format!r}>"


# ---- table rendering -------------------------------------------------------------------------

_WIDE = frozenset(("W", "F"))


def _width(s: str) -> int:
    """Display width of ``s`` on a terminal (East Asian wide and fullwidth characters count 2,
    combining marks 0)."""
    if s.isascii():
        return len(s)
    w = 0
    for ch in s:
        if unicodedata.combining(ch):
            continue
        w += 2 if unicodedata.east_asian_width(ch) in _WIDE else 1
    return w


def _truncate(s: str, limit: int, marker: str = "…") -> str:
    if _width(s) <= limit:
        return s
    out, w = [], 0
    budget = limit - _width(marker)
    for ch in s:
        cw = 0 if unicodedata.combining(ch) else (2 if unicodedata.east_asian_width(ch) in _WIDE else 1)
        if w + cw > budget:
            break
        out.append(ch)
        w += cw
    return "".join(out) + marker


def _pad(s: str, width: int) -> str:
    return s + " " * (width - _width(s))


def _render_table(header: list[str], rows: list[list[str]], max_width: int | None) -> str:
    """An aligned ``+---+`` bordered table; multi-line cells become several text lines."""

    def fit(cell: str) -> list[str]:
        lines = cell.split("\n") if cell else [""]
        if max_width is not None:
            lines = [_truncate(line, max_width) for line in lines]
        return lines

    head = [fit(h) for h in header]
    body = [[fit(c) for c in row] for row in rows]
    widths = [max(_width(line) for line in cell) for cell in head]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], max(_width(line) for line in cell))
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def emit(cells: list[list[str]], out: list[str]) -> None:
        height = max(len(c) for c in cells)
        for k in range(height):
            parts = [_pad(c[k] if k < len(c) else "", widths[i]) for i, c in enumerate(cells)]
            out.append("| " + " | ".join(parts) + " |")

    out = [border]
    emit(head, out)
    out.append(border)
    for row in body:
        emit(row, out)
        if len(body) > 1 and any(len(c) > 1 for c in row):
            out.append(border)
    if not body or out[-1] != border:
        out.append(border)
    return "\n".join(out)


# ---- records ---------------------------------------------------------------------------------


class Record:
    """One row of a result: ``record[0]`` or ``record["name"]`` gives a
    :class:`~nebula_sync.ValueWrapper`; :meth:`as_dict` gives primitives.

    Created on demand by :class:`ResultSet`; cheap. Not thread-safe (like its result).
    """

    __slots__ = ("_index", "_names", "_tz", "_values")

    def __init__(
        self, values: Sequence[Any], names: Sequence[str], index: dict[str, int], timezone_offset: int = 0
    ) -> None:
        self._values = values
        self._names = names
        self._index = index
        self._tz = timezone_offset

    def _position(self, key: int | str) -> int:
        if isinstance(key, str):
            try:
                return self._index[key]
            except KeyError:
                raise KeyError(f"no column {key!r} (columns: {', '.join(self._names)})") from None
        if not isinstance(key, int):
            raise TypeError(f"a record is indexed by column position or name, not {type(key).__name__}")
        if not -len(self._values) <= key < len(self._values):
            raise IndexError(f"column index {key} out of range ({len(self._values)} columns)")
        return key

    def __getitem__(self, key: int | str) -> ValueWrapper:
        # hot path: plain positions and known names, errors explained by _position()
        try:
            if type(key) is int:
                return ValueWrapper(self._values[key], self._tz)
            if type(key) is str:
                return ValueWrapper(self._values[self._index[key]], self._tz)
        except (IndexError, KeyError):
            pass
        return ValueWrapper(self._values[self._position(key)], self._tz)

    @overload
    def get(self, key: int | str) -> ValueWrapper | None: ...
    @overload
    def get(self, key: int | str, default: Any) -> Any: ...

    def get(self, key: int | str, default: Any = None) -> Any:
        """``record[key]``, or ``default`` when there is no such column."""
        try:
            return self[key]
        except (KeyError, IndexError):
            return default

    def value(self, key: int | str) -> Any:
        """The native value of one cell (``record[key].cast()``)."""
        return self._values[self._position(key)]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[ValueWrapper]:
        tz = self._tz
        return (ValueWrapper(v, tz) for v in self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        """The column names."""
        return list(self._names)

    def values(self) -> list[ValueWrapper]:
        """The cells as wrappers, in column order."""
        return list(self)

    def items(self) -> list[tuple[str, ValueWrapper]]:
        """``(column name, wrapper)`` pairs, in column order."""
        return list(zip(self._names, self))

    def as_tuple(self) -> tuple[Any, ...]:
        """The native values, in column order."""
        return tuple(self._values)

    def as_dict(self) -> dict[str, Any]:
        """``{column name: primitive value}`` (see :func:`~nebula_sync.to_primitive`)."""
        return {k: to_primitive(v) for k, v in zip(self._names, self._values)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return list(self._names) == list(other._names) and list(self._values) == list(other._values)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = " ".join(f"{k}={format_value(v)}" for k, v in zip(self._names, self._values))
        return f"<Record {inner}>"


# ---- result set ------------------------------------------------------------------------------


class ResultSet:
    """The result of one statement: its columns and rows, plus server metadata.

    Iterate for :class:`Record` objects (created lazily), or use :meth:`rows` (tuples of native
    values), :meth:`one`, :meth:`scalar`, :meth:`column`, :meth:`as_primitive_by_row`,
    :meth:`as_primitive_by_column` and :meth:`as_data_frame`. ``print()`` and ``str()`` give the
    table nebula-console shows.

    Not thread-safe: use a result from one thread at a time.
    """

    __slots__ = (
        "_comment", "_elapsed_us", "_error_code", "_error_msg", "_host", "_index", "_latency_us",
        "_names", "_plain", "_plan", "_plan_raw", "_rows", "_space", "_statement", "_tz",
    )  # fmt: skip

    def __init__(
        self,
        column_names: Sequence[str] = (),
        rows: Sequence[Sequence[Any]] = (),
        *,
        latency_us: int = 0,
        elapsed_us: int = 0,
        space_name: str = "",
        comment: str = "",
        error_code: int = 0,
        error_msg: str = "",
        plan_desc: ttypes.PlanDescription | None = None,
        statement: str | None = None,
        host: str | None = None,
        timezone_offset: int = 0,
    ) -> None:
        self._names = list(column_names)
        self._rows = rows
        self._index: dict[str, int] | None = None  # built on first use: see _col_index()
        self._plain = False  # rows from a reply decoded as plain (see fast.decode_execute_reply)
        self._latency_us = latency_us
        self._elapsed_us = elapsed_us
        # str here; raw bytes (or None) when made by from_response(): read through _text()
        self._space: str | bytes | None = space_name
        self._comment: str | bytes | None = comment
        self._error_code = error_code
        self._error_msg: str | bytes | None = error_msg
        self._plan_raw = plan_desc
        self._plan: PlanDescription | None = None
        self._statement = statement
        self._host = host
        self._tz = timezone_offset

    @classmethod
    def from_response(
        cls,
        resp: Any,
        *,
        statement: str | None,
        host: str | None,
        elapsed_us: int,
        timezone_offset: int = 0,
    ) -> ResultSet:
        """Wrap a decoded ``ExecutionResponse`` (:class:`nebula_sync._thrift.fast.DecodedResponse`,
        or a plain :class:`nebula_sync._thrift.ttypes.ExecutionResponse`).

        A ``DecodedResponse`` is wrapped in O(1): its lists are taken over (the decoder made them
        for this result alone) and its text fields are decoded when first read. This runs on every
        statement.
        """
        if type(resp) is _DecodedResponse and cls is ResultSet:
            return _wrap_decoded(resp, statement, host, elapsed_us, timezone_offset)
        data = resp.data
        names: list[str] = []
        rows: Sequence[Sequence[Any]] = ()
        if isinstance(data, ttypes.DataSet):  # a plain struct: convert its values
            from nebula_sync._params import from_value

            names = [_text(c) for c in data.column_names or ()]
            rows = [[from_value(v) for v in r.values or ()] for r in data.rows or ()]
        elif data is not None:
            names = [_text(c) for c in data.column_names]
            rows = data.rows
        return cls(
            names,
            rows,
            latency_us=resp.latency_in_us or 0,
            elapsed_us=elapsed_us,
            space_name=_text(resp.space_name),
            comment=_text(resp.comment),
            error_code=resp.error_code or 0,
            error_msg=_text(resp.error_msg),
            plan_desc=resp.plan_desc,
            statement=statement,
            host=host,
            timezone_offset=timezone_offset,
        )

    # -- metadata --

    @property
    def column_names(self) -> list[str]:
        """The column names, in order."""
        return list(self._names)

    def keys(self) -> list[str]:
        """The column names (same as :attr:`column_names`)."""
        return list(self._names)

    @property
    def latency_us(self) -> int:
        """Time graphd spent on the statement, microseconds."""
        return self._latency_us

    @property
    def elapsed_us(self) -> int:
        """Time the client spent, send to decoded reply, microseconds."""
        return self._elapsed_us

    @property
    def space_name(self) -> str:
        """The session's graph space after the statement (``""`` if none)."""
        return _text(self._space)

    @property
    def comment(self) -> str:
        """graphd's comment on the statement (``""`` if none)."""
        return _text(self._comment)

    @property
    def error_code(self) -> int:
        """graphd's error code (0 = succeeded)."""
        return self._error_code

    @property
    def error_msg(self) -> str:
        """graphd's error message (``""`` if none)."""
        return _text(self._error_msg)

    @property
    def is_succeeded(self) -> bool:
        """Whether :attr:`error_code` is 0."""
        return self._error_code == 0

    @property
    def statement(self) -> str | None:
        """The statement that produced this result, as sent (password literals replaced by
        ``'***'``: see :func:`~nebula_sync.errors.redact_statement`)."""
        return None if self._statement is None else redact_statement(self._statement)

    @property
    def host(self) -> str | None:
        """``"host:port"`` of the graphd that answered."""
        return self._host

    @property
    def timezone_offset(self) -> int:
        """The session's timezone offset (seconds east of UTC) used for local time views."""
        return self._tz

    @property
    def plan_desc(self) -> PlanDescription | None:
        """The execution plan of an ``EXPLAIN`` / ``PROFILE`` statement, else ``None``."""
        if self._plan is None and self._plan_raw is not None:
            self._plan = PlanDescription(self._plan_raw)
        return self._plan

    # -- rows --

    def __len__(self) -> int:
        return len(self._rows)

    def is_empty(self) -> bool:
        """Whether there are no rows."""
        return not self._rows

    def _col_index(self) -> dict[str, int]:
        """Column name -> position (the first column of that name), built on first use."""
        index = self._index
        if index is None:
            index = {}
            for i, name in enumerate(self._names):
                index.setdefault(name, i)
            self._index = index
        return index

    def _record(self, row: Sequence[Any]) -> Record:
        return Record(row, self._names, self._col_index(), self._tz)

    def __iter__(self) -> Iterator[Record]:
        names, index, tz = self._names, self._col_index(), self._tz
        return (Record(r, names, index, tz) for r in self._rows)

    def records(self) -> Iterator[Record]:
        """Iterate over the rows as :class:`Record` objects (same as ``iter(result)``)."""
        return iter(self)

    def row_values(self, index: int) -> Record:
        """The :class:`Record` at row ``index`` (negative counts from the end)."""
        try:
            index = operator.index(index)  # an int, or an integer such as numpy's
        except TypeError:
            raise TypeError(f"row index must be an int, not {type(index).__name__}") from None
        try:
            return self._record(self._rows[index])
        except IndexError:
            raise IndexError(f"row index {index} out of range ({len(self._rows)} rows)") from None

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        """``result[i]``: the :class:`Record` at row ``i``; ``result[i:j]``: a list of them."""
        if isinstance(index, slice):
            names, cols, tz = self._names, self._col_index(), self._tz
            return [Record(r, names, cols, tz) for r in self._rows[index]]
        return self.row_values(index)

    def rows(self) -> list[tuple[Any, ...]]:
        """Every row as a tuple of native values."""
        return list(map(tuple, self._rows))

    def one(self) -> Record:
        """The only row; :class:`ValueError` unless there is exactly one."""
        if len(self._rows) != 1:
            raise ValueError(f"expected exactly one row, got {len(self._rows)}")
        return self._record(self._rows[0])

    def one_or_none(self) -> Record | None:
        """The only row, or ``None`` when there are none; :class:`ValueError` if there are several."""
        if len(self._rows) > 1:
            raise ValueError(f"expected at most one row, got {len(self._rows)}")
        return self._record(self._rows[0]) if self._rows else None

    def scalar(self) -> Any:
        """The native value of the first column of the first row, ``None`` when there are no rows."""
        if not self._rows:
            return None
        if not self._names:
            raise ValueError("the result has no columns")
        return self._rows[0][0]

    def _column_position(self, name: str | int) -> int:
        if isinstance(name, int) and not isinstance(name, bool):
            if not -len(self._names) <= name < len(self._names):
                raise IndexError(f"column index {name} out of range ({len(self._names)} columns)")
            return name
        try:
            return self._col_index()[name]  # type: ignore[index]
        except KeyError:
            raise KeyError(f"no column {name!r} (columns: {', '.join(self._names)})") from None

    def column(self, name: str | int) -> list[Any]:
        """The native values of one column (by name or position)."""
        i = self._column_position(name)
        return [r[i] for r in self._rows]

    def column_values(self, name: str | int) -> list[ValueWrapper]:
        """The cells of one column as wrappers."""
        tz = self._tz
        return [ValueWrapper(v, tz) for v in self.column(name)]

    def _primitive_columns(self) -> list[Sequence[Any]]:
        if not self._rows:
            return [[] for _ in self._names]
        plain = self._plain
        return [_primitive_column(c, plain) for c in zip(*self._rows)]

    def _big(self) -> bool:
        return len(self._rows) * len(self._names) >= _GC_PAUSE_CELLS

    def as_primitive_by_row(self) -> list[dict[str, Any]]:
        """Every row as ``{column: primitive}`` (see :func:`~nebula_sync.to_primitive`).

        Works column by column (linear in rows × columns); columns holding only primitives are
        not touched value by value.
        """
        names = self._names
        if not self._rows:
            return []
        if self._big():
            with gc_paused():
                return _row_dicts(names, self._primitive_columns())
        return _row_dicts(names, self._primitive_columns())

    def as_primitive_by_column(self) -> dict[str, list[Any]]:
        """``{column: [primitive per row]}``."""
        if self._big():
            with gc_paused():
                return {n: list(c) for n, c in zip(self._names, self._primitive_columns())}
        return {n: list(c) for n, c in zip(self._names, self._primitive_columns())}

    def as_data_frame(self, primitive: bool = True) -> Any:
        """The result as a :class:`pandas.DataFrame` (needs the ``pandas`` extra). With
        ``primitive=False`` cells hold native values (dates, :class:`~nebula_sync.Node`, ...)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "ResultSet.as_data_frame() needs pandas: pip install 'nebula-sync[pandas]'"
            ) from None
        if primitive:
            columns = self._primitive_columns()
        else:
            columns = [list(c) for c in zip(*self._rows)] if self._rows else [[] for _ in self._names]
        frame = pd.DataFrame({i: list(c) for i, c in enumerate(columns)})
        frame.columns = list(self._names)
        return frame

    # -- printing --

    def table(self, max_width: int | None = 80, max_rows: int | None = None) -> str:
        """The result as nebula-console shows it: an aligned table of values in nGQL notation, then
        ``Got N rows (time spent X/Y us)``. Cells wider than ``max_width`` are cut with ``…``;
        ``max_rows`` limits the rows shown."""
        max_rows = _limit("max_rows", max_rows, 0)
        max_width = _limit("max_width", max_width, 1)
        spent = f"(time spent {self._latency_us}/{self._elapsed_us} us)"
        if not self._names:
            return f"Execution succeeded {spent}" if self.is_succeeded else f"Error: {self.error_msg}"
        shown = self._rows if max_rows is None else self._rows[:max_rows]
        body = [[format_value(v) for v in r] for r in shown]
        text = _render_table(list(self._names), body, max_width)
        if max_rows is not None and len(self._rows) > max_rows:
            text += f"\n({len(self._rows) - max_rows} more rows not shown)"
        n = len(self._rows)
        return f"{text}\nGot {n} row{'s' if n != 1 else ''} {spent}"

    def print(
        self, file: IO[str] | None = None, *, max_width: int | None = 80, max_rows: int | None = None
    ) -> None:
        """Print :meth:`table` to ``file`` (standard output by default)."""
        out = sys.stdout if file is None else file
        out.write(self.table(max_width=max_width, max_rows=max_rows) + "\n")

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (
            f"<ResultSet {len(self._rows)} rows x {len(self._names)} columns, latency {self._latency_us} us>"
        )


def _wrap_decoded(resp: _DecodedResponse, statement: str | None, host: str | None, elapsed_us: int,
                  timezone_offset: int) -> ResultSet:  # fmt: skip
    """:meth:`ResultSet.from_response` for a ``DecodedResponse``, positional: the statement path
    calls it directly (keywords and the class method cost ~600 instructions per statement)."""
    rs = _new_result(ResultSet)
    data = resp.data
    if data is not None:
        rs._names = data.column_names
        rs._rows = data.rows
    else:
        rs._names = []
        rs._rows = ()
    rs._index = None
    rs._plain = resp.plain
    rs._latency_us = resp.latency_in_us
    rs._elapsed_us = elapsed_us
    # raw bytes (or None) until read: the properties pass them through _text()
    rs._space = resp.space_name
    rs._comment = resp.comment
    rs._error_code = resp.error_code
    rs._error_msg = resp.error_msg
    rs._plan_raw = resp.plan_desc
    rs._plan = None
    rs._statement = statement
    rs._host = host
    rs._tz = timezone_offset
    return rs


def _limit(name: str, value: int | None, least: int) -> int | None:
    """A ``table()`` limit: ``None`` or an integer of at least ``least``; else ``ValueError``."""
    if value is None:
        return None
    try:
        number = operator.index(value)
    except TypeError:
        number = least - 1
    if number < least:
        raise ValueError(f"{name} must be None or an int >= {least}, not {value!r}")
    return number
