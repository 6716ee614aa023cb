"""Python values to graph ``Value`` structs and back, nGQL literals, and ``{{name}}`` templates.

* :func:`to_value` converts any value of the decoded representation (``docs/internals.md``) plus
  the usual parameter types to a :class:`nebula_sync._thrift.ttypes.Value`; :func:`from_value` is
  its inverse and gives exactly what the fast decoder gives for the same bytes.
* :func:`to_parameter_map` builds ``executeWithParameter``'s ``parameterMap`` (server-side ``$name``
  parameters, the recommended way to pass values).
* :func:`render_literal` / :func:`render_template` fill ``{{name}}`` placeholders with escaped nGQL
  literals on the client, for statements that cannot take ``$`` parameters.

All functions are pure and thread-safe.
"""

from __future__ import annotations

import datetime as _dt
import math
import operator
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Callable

from nebula_sync._thrift import ttypes
from nebula_sync._values import (
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

__all__ = [
    "from_value",
    "render_literal",
    "render_template",
    "template_names",
    "to_parameter_map",
    "to_value",
]

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_UTC = _dt.timezone.utc
_V = ttypes.Value
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _check_range(v: int, lo: int, hi: int, what: str, name: str) -> int:
    try:
        v = operator.index(v)  # an int, or an integer such as numpy's
    except TypeError:
        raise TypeError(f"{name}: {what} must be an int, not {type(v).__name__} ({v!r})") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name}: {what} {v} is out of range [{lo}, {hi}]")
    return v


def _date(year: int, month: int, day: int, name: str) -> ttypes.Date:
    return ttypes.Date(
        year=_check_range(year, -(2**15), 2**15 - 1, "year", name),
        month=_check_range(month, -128, 127, "month", name),
        day=_check_range(day, -128, 127, "day", name),
    )


def _time(hour: int, minute: int, sec: int, microsec: int, name: str) -> ttypes.Time:
    return ttypes.Time(
        hour=_check_range(hour, -128, 127, "hour", name),
        minute=_check_range(minute, -128, 127, "minute", name),
        sec=_check_range(sec, -128, 127, "second", name),
        microsec=_check_range(microsec, -(2**31), 2**31 - 1, "microsecond", name),
    )


