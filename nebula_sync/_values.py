"""Graph value types and :class:`ValueWrapper`, the typed view of one result cell.

Results are decoded straight into plain Python values (see ``docs/internals.md``, "Decoded value
representation"); the classes here are the values Python has no type for: :class:`Node`,
:class:`Relationship`, :class:`Path`, :class:`Duration`, the geography shapes, the null kinds
(:class:`NullValue`), nested data sets and dates outside Python's range.

Every value class is immutable (attrs, frozen), comparable with ``==``, hashable and prints in nGQL
notation with ``str()`` (the way nebula-console shows it); all are thread-safe. :class:`ValueWrapper`
is a light, lazily created view over one decoded value; it holds no lock and never mutates, so it is
thread-safe too.
"""

from __future__ import annotations

import datetime as _dt
import math
import operator
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Union

import attrs

__all__ = [
    "EMPTY",
    "DataSetValue",
    "Duration",
    "Geography",
    "LineString",
    "Node",
    "NullValue",
    "Path",
    "Point",
    "Polygon",
    "RawDate",
    "RawDateTime",
    "RawTime",
    "Relationship",
    "SetList",
    "ValueWrapper",
    "format_value",
    "to_primitive",
]

_UTC = _dt.timezone.utc


def _freeze(value: Any) -> Any:
    """A hashable stand-in for ``value`` (lists, dicts and sets become tuples / frozensets)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return frozenset((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    return value


# ---- nulls -----------------------------------------------------------------------------------

_NULL_NAMES = {
    0: "__NULL__",
    1: "NaN",
    2: "BAD_DATA",
    3: "BAD_TYPE",
    4: "ERR_OVERFLOW",
    5: "UNKNOWN_PROP",
    6: "DIV_BY_ZERO",
    7: "OUT_OF_RANGE",
}
_NULL_CODES = {name: code for code, name in _NULL_NAMES.items()}
_MAX_INTERNED_NULLS = 256


class NullValue:
    """A graph NULL with a kind: ``__NULL__``, ``NaN``, ``BAD_DATA``, ``BAD_TYPE``, ``ERR_OVERFLOW``,
    ``UNKNOWN_PROP``, ``DIV_BY_ZERO``, ``OUT_OF_RANGE``, a code this client does not know
    (``UNKNOWN(9)``), or ``EMPTY`` (graphd's "no value", a union with no member set).

    Decoded results carry plain ``None`` for the ordinary ``__NULL__`` and a :class:`NullValue` for
    every other kind. Instances are falsy, never equal to ``None``, immutable and compare with
    ``==``; the known kinds (and the first few unknown codes) are interned, so ``is`` works for
    them too. Thread-safe.
    """

    __slots__ = ("code", "kind")
    _interned: ClassVar[dict[int | None, NullValue]] = {}

    #: the wire ``NullType`` number, ``None`` for ``EMPTY``
    code: int | None
    #: the kind's name: ``"BAD_TYPE"``, ``"UNKNOWN(9)"``, ``"EMPTY"``, ...
    kind: str

    def __new__(cls, kind: int | str | None = 0) -> NullValue:
        """``NullValue(3)``, ``NullValue("BAD_TYPE")`` and ``NullValue("EMPTY")`` / ``NullValue(None)``."""
        if isinstance(kind, str):
            if kind == "EMPTY":
                code: int | None = None
            elif kind in _NULL_CODES:
                code = _NULL_CODES[kind]
            else:
                raise ValueError(f"unknown null kind {kind!r}")
        elif kind is None or (isinstance(kind, int) and not isinstance(kind, bool)):
            code = kind
        else:
            raise TypeError(f"a null kind is an int or a name, not {type(kind).__name__}")
        found = cls._interned.get(code)
        if found is not None:
            return found
        self = object.__new__(cls)
        object.__setattr__(self, "code", code)
        name = "EMPTY" if code is None else _NULL_NAMES.get(code, f"UNKNOWN({code})")
        object.__setattr__(self, "kind", name)
        if len(cls._interned) >= _MAX_INTERNED_NULLS:  # a peer inventing codes cannot grow the table
            return self
        return cls._interned.setdefault(code, self)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("NullValue is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (NullValue, (self.code,))

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NullValue) and other.code == self.code

    def __hash__(self) -> int:
        return hash(("NullValue", self.code))

    def __repr__(self) -> str:
        return f"NullValue({self.kind!r})"

    def __str__(self) -> str:
        if self.code is None:
            return "__EMPTY__"
        return self.kind

    @property
    def is_empty(self) -> bool:
        """Whether this is graphd's EMPTY (no value at all) rather than a NULL."""
        return self.code is None


#: graphd's "empty" value (a ``Value`` union with no member set)
EMPTY = NullValue(None)


# ---- out-of-range temporal values ------------------------------------------------------------


@attrs.frozen
class RawDate:
    """A graph ``Date`` that :class:`datetime.date` cannot hold (year outside 1..9999, or invalid).

    Immutable; thread-safe.
    """

    year: int
    month: int
    day: int

    def __str__(self) -> str:
        sign = "-" if self.year < 0 else ""
        return f"{sign}{abs(self.year):04d}-{self.month:02d}-{self.day:02d}"


@attrs.frozen
class RawTime:
    """A graph ``Time`` that :class:`datetime.time` cannot hold (a field out of range). UTC.

    Immutable; thread-safe.
    """

    hour: int
    minute: int
    sec: int
    microsec: int

    def __str__(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}:{self.sec:02d}.{self.microsec:06d}"


@attrs.frozen
class RawDateTime:
    """A graph ``DateTime`` that :class:`datetime.datetime` cannot hold (year outside 1..9999, or
    invalid fields). UTC. Immutable; thread-safe."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    sec: int
    microsec: int

    def __str__(self) -> str:
        date = RawDate(self.year, self.month, self.day)
        time = RawTime(self.hour, self.minute, self.sec, self.microsec)
        return f"{date}T{time}"


# ---- duration --------------------------------------------------------------------------------


def _iso_parts(months: int, total_us: int) -> str:
    years, months = divmod(abs(months), 12)
    days, rem = divmod(abs(total_us), 86_400 * 10**6)
    hours, rem = divmod(rem, 3_600 * 10**6)
    minutes, rem = divmod(rem, 60 * 10**6)
    seconds, micro = divmod(rem, 10**6)
    date = "".join(f"{n}{u}" for n, u in ((years, "Y"), (months, "M"), (days, "D")) if n)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M")) if n)
    if micro:
        time += f"{seconds}.{micro:06d}".rstrip("0") + "S"
    elif seconds:
        time += f"{seconds}S"
    if not date and not time:
        return "PT0S"
    return "P" + date + ("T" + time if time else "")


def _as_int(value: Any) -> Any:
    """An integer such as numpy's as an int; anything else as it is, for :func:`_whole` to refuse."""
    try:
        return operator.index(value)
    except TypeError:
        return value


def _whole(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int):
        raise TypeError(f"Duration {attribute.name} must be an int, not {type(value).__name__} ({value!r})")


@attrs.frozen(eq=False)
class Duration:
    """A graph ``Duration``: calendar ``months`` plus ``seconds`` and ``microseconds``.

    Two durations are equal when they have the same months and the same total microseconds.
    ``str()`` gives ISO-8601 text (``P1Y2MT3.5S``); :meth:`to_timedelta` converts a month-free
    duration. Immutable; thread-safe.
    """

    months: int = attrs.field(default=0, converter=_as_int, validator=_whole)
    seconds: int = attrs.field(default=0, converter=_as_int, validator=_whole)
    microseconds: int = attrs.field(default=0, converter=_as_int, validator=_whole)

    @property
    def total_microseconds(self) -> int:
        """``seconds`` and ``microseconds`` together, in microseconds (months excluded)."""
        return self.seconds * 1_000_000 + self.microseconds

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Duration):
            return NotImplemented
        return (self.months, self.total_microseconds) == (other.months, other.total_microseconds)

    def __hash__(self) -> int:
        return hash(("Duration", self.months, self.total_microseconds))

    @property
    def iso(self) -> str:
        """ISO-8601 duration text, e.g. ``P1Y2M3DT4H5M6.5S``; a leading ``-`` when negative.

        When months and the time part have opposite signs each part carries its own sign
        (``P1MT-5S``), which ISO-8601 cannot otherwise express.
        """
        months, total = self.months, self.total_microseconds
        if months >= 0 and total >= 0:
            return _iso_parts(months, total)
        if months <= 0 and total <= 0:
            return "-" + _iso_parts(months, total)
        date_part = _iso_parts(months, 0)
        time_part = _iso_parts(0, total)
        return f"P{'-' if months < 0 else ''}{date_part[1:]}T{'-' if total < 0 else ''}{time_part[2:]}"

    def __str__(self) -> str:
        return self.iso

    def to_timedelta(self) -> _dt.timedelta:
        """The duration as a :class:`datetime.timedelta`; ``ValueError`` if it has months (a month
        has no fixed length), ``OverflowError`` beyond a timedelta's ±999,999,999 days."""
        if self.months:
            raise ValueError(f"duration {self} has months, which have no fixed length in a timedelta")
        try:
            return _dt.timedelta(microseconds=self.total_microseconds)
        except OverflowError:
            raise OverflowError(f"duration {self} is beyond a timedelta (±999,999,999 days)") from None

    @classmethod
    def from_timedelta(cls, delta: _dt.timedelta) -> Duration:
        """The month-free duration equal to ``delta``."""
        total = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        seconds, micro = divmod(total, 1_000_000)
        return cls(0, seconds, micro)


