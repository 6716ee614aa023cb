"""Decode benchmark: nebula3-python vs nebula_sync vs the floor of thrift's C decoder.

Builds two ``executeWithParameter`` replies once, with nebula3-python's own generated code:

* *scalar*: 100,000 rows x 5 columns (int, float, string, bool, date);
* *vertex*: 20,000 rows of one vertex (1 tag, 4 properties);

serialised with nebula3's binary protocol (what nebula_sync speaks) and its compact protocol (what
nebula3 speaks to graphd), then times, in the same process:

* nebula3: decode with its generated code (``nebula3.fbthrift``), then ``ResultSet.as_primitive()``;
* nebula_sync: ``fast.decode_execute_reply`` then ``ResultSet.as_primitive_by_row()``;
* the floor: thrift's C decoder building the lightest objects it can (plain ``__slots__`` classes,
  no Python code per struct, cyclic GC paused), and parsing alone (every field skipped);
* iteration over records with typed access, in both libraries;
* the per-cell cost of the ways tried to turn a ``Value`` struct into its Python value.

It also checks that nebula_sync's conversion is linear in the number of columns (constant time per
cell as columns grow, against nebula3's ``as_primitive()``) and that rows nobody touches cost
nothing (wrapping a reply is O(columns), whatever the row count).

Run::

    /tmp/venv/bin/python benchmarks/bench_decode.py            # full run, a few minutes
    /tmp/venv/bin/python benchmarks/bench_decode.py --quick    # smaller payloads, for a smoke test

Every step of a payload runs once per round, rounds repeated ``--repeat`` times, so all steps see
the same conditions. Ratios use the best CPU time of this process (``time.process_time``), which
other load on the machine disturbs far less than wall time; wall times are reported too. Not a
test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from nebula3.common import ttypes as N
from nebula3.data.ResultSet import ResultSet as N3ResultSet
from nebula3.fbthrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
from nebula3.fbthrift.protocol.TCompactProtocol import TCompactProtocolFactory
from nebula3.fbthrift.util.Serializer import deserialize, serialize
from nebula3.graph import ttypes as NG
from nebula3.graph.GraphService import executeWithParameter_result

from nebula_sync._result import ResultSet
from nebula_sync._thrift import fast, service, wire

# ---- payloads (built with nebula3's generated classes) ---------------------------------------


def scalar_response(rows: int) -> Any:
    out = []
    for i in range(rows):
        out.append(
            N.Row(
                values=[
                    N.Value(iVal=i * 7919),
                    N.Value(fVal=i * 0.5 + 0.25),
                    N.Value(sVal=f"name-{i}".encode()),
                    N.Value(bVal=bool(i & 1)),
                    N.Value(dVal=N.Date(year=2000 + i % 20, month=1 + i % 12, day=1 + i % 28)),
                ]
            )
        )
    data = N.DataSet(column_names=[b"id", b"score", b"name", b"flag", b"day"], rows=out)
    return NG.ExecutionResponse(error_code=0, latency_in_us=1234, data=data, space_name=b"bench")


def vertex_response(rows: int) -> Any:
    out = []
    for i in range(rows):
        props = {
            b"name": N.Value(sVal=f"player {i}".encode()),
            b"age": N.Value(iVal=20 + i % 30),
            b"score": N.Value(fVal=i / 3),
            b"active": N.Value(bVal=i % 3 != 0),
        }
        vertex = N.Vertex(vid=N.Value(sVal=f"player{i}".encode()), tags=[N.Tag(name=b"player", props=props)])
        out.append(N.Row(values=[N.Value(vVal=vertex)]))
    data = N.DataSet(column_names=[b"v"], rows=out)
    return NG.ExecutionResponse(error_code=0, latency_in_us=1234, data=data, space_name=b"bench")


def wide_response(rows: int, columns: int) -> Any:
    """``columns`` columns alternating int and date (dates need converting)."""
    values = []
    for c in range(columns):
        values.append(
            N.Value(iVal=c) if c % 2 == 0 else N.Value(dVal=N.Date(year=2020, month=1, day=1 + c % 28))
        )
    data = N.DataSet(
        column_names=[f"c{c}".encode() for c in range(columns)],
        rows=[N.Row(values=list(values)) for _ in range(rows)],
    )
    return NG.ExecutionResponse(error_code=0, latency_in_us=1, data=data)


def encode(resp: Any, factory: Any) -> bytes:
    return serialize(factory, executeWithParameter_result(success=resp))  # type: ignore[no-any-return]


# ---- the floor: thrift's C decoder into plain slotted classes ---------------------------------


def floor_spec() -> list[Any]:
    """nebula_sync's plain specs with every struct class replaced by an empty ``__slots__`` class."""
    made: dict[type, type] = {}
    memo: dict[type, list[Any]] = {}

    def fix(args: Any) -> Any:
        if isinstance(args, list) and len(args) == 2 and isinstance(args[0], type):
            key = args[0]
            if key not in memo:
                names = tuple(e[2] for e in key.thrift_spec if e)
                cls = made.setdefault(key, type("Floor" + key.__name__, (), {"__slots__": names}))
                out: list[Any] = [cls, None]
                memo[key] = out
                out[1] = tuple(
                    None if e is None else (e[0], e[1], e[2], fix(e[3]), e[4]) for e in key.thrift_spec
                )
            return memo[key]
        if isinstance(args, tuple):
            return tuple(fix(a) for a in args)
        return args

    return fix([service.ExecuteResult, None])  # type: ignore[no-any-return]


