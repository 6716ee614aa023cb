"""Instruction counts (valgrind's callgrind): the same workloads as the timed benchmarks, without the noise.

Timings on a shared 2-core VM move by 20 % or more from run to run; the number of instructions a
process executes does not (the same binary, inputs and environment give the same count). This
script counts, in the client process only (user space; the kernel's part of a system call is not
counted, nor is the replay server, which runs outside valgrind):

* per ``RETURN 1`` statement, against the replay server of ``bench_e2e.py``: nebula_sync, nebula3
  SessionPool, the lean prototype and the raw socket;
* per row, decode + conversion to primitives: nebula3 (``deserialize`` + ``as_primitive()``) and
  nebula_sync (``decode_execute_reply`` + ``as_primitive_by_row()``) on the payloads of
  ``bench_decode.py`` (fewer rows: counts are linear in rows, and valgrind is ~50x slower).

Each workload runs twice in a fresh interpreter, with and without the measured part, and the
difference is divided by the number of statements or rows. Instructions are not time: memory
effects (allocation, page faults, cold caches after a ``recv``) weigh more in nebula_sync's time
than in its instruction count, so the time ratios of the other benchmarks are the ones that
count; these figures say how much work each client does, reproducibly.

Run (needs ``valgrind`` on PATH; about five minutes)::

    /tmp/venv/bin/python benchmarks/bench_instructions.py
    /tmp/venv/bin/python benchmarks/bench_instructions.py --only statement

Not a test: it reports whatever the figures are.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_e2e import STATEMENT  # what its clients run

HERE = Path(__file__).resolve().parent
STATEMENT_CLIENTS = ["raw socket (floor)", "lean prototype", "nebula_sync", "nebula3 SessionPool"]
DECODE_CLIENTS = ["nebula3", "nebula_sync"]
ROWS = {"vertex": 4_000, "scalar": 10_000}
STATEMENTS = 2_000


# ---- what runs under valgrind (``--child``) -----------------------------------------------------


def child_statement(client: str, address: str, count: int) -> None:
    import bench_e2e as E

    logging.getLogger("nebula3").setLevel(logging.ERROR)
    host, port = address.rsplit(":", 1)
    bench: Any = {
        "raw socket (floor)": lambda: E.RawSocket(host, int(port)),
        "lean prototype": lambda: E.LeanPrototype(host, int(port)),
        "nebula_sync": lambda: E.NebulaSync(address),
        "nebula3 SessionPool": lambda: E.Nebula3SessionPool(host, int(port)),
    }[client]()
    (work,) = bench.setup(1)
    try:
        work(200)  # warm-up, in both runs
        work(count)
    finally:
        bench.teardown()


def child_decode(client: str, payload: str, rows: int, measure: bool) -> None:
    import bench_decode as D

    build = D.vertex_response if payload == "vertex" else D.scalar_response
    raw = D.encode(build(rows), D.TBinaryProtocolFactory())
    gc.collect()
    if not measure:
        return
    if client == "nebula3":
        D.N3ResultSet(D.n3_decode(raw, D.TBinaryProtocolFactory()), 0).as_primitive()
    else:
        D.ours_result(D.ours_decode(raw)).as_primitive_by_row()


# ---- the parent ----------------------------------------------------------------------------------


def count(args: list[str]) -> int:
    """Instructions of one child run under callgrind."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")])
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, str(Path(__file__).resolve()), "--child", *args]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed: {' '.join(args)}\n{out.stderr[-2000:]}")
    return int(found.group(1))


def per_unit(args_without: list[str], args_with: list[str], units: int) -> float:
    return (count(args_with) - count(args_without)) / units


def statements() -> dict[str, float]:
    import bench_e2e as E

    server = E.ReplayServer()
    try:
        out: dict[str, float] = {}
        for client in STATEMENT_CLIENTS:
            base = ["statement", client, server.address]
            out[client] = per_unit([*base, "0"], [*base, str(STATEMENTS)], STATEMENTS)
            print(f"  {client:24s} {out[client]:>12,.0f} instructions per statement", flush=True)
        return out
    finally:
        server.close()


def decodes() -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for payload, rows in ROWS.items():
        for client in DECODE_CLIENTS:
            base = ["decode", client, payload, str(rows)]
            out[payload, client] = per_unit([*base, "0"], [*base, "1"], rows)
            figure = out[payload, client]
            print(f"  {payload:7s} {client:12s} {figure:>10,.0f} instructions per row", flush=True)
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "statement":
            child_statement(rest[0], rest[1], int(rest[2]))
        else:
            child_decode(rest[0], rest[1], int(rest[2]), rest[3] == "1")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["statement", "decode"], help="run one of the two parts")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind); nothing measured")
        return 0
    print(f"Python {platform.python_version()} ({platform.machine()}), "
          f"thrift {importlib.metadata.version('thrift')}, "
          f"nebula3-python {importlib.metadata.version('nebula3-python')}; callgrind, client process, "
          f"PYTHONHASHSEED=0")  # fmt: skip
    if args.only in (None, "statement"):
        print(f"\n{STATEMENT!r} against the replay server ({STATEMENTS:,} statements after 200 of warm-up):")
        st = statements()
        ours = st["nebula_sync"]
        print(f"  nebula3 SessionPool / nebula_sync: {st['nebula3 SessionPool'] / ours:.2f}x; "
              f"nebula_sync / lean prototype: {ours / st['lean prototype']:.2f}x; "
              f"nebula_sync / raw socket: {ours / st['raw socket (floor)']:.2f}x")  # fmt: skip
    if args.only in (None, "decode"):
        print("\ndecode + primitives (binary protocol):")
        dec = decodes()
        for payload in ROWS:
            ratio = dec[payload, "nebula3"] / dec[payload, "nebula_sync"]
            print(f"  {payload}: nebula3 / nebula_sync {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
