"""Plain Thrift structs for graphd's ``graph.thrift`` and ``common.thrift`` (3.x), written by hand.

Field ids, wire types and requiredness follow ``shared/spec/graphd-protocol.md`` §2-§3. Every IDL
``binary`` is ``bytes`` here. These classes are what requests are built from, what the fake graphd
answers with, and what the pure-Python (compact) path decodes into. The client's hot decode path
uses the specs in :mod:`nebula_sync._thrift.fast` instead, which build Python values directly.

Instances are plain mutable records: not thread-safe, never shared. They are hashable by content
(``set<Value>`` needs hashable members, protocol spec §7.3).
"""

from __future__ import annotations

from typing import Any

from thrift.protocol.TBase import TBase
from thrift.Thrift import TType

__all__ = [
    "AuthResponse",
    "Coordinate",
    "DataSet",
    "Date",
    "DateTime",
    "Duration",
    "Edge",
    "ExecutionResponse",
    "Geography",
    "KeyValue",
    "LineString",
    "NList",
    "NMap",
    "NSet",
    "NullType",
    "Pair",
    "Path",
    "PlanDescription",
    "PlanNodeBranchInfo",
    "PlanNodeDescription",
    "Point",
    "Polygon",
    "ProfilingStats",
    "Row",
    "Step",
    "Struct",
    "Tag",
    "Time",
    "Value",
    "Vertex",
    "VerifyClientVersionReq",
    "VerifyClientVersionResp",
]