def skip_spec() -> list[Any]:
    """A reply spec that knows only error_code and latency: the C decoder skips (parses) the rest."""

    class Reply:
        __slots__ = ("error_code", "latency_in_us", "success")

    from thrift.Thrift import TType

    resp = [
        Reply,
        (None, (1, TType.I32, "error_code", None, None), (2, TType.I64, "latency_in_us", None, None)),
    ]
    return [Reply, ((0, TType.STRUCT, "success", resp, None),)]


# ---- timing -----------------------------------------------------------------------------------


class Timing:
    """CPU time (``time.process_time``: this process only, robust to other load on the machine) and
    wall time (``time.perf_counter``) of each run of one step."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []

    @property
    def best(self) -> float:
        """Best CPU time: the figure ratios are computed from."""
        return min(self.cpu)


def run_interleaved(
    steps: dict[str, Callable[[], Any]], rounds: int, *, collect: bool = False
) -> dict[str, Timing]:
    """Run every step once per round, round after round, so all steps see the same conditions.
    One untimed warm-up round first.

    With ``collect``, an untimed ``gc.collect()`` precedes every timed step (used for the big
    payload steps), so that no step is billed for a collection the previous one's garbage set off;
    each step still pays, inside its timing, for the collections its own allocations cause (the
    cyclic GC stays enabled). Not for microsecond steps: the collection leaves caches cold.
    """
    for fn in steps.values():
        fn()
    out = {label: Timing() for label in steps}
    for _ in range(rounds):
        for label, fn in steps.items():
            if collect:
                gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            out[label].cpu.append(time.process_time() - cpu)
            out[label].wall.append(time.perf_counter() - wall)
    return out


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Best CPU time of ``fn`` over ``repeat`` runs (after a warm-up)."""
    return run_interleaved({"x": fn}, repeat)["x"].best


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1e6:,.1f} µs"


def print_timings(title: str, timings: dict[str, Timing]) -> None:
    print(f"\n### {title}\n")
    print("| step | CPU, best | CPU, median | wall, best |")
    print("|---|---:|---:|---:|")
    for label, t in timings.items():
        print(f"| {label} | {fmt(min(t.cpu))} | {fmt(statistics.median(t.cpu))} | {fmt(min(t.wall))} |")


# ---- the workloads ---------------------------------------------------------------------------


def n3_decode(raw: bytes, factory: Any) -> Any:
    return deserialize(factory, raw, executeWithParameter_result()).success


def ours_decode(raw: bytes) -> Any:
    reply = fast.decode_execute_reply(raw, 0).success
    assert reply is not None
    return reply


def ours_result(resp: Any) -> ResultSet:
    return ResultSet.from_response(resp, statement="bench", host=None, elapsed_us=0)