# ---- geography -------------------------------------------------------------------------------


def _num(x: float) -> str:
    """A coordinate as WKT writes it: integral values without ``.0``."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def _coords(points: Iterable[tuple[float, float]]) -> str:
    return ", ".join(f"{_num(x)} {_num(y)}" for x, y in points)


def _to_coord(c: Any) -> tuple[float, float]:
    x, y = c
    return (float(x), float(y))


def _to_coords(cs: Iterable[Any]) -> tuple[tuple[float, float], ...]:
    return tuple(_to_coord(c) for c in cs)


def _to_rings(rs: Iterable[Any]) -> tuple[tuple[tuple[float, float], ...], ...]:
    return tuple(_to_coords(r) for r in rs)


@attrs.frozen
class Point:
    """A geography point (longitude ``x``, latitude ``y``). ``wkt`` gives ``POINT(x y)``;
    ``__geo_interface__`` the GeoJSON mapping. Immutable; thread-safe."""

    x: float = attrs.field(converter=float)
    y: float = attrs.field(converter=float)

    @property
    def wkt(self) -> str:
        """Well-known text, e.g. ``POINT(3 8)``."""
        return f"POINT({_num(self.x)} {_num(self.y)})"

    @property
    def __geo_interface__(self) -> dict[str, Any]:
        return {"type": "Point", "coordinates": (self.x, self.y)}

    def __str__(self) -> str:
        return self.wkt


@attrs.frozen
class LineString:
    """A geography line string: a sequence of ``(x, y)`` coordinates. Immutable; thread-safe."""

    coordinates: tuple[tuple[float, float], ...] = attrs.field(converter=_to_coords)

    @property
    def wkt(self) -> str:
        """Well-known text, e.g. ``LINESTRING(0 1, 2 3)``."""
        return f"LINESTRING({_coords(self.coordinates)})"

    @property
    def __geo_interface__(self) -> dict[str, Any]:
        return {"type": "LineString", "coordinates": self.coordinates}

    def __str__(self) -> str:
        return self.wkt


@attrs.frozen
class Polygon:
    """A geography polygon: rings of ``(x, y)`` coordinates, the first the shell, the rest holes.
    Immutable; thread-safe."""

    rings: tuple[tuple[tuple[float, float], ...], ...] = attrs.field(converter=_to_rings)

    @property
    def wkt(self) -> str:
        """Well-known text, e.g. ``POLYGON((0 0, 1 0, 1 1, 0 0))``."""
        return "POLYGON(" + ", ".join(f"({_coords(r)})" for r in self.rings) + ")"

    @property
    def __geo_interface__(self) -> dict[str, Any]:
        return {"type": "Polygon", "coordinates": self.rings}

    def __str__(self) -> str:
        return self.wkt


Geography = Union[Point, LineString, Polygon]


# ---- graph elements --------------------------------------------------------------------------


def _props_text(props: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{_name(k)}: {format_value(v)}" for k, v in props.items()) + "}"


def _tag_props(value: Any) -> dict[str, dict[str, Any]]:
    if isinstance(value, Mapping):
        return {str(t): dict(p) if p is not None else {} for t, p in value.items()}
    out: dict[str, dict[str, Any]] = {}
    for tag in value:  # iterable of tag names
        out[str(tag)] = {}
    return out


@attrs.frozen(eq=False, repr=False)
class Node:
    """A vertex: its id (``vid``) and, per tag, that tag's properties.

    ``Node(vid, {tag: {name: value}})``. ``tags`` (alias ``labels``) lists the tag names in server
    order; :meth:`properties` gives one tag's properties (a new dict), :attr:`tag_properties` a
    read-only view of them all. Equal when vid, tags and properties are equal; hashed by vid.
    Immutable; thread-safe.
    """

    vid: Any
    _tags: dict[str, dict[str, Any]] = attrs.field(factory=dict, converter=_tag_props, alias="tag_properties")

    @property
    def tag_properties(self) -> Mapping[str, Mapping[str, Any]]:
        """Tag name → {property name → value}, in server order (a read-only view)."""
        return MappingProxyType({t: MappingProxyType(p) for t, p in self._tags.items()})

    @property
    def tags(self) -> tuple[str, ...]:
        """The tag names, in server order."""
        return tuple(self._tags)

    @property
    def labels(self) -> tuple[str, ...]:
        """Alias of :attr:`tags`."""
        return tuple(self._tags)

    def has_tag(self, tag: str) -> bool:
        """Whether the vertex carries ``tag``."""
        return tag in self._tags

    def properties(self, tag: str | None = None) -> dict[str, Any]:
        """The properties of ``tag`` (a new dict). ``tag`` may be left out when the vertex has exactly
        one tag. ``KeyError`` if the vertex has no such tag."""
        if tag is None:
            if len(self._tags) != 1:
                raise KeyError(
                    f"vertex {format_value(self.vid)} has {len(self._tags)} tags; "
                    "name the tag whose properties you want"
                )
            tag = next(iter(self._tags))
        try:
            return dict(self._tags[tag])
        except KeyError:
            raise KeyError(f"vertex {format_value(self.vid)} has no tag {tag!r}") from None

    def prop_names(self, tag: str) -> list[str]:
        """The property names of ``tag``."""
        return list(self.properties(tag))

    def prop_values(self, tag: str) -> list[Any]:
        """The property values of ``tag``, in the order of :meth:`prop_names`."""
        return list(self.properties(tag).values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return self.vid == other.vid and self._tags == other._tags

    def __hash__(self) -> int:
        return hash(("Node", _freeze(self.vid)))

    def __str__(self) -> str:
        parts = [format_value(self.vid)]
        parts.extend(f":{_name(t)}{_props_text(p)}" for t, p in self._tags.items())
        return "(" + " ".join(parts) + ")"

    def __repr__(self) -> str:
        return f"Node({self})"


def _to_props(value: Any) -> dict[str, Any]:
    return dict(value) if value is not None else {}


@attrs.frozen(eq=False, repr=False)
class Relationship:
    """An edge from ``src`` to ``dst`` (vertex ids, in the edge's logical direction) of type
    ``edge_name`` with rank ``ranking`` and its properties.

    graphd sends an edge walked backwards with a negative type and src/dst swapped; decoding undoes
    that, so an edge is the same value whichever way it was reached. Equal when all fields are equal;
    hashed by (src, dst, name, rank); ``edge_type`` (the numeric id) is informational and not compared.
    Immutable; thread-safe.
    """

    src: Any
    dst: Any
    edge_name: str
    ranking: int = 0
    _props: dict[str, Any] = attrs.field(factory=dict, converter=_to_props, alias="props")
    #: the (positive) edge type id, ``0`` when unknown
    edge_type: int = 0

    @property
    def props(self) -> Mapping[str, Any]:
        """The properties (a read-only view)."""
        return MappingProxyType(self._props)

    @property
    def rank(self) -> int:
        """Alias of :attr:`ranking`."""
        return self.ranking

    @property
    def name(self) -> str:
        """Alias of :attr:`edge_name`."""
        return self.edge_name

    @property
    def start_vertex_id(self) -> Any:
        """Alias of :attr:`src`."""
        return self.src

    @property
    def end_vertex_id(self) -> Any:
        """Alias of :attr:`dst`."""
        return self.dst

    def properties(self) -> dict[str, Any]:
        """The edge's properties (a new dict)."""
        return dict(self._props)

    def keys(self) -> list[str]:
        """The property names."""
        return list(self._props)

    def values(self) -> list[Any]:
        """The property values, in the order of :meth:`keys`."""
        return list(self._props.values())

    def _key(self) -> tuple[Any, ...]:
        return (self.src, self.dst, self.edge_name, self.ranking)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Relationship):
            return NotImplemented
        return self._key() == other._key() and self._props == other._props

    def __hash__(self) -> int:
        return hash(("Relationship", *_freeze(self._key())))

    def __str__(self) -> str:
        return (
            f"[:{_name(self.edge_name)} {format_value(self.src)}->{format_value(self.dst)} "
            f"@{self.ranking} {_props_text(self._props)}]"
        )

    def __repr__(self) -> str:
        return f"Relationship({self})"