def _freeze(value: Any) -> Any:
    """Turn containers into hashable equivalents, for content hashing."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return frozenset((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, set):
        return frozenset(value)
    return value


class Struct(TBase):  # type: ignore[misc]
    """Base of every hand-written struct: keyword construction, equality and hash by content."""

    __slots__: tuple[str, ...] = ()
    thrift_spec: tuple[Any, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.pop(name, self._defaults.get(name)))
        if fields:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(fields)}")

    def __hash__(self) -> int:
        return hash((type(self).__name__, *(_freeze(getattr(self, n)) for n in self.__slots__)))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.set_fields().items())
        return f"{type(self).__name__}({shown})"

    def set_fields(self) -> dict[str, Any]:
        """The fields that are set (not ``None``), by name."""
        return {n: getattr(self, n) for n in self.__slots__ if getattr(self, n) is not None}


def _spec(cls: type[Struct], *fields: tuple[int, int, str, Any]) -> None:
    """Fill ``cls.thrift_spec`` (a tuple indexed by field id) from ``(id, ttype, name, args)``."""
    size = max(f[0] for f in fields) + 1
    spec: list[Any] = [None] * size
    for fid, ttype, name, args in fields:
        spec[fid] = (fid, ttype, name, args, cls._defaults.get(name))
    cls.thrift_spec = tuple(spec)


def _struct(cls: type[Struct]) -> list[Any]:
    return [cls, None]  # the spec is patched in by _link() once every class exists


_BIN = "BINARY"


# ---- common.thrift ---------------------------------------------------------------------------


class NullType:
    """``NullType`` enum values (i32 on the wire)."""

    __NULL__ = 0
    NaN = 1
    BAD_DATA = 2
    BAD_TYPE = 3
    ERR_OVERFLOW = 4
    UNKNOWN_PROP = 5
    DIV_BY_ZERO = 6
    OUT_OF_RANGE = 7


class Date(Struct):
    __slots__ = ("year", "month", "day")
    year: int | None
    month: int | None
    day: int | None


class Time(Struct):
    __slots__ = ("hour", "minute", "sec", "microsec")
    hour: int | None
    minute: int | None
    sec: int | None
    microsec: int | None


class DateTime(Struct):
    __slots__ = ("year", "month", "day", "hour", "minute", "sec", "microsec")
    year: int | None
    month: int | None
    day: int | None
    hour: int | None
    minute: int | None
    sec: int | None
    microsec: int | None


class Value(Struct):
    """The ``Value`` union: exactly one member is set (none for graphd's internal empty value)."""

    __slots__ = (
        "nVal", "bVal", "iVal", "fVal", "sVal", "dVal", "tVal", "dtVal", "vVal",
        "eVal", "pVal", "lVal", "mVal", "uVal", "gVal", "ggVal", "duVal",
    )  # fmt: skip
    nVal: int | None
    bVal: bool | None
    iVal: int | None
    fVal: float | None
    sVal: bytes | None
    dVal: Date | None
    tVal: Time | None
    dtVal: DateTime | None
    vVal: Vertex | None
    eVal: Edge | None
    pVal: Path | None
    lVal: NList | None
    mVal: NMap | None
    uVal: NSet | None
    gVal: DataSet | None
    ggVal: Geography | None
    duVal: Duration | None


class NList(Struct):
    __slots__ = ("values",)
    values: list[Value] | None


class NMap(Struct):
    __slots__ = ("kvs",)
    kvs: dict[bytes, Value] | None


class NSet(Struct):
    __slots__ = ("values",)
    values: set[Value] | None


class Row(Struct):
    __slots__ = ("values",)
    values: list[Value] | None


class DataSet(Struct):
    __slots__ = ("column_names", "rows")
    column_names: list[bytes] | None
    rows: list[Row] | None


class Coordinate(Struct):
    __slots__ = ("x", "y")
    x: float | None
    y: float | None


class Point(Struct):
    __slots__ = ("coord",)
    coord: Coordinate | None


class LineString(Struct):
    __slots__ = ("coordList",)
    coordList: list[Coordinate] | None


class Polygon(Struct):
    __slots__ = ("coordListList",)
    coordListList: list[list[Coordinate]] | None


class Geography(Struct):
    """Union: one of point, line string, polygon."""

    __slots__ = ("ptVal", "lsVal", "pgVal")
    ptVal: Point | None
    lsVal: LineString | None
    pgVal: Polygon | None


class Tag(Struct):
    __slots__ = ("name", "props")
    name: bytes | None
    props: dict[bytes, Value] | None


class Vertex(Struct):
    __slots__ = ("vid", "tags")
    vid: Value | None
    tags: list[Tag] | None


class Edge(Struct):
    __slots__ = ("src", "dst", "type", "name", "ranking", "props")
    src: Value | None
    dst: Value | None
    type: int | None
    name: bytes | None
    ranking: int | None
    props: dict[bytes, Value] | None


class Step(Struct):
    __slots__ = ("dst", "type", "name", "ranking", "props")
    dst: Vertex | None
    type: int | None
    name: bytes | None
    ranking: int | None
    props: dict[bytes, Value] | None


class Path(Struct):
    __slots__ = ("src", "steps")
    src: Vertex | None
    steps: list[Step] | None


class Duration(Struct):
    __slots__ = ("seconds", "microseconds", "months")
    seconds: int | None
    microseconds: int | None
    months: int | None


class KeyValue(Struct):
    __slots__ = ("key", "value")
    key: bytes | None
    value: bytes | None


# ---- graph.thrift ----------------------------------------------------------------------------


class Pair(Struct):
    __slots__ = ("key", "value")
    key: bytes | None
    value: bytes | None


class ProfilingStats(Struct):
    __slots__ = ("rows", "exec_duration_in_us", "total_duration_in_us", "other_stats")
    rows: int | None
    exec_duration_in_us: int | None
    total_duration_in_us: int | None
    other_stats: dict[bytes, bytes] | None


class PlanNodeBranchInfo(Struct):
    __slots__ = ("is_do_branch", "condition_node_id")
    is_do_branch: bool | None
    condition_node_id: int | None


class PlanNodeDescription(Struct):
    __slots__ = (
        "name", "id", "output_var", "description", "profiles", "branch_info", "dependencies",
    )  # fmt: skip
    name: bytes | None
    id: int | None
    output_var: bytes | None
    description: list[Pair] | None
    profiles: list[ProfilingStats] | None
    branch_info: PlanNodeBranchInfo | None
    dependencies: list[int] | None


class PlanDescription(Struct):
    __slots__ = ("plan_node_descs", "node_index_map", "format", "optimize_time_in_us")
    plan_node_descs: list[PlanNodeDescription] | None
    node_index_map: dict[int, int] | None
    format: bytes | None
    optimize_time_in_us: int | None


class ExecutionResponse(Struct):
    __slots__ = (
        "error_code", "latency_in_us", "data", "space_name", "error_msg", "plan_desc", "comment",
    )  # fmt: skip
    error_code: int | None
    latency_in_us: int | None
    data: DataSet | None
    space_name: bytes | None
    error_msg: bytes | None
    plan_desc: PlanDescription | None
    comment: bytes | None


class AuthResponse(Struct):
    __slots__ = (
        "error_code", "error_msg", "session_id", "time_zone_offset_seconds", "time_zone_name",
    )  # fmt: skip
    error_code: int | None
    error_msg: bytes | None
    session_id: int | None
    time_zone_offset_seconds: int | None
    time_zone_name: bytes | None


class VerifyClientVersionReq(Struct):
    __slots__ = ("version",)
    _defaults = {"version": b"3.0.0"}
    version: bytes | None


class VerifyClientVersionResp(Struct):
    __slots__ = ("error_code", "error_msg")
    error_code: int | None
    error_msg: bytes | None


# ---- specs -----------------------------------------------------------------------------------

_I8, _I16, _I32, _I64 = TType.BYTE, TType.I16, TType.I32, TType.I64
_STR, _ST, _L, _M, _SET = TType.STRING, TType.STRUCT, TType.LIST, TType.MAP, TType.SET
_BOOL, _DBL = TType.BOOL, TType.DOUBLE


def _props() -> tuple[Any, ...]:
    return (_STR, _BIN, _ST, _struct(Value), False)


_spec(Date, (1, _I16, "year", None), (2, _I8, "month", None), (3, _I8, "day", None))
_spec(
    Time,
    (1, _I8, "hour", None), (2, _I8, "minute", None), (3, _I8, "sec", None),
    (4, _I32, "microsec", None),
)  # fmt: skip
_spec(
    DateTime,
    (1, _I16, "year", None), (2, _I8, "month", None), (3, _I8, "day", None),
    (4, _I8, "hour", None), (5, _I8, "minute", None), (6, _I8, "sec", None),
    (7, _I32, "microsec", None),
)  # fmt: skip
_spec(
    Value,
    (1, _I32, "nVal", None), (2, _BOOL, "bVal", None), (3, _I64, "iVal", None),
    (4, _DBL, "fVal", None), (5, _STR, "sVal", _BIN), (6, _ST, "dVal", _struct(Date)),
    (7, _ST, "tVal", _struct(Time)), (8, _ST, "dtVal", _struct(DateTime)),
    (9, _ST, "vVal", _struct(Vertex)), (10, _ST, "eVal", _struct(Edge)),
    (11, _ST, "pVal", _struct(Path)), (12, _ST, "lVal", _struct(NList)),
    (13, _ST, "mVal", _struct(NMap)), (14, _ST, "uVal", _struct(NSet)),
    (15, _ST, "gVal", _struct(DataSet)), (16, _ST, "ggVal", _struct(Geography)),
    (17, _ST, "duVal", _struct(Duration)),
)  # fmt: skip
_spec(NList, (1, _L, "values", (_ST, _struct(Value), False)))
_spec(NMap, (1, _M, "kvs", _props()))
_spec(NSet, (1, _SET, "values", (_ST, _struct(Value), False)))
_spec(Row, (1, _L, "values", (_ST, _struct(Value), False)))
_spec(
    DataSet,
    (1, _L, "column_names", (_STR, _BIN, False)), (2, _L, "rows", (_ST, _struct(Row), False)),
)  # fmt: skip
_spec(Coordinate, (1, _DBL, "x", None), (2, _DBL, "y", None))
_spec(Point, (1, _ST, "coord", _struct(Coordinate)))
_spec(LineString, (1, _L, "coordList", (_ST, _struct(Coordinate), False)))
_spec(Polygon, (1, _L, "coordListList", (_L, (_ST, _struct(Coordinate), False), False)))
_spec(
    Geography,
    (1, _ST, "ptVal", _struct(Point)), (2, _ST, "lsVal", _struct(LineString)),
    (3, _ST, "pgVal", _struct(Polygon)),
)  # fmt: skip
_spec(Tag, (1, _STR, "name", _BIN), (2, _M, "props", _props()))
_spec(Vertex, (1, _ST, "vid", _struct(Value)), (2, _L, "tags", (_ST, _struct(Tag), False)))
_spec(
    Edge,
    (1, _ST, "src", _struct(Value)), (2, _ST, "dst", _struct(Value)), (3, _I32, "type", None),
    (4, _STR, "name", _BIN), (5, _I64, "ranking", None), (6, _M, "props", _props()),
)  # fmt: skip
_spec(
    Step,
    (1, _ST, "dst", _struct(Vertex)), (2, _I32, "type", None), (3, _STR, "name", _BIN),
    (4, _I64, "ranking", None), (5, _M, "props", _props()),
)  # fmt: skip
_spec(Path, (1, _ST, "src", _struct(Vertex)), (2, _L, "steps", (_ST, _struct(Step), False)))
_spec(
    Duration, (1, _I64, "seconds", None), (2, _I32, "microseconds", None), (3, _I32, "months", None)
)
_spec(KeyValue, (1, _STR, "key", _BIN), (2, _STR, "value", _BIN))
_spec(Pair, (1, _STR, "key", _BIN), (2, _STR, "value", _BIN))
_spec(
    ProfilingStats,
    (1, _I64, "rows", None), (2, _I64, "exec_duration_in_us", None),
    (3, _I64, "total_duration_in_us", None), (4, _M, "other_stats", (_STR, _BIN, _STR, _BIN, False)),
)  # fmt: skip
_spec(PlanNodeBranchInfo, (1, _BOOL, "is_do_branch", None), (2, _I64, "condition_node_id", None))
_spec(
    PlanNodeDescription,
    (1, _STR, "name", _BIN), (2, _I64, "id", None), (3, _STR, "output_var", _BIN),
    (4, _L, "description", (_ST, _struct(Pair), False)),
    (5, _L, "profiles", (_ST, _struct(ProfilingStats), False)),
    (6, _ST, "branch_info", _struct(PlanNodeBranchInfo)), (7, _L, "dependencies", (_I64, None, False)),
)  # fmt: skip
_spec(
    PlanDescription,
    (1, _L, "plan_node_descs", (_ST, _struct(PlanNodeDescription), False)),
    (2, _M, "node_index_map", (_I64, None, _I64, None, False)), (3, _STR, "format", _BIN),
    (4, _I32, "optimize_time_in_us", None),
)  # fmt: skip
_spec(
    ExecutionResponse,
    (1, _I32, "error_code", None), (2, _I64, "latency_in_us", None),
    (3, _ST, "data", _struct(DataSet)), (4, _STR, "space_name", _BIN), (5, _STR, "error_msg", _BIN),
    (6, _ST, "plan_desc", _struct(PlanDescription)), (7, _STR, "comment", _BIN),
)  # fmt: skip
_spec(
    AuthResponse,
    (1, _I32, "error_code", None), (2, _STR, "error_msg", _BIN), (3, _I64, "session_id", None),
    (4, _I32, "time_zone_offset_seconds", None), (5, _STR, "time_zone_name", _BIN),
)  # fmt: skip
_spec(VerifyClientVersionReq, (1, _STR, "version", _BIN))
_spec(VerifyClientVersionResp, (1, _I32, "error_code", None), (2, _STR, "error_msg", _BIN))


def link_specs(classes: list[Any]) -> None:
    """Fill the ``[cls, None]`` struct references in the given classes' specs with ``cls.thrift_spec``.

    Specs refer to each other (``Value`` contains ``Vertex`` contains ``Value``), so they are
    written with placeholders and completed once every class exists, as Apache codegen's
    ``fix_spec`` does.
    """

    def fix(args: Any) -> None:
        if isinstance(args, list) and len(args) == 2 and isinstance(args[0], type):
            assert issubclass(args[0], Struct)
            args[1] = args[0].thrift_spec
        elif isinstance(args, tuple):
            for a in args:
                fix(a)

    for cls in classes:
        for entry in cls.thrift_spec:
            if entry is not None:
                fix(entry[3])


ALL_STRUCTS: list[type[Struct]] = [
    Date, Time, DateTime, Value, NList, NMap, NSet, Row, DataSet, Coordinate, Point, LineString,
    Polygon, Geography, Tag, Vertex, Edge, Step, Path, Duration, KeyValue, Pair, ProfilingStats,
    PlanNodeBranchInfo, PlanNodeDescription, PlanDescription, ExecutionResponse, AuthResponse,
    VerifyClientVersionReq, VerifyClientVersionResp,
]  # fmt: skip
link_specs(ALL_STRUCTS)