def typed_scalar_n3(rs: Any) -> None:
    for rec in rs:
        rec.get_value(0).as_int()
        rec.get_value(1).as_double()
        rec.get_value(2).as_string()
        rec.get_value(3).as_bool()
        rec.get_value(4).as_date()


def typed_scalar_ours(rs: ResultSet) -> None:
    for rec in rs:
        rec[0].as_int()
        rec[1].as_float()
        rec[2].as_string()
        rec[3].as_bool()
        rec[4].as_date()


def typed_vertex_n3(rs: Any) -> None:
    for rec in rs:
        node = rec.get_value(0).as_node()
        node.get_id().as_string()
        node.properties("player")["name"].as_string()


def typed_vertex_ours(rs: ResultSet) -> None:
    for rec in rs:
        node = rec[0].as_node()
        node.vid  # noqa: B018 - the access is what is timed
        node.properties("player")["name"]


def bench_payload(
    name: str,
    resp: Any,
    repeat: int,
    typed_n3: Callable[[Any], None],
    typed_ours: Callable[[ResultSet], None],
) -> dict[str, float]:
    binary = encode(resp, TBinaryProtocolFactory())
    compact = encode(resp, TCompactProtocolFactory())
    print(f"\n## {name}: {len(binary):,} bytes binary, {len(compact):,} bytes compact")
    n3_decoded = n3_decode(binary, TBinaryProtocolFactory())
    n3_rs = N3ResultSet(n3_decoded, 0)
    rs = ours_result(ours_decode(binary))
    floor, skip = floor_spec(), skip_spec()

    def floor_decode() -> Any:
        with fast.gc_paused():
            return wire.decode_struct(binary, 0, floor)

    steps: dict[str, Callable[[], Any]] = {
        "nebula3: decode, binary protocol": lambda: n3_decode(binary, TBinaryProtocolFactory()),
        "nebula3: decode, compact protocol (what it speaks to graphd)": (
            lambda: n3_decode(compact, TCompactProtocolFactory())
        ),
        "nebula3: `ResultSet.as_primitive()`": n3_rs.as_primitive,
        "nebula3: iterate records, typed access to every cell": lambda: typed_n3(N3ResultSet(n3_decoded, 0)),
        "nebula_sync: `fast.decode_execute_reply` (binary)": lambda: ours_decode(binary),
        "nebula_sync: decode + `ResultSet.from_response`": lambda: ours_result(ours_decode(binary)),
        "nebula_sync: `ResultSet.as_primitive_by_row()`": rs.as_primitive_by_row,
        "nebula_sync: `ResultSet.as_primitive_by_column()`": rs.as_primitive_by_column,
        "nebula_sync: iterate records, typed access to every cell": lambda: typed_ours(rs),
        "nebula_sync: `ResultSet.rows()` (tuples of native values)": rs.rows,
        "floor: C decoder into empty `__slots__` classes, GC paused": floor_decode,
        "floor: C decoder parsing only (every field skipped)": lambda: wire.decode_struct(binary, 0, skip),
    }
    timings = run_interleaved(steps, repeat, collect=True)
    print_timings(name, timings)
    b = {label: t.best for label, t in timings.items()}
    n3_bin = b["nebula3: decode, binary protocol"]
    n3_compact = b["nebula3: decode, compact protocol (what it speaks to graphd)"]
    n3_prim = b["nebula3: `ResultSet.as_primitive()`"]
    ours_dec = b["nebula_sync: `fast.decode_execute_reply` (binary)"]
    ours_prim = b["nebula_sync: `ResultSet.as_primitive_by_row()`"]
    n3_typed = b["nebula3: iterate records, typed access to every cell"]
    ours_typed = b["nebula_sync: iterate records, typed access to every cell"]
    floor_t = b["floor: C decoder into empty `__slots__` classes, GC paused"]
    n3_total, n3_total_compact, ours_total = n3_bin + n3_prim, n3_compact + n3_prim, ours_dec + ours_prim
    print(f"\n**{name}, ratios** (best CPU times):\n")
    print(f"- decode + primitives: nebula3 {fmt(n3_total)} (binary) / {fmt(n3_total_compact)} (compact)")
    speedup, speedup_compact = n3_total / ours_total, n3_total_compact / ours_total
    print(
        f"  vs nebula_sync {fmt(ours_total)}: **{speedup:.1f}x** (binary) / {speedup_compact:.1f}x (compact)"
    )
    print(f"- decode alone: {n3_bin / ours_dec:.1f}x (binary), {n3_compact / ours_dec:.1f}x (compact)")
    print(f"- primitives alone: {n3_prim / ours_prim:.1f}x")
    print(f"- typed iteration: {n3_typed / ours_typed:.1f}x")
    print(f"- nebula_sync decode takes {ours_dec / floor_t:.2f}x the slotted-object floor's time")
    return {"ratio_total": speedup}


