"""Decode specs that make thrift's C decoder build Python values directly (the hot decode path).

``fastbinary`` decodes a struct whose class subclasses :class:`thrift.protocol.TBase.TFrozenBase` by
calling ``cls(**decoded_fields)`` and keeps whatever that returns. The classes below have a
``__new__`` that returns the Python value of the struct instead of an instance: a graph ``Value``
becomes an ``int``/``str``/``list``/:class:`~nebula_sync.Node`/..., a ``Row`` its list, a ``Date`` a
:class:`datetime.date`. The result is the representation described in ``docs/internals.md``
("Decoded value representation"), produced with no intermediate thrift objects.

Invalid UTF-8 never raises and never loses information: it becomes ``\\xNN`` escapes. Strings
(values, column, tag, edge and property names, map keys) are decoded by the C decoder in the
*fast* spec tree; thrift's C decoder replaces invalid UTF-8 with U+FFFD, which the classes below
detect (a non-ASCII string holding U+FFFD raises :class:`_Redecode`), and
:func:`decode_execute_reply` then decodes the reply again with the *safe* tree, where every string
is read as bytes and decoded in Python with ``backslashreplace``. A genuine U+FFFD in a reply
only costs that second pass.

:func:`decode_execute_reply` is the entry point for replies. :data:`EXECUTE_RESULT` is the safe
``[cls, spec]`` pair for callers that decode with :func:`nebula_sync._thrift.wire.decode_struct`
directly. Everything here is immutable and thread-safe.
"""

from __future__ import annotations

import datetime as _dt
import gc
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from thrift.protocol.TBase import TFrozenBase
from thrift.Thrift import TType

from nebula_sync._thrift import ttypes, wire
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
from nebula_sync.errors import ProtocolError

__all__ = [
    "EXECUTE_RESULT",
    "EXECUTE_RESULT_FAST",
    "VALUE",
    "DecodedDataSet",
    "DecodedResponse",
    "ExecuteReply",
    "decode_execute_reply",
    "read_execute_reply",
    "decode_value",
    "GC_PAUSE_THRESHOLD",
    "gc_paused",
]

_UTC = _dt.timezone.utc
_date = _dt.date
_time = _dt.time
_datetime = _dt.datetime
_new_node = Node.__new__
_new_rel = Relationship.__new__
_osa = object.__setattr__
_onew = object.__new__
_NULLS: dict[int, Any] = {0: None}
#: the types a plain reply's ``v`` values may have (strings come as ``s``, None as ``n=0``)
_PLAIN_V = frozenset((bool, int, float, Node, Relationship, Path))


def _null(code: int) -> Any:
    found = _NULLS.get(code, _NULLS)
    if found is _NULLS:
        found = NullValue(code)
    return found


for _code in range(1, 8):
    _NULLS[_code] = NullValue(_code)


# ---- "plain" replies -------------------------------------------------------------------------
#
# A reply whose values are all None, bool, int, float, str or graph elements (vertices, edges,
# paths) made of such values converts to primitives without a type check per property. The
# fast tree's Value class calls _note_complex() for every other value (dates, lists, maps, null
# kinds, EMPTY, ...); decode_execute_reply() takes the counter before and after decoding, and a
# reply is plain when nothing else was counted in between. The counter is process-wide
# (itertools.count: next() is atomic under the GIL), so a concurrent decode elsewhere can only
# make a reply look not plain: the conversion is then checked, never wrong.

_complex_values = itertools.count()
_note_complex = _complex_values.__next__


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


class _Redecode(UnicodeDecodeError):
    """Raised inside the fast tree when a name holds U+FFFD: decode the reply again, safely."""

    def __init__(self) -> None:
        super().__init__("utf-8", b"", 0, 1, "invalid UTF-8 in a name")


def _name(text: str) -> str:
    if not text.isascii() and "\ufffd" in text:
        raise _Redecode
    return text


def _names(texts: Any) -> Any:
    """``texts`` (names or a dict keyed by names) after checking none holds U+FFFD."""
    # all ASCII <=> their concatenation is: one join and one check (all(map(...)) costs ~4x more)
    if not "".join(texts).isascii() and any("\ufffd" in t for t in texts):
        raise _Redecode
    return texts