def _node_tuple(nodes: Iterable[Node]) -> tuple[Node, ...]:
    """A typed converter (``converter=tuple`` makes ``Path([...], [...])`` fail type checks)."""
    return tuple(nodes)


def _relationship_tuple(relationships: Iterable[Relationship]) -> tuple[Relationship, ...]:
    return tuple(relationships)

@attrs.frozen(eq=False, repr=False)
class Path:
    """A path: ``nodes[0]``, then for each step a relationship and the next node.

    ``len(path)`` is the number of relationships. Each relationship keeps its logical direction; a
    step walked against the edge is the one whose ``src`` is the later node. Equal when nodes and
    relationships are equal. Immutable; thread-safe.
    """

    nodes: tuple[Node, ...] = attrs.field(converter=_node_tuple)
    relationships: tuple[Relationship, ...] = attrs.field(converter=_relationship_tuple)

    def __attrs_post_init__(self) -> None:
        if not self.nodes or len(self.nodes) != len(self.relationships) + 1:
            raise ValueError(
                f"a path needs one more node than relationships "
                f"(got {len(self.nodes)} nodes, {len(self.relationships)} relationships)"
            )

    @property
    def start_node(self) -> Node:
        """The first node."""
        return self.nodes[0]

    @property
    def end_node(self) -> Node:
        """The last node."""
        return self.nodes[-1]

    def __len__(self) -> int:
        return len(self.relationships)

    @property
    def length(self) -> int:
        """The number of relationships (same as ``len(path)``)."""
        return len(self.relationships)

    def reversed_steps(self) -> tuple[bool, ...]:
        """For each step, whether it walks against its relationship's direction."""
        out = []
        for i, rel in enumerate(self.relationships):
            forward = rel.src == self.nodes[i].vid and rel.dst == self.nodes[i + 1].vid
            out.append(not forward)
        return tuple(out)

    def segments(self) -> Iterator[tuple[Node, Relationship, Node]]:
        """``(node, relationship, next node)`` for each step, in path order."""
        for i, rel in enumerate(self.relationships):
            yield self.nodes[i], rel, self.nodes[i + 1]

    def contains_node(self, node: Node) -> bool:
        """Whether ``node`` is on the path."""
        return node in self.nodes

    def contains_relationship(self, relationship: Relationship) -> bool:
        """Whether ``relationship`` is on the path."""
        return relationship in self.relationships

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Path):
            return NotImplemented
        return self.nodes == other.nodes and self.relationships == other.relationships

    def __hash__(self) -> int:
        return hash(("Path", *(hash(n) for n in self.nodes)))

    def __str__(self) -> str:
        parts = [str(self.nodes[0])]
        for (rel, back), node in zip(zip(self.relationships, self.reversed_steps()), self.nodes[1:]):
            body = f"[:{_name(rel.edge_name)}@{rel.ranking} {_props_text(rel._props)}]"
            parts.append(f"<-{body}-" if back else f"-{body}->")
            parts.append(str(node))
        return "<" + "".join(parts) + ">"

    def __repr__(self) -> str:
        return f"Path({self})"