def bench_columns(rows: int, n3_rows: int, repeat: int) -> None:
    print("\n## Conversion cost per cell as columns grow (linear in columns = constant per cell)\n")
    print("Columns alternate int and date (dates are converted to ISO text).\n")
    print(f"| columns | nebula_sync `as_primitive_by_row()` ({rows:,} rows), ns/cell "
          f"| nebula3 `as_primitive()` ({n3_rows:,} rows), ns/cell |")  # fmt: skip
    print("|---:|---:|---:|")
    for cols in (2, 5, 10, 20, 40):
        resp = wide_response(rows, cols)
        rs = ours_result(ours_decode(encode(resp, TBinaryProtocolFactory())))
        ours = best_of(rs.as_primitive_by_row, repeat) / (rows * cols) * 1e9
        small = wide_response(n3_rows, cols)
        n3_rs = N3ResultSet(n3_decode(encode(small, TBinaryProtocolFactory()), TBinaryProtocolFactory()), 0)
        theirs = best_of(n3_rs.as_primitive, repeat) / (n3_rows * cols) * 1e9
        print(f"| {cols} | {ours:,.0f} | {theirs:,.0f} |")


def bench_untouched(repeat: int, big: int) -> None:
    print("\n## Untouched rows cost nothing\n")
    print(
        "`ResultSet.from_response` on an already decoded reply, and reading one cell of the first record:\n"
    )
    print("| rows in the reply | wrap the reply | first record, one typed cell |")
    print("|---:|---:|---:|")
    for rows in (100, 10_000, big):
        resp = ours_decode(encode(scalar_response(rows), TBinaryProtocolFactory()))
        wrap = best_of(lambda resp=resp: ours_result(resp), repeat * 20)
        rs = ours_result(resp)
        first = best_of(lambda rs=rs: next(iter(rs))["name"].as_string(), repeat * 20)
        print(f"| {rows:,} | {fmt(wrap)} | {fmt(first)} |")