# Property names checked once are remembered, so a vertex's property map is checked with one set
# operation (its keys' hashes are cached by the dict; ~0.2 us less per vertex). Shared by every
# thread: only single, GIL-atomic set operations touch it, and it stops growing at a bound.
_CLEAN_NAMES: set[str] = set()
_CLEAN_NAMES_MAX = 4096
_known_clean = _CLEAN_NAMES.issuperset


def _check_prop_names(props: dict[str, Any]) -> None:
    _names(props)
    if len(_CLEAN_NAMES) < _CLEAN_NAMES_MAX:
        _CLEAN_NAMES.update(props)


# ---- pausing the cyclic GC during bulk work ----------------------------------------------------
#
# Decoding a big reply allocates millions of containers. Each allocation burst can start a cyclic
# GC pass that walks every live object in the process (earlier results included), none of which
# can be garbage from the decode itself. Pausing the collector for the duration of a large decode
# or conversion made those 1.2-2x faster in the benchmark (docs/benchmarks.md).

_gc_lock = threading.Lock()
_gc_users = 0
_gc_was_enabled = False

#: replies (bytes) and conversions (cells) at least this big pause the cyclic GC
GC_PAUSE_THRESHOLD = 256 * 1024


def _pause_gc() -> None:
    global _gc_users, _gc_was_enabled
    with _gc_lock:
        if _gc_users == 0:
            _gc_was_enabled = gc.isenabled()
            if _gc_was_enabled:
                gc.disable()
        _gc_users += 1


