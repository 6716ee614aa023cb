"""How the console shows results and errors: ``table``, ``csv`` and ``json`` output formats.

* ``table`` — what nebula-console shows: the aligned table of :meth:`ResultSet.table` (values in
  nGQL notation), then ``Got N rows (time spent X/Y us)``; statements without columns print
  ``Execution succeeded (time spent X/Y us)``.
* ``csv`` — a header row with the column names, then one row per record. Values are primitives
  (:meth:`ResultSet.as_primitive_by_row`): strings as they are (CSV quoting applies), ``NULL`` and
  ``EMPTY`` as an empty field, booleans ``true``/``false``, numbers as Python writes them, dates and
  times ISO-8601, durations ISO-8601 (``P1DT2H``), geography WKT; lists, sets, maps, vertices,
  edges and paths as compact JSON of their primitive form. Statements without columns print
  nothing; several results are separated by an empty line.
* ``json`` — per statement with columns, one JSON array of ``{column: value}`` objects (one line
  per row); see :class:`NebulaJSONEncoder`. Non-finite floats are written as the strings
  ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` so the output stays valid JSON.

Pure functions; thread-safe.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
from collections.abc import Iterable, Mapping
from typing import IO, Any

from nebula_sync._result import ResultSet
from nebula_sync._values import (
    DataSetValue,
    Duration,
    LineString,
    Node,
    NullValue,
    Path,
    Point,
    Polygon,
    Relationship,
    to_primitive,
)
from nebula_sync.errors import ServerError

__all__ = ["FORMATS", "NebulaJSONEncoder", "format_error", "render_result", "to_json"]

FORMATS = ("table", "csv", "json")


class NebulaJSONEncoder(json.JSONEncoder):
    """A JSON encoder for graph values: dates, times and datetimes as ISO-8601 text, durations as
    ISO-8601 durations, vertices/edges/paths/data sets/geography as their primitive form
    (:func:`nebula_sync._values.to_primitive`), sets as lists, ``NullValue`` as ``null``, bytes as
    UTF-8 text."""

    def default(self, o: Any) -> Any:
        if isinstance(o, NullValue):
            return None
        if isinstance(o, (_dt.date, _dt.time)):
            return o.isoformat()
        if isinstance(o, Duration):
            return o.iso
        if isinstance(o, (Node, Relationship, Path, DataSetValue, Point, LineString, Polygon)):
            return to_primitive(o)
        if isinstance(o, (set, frozenset)):
            return list(o)
        if isinstance(o, bytes):
            return o.decode("utf-8", "backslashreplace")
        return to_primitive(o)


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats replaced by strings (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    return value


def to_json(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON text (UTF-8 characters kept, graph values encoded)."""
    return json.dumps(_finite(value), cls=NebulaJSONEncoder, ensure_ascii=False, indent=indent)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return to_json(value).strip('"')
    if isinstance(value, (list, dict)):
        return json.dumps(_finite(value), cls=NebulaJSONEncoder, ensure_ascii=False,
                          separators=(",", ":"))  # fmt: skip
    return str(value)


def render_csv(rs: ResultSet) -> str:
    """The result as CSV text: a header row, then the rows (see the module docstring)."""
    names = rs.column_names
    if len(set(names)) == len(names):
        rows: Iterable[list[Any]] = ([row[n] for n in names] for row in rs.as_primitive_by_row())
    else:  # duplicate column names would collapse in the row dicts
        rows = ([to_primitive(v) for v in values] for values in rs.rows())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
    return buf.getvalue()


def render_json(rs: ResultSet) -> str:
    """The result as a JSON array of objects, one row per line."""
    rows = rs.as_primitive_by_row()
    if not rows:
        return "[]\n"
    return "[\n" + ",\n".join("  " + to_json(r) for r in rows) + "\n]\n"


def render_result(rs: ResultSet, fmt: str, *, max_width: int | None = None) -> str:
    """The text to print for ``rs`` in format ``fmt`` (``""`` when there is nothing to show)."""
    if fmt == "table":
        return rs.table(max_width=max_width) + "\n"
    if not rs.column_names:
        return ""
    if fmt == "csv":
        return render_csv(rs)
    if fmt == "json":
        return render_json(rs)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")


def format_error(exc: BaseException) -> str:
    """A one-line description of ``exc``: graphd's error code name, number and message for server
    errors, the error class and message otherwise (never a password)."""
    if isinstance(exc, ServerError):
        return f"{exc.code_name} ({exc.code}): {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def write(out: IO[str], text: str) -> None:
    """Write ``text`` and flush (the console is interactive)."""
    if text:
        out.write(text)
        out.flush()