def _utc_datetime(d: _dt.datetime, name: str) -> _dt.datetime:
    """``d`` in UTC (naive values are taken as UTC already), as a naive datetime."""
    if d.tzinfo is not None and d.utcoffset() is not None:
        try:
            d = d.astimezone(_UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is in year 0 in UTC
            raise ValueError(
                f"{name}: {d.isoformat()} in UTC is outside Python's datetime range; pass it as a "
                "RawDateTime in UTC"
            ) from None
    return d.replace(tzinfo=None)


def _numpy_scalar(obj: Any) -> Any:
    """A numpy bool, integer or float scalar (what pandas hands out) as the Python value, else
    ``_NOT_NUMPY``. numpy is never imported here."""
    if type(obj).__module__ == "numpy" and getattr(getattr(obj, "dtype", None), "kind", "") in _NUMPY_KINDS:
        return obj.item()
    return _NOT_NUMPY


_NUMPY_KINDS = ("b", "i", "u", "f")  # bool, signed, unsigned, float; not datetime64 (.item() is lossy)
_NOT_NUMPY = object()


def _utc_time(t: _dt.time) -> _dt.time:
    """``t`` in UTC (naive values are taken as UTC already), as a naive time."""
    offset = t.utcoffset()
    if offset is None:
        return t.replace(tzinfo=None)
    anchor = _dt.datetime.combine(_dt.date(2000, 1, 3), t.replace(tzinfo=None)) - offset
    return anchor.time()


def _text_bytes(s: str, name: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name}: string is not valid Unicode text ({exc.reason})") from None


def _coord(c: tuple[float, float]) -> ttypes.Coordinate:
    return ttypes.Coordinate(x=float(c[0]), y=float(c[1]))


def _vertex(node: Node, name: str) -> ttypes.Vertex:
    tags = [
        ttypes.Tag(
            name=_text_bytes(tag, name),
            props={_text_bytes(k, name): to_value(v, f"{name}.{k}") for k, v in props.items()},
        )
        for tag, props in node._tags.items()
    ]
    return ttypes.Vertex(vid=to_value(node.vid, f"{name}.vid"), tags=tags)


def _edge_props(rel: Relationship, name: str) -> dict[bytes, ttypes.Value]:
    return {_text_bytes(k, name): to_value(v, f"{name}.{k}") for k, v in rel._props.items()}


def _convert(obj: Any, name: str) -> ttypes.Value:
    if obj is None:
        return _V(nVal=0)
    if isinstance(obj, NullValue):
        return _V() if obj.code is None else _V(nVal=obj.code)
    if isinstance(obj, bool):
        return _V(bVal=obj)
    if isinstance(obj, int):
        if not _I64_MIN <= obj <= _I64_MAX:
            raise ValueError(f"{name}: integer {obj} does not fit in a signed 64-bit graph int")
        return _V(iVal=int(obj))
    if isinstance(obj, float):
        return _V(fVal=obj)
    if isinstance(obj, str):
        return _V(sVal=_text_bytes(obj, name))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _V(sVal=bytes(obj))
    if isinstance(obj, SetList):
        return _V(uVal=ttypes.NSet(values={to_value(v, f"{name}[{i}]") for i, v in enumerate(obj)}))
    if isinstance(obj, (list, tuple)):
        return _V(lVal=ttypes.NList(values=[to_value(v, f"{name}[{i}]") for i, v in enumerate(obj)]))
    if isinstance(obj, Mapping):
        kvs = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{name}: map keys must be str, not {type(k).__name__} ({k!r})")
            kvs[_text_bytes(k, name)] = to_value(v, f"{name}[{k!r}]")
        return _V(mVal=ttypes.NMap(kvs=kvs))
    if isinstance(obj, (set, frozenset)):
        return _V(uVal=ttypes.NSet(values={to_value(v, f"{name}[...]") for v in obj}))
    # datetime before date: a datetime is a date (nebula3-python truncates it, issue #378)
    if isinstance(obj, _dt.datetime):
        d = _utc_datetime(obj, name)
        return _V(
            dtVal=ttypes.DateTime(
                year=d.year, month=d.month, day=d.day, hour=d.hour, minute=d.minute,
                sec=d.second, microsec=d.microsecond,
            )
        )  # fmt: skip
    if isinstance(obj, _dt.date):
        return _V(dVal=ttypes.Date(year=obj.year, month=obj.month, day=obj.day))
    if isinstance(obj, _dt.time):
        t = _utc_time(obj)
        return _V(tVal=ttypes.Time(hour=t.hour, minute=t.minute, sec=t.second, microsec=t.microsecond))
    if isinstance(obj, _dt.timedelta):
        obj = Duration.from_timedelta(obj)
    if isinstance(obj, Duration):
        # seconds and microseconds are sent as given (graphd normalises them); only their sizes are checked
        return _V(
            duVal=ttypes.Duration(
                seconds=_check_range(obj.seconds, _I64_MIN, _I64_MAX, "seconds", name),
                microseconds=_check_range(obj.microseconds, -(2**31), 2**31 - 1, "microseconds", name),
                months=_check_range(obj.months, -(2**31), 2**31 - 1, "months", name),
            )
        )
    if isinstance(obj, Point):
        return _V(ggVal=ttypes.Geography(ptVal=ttypes.Point(coord=_coord((obj.x, obj.y)))))
    if isinstance(obj, LineString):
        line = ttypes.LineString(coordList=[_coord(c) for c in obj.coordinates])
        return _V(ggVal=ttypes.Geography(lsVal=line))
    if isinstance(obj, Polygon):
        poly = ttypes.Polygon(coordListList=[[_coord(c) for c in ring] for ring in obj.rings])
        return _V(ggVal=ttypes.Geography(pgVal=poly))
    if isinstance(obj, Node):
        return _V(vVal=_vertex(obj, name))
    if isinstance(obj, Relationship):
        return _V(
            eVal=ttypes.Edge(
                src=to_value(obj.src, f"{name}.src"), dst=to_value(obj.dst, f"{name}.dst"),
                type=obj.edge_type or 1, name=_text_bytes(obj.edge_name, name),
                ranking=_check_range(obj.ranking, _I64_MIN, _I64_MAX, "ranking", name),
                props=_edge_props(obj, name),
            )
        )  # fmt: skip
    if isinstance(obj, Path):
        steps = []
        for back, (_, rel, nxt) in zip(obj.reversed_steps(), obj.segments()):
            etype = -(rel.edge_type or 1) if back else (rel.edge_type or 1)
            steps.append(
                ttypes.Step(
                    dst=_vertex(nxt, f"{name}.nodes"), type=etype,
                    name=_text_bytes(rel.edge_name, name), ranking=rel.ranking,
                    props=_edge_props(rel, name),
                )
            )  # fmt: skip
        return _V(pVal=ttypes.Path(src=_vertex(obj.nodes[0], f"{name}.nodes"), steps=steps))
    if isinstance(obj, DataSetValue):
        rows = [
            ttypes.Row(values=[to_value(v, f"{name}.rows[{i}]") for v in row])
            for i, row in enumerate(obj.rows)
        ]
        cols = [_text_bytes(c, name) for c in obj.column_names]
        return _V(gVal=ttypes.DataSet(column_names=cols, rows=rows))
    if isinstance(obj, RawDate):
        return _V(dVal=_date(obj.year, obj.month, obj.day, name))
    if isinstance(obj, RawTime):
        return _V(tVal=_time(obj.hour, obj.minute, obj.sec, obj.microsec, name))
    if isinstance(obj, RawDateTime):
        d = _date(obj.year, obj.month, obj.day, name)
        t = _time(obj.hour, obj.minute, obj.sec, obj.microsec, name)
        return _V(
            dtVal=ttypes.DateTime(
                year=d.year, month=d.month, day=d.day, hour=t.hour, minute=t.minute, sec=t.sec,
                microsec=t.microsec,
            )
        )  # fmt: skip
    item = _numpy_scalar(obj)
    if item is not _NOT_NUMPY:
        return _convert(item, name)
    raise TypeError(
        f"{name}: cannot send a value of type {type(obj).__module__}.{type(obj).__qualname__} to NebulaGraph"
    )


def _fast_str(obj: Any, name: str) -> ttypes.Value:
    return _V(sVal=_text_bytes(obj, name))


def _fast_int(obj: Any, name: str) -> ttypes.Value:
    if not _I64_MIN <= obj <= _I64_MAX:
        raise ValueError(f"{name}: integer {obj} does not fit in a signed 64-bit graph int")
    return _V(iVal=obj)


_FAST: dict[type, Callable[[Any, str], ttypes.Value]] = {
    str: _fast_str,
    int: _fast_int,
    float: lambda obj, name: _V(fVal=obj),
    bool: lambda obj, name: _V(bVal=obj),
    type(None): lambda obj, name: _V(nVal=0),
}


def to_value(obj: Any, name: str = "value") -> ttypes.Value:
    """Convert a Python value to a graph ``Value`` struct.

    Accepts ``None``, bool, int (signed 64-bit), float, str, bytes, list/tuple, dict (str keys),
    set/frozenset, :class:`datetime.date`, :class:`datetime.time` and :class:`datetime.datetime`
    (naive values are UTC, aware ones are converted to UTC), :class:`datetime.timedelta`,
    :class:`Duration`, :class:`Point`/:class:`LineString`/:class:`Polygon`, and the decoded graph
    values :class:`Node`, :class:`Relationship`, :class:`Path`, :class:`NullValue`,
    :class:`DataSetValue`, :class:`RawDate`/:class:`RawTime`/:class:`RawDateTime`.

    Anything else raises :class:`TypeError`, and a value out of range :class:`ValueError`; both name
    ``name`` (and the position inside containers).
    """
    fast = _FAST.get(type(obj))
    if fast is not None:
        return fast(obj, name)
    return _convert(obj, name)


def from_value(value: ttypes.Value) -> Any:
    """The Python value of a graph ``Value`` struct, exactly as the fast decoder builds it from the
    same bytes (it encodes ``value`` and runs that decoder)."""
    from nebula_sync._thrift import fast, wire

    if not isinstance(value, ttypes.Value):
        raise TypeError(f"from_value() takes a ttypes.Value, not {type(value).__name__}")
    data = wire.encode_struct(value, [ttypes.Value, ttypes.Value.thrift_spec])
    return wire.decode_struct(data, 0, fast.VALUE)


def to_parameter_map(params: Mapping[str, Any]) -> dict[bytes, ttypes.Value]:
    """``executeWithParameter``'s parameter map: ``{name: value}`` → ``{b"name": Value}``.

    Names must be ``str`` identifiers (they are used as ``$name`` in the statement).
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"parameters must be a mapping of names to values, not {type(params).__name__}")
    out: dict[bytes, ttypes.Value] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter names must be str, not {type(key).__name__} ({key!r})")
        if not _IDENT.match(key):
            raise ValueError(f"parameter name {key!r} is not an identifier (letters, digits, _)")
        out[key.encode("ascii")] = to_value(value, key)
    return out


# ---- nGQL literals ---------------------------------------------------------------------------

#: nGQL's reserved words (graphd 3.x's documentation, and the join words of its newer grammar):
#: a name spelled like one, in any case, must be backquoted
RESERVED_WORDS = frozenset(
    """
    ACROSS ADD ALTER AND ANTI AS ASC ASCENDING BALANCE BOOL BY CASE CHANGE COMPACT CREATE DATE
    DATETIME DELETE DESC DESCENDING DESCRIBE DISTINCT DOUBLE DOWNLOAD DROP DURATION EDGE EDGES EXISTS
    EXPLAIN FALSE FETCH FIND FIXED_STRING FLOAT FLUSH FORMAT FROM GEOGRAPHY GET GETDATE GO GRANT IF
    IGNORE_EXISTED_INDEX IN INDEX INDEXES INGEST INNER INSERT INT INT16 INT32 INT64 INT8 INTERSECT IS
    JOIN LEFT LIMIT LIST LOOKUP MAP MATCH MINUS NO NOT NULL OF OFFSET ON OR ORDER OUTER OVER
    OVERWRITE PATH PROFILE PROP REBUILD RECOVER REMOVE REPLACE RESTART RETURN REVERSELY REVOKE RIGHT
    SEMI SET SHOW STEP STEPS STOP STRING SUBMIT TAG TAGS TIME TIMESTAMP TO TRUE UNION UNWIND UPDATE
    UPSERT UPTO USE VERTEX VERTICES WHEN WHERE WITH XOR YIELD
    """.split()
)
_BARE_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def bare_name(name: str) -> bool:
    """Whether ``name`` can be written without backquotes and still reach graphd unchanged: a
    lowercase identifier that is not a reserved word. graphd's parser lowercases its unreserved
    keywords (``USE Users`` names the space ``users``), so a name with a capital letter is always
    backquoted."""
    return _BARE_NAME.fullmatch(name) is not None and name.upper() not in RESERVED_WORDS


def _string_literal(s: str, name: str) -> str:
    _text_bytes(s, name)  # a lone surrogate cannot be sent: say which placeholder holds it
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


def _float_literal(f: float, name: str) -> str:
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"{name}: {f} has no nGQL literal (NaN and infinity cannot be written)")
    text = float.__repr__(f)  # not repr(): a numpy float64 (a float subclass) shows as np.float64(...)
    if "e" in text or "E" in text:  # nGQL has no exponent syntax: write the digits out
        text = format(Decimal(text), "f")
    if "." not in text:
        text += ".0"
    return text


def _map_key(key: Any, name: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{name}: map keys must be str, not {type(key).__name__} ({key!r})")
    _text_bytes(key, name)
    if bare_name(key):
        return key
    if not key or "`" in key or "\n" in key:
        raise ValueError(f"{name}: map key {key!r} cannot be written in nGQL, even backquoted")
    return f"`{key}`"


#: the offset written after a rendered time or datetime: the value is UTC whatever graphd's timezone
_UTC_SUFFIX = "+00:00"


def _iso_date(year: int, month: int, day: int) -> str:
    return f"{year:04d}-{month:02d}-{day:02d}"  # never a negative year: see render_literal


def _iso_time(hour: int, minute: int, sec: int, micro: int) -> str:
    return f"{hour:02d}:{minute:02d}:{sec:02d}.{micro:06d}"


def _wkt_literal(shape: Point | LineString | Polygon, name: str) -> str:
    coords: list[float] = []
    if isinstance(shape, Point):
        coords = [shape.x, shape.y]
    elif isinstance(shape, LineString):
        coords = [c for xy in shape.coordinates for c in xy]
    else:
        coords = [c for ring in shape.rings for xy in ring for c in xy]
    for c in coords:
        if not math.isfinite(c):
            raise ValueError(f"{name}: geography coordinate {c} is not finite")
    return f'ST_GeogFromText("{shape.wkt}")'


def render_literal(obj: Any, name: str = "value") -> str:
    """``obj`` as an nGQL literal: ``NULL``, ``true``/``false``, numbers, double-quoted escaped
    strings, ``date("...")``, ``time("...+00:00")`` and ``datetime("...+00:00")`` (UTC, offset
    written out), ``duration({...})``, ``ST_GeogFromText("...")``, ``[...]`` for lists and sets,
    ``{key: ...}`` for maps (keys backquoted when needed).

    Raises :class:`ValueError` for NaN/infinity, integers beyond 64 bits and other values nGQL cannot
    write, :class:`TypeError` for unsupported types (vertices, edges, paths, ...); both name ``name``.
    """
    if obj is None:
        return "NULL"
    if isinstance(obj, NullValue):
        if obj.code == 0:
            return "NULL"
        raise ValueError(f"{name}: {obj!r} has no nGQL literal")
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, int):
        if not _I64_MIN <= obj <= _I64_MAX:
            raise ValueError(f"{name}: integer {obj} does not fit in a signed 64-bit graph int")
        return str(int(obj))
    if isinstance(obj, float):
        return _float_literal(obj, name)
    if isinstance(obj, str):
        return _string_literal(obj, name)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        try:
            return _string_literal(bytes(obj).decode("utf-8"), name)
        except UnicodeDecodeError:
            raise ValueError(f"{name}: bytes are not UTF-8 text and have no nGQL literal") from None
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = obj
        if isinstance(obj, (set, frozenset)):
            rendered = sorted(render_literal(v, f"{name}[...]") for v in obj)
            return "[" + ", ".join(rendered) + "]"
        return "[" + ", ".join(render_literal(v, f"{name}[{i}]") for i, v in enumerate(items)) + "]"
    if isinstance(obj, Mapping):
        parts = [f"{_map_key(k, name)}: {render_literal(v, f'{name}[{k!r}]')}" for k, v in obj.items()]
        return "{" + ", ".join(parts) + "}"
    # Times and datetimes carry an explicit "+00:00": graphd reads a literal without an offset
    # in its own configured timezone (timezone_name) and would shift a UTC value by it.
    if isinstance(obj, _dt.datetime):
        d = _utc_datetime(obj, name)
        text = _iso_date(d.year, d.month, d.day) + "T" + _iso_time(d.hour, d.minute, d.second, d.microsecond)
        return f'datetime("{text}{_UTC_SUFFIX}")'
    if isinstance(obj, RawDateTime):
        if obj.year < 0:
            # graphd takes negative years only in the map form, which it reads in its own timezone
            raise ValueError(f"{name}: datetime year {obj.year} has no nGQL literal in UTC; use a $parameter")
        text = _iso_date(obj.year, obj.month, obj.day) + "T"
        text += _iso_time(obj.hour, obj.minute, obj.sec, obj.microsec)
        return f'datetime("{text}{_UTC_SUFFIX}")'
    if isinstance(obj, _dt.date):
        return f'date("{_iso_date(obj.year, obj.month, obj.day)}")'
    if isinstance(obj, RawDate):
        if obj.year < 0:  # graphd takes negative years only in the map form (nGQL date and time types)
            return f"date({{year: {obj.year}, month: {obj.month}, day: {obj.day}}})"
        return f'date("{_iso_date(obj.year, obj.month, obj.day)}")'
    if isinstance(obj, _dt.time):
        t = _utc_time(obj)
        return f'time("{_iso_time(t.hour, t.minute, t.second, t.microsecond)}{_UTC_SUFFIX}")'
    if isinstance(obj, RawTime):
        return f'time("{_iso_time(obj.hour, obj.minute, obj.sec, obj.microsec)}{_UTC_SUFFIX}")'
    if isinstance(obj, _dt.timedelta):
        obj = Duration.from_timedelta(obj)
    if isinstance(obj, Duration):
        fields = (("months", obj.months), ("seconds", obj.seconds), ("microseconds", obj.microseconds))
        parts = [f"{k}: {_check_range(v, _I64_MIN, _I64_MAX, k, name)}" for k, v in fields if v]
        return "duration({" + (", ".join(parts) or "seconds: 0") + "})"
    if isinstance(obj, (Point, LineString, Polygon)):
        return _wkt_literal(obj, name)
    item = _numpy_scalar(obj)
    if item is not _NOT_NUMPY:
        return render_literal(item, name)
    raise TypeError(
        f"{name}: a value of type {type(obj).__module__}.{type(obj).__qualname__} has no nGQL "
        "literal; pass it as a $parameter instead"
    )


# ---- templates -------------------------------------------------------------------------------

# Strings ('...', "..." with backslash escapes), backquoted names, comments (#, //, /* */) and
# placeholders; anything else is copied through unchanged.
_TOKENS = re.compile(
    r"""
      (?P<sq>'(?:[^'\\]|\\.)*(?:'|\Z))
    | (?P<dq>"(?:[^"\\]|\\.)*(?:"|\Z))
    | (?P<bq>`[^`]*(?:`|\Z))
    | (?P<line>(?:\#|//)[^\n]*)
    | (?P<block>/\*.*?(?:\*/|\Z))
    | (?P<ph>\{\{\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\}\})
    """,
    re.VERBOSE | re.DOTALL,
)


class _MissingPlaceholders(KeyError):
    """A :class:`KeyError` whose text is the message itself (not its repr)."""

    def __str__(self) -> str:
        return str(self.args[0])


def template_names(stmt: str) -> list[str]:
    """The placeholder names used in ``stmt`` (outside strings and comments), in order."""
    return [m.group("name") for m in _TOKENS.finditer(stmt) if m.group("ph")]


def render_template(stmt: str, params: Mapping[str, Any]) -> str:
    """Replace every ``{{name}}`` (spaces allowed inside the braces) with ``params[name]`` rendered
    by :func:`render_literal`.

    Placeholders inside string literals ('...', "...", backquoted) and comments are left alone.
    Every name used must be in ``params``: a missing one raises :class:`KeyError` naming all of them,
    before anything is sent. Only ``{{name}}`` is understood (no Jinja expressions or filters).
    """
    if not isinstance(stmt, str):
        raise TypeError(f"statement must be str, not {type(stmt).__name__}")
    missing = [n for n in dict.fromkeys(template_names(stmt)) if n not in params]
    if missing:
        raise _MissingPlaceholders(
            "template placeholder(s) without a value: " + ", ".join(f"{{{{{n}}}}}" for n in missing)
        )
    cache: dict[str, str] = {}

    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        if name is None:
            return m.group(0)
        if name not in cache:
            cache[name] = render_literal(params[name], name)
        return cache[name]

    return _TOKENS.sub(replace, stmt)