def _resume_gc() -> None:
    global _gc_users
    with _gc_lock:
        _gc_users -= 1
        if _gc_users == 0 and _gc_was_enabled:
            gc.enable()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the block runs (re-entrant, thread-safe).

    The collector is disabled when the first concurrent user enters and enabled again when the
    last one leaves, but only if it was enabled to begin with. Reference counting keeps freeing
    memory meanwhile; only cycles wait. (A ``gc.disable()`` made by another thread while a pause is
    in progress is undone when the pause ends.)
    """
    _pause_gc()
    try:
        yield
    finally:
        _resume_gc()


# ---- the decoded response --------------------------------------------------------------------


# These three are built by thrift's C decoder directly: a class that is not a ``TFrozenBase`` is
# made as ``cls()`` (no ``__init__`` here, so no Python code runs) and each field present is set as
# an attribute; a field the reply leaves out reads as the class attribute. Measured (callgrind): a
# Python ``__new__`` taking keywords cost ~2,300 instructions more per struct, and every statement
# decodes these three. No ``__slots__``: an unset slot would not fall back to the class default.


class DecodedDataSet:
    """A decoded top-level ``DataSet``: ``column_names`` (``list[str]``) and ``rows``
    (``list[list[value]]``). A plain record, not shared between threads."""

    # The defaults stand for fields the server left out; read_execute_reply() replaces them with
    # new lists, so they never reach a caller (and a shared list default could be mutated).
    column_names: list[str] = ()  # type: ignore[assignment]
    rows: list[list[Any]] = ()  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DecodedDataSet(column_names={self.column_names!r}, rows=<{len(self.rows)} rows>)"


class DecodedResponse:
    """A decoded ``ExecutionResponse`` (attributes as in ``docs/internals.md``). A plain record, not
    shared between threads."""

    error_code: int = 0
    latency_in_us: int = 0
    data: DecodedDataSet | None = None
    space_name: bytes | None = None
    error_msg: bytes | None = None
    plan_desc: ttypes.PlanDescription | None = None
    comment: bytes | None = None
    #: every value is None, bool, int, float, str or a graph element made of those
    plain: bool = False

    def __repr__(self) -> str:
        return (
            f"DecodedResponse(error_code={self.error_code}, latency_in_us={self.latency_in_us}, "
            f"data={self.data!r}, space_name={self.space_name!r}, error_msg={self.error_msg!r})"
        )


class ExecuteReply:
    """The decoded ``execute`` / ``executeWithParameter`` result struct: ``success`` is the
    :class:`DecodedResponse` (``None`` if the server sent no field 0)."""

    success: DecodedResponse | None = None


# ---- struct classes whose __new__ returns the Python value ------------------------------------
#
# Field names in the specs below are the keyword names ``__new__`` receives. Every member of the
# ``Value`` union except ``nVal`` (``n``) and ``sVal`` (``s``) is named ``v``, so most cells are a
# single keyword returned as is: no dispatch at all (measured fastest, docs/benchmarks.md).


class _Frozen(TFrozenBase):  # type: ignore[misc]
    __slots__ = ()


class _Value(_Frozen):
    """A ``Value`` in the safe tree: strings arrive as bytes and are decoded here, losslessly."""

    __slots__ = ()

    def __new__(cls, v: Any = EMPTY, s: bytes | None = None, n: int | None = None) -> Any:
        if s is not None:
            return s.decode("utf-8", "backslashreplace")
        if n is None:
            return v
        return _null(n)


def _fast_value_class(name: str, plain: frozenset[type]) -> type:
    """A ``Value`` class for the fast tree: strings arrive decoded by C (invalid UTF-8 would show as
    U+FFFD, so a string holding one sends the reply to the safe tree), and every value whose type
    is not in ``plain`` (nor a string or ``__NULL__``) is counted (see "plain" replies above)."""

    def __new__(cls: type, v: Any = EMPTY, s: str | None = None, n: int | None = None) -> Any:
        if s is not None:
            if not s.isascii() and "\ufffd" in s:
                raise _Redecode
            return s
        if n is None:
            if type(v) not in plain:
                _note_complex()
            return v
        if n:
            _note_complex()  # a null kind other than __NULL__
        return _null(n)

    return type(name, (_Frozen,), {"__slots__": (), "__new__": __new__, "__doc__": _fast_value_class.__doc__})


#: a row cell, or an item of a list, map, set or nested data set: graph elements are plain here
_ValueFast = _fast_value_class("_ValueFast", _PLAIN_V)
#: a vid, an edge's ends, a property: a plain reply's graph elements hold primitives only there,
#: so that converting them needs no type check
_InnerValueFast = _fast_value_class("_InnerValueFast", frozenset((bool, int, float)))


#: numbers the set members as they are read (next() is atomic under the GIL; other threads' decodes
#: only leave gaps), so a set's members can be put back in wire order
_member_order = itertools.count().__next__


class _Box:
    """Carries one set member through the C decoder's ``set`` (hashed by identity, so members that
    Python takes as equal, like ``1``, ``1.0`` and ``true``, or unhashable ones, all arrive), with
    its place on the wire."""

    __slots__ = ("order", "value")

    def __init__(self, value: Any) -> None:
        self.order = _member_order()
        self.value = value


def _wire_order(box: _Box) -> int:
    return box.order


class _Member(_Frozen):
    """A set member, boxed. Strings arrive as bytes (safe tree) or already decoded (fast tree,
    checked for U+FFFD)."""

    __slots__ = ()

    def __new__(cls, v: Any = EMPTY, s: bytes | str | None = None, n: int | None = None) -> Any:
        if s is not None:
            if isinstance(s, str):
                if not s.isascii() and "\ufffd" in s:
                    raise _Redecode
                return _Box(s)
            return _Box(s.decode("utf-8", "backslashreplace"))
        if n is not None:
            return _Box(_null(n))
        return _Box(v)


class _NSet(_Frozen):
    """A graph set: a Python ``set`` of its members, or a :class:`SetList` (in wire order) when a
    member is unhashable or two members are equal in Python (graphd keeps ``1`` and ``true`` apart)."""

    __slots__ = ()

    def __new__(cls, values: set[_Box] | None = None) -> Any:
        if not values:
            return set()
        members = [box.value for box in sorted(values, key=_wire_order)]
        try:
            result = set(members)
        except TypeError:  # a list, map or set among them
            return SetList(members)
        if len(result) != len(members):
            return SetList(members)
        return result


class _NList(_Frozen):
    __slots__ = ()

    def __new__(cls, values: list[Any] | None = None) -> Any:
        return values if values is not None else []


class _NMapFast(_Frozen):
    __slots__ = ()

    def __new__(cls, kvs: dict[str, Any] | None = None) -> Any:
        return _names(kvs) if kvs else {}


class _NMapSafe(_Frozen):
    __slots__ = ()

    def __new__(cls, kvs: dict[bytes, Any] | None = None) -> Any:
        return {_s(k): v for k, v in kvs.items()} if kvs else {}


class _Date(_Frozen):
    __slots__ = ()

    def __new__(cls, year: int = 0, month: int = 0, day: int = 0) -> Any:
        try:
            return _date(year, month, day)
        except ValueError:
            return RawDate(year, month, day)


class _Time(_Frozen):
    __slots__ = ()

    def __new__(cls, hour: int = 0, minute: int = 0, sec: int = 0, microsec: int = 0) -> Any:
        try:
            return _time(hour, minute, sec, microsec, _UTC)
        except ValueError:
            return RawTime(hour, minute, sec, microsec)


class _DateTime(_Frozen):
    __slots__ = ()

    def __new__(
        cls,
        year: int = 0,
        month: int = 0,
        day: int = 0,
        hour: int = 0,
        minute: int = 0,
        sec: int = 0,
        microsec: int = 0,
    ) -> Any:
        try:
            return _datetime(year, month, day, hour, minute, sec, microsec, _UTC)
        except ValueError:
            return RawDateTime(year, month, day, hour, minute, sec, microsec)


class _Duration(_Frozen):
    __slots__ = ()

    def __new__(cls, seconds: int = 0, microseconds: int = 0, months: int = 0) -> Any:
        return Duration(months, seconds, microseconds)


class _Coordinate(_Frozen):
    __slots__ = ()

    def __new__(cls, x: float = 0.0, y: float = 0.0) -> Any:
        return (x, y)


class _Point(_Frozen):
    __slots__ = ()

    def __new__(cls, coord: tuple[float, float] = (0.0, 0.0)) -> Any:
        return Point(coord[0], coord[1])


class _LineString(_Frozen):
    __slots__ = ()

    def __new__(cls, coordList: list[Any] | None = None) -> Any:
        return LineString(coordList or ())


class _Polygon(_Frozen):
    __slots__ = ()

    def __new__(cls, coordListList: list[Any] | None = None) -> Any:
        return Polygon(coordListList or ())


class _Geography(_Frozen):
    __slots__ = ()

    def __new__(cls, v: Any = EMPTY) -> Any:
        return v


def _node(vid: Any, tags: list[tuple[str, dict[str, Any]]] | None) -> Node:
    node = _new_node(Node)
    _osa(node, "vid", vid)
    _osa(node, "_tags", dict(tags) if tags else {})
    return node


def _rel(src: Any, dst: Any, etype: int, name: str, ranking: int, props: dict[str, Any]) -> Any:
    rel = _new_rel(Relationship)
    if etype < 0:
        src, dst, etype = dst, src, -etype
    _osa(rel, "src", src)
    _osa(rel, "dst", dst)
    _osa(rel, "edge_name", name)
    _osa(rel, "ranking", ranking)
    _osa(rel, "_props", props)
    _osa(rel, "edge_type", etype)
    return rel


# A tag decodes to a one-item dict {name: props}: a vertex with one tag (the usual case) then
# takes that dict as its tag map as is, instead of building one with dict() (measured: ~0.4 us
# less per vertex).


class _TagFast(_Frozen):
    __slots__ = ()

    def __new__(cls, name: str = "", props: dict[str, Any] | None = None) -> Any:
        # _name() / _names() inlined: this runs once per vertex
        if not name.isascii() and "\ufffd" in name:
            raise _Redecode
        if not props:
            return {name: {}}
        if not _known_clean(props):
            _check_prop_names(props)
        return {name: props}


class _TagSafe(_Frozen):
    __slots__ = ()

    def __new__(cls, name: bytes = b"", props: dict[bytes, Any] | None = None) -> Any:
        return {_s(name): {_s(k): v for k, v in props.items()} if props else {}}


_set_vid = Node.__dict__["vid"].__set__  # the slot descriptors: cheaper than object.__setattr__
_set_tags = Node.__dict__["_tags"].__set__


class _Vertex(_Frozen):
    __slots__ = ()

    def __new__(cls, vid: Any = EMPTY, tags: list[dict[str, Any]] | None = None) -> Any:
        node = _new_node(Node)  # _node() inlined: this runs once per vertex
        _set_vid(node, vid)
        if not tags:
            _set_tags(node, {})
        elif len(tags) == 1:
            _set_tags(node, tags[0])  # made by _TagFast / _TagSafe for this vertex alone
        else:
            merged: dict[str, Any] = {}
            for tag in tags:
                merged.update(tag)  # a repeated tag name: the last one wins, as with dict()
            _set_tags(node, merged)
        return node


class _EdgeFast(_Frozen):
    __slots__ = ()

    def __new__(
        cls,
        src: Any = EMPTY,
        dst: Any = EMPTY,
        type: int = 0,
        name: str = "",
        ranking: int = 0,
        props: dict[str, Any] | None = None,
    ) -> Any:
        return _rel(src, dst, type, _name(name), ranking, _names(props) if props else {})


class _EdgeSafe(_Frozen):
    __slots__ = ()

    def __new__(
        cls,
        src: Any = EMPTY,
        dst: Any = EMPTY,
        type: int = 0,
        name: bytes = b"",
        ranking: int = 0,
        props: dict[bytes, Any] | None = None,
    ) -> Any:
        p = {_s(k): v for k, v in props.items()} if props else {}
        return _rel(src, dst, type, _s(name), ranking, p)


class _StepFast(_Frozen):
    __slots__ = ()

    def __new__(
        cls,
        dst: Any = None,
        type: int = 0,
        name: str = "",
        ranking: int = 0,
        props: dict[str, Any] | None = None,
    ) -> Any:
        return (dst, type, _name(name), ranking, _names(props) if props else {})


class _StepSafe(_Frozen):
    __slots__ = ()

    def __new__(
        cls,
        dst: Any = None,
        type: int = 0,
        name: bytes = b"",
        ranking: int = 0,
        props: dict[bytes, Any] | None = None,
    ) -> Any:
        p = {_s(k): v for k, v in props.items()} if props else {}
        return (dst, type, _s(name), ranking, p)


_EMPTY_NODE_TAGS: list[Any] = []


class _Path(_Frozen):
    __slots__ = ()

    def __new__(cls, src: Any = None, steps: list[Any] | None = None) -> Any:
        if src is None:
            src = _node(EMPTY, _EMPTY_NODE_TAGS)
        nodes = [src]
        rels = []
        prev = src
        for dst, etype, name, ranking, props in steps or ():
            if dst is None:
                dst = _node(EMPTY, _EMPTY_NODE_TAGS)
            # a step's edge goes prev -> dst; a negative type means it was walked backwards
            if etype < 0:
                rels.append(_rel(dst.vid, prev.vid, -etype, name, ranking, props))
            else:
                rels.append(_rel(prev.vid, dst.vid, etype, name, ranking, props))
            nodes.append(dst)
            prev = dst
        path = Path.__new__(Path)
        _osa(path, "nodes", tuple(nodes))
        _osa(path, "relationships", tuple(rels))
        return path


#: a ``Row`` decodes exactly like an ``NList``: to its list of values
_Row = _NList


class _DataSetSafe(_Frozen):
    __slots__ = ()

    def __new__(cls, column_names: list[bytes] | None = None, rows: list[list[Any]] | None = None) -> Any:
        data = _onew(DecodedDataSet)
        data.column_names = [_s(c) for c in column_names or ()]
        data.rows = rows or []
        return data


class _NestedDataSetFast(_Frozen):
    __slots__ = ()

    def __new__(cls, column_names: list[str] | None = None, rows: list[list[Any]] | None = None) -> Any:
        return DataSetValue(_names(column_names) if column_names else (), rows or ())


class _NestedDataSetSafe(_Frozen):
    __slots__ = ()

    def __new__(cls, column_names: list[bytes] | None = None, rows: list[list[Any]] | None = None) -> Any:
        return DataSetValue([_s(c) for c in column_names or ()], rows or ())


# ---- specs -----------------------------------------------------------------------------------

_I8, _I16, _I32, _I64 = TType.BYTE, TType.I16, TType.I32, TType.I64
_STR, _ST, _L, _M, _SET = TType.STRING, TType.STRUCT, TType.LIST, TType.MAP, TType.SET
_BOOL, _DBL = TType.BOOL, TType.DOUBLE


def _spec(*fields: tuple[int, int, str, Any]) -> tuple[Any, ...]:
    size = max(f[0] for f in fields) + 1
    out: list[Any] = [None] * size
    for fid, ttype, name, args in fields:
        out[fid] = (fid, ttype, name, args, None)
    return tuple(out)


def _build(utf8: bool) -> dict[str, list[Any]]:
    """Build one spec tree (``utf8``: names decoded by C). Returns ``{name: [cls, spec]}``."""
    txt = "UTF8" if utf8 else "BINARY"
    value: list[Any] = [_ValueFast if utf8 else _Value, None]
    inner: list[Any] = [_InnerValueFast if utf8 else _Value, None]  # vids, edge ends, properties
    member: list[Any] = [_Member, None]
    props = (_STR, txt, _ST, inner, False)
    vlist = (_ST, value, False)
    date = [_Date, _spec((1, _I16, "year", None), (2, _I8, "month", None), (3, _I8, "day", None))]
    time = [
        _Time,
        _spec(
            (1, _I8, "hour", None), (2, _I8, "minute", None), (3, _I8, "sec", None),
            (4, _I32, "microsec", None),
        ),
    ]  # fmt: skip
    datetime = [
        _DateTime,
        _spec(
            (1, _I16, "year", None), (2, _I8, "month", None), (3, _I8, "day", None),
            (4, _I8, "hour", None), (5, _I8, "minute", None), (6, _I8, "sec", None),
            (7, _I32, "microsec", None),
        ),
    ]  # fmt: skip
    tag = [
        _TagFast if utf8 else _TagSafe,
        _spec((1, _STR, "name", txt), (2, _M, "props", props)),
    ]
    vertex = [_Vertex, _spec((1, _ST, "vid", inner), (2, _L, "tags", (_ST, tag, False)))]
    edge = [
        _EdgeFast if utf8 else _EdgeSafe,
        _spec(
            (1, _ST, "src", inner), (2, _ST, "dst", inner), (3, _I32, "type", None),
            (4, _STR, "name", txt), (5, _I64, "ranking", None), (6, _M, "props", props),
        ),
    ]  # fmt: skip
    step = [
        _StepFast if utf8 else _StepSafe,
        _spec(
            (1, _ST, "dst", vertex), (2, _I32, "type", None), (3, _STR, "name", txt),
            (4, _I64, "ranking", None), (5, _M, "props", props),
        ),
    ]  # fmt: skip
    path = [_Path, _spec((1, _ST, "src", vertex), (2, _L, "steps", (_ST, step, False)))]
    nlist = [_NList, _spec((1, _L, "values", vlist))]
    nmap = [_NMapFast if utf8 else _NMapSafe, _spec((1, _M, "kvs", props))]
    nset = [_NSet, _spec((1, _SET, "values", (_ST, member, False)))]
    row = [_Row, _spec((1, _L, "values", vlist))]
    nested = [
        _NestedDataSetFast if utf8 else _NestedDataSetSafe,
        _spec((1, _L, "column_names", (_STR, txt, False)), (2, _L, "rows", (_ST, row, False))),
    ]
    coord = [_Coordinate, _spec((1, _DBL, "x", None), (2, _DBL, "y", None))]
    point = [_Point, _spec((1, _ST, "coord", coord))]
    line = [_LineString, _spec((1, _L, "coordList", (_ST, coord, False)))]
    polygon = [_Polygon, _spec((1, _L, "coordListList", (_L, (_ST, coord, False), False)))]
    geo = [
        _Geography,
        _spec((1, _ST, "v", point), (2, _ST, "v", line), (3, _ST, "v", polygon)),
    ]
    duration = [
        _Duration,
        _spec((1, _I64, "seconds", None), (2, _I32, "microseconds", None), (3, _I32, "months", None)),
    ]
    value_fields = (
        (1, _I32, "n", None), (2, _BOOL, "v", None), (3, _I64, "v", None), (4, _DBL, "v", None),
        (5, _STR, "s", txt), (6, _ST, "v", date), (7, _ST, "v", time), (8, _ST, "v", datetime),
        (9, _ST, "v", vertex), (10, _ST, "v", edge), (11, _ST, "v", path), (12, _ST, "v", nlist),
        (13, _ST, "v", nmap), (14, _ST, "v", nset), (15, _ST, "v", nested), (16, _ST, "v", geo),
        (17, _ST, "v", duration),
    )  # fmt: skip
    value[1] = _spec(*value_fields)
    member[1] = inner[1] = value[1]
    dataset = [
        DecodedDataSet if utf8 else _DataSetSafe,  # fast: read_execute_reply checks the names
        _spec((1, _L, "column_names", (_STR, txt, False)), (2, _L, "rows", (_ST, row, False))),
    ]
    response = [
        DecodedResponse,
        _spec(
            (1, _I32, "error_code", None), (2, _I64, "latency_in_us", None),
            (3, _ST, "data", dataset), (4, _STR, "space_name", "BINARY"),
            (5, _STR, "error_msg", "BINARY"),
            (6, _ST, "plan_desc", [ttypes.PlanDescription, ttypes.PlanDescription.thrift_spec]),
            (7, _STR, "comment", "BINARY"),
        ),
    ]  # fmt: skip
    result = [ExecuteReply, _spec((0, _ST, "success", response))]
    return {"value": value, "response": response, "result": result}


_SAFE = _build(utf8=False)
_FAST = _build(utf8=True)

#: ``[cls, spec]`` for the ``execute`` / ``executeWithParameter`` result struct; decodes to an
#: :class:`ExecuteReply` whose ``success`` is a :class:`DecodedResponse`. Never fails on bad UTF-8.
EXECUTE_RESULT: list[Any] = _SAFE["result"]
#: the same, with names decoded by the C decoder (faster); raises a ProtocolError caused by a
#: UnicodeDecodeError when a name holds invalid UTF-8, except the top-level column names, which
#: only :func:`read_execute_reply` checks (use it, or :func:`decode_execute_reply`)
EXECUTE_RESULT_FAST: list[Any] = _FAST["result"]
#: ``[cls, spec]`` decoding one graph ``Value`` struct to its Python value (safe strings)
VALUE: list[Any] = _SAFE["value"]


def decode_execute_reply(buf: bytes, pos: int, limits: wire.Limits = wire.DEFAULT_LIMITS) -> ExecuteReply:
    """Decode an ``execute`` / ``executeWithParameter`` reply body at ``pos`` (see
    :func:`read_execute_reply`; this one uses a one-off reader). Thread-safe."""
    return read_execute_reply(wire.Reader(limits), buf, pos)


def read_execute_reply(reader: wire.Reader, buf: bytes | bytearray, pos: int) -> ExecuteReply:
    """Decode an ``execute`` / ``executeWithParameter`` reply body at ``pos`` with ``reader``.

    Decodes with the fast spec tree and, only if a name in the reply holds invalid UTF-8 (or
    U+FFFD), again with the safe tree; invalid bytes always become ``\\xNN`` escapes. Large
    replies are decoded with the cyclic GC paused (:func:`gc_paused`). Raises
    :class:`~nebula_sync.errors.ProtocolError` on anything malformed. As thread-safe as
    ``reader`` (one user at a time).
    """
    # one function, no context manager: this runs on every statement
    big = len(buf) - pos >= GC_PAUSE_THRESHOLD
    if big:
        _pause_gc()
    mark = _note_complex()
    try:
        try:
            reply: ExecuteReply = reader.decode(buf, pos, EXECUTE_RESULT_FAST)
            resp = reply.success
            if resp is not None:
                data = resp.data
                if data is not None:
                    names = data.column_names
                    if not "".join(names).isascii():  # as in _names()
                        _names(names)
                    if type(names) is not list:  # left out by the server
                        data.column_names = []
                    if type(data.rows) is not list:
                        data.rows = []
                resp.plain = _note_complex() == mark + 1
            return reply
        except _Redecode:
            pass
        except ProtocolError as exc:
            if not isinstance(exc.__cause__, UnicodeDecodeError):
                raise
        # a name held invalid UTF-8 (or U+FFFD): decode again, every string as bytes
        return reader.decode(buf, pos, EXECUTE_RESULT)  # type: ignore[no-any-return]  # plain stays False
    finally:
        if big:
            _resume_gc()


def decode_value(buf: bytes, pos: int = 0) -> Any:
    """Decode one binary-encoded graph ``Value`` struct to its Python value."""
    return wire.decode_struct(buf, pos, VALUE)