def bench_dispatch(cells: int, repeat: int) -> None:
    """Per-cell cost of ways to turn one graph ``Value`` struct into its Python value."""
    from operator import attrgetter

    from thrift.protocol.TBase import TFrozenBase
    from thrift.Thrift import TType

    from nebula_sync._thrift import ttypes

    values = [ttypes.Value(iVal=i) if i % 5 else ttypes.Value(sVal=b"text") for i in range(cells)]
    raw = wire.encode_struct(
        ttypes.Value(lVal=ttypes.NList(values=values)), [ttypes.Value, ttypes.Value.thrift_spec]
    )

    class KwLoop(TFrozenBase):  # one keyword per union member, generic loop
        def __new__(cls, **kw: Any) -> Any:
            for name, v in kw.items():
                return v.decode("utf-8", "backslashreplace") if name == "sVal" else v
            return None

    class VPlusKw(TFrozenBase):  # the common members share the keyword "v", the rest in **kw
        def __new__(cls, v: Any = None, **kw: Any) -> Any:
            if kw:
                s = kw.get("s")
                return s.decode("utf-8", "backslashreplace") if s is not None else None
            return v

    class Slots:  # not frozen: the C decoder creates it and sets the member through its slot
        __slots__ = ("n", "s", "v")

    get_v = attrgetter("v")

    def unwrap(x: Any) -> Any:
        try:
            return x.v
        except AttributeError:
            return x.s.decode("utf-8", "backslashreplace")

    class UnwrapList(TFrozenBase):  # the container unwraps its Slots members
        def __new__(cls, values: Any = None) -> Any:
            try:
                return list(map(get_v, values))
            except AttributeError:
                return list(map(unwrap, values))

    def names(generic: bool) -> tuple[Any, ...]:
        fields: list[Any] = [None] * 18
        spec = fast.VALUE[1]
        for entry in spec:
            if entry is not None:
                fid, ttype, name, args, default = entry
                real = ttypes.Value.thrift_spec[fid][2] if generic else name
                fields[fid] = (fid, ttype, real, args, default)
        return tuple(fields)

    def wrap(klass: Any, fields: tuple[Any, ...], container: Any = None) -> list[Any]:
        member = [klass, fields]
        nlist = [
            container or fast._NList,
            (None, (1, TType.LIST, "values", (TType.STRUCT, member, False), None)),
        ]
        return [fast._Value, (None,) * 12 + ((12, TType.STRUCT, "v", nlist, None),)]

    variants = {
        "`__new__(cls, v=EMPTY, s=None, n=None)`, members share the keyword `v` (used)": fast.VALUE,
        "`__new__(cls, **kw)` with the IDL member names, first item returned": wrap(KwLoop, names(True)),
        "`__new__(cls, v=None, **kw)`": wrap(VPlusKw, names(False)),
        "`__slots__` object filled by the C decoder (setattr path), unwrapped by its list": wrap(
            Slots, names(False), UnwrapList
        ),
    }

    def run(spec: list[Any]) -> Callable[[], Any]:
        def go() -> Any:
            with fast.gc_paused():
                return wire.decode_struct(raw, 0, spec)

        return go

    assert all(wire.decode_struct(raw, 0, v)[:5] == ["text", 1, 2, 3, 4] for v in variants.values())
    timings = run_interleaved({k: run(v) for k, v in variants.items()}, repeat)
    print(f"\n## `Value` dispatch: {cells:,} cells (4 in 5 ints, 1 in 5 strings), GC paused\n")
    print("| how a `Value` struct becomes its Python value | CPU per cell, best |")
    print("|---|---:|")
    for label, t in timings.items():
        print(f"| {label} | {t.best / cells * 1e9:,.0f} ns |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller payloads (smoke test)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (every step runs once per round)")
    parser.add_argument("--payload", choices=("all", "scalar", "vertex"), default="all",
                        help="run only the payload benchmarks for one payload")  # fmt: skip
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print("# nebula_sync decode benchmark\n")
    thrift_version = importlib.metadata.version("thrift")
    print(f"- Python {platform.python_version()} ({platform.machine()}), thrift {thrift_version}, ", end="")
    print(f"C extension: {wire._fastbinary is not None}, cores: {os.cpu_count()}")
    print(f"- command: `{sys.executable} {' '.join(sys.argv)}`")
    print(f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {args.repeat} interleaved rounds")
    print(f"- load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    summary = []
    if args.payload in ("all", "scalar"):
        scalar = bench_payload(
            f"Scalar, {100_000 // scale:,} rows x 5 columns", scalar_response(100_000 // scale), args.repeat,
            typed_scalar_n3, typed_scalar_ours,
        )  # fmt: skip
        summary.append(f"{scalar['ratio_total']:.1f}x nebula3 on the scalar payload")
    if args.payload in ("all", "vertex"):
        vertex = bench_payload(
            f"Vertex, {20_000 // scale:,} rows x 1 vertex (1 tag, 4 props)", vertex_response(20_000 // scale),
            args.repeat, typed_vertex_n3, typed_vertex_ours,
        )  # fmt: skip
        summary.append(f"{vertex['ratio_total']:.1f}x nebula3 on the vertex payload")
    if args.payload == "all":
        bench_dispatch(1_000_000 // scale, args.repeat)
        bench_columns(10_000 // scale, 1_000 // scale, args.repeat)
        bench_untouched(args.repeat, 100_000 // scale)
    print(f"\n**Summary:** decode + primitives is {' and '.join(summary)} (binary protocol; target >= 10x).")


if __name__ == "__main__":
    main()