def _to_rows(rows: Iterable[Iterable[Any]]) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(r) for r in rows)


def _to_names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attrs.frozen(eq=False, repr=False)
class DataSetValue:
    """A data set nested inside a value (graph ``gVal``): column names and rows of decoded values.

    Equal when columns and rows are equal. Immutable (rows are tuples); thread-safe.
    """

    column_names: tuple[str, ...] = attrs.field(converter=_to_names)
    rows: tuple[tuple[Any, ...], ...] = attrs.field(converter=_to_rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataSetValue):
            return NotImplemented
        return self.column_names == other.column_names and self.rows == other.rows

    def __hash__(self) -> int:
        return hash(("DataSetValue", self.column_names, len(self.rows)))

    def __len__(self) -> int:
        return len(self.rows)

    def as_dicts(self) -> list[dict[str, Any]]:
        """The rows as ``{column: value}`` dicts."""
        return [dict(zip(self.column_names, r)) for r in self.rows]

    def __str__(self) -> str:
        return "[" + ", ".join(_props_text(d) for d in self.as_dicts()) + "]"

    def __repr__(self) -> str:
        return f"DataSetValue(column_names={self.column_names!r}, rows={self.rows!r})"


def _typed(member: Any) -> tuple[type, Any]:
    return type(member), member


class SetList(list):  # type: ignore[type-arg]
    """A graph set that a Python ``set`` cannot hold: a member is unhashable (a list or a map), or
    two members are equal in Python though not in the graph (``1``, ``1.0`` and ``true``).

    A ``list`` in the order the server sent; compared with another ``SetList``, a ``set`` or a
    ``frozenset`` it is equal when it holds the same members as many times, in any order (a
    graph set has no order). :class:`ValueWrapper` reports it as a set and parameters encode it
    back as a set. Not thread-safe for mutation (like any list).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"SetList({list.__repr__(self)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (SetList, set, frozenset)):
            return list.__eq__(self, other)
        if len(self) != len(other):
            return False
        # A member matches one of the same type (graphd keeps 1, 1.0 and true apart), the same
        # object first (NaN is not equal to itself).
        try:
            return Counter(map(_typed, self)) == Counter(map(_typed, other))
        except TypeError:  # an unhashable member (a list, a map): pair them off one by one
            pass
        rest = list(other)
        for member in self:
            for i, candidate in enumerate(rest):
                if candidate is member or (type(candidate) is type(member) and candidate == member):
                    del rest[i]
                    break
            else:
                return False
        return True

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # a list: mutable


# ---- nGQL text -------------------------------------------------------------------------------


#: control characters as escapes (a tab or a carriage return would break a printed table's
#: alignment, an ESC reach the terminal)
_CONTROL_ESCAPES = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
_CONTROL_ESCAPES.update({c: f"\\x{c:02x}" for c in [*range(32), 127] if c not in _CONTROL_ESCAPES})
#: what a quoted string shows escaped: the backslash, the quote and every control character
_QUOTE_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', **_CONTROL_ESCAPES}


def _name(name: str) -> str:
    """A tag, edge, property or map key name as printed: unquoted, control characters escaped."""
    return name.translate(_CONTROL_ESCAPES)


def _quote(s: str) -> str:
    return '"' + s.translate(_QUOTE_ESCAPES) + '"'


def _float_text(f: float) -> str:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def _time_text(t: _dt.time | _dt.datetime) -> str:
    return f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}"


def format_value(value: Any) -> str:
    """``value`` in nGQL notation as nebula-console prints it: strings quoted, ``__NULL__``,
    vertices ``("id" :tag{k: v})``, edges ``[:e "a"->"b" @0 {k: v}]``, paths ``<(...)-[...]->(...)>``."""
    if value is None:
        return "__NULL__"
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return _float_text(value)
    if isinstance(value, (list, tuple)):
        if isinstance(value, SetList):
            return "{" + ", ".join(format_value(v) for v in value) + "}"
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(format_value(v) for v in value) + "}"
    if isinstance(value, dict):
        return _props_text(value)
    if isinstance(value, _dt.datetime):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{_time_text(value)}"
    if isinstance(value, _dt.date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if isinstance(value, _dt.time):
        return _time_text(value)
    if isinstance(value, bytes):
        return _quote(value.decode("utf-8", "backslashreplace"))
    return str(value)


# ---- primitives ------------------------------------------------------------------------------

_PRIMITIVE = frozenset((type(None), bool, int, float, str))
_all_primitive = _PRIMITIVE.issuperset


def _props_primitive(props: Mapping[str, Any]) -> dict[str, Any]:
    """A property map as primitives; a plain copy when every value already is one."""
    if _PRIMITIVE.issuperset(map(type, props.values())):
        return dict(props)
    return {k: to_primitive(v) for k, v in props.items()}


def _node_primitive(value: Node) -> dict[str, Any]:
    tags = value._tags
    vid = value.vid
    props = {}
    for tag, p in tags.items():
        # a plain copy when every property is already primitive (the common case); the tag maps
        # of a Node are always plain dicts, and dict.copy() is the cheapest copy
        props[tag] = p.copy() if _all_primitive(map(type, p.values())) else _props_primitive(p)
    return {
        "vid": vid if type(vid) in _PRIMITIVE else to_primitive(vid),
        "tags": list(tags),
        "properties": props,
    }


def _nodes_primitive_plain(nodes: Iterable[Node]) -> list[dict[str, Any]]:
    """:func:`_node_primitive` over vertices known to hold only primitive values (from a reply
    decoded as *plain*, see ``fast.decode_execute_reply``): no type check per property."""
    out: list[dict[str, Any]] = []
    append = out.append
    for n in nodes:
        tags = n._tags
        if len(tags) == 1:  # the usual vertex: no comprehension (a frame of its own in 3.11), no list()
            for t, p in tags.items():
                append({"vid": n.vid, "tags": [t], "properties": {t: p.copy()}})
        else:
            append({"vid": n.vid, "tags": list(tags), "properties": {t: p.copy() for t, p in tags.items()}})
    return out


def _relationship_primitive(value: Relationship) -> dict[str, Any]:
    return {
        "src": to_primitive(value.src),
        "dst": to_primitive(value.dst),
        "type": value.edge_name,
        "rank": value.ranking,
        "properties": _props_primitive(value._props),
    }


def _path_primitive(value: Path) -> dict[str, Any]:
    return {
        "nodes": [_node_primitive(n) for n in value.nodes],
        "relationships": [_relationship_primitive(r) for r in value.relationships],
        "length": len(value),
    }


def _list_primitive(value: Any) -> list[Any]:
    if _PRIMITIVE.issuperset(map(type, value)):
        return list(value)
    return [to_primitive(v) for v in value]


def _dataset_primitive(value: DataSetValue) -> list[dict[str, Any]]:
    return [{k: to_primitive(v) for k, v in zip(value.column_names, r)} for r in value.rows]


def _null_primitive(value: Any) -> None:
    return None


def _wkt(value: Any) -> str:
    return value.wkt  # type: ignore[no-any-return]


_TO_PRIMITIVE: dict[type, Callable[[Any], Any]] = {
    Node: _node_primitive,
    Relationship: _relationship_primitive,
    Path: _path_primitive,
    list: _list_primitive,
    tuple: _list_primitive,
    set: _list_primitive,
    frozenset: _list_primitive,
    SetList: _list_primitive,
    dict: _props_primitive,
    _dt.date: _dt.date.isoformat,
    _dt.datetime: _dt.datetime.isoformat,
    _dt.time: _dt.time.isoformat,
    NullValue: _null_primitive,
    DataSetValue: _dataset_primitive,
    Point: _wkt,
    LineString: _wkt,
    Polygon: _wkt,
    Duration: str,
    RawDate: str,
    RawTime: str,
    RawDateTime: str,
}


def to_primitive(value: Any) -> Any:
    """``value`` as JSON-friendly primitives: ``None``, bool, int, float, str, list and dict.

    Null kinds become ``None``; dates and times ISO-8601 text (UTC, with offset); durations ISO text;
    geography WKT; sets lists; vertices ``{"vid", "tags", "properties"}`` (properties per tag); edges
    ``{"src", "dst", "type", "rank", "properties"}``; paths ``{"nodes", "relationships", "length"}``;
    nested data sets a list of row dicts.
    """
    kind = type(value)
    if kind in _PRIMITIVE:
        return value
    conv = _TO_PRIMITIVE.get(kind)
    if conv is not None:
        return conv(value)
    # subclasses of the types above
    if isinstance(value, NullValue):
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_primitive(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_primitive(v) for k, v in value.items()}
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    for cls, conv in _TO_PRIMITIVE.items():
        if isinstance(value, cls):
            return conv(value)
    return str(value)


# ---- ValueWrapper ----------------------------------------------------------------------------

_KIND_NAMES: dict[type, str] = {
    bool: "a bool",
    int: "an int",
    float: "a float",
    str: "a string",
    list: "a list",
    SetList: "a set",
    set: "a set",
    frozenset: "a set",
    dict: "a map",
    _dt.date: "a date",
    RawDate: "a date",
    _dt.time: "a time",
    RawTime: "a time",
    _dt.datetime: "a datetime",
    RawDateTime: "a datetime",
    Node: "a node",
    Relationship: "a relationship",
    Path: "a path",
    Point: "a geography",
    LineString: "a geography",
    Polygon: "a geography",
    Duration: "a duration",
    DataSetValue: "a data set",
}


def _kind_name(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, NullValue):
        return "EMPTY" if value.code is None else f"NULL ({value.kind})"
    name = _KIND_NAMES.get(type(value))
    if name is not None:
        return name
    for cls, text in _KIND_NAMES.items():
        if isinstance(value, cls):
            return text
    return f"a {type(value).__name__}"


class ValueWrapper:
    """Typed access to one decoded value: ``is_*()`` tests, ``as_*()`` casts that raise a clear
    :class:`TypeError` on a wrong cast, :meth:`cast` and :meth:`cast_primitive`.

    Wrappers are created on demand by :class:`~nebula_sync.Record` (untouched cells cost nothing).
    ``timezone_offset`` (seconds east of UTC, the session's) is used only by the local views
    :meth:`as_local_time` / :meth:`as_local_datetime`. Equal (and hashed) by value. Immutable;
    thread-safe.
    """

    __slots__ = ("_tz", "_value")

    def __init__(self, value: Any, timezone_offset: int = 0) -> None:
        self._value = value
        self._tz = timezone_offset

    @property
    def value(self) -> Any:
        """The decoded value itself (same as :meth:`cast`)."""
        return self._value

    @property
    def timezone_offset(self) -> int:
        """The session timezone offset, seconds east of UTC."""
        return self._tz

    def __repr__(self) -> str:
        return f"ValueWrapper({format_value(self._value)})"

    def __str__(self) -> str:
        return format_value(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ValueWrapper):
            return type(self._value) is type(other._value) and bool(self._value == other._value)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_freeze(self._value))

    # -- kind tests --

    def type_name(self) -> str:
        """What the value is, in words: ``"a string"``, ``"a node"``, ``"NULL"``, ..."""
        return _kind_name(self._value)

    def is_null(self) -> bool:
        """A NULL of any kind (``__NULL__``, ``BAD_TYPE``, ...), but not EMPTY."""
        v = self._value
        return v is None or (isinstance(v, NullValue) and v.code is not None)

    def is_empty(self) -> bool:
        """graphd's EMPTY (no value)."""
        return self._value is EMPTY

    @property
    def null_kind(self) -> str | None:
        """``"__NULL__"``, ``"BAD_TYPE"``, ..., ``"EMPTY"`` for null kinds; ``None`` otherwise."""
        v = self._value
        if v is None:
            return "__NULL__"
        if isinstance(v, NullValue):
            return v.kind
        return None

    def is_bool(self) -> bool:
        return type(self._value) is bool

    def is_int(self) -> bool:
        return isinstance(self._value, int) and not isinstance(self._value, bool)

    def is_float(self) -> bool:
        return isinstance(self._value, float)

    is_double = is_float

    def is_string(self) -> bool:
        return isinstance(self._value, str)

    def is_list(self) -> bool:
        return isinstance(self._value, list) and not isinstance(self._value, SetList)

    def is_set(self) -> bool:
        return isinstance(self._value, (set, frozenset, SetList))

    def is_map(self) -> bool:
        return isinstance(self._value, dict)

    def is_time(self) -> bool:
        return isinstance(self._value, (_dt.time, RawTime))

    def is_date(self) -> bool:
        v = self._value
        return (isinstance(v, _dt.date) and not isinstance(v, _dt.datetime)) or isinstance(v, RawDate)

    def is_datetime(self) -> bool:
        return isinstance(self._value, (_dt.datetime, RawDateTime))

    def is_vertex(self) -> bool:
        return isinstance(self._value, Node)

    is_node = is_vertex

    def is_edge(self) -> bool:
        return isinstance(self._value, Relationship)

    is_relationship = is_edge

    def is_path(self) -> bool:
        return isinstance(self._value, Path)

    def is_geography(self) -> bool:
        return isinstance(self._value, (Point, LineString, Polygon))

    def is_duration(self) -> bool:
        return isinstance(self._value, Duration)

    def is_dataset(self) -> bool:
        return isinstance(self._value, DataSetValue)

    # -- casts --

    def _wrong(self, wanted: str) -> TypeError:
        return TypeError(f"value is {_kind_name(self._value)}, not {wanted}")

    def _wrap(self, v: Any) -> ValueWrapper:
        return ValueWrapper(v, self._tz)

    def as_bool(self) -> bool:
        v = self._value
        if v is True or v is False:
            return v
        raise self._wrong("a bool")

    def as_int(self) -> int:
        v = self._value
        if type(v) is int or (isinstance(v, int) and not isinstance(v, bool)):
            return v
        raise self._wrong("an int")

    def as_float(self) -> float:
        v = self._value
        if type(v) is float or isinstance(v, float):
            return v
        raise self._wrong("a float")

    as_double = as_float

    def as_string(self) -> str:
        v = self._value
        if type(v) is str or isinstance(v, str):
            return v
        raise self._wrong("a string")

    def as_list(self) -> list[ValueWrapper]:
        """The members as wrappers. Also accepts a set (members in iteration order)."""
        if isinstance(self._value, (list, set, frozenset)):
            return [self._wrap(v) for v in self._value]
        raise self._wrong("a list")

    def as_set(self) -> list[ValueWrapper]:
        """The members as wrappers, in a list (members may be unhashable)."""
        if self.is_set():
            return [self._wrap(v) for v in self._value]
        raise self._wrong("a set")

    def as_map(self) -> dict[str, ValueWrapper]:
        if isinstance(self._value, dict):
            return {k: self._wrap(v) for k, v in self._value.items()}
        raise self._wrong("a map")

    def as_date(self) -> _dt.date | RawDate:
        """A :class:`datetime.date` (a :class:`RawDate` when out of Python's range)."""
        if type(self._value) is _dt.date or self.is_date():
            return self._value  # type: ignore[no-any-return]
        raise self._wrong("a date")

    def as_time(self) -> _dt.time | RawTime:
        """A UTC :class:`datetime.time` (``tzinfo=timezone.utc``), as graphd sends it."""
        if self.is_time():
            return self._value  # type: ignore[no-any-return]
        raise self._wrong("a time")

    def as_datetime(self) -> _dt.datetime | RawDateTime:
        """A UTC :class:`datetime.datetime` (a :class:`RawDateTime` when out of Python's range)."""
        if self.is_datetime():
            return self._value  # type: ignore[no-any-return]
        raise self._wrong("a datetime")

    def _zone(self, offset: int | None) -> _dt.timezone:
        return _dt.timezone(_dt.timedelta(seconds=self._tz if offset is None else offset))

    def as_local_time(self, timezone_offset: int | None = None) -> _dt.time:
        """The time shifted to the session's timezone (or ``timezone_offset`` seconds east of UTC),
        with a fixed-offset ``tzinfo``."""
        t = self.as_time()
        if isinstance(t, RawTime):
            raise ValueError(f"time {t} is out of range and has no local view")
        zone = self._zone(timezone_offset)
        # a mid-range real date: no overflow either side, and no DST with a fixed offset
        anchor = _dt.datetime.combine(_dt.date(2000, 1, 3), t.replace(tzinfo=None), tzinfo=_UTC)
        return anchor.astimezone(zone).timetz()

    def as_local_datetime(self, timezone_offset: int | None = None) -> _dt.datetime:
        """The datetime shifted to the session's timezone (or ``timezone_offset`` seconds east of
        UTC), with a fixed-offset ``tzinfo``."""
        d = self.as_datetime()
        if isinstance(d, RawDateTime):
            raise ValueError(f"datetime {d} is out of range and has no local view")
        try:
            return d.astimezone(self._zone(timezone_offset))
        except OverflowError:
            raise ValueError(f"datetime {d} shifted to the local timezone is out of range") from None

    def as_node(self) -> Node:
        v = self._value
        if type(v) is Node or isinstance(v, Node):
            return v
        raise self._wrong("a node")

    as_vertex = as_node

    def as_relationship(self) -> Relationship:
        if isinstance(self._value, Relationship):
            return self._value
        raise self._wrong("a relationship")

    as_edge = as_relationship

    def as_path(self) -> Path:
        if isinstance(self._value, Path):
            return self._value
        raise self._wrong("a path")

    def as_geography(self) -> Point | LineString | Polygon:
        if self.is_geography():
            return self._value  # type: ignore[no-any-return]
        raise self._wrong("a geography")

    def as_duration(self) -> Duration:
        if isinstance(self._value, Duration):
            return self._value
        raise self._wrong("a duration")

    def as_dataset(self) -> DataSetValue:
        if isinstance(self._value, DataSetValue):
            return self._value
        raise self._wrong("a data set")

    def cast(self) -> Any:
        """The native value: ``None``, bool, int, float, str, list, set, dict, date/time/datetime,
        :class:`Node`, :class:`Relationship`, :class:`Path`, ... (see the representation table)."""
        return self._value

    def cast_primitive(self) -> Any:
        """The value as JSON-friendly primitives (see :func:`to_primitive`)."""
        return to_primitive(self._value)
