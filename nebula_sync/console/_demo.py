"""``nebula-sync demo`` (``python -m nebula_sync demo``): concurrent statements through one client.

Runs ``RETURN {{i}} AS i`` (via :meth:`NebulaClient.execute_py`) for ``i`` in ``0..count-1`` from a
:class:`~concurrent.futures.ThreadPoolExecutor` through one :class:`~nebula_sync.NebulaClient`
with ``SessionPoolConfig(size=3)`` per host, then prints every result with the host that served
it, per-statement timings, the total, and the client's :meth:`~NebulaClient.stats`.

By default it starts two fake graphd servers in-process on free ports (each statement takes
``--delay`` seconds there, so the overlap is visible). When ``NEBULA_HOSTS`` is set (e.g.
``127.0.0.1:9669,127.0.0.1:9670``) it uses that cluster instead, as ``NEBULA_USER`` (default
``root``) with ``NEBULA_PASSWORD`` (default ``nebula``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import attrs

from nebula_sync._client import NebulaClient
from nebula_sync._result import ResultSet, _render_table
from nebula_sync._values import format_value
from nebula_sync.config import ConnectionConfig, SessionPoolConfig, parse_hosts
from nebula_sync.console._cli import EXIT_OK, EXIT_USAGE, exit_code, quiet_logging
from nebula_sync.console._output import format_error
from nebula_sync.console._repl import format_stats
from nebula_sync.errors import NebulaError
from nebula_sync.testing import FakeGraphd

__all__ = ["main"]

STATEMENT = "RETURN {{i}} AS i"


@attrs.frozen
class _Run:
    index: int
    result: ResultSet
    started: float  # seconds after the first submission
    wall: float  # seconds


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nebula-sync demo",
        description="Run statements concurrently through one NebulaClient and show which host served "
        "each. Uses two embedded fake graphd servers, or the cluster in NEBULA_HOSTS when set "
        "(with NEBULA_USER / NEBULA_PASSWORD, default root / nebula).",
    )
    p.add_argument("--count", type=_positive_int, default=12, help="statements to run (default 12)")
    p.add_argument("--pool-size", type=_positive_int, default=3, help="sessions per host (default 3)")
    p.add_argument("--delay", type=float, default=0.05, metavar="SECONDS",
                   help="how long the embedded servers take per statement (default 0.05)")  # fmt: skip
    return p


def _start_servers(n: int, delay: float) -> list[FakeGraphd]:
    servers = []
    for _ in range(n):
        server = FakeGraphd("127.0.0.1", 0)
        if delay > 0:
            # no answer given: the server's engine runs the RETURN after the delay
            server.script(re.compile(r"(?i)^\s*RETURN\s+-?\d+\s+AS\s+i\s*$"), delay=delay)
        servers.append(server.start())
    return servers


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns the exit status."""
    args = _parser().parse_args(argv)
    quiet_logging(False)
    env_hosts = os.environ.get("NEBULA_HOSTS", "").strip()
    out = sys.stdout
    with contextlib.ExitStack() as stack:
        if env_hosts:
            try:
                hosts = [str(h) for h in parse_hosts(env_hosts)]
            except ValueError as exc:
                print(f"nebula-sync demo: NEBULA_HOSTS: {exc}", file=sys.stderr)
                return EXIT_USAGE
            user = os.environ.get("NEBULA_USER") or "root"
            password = os.environ.get("NEBULA_PASSWORD", "nebula")
            print(f"Using the cluster in NEBULA_HOSTS: {', '.join(hosts)} (user {user})", file=out)
        else:
            servers = _start_servers(2, max(0.0, args.delay))
            for server in servers:
                stack.callback(server.stop)
            hosts = [s.address for s in servers]
            user, password = "root", "nebula"
            print(f"Started 2 embedded fake graphd servers: {', '.join(hosts)} "
                  f"(each statement takes {args.delay * 1000:.0f} ms there)", file=out)  # fmt: skip
        size = args.pool_size
        workers = len(hosts) * size
        print(f"NebulaClient: {len(hosts)} host(s) x SessionPoolConfig(size={size}) = up to {workers} "
              f"statements at once; {args.count} x execute_py({STATEMENT!r}, {{'i': i}}) "
              f"from a ThreadPoolExecutor(max_workers={workers})\n", file=out)  # fmt: skip
        try:
            client = NebulaClient(
                hosts,
                user,
                password,
                session_pool_config=SessionPoolConfig(size=size, wait_timeout=30.0),
                conn_config=ConnectionConfig(connect_timeout=5.0, request_timeout=30.0),
            )
        except NebulaError as exc:
            print(f"nebula-sync demo: cannot connect: {format_error(exc)}", file=sys.stderr)
            return exit_code(exc)
        stack.enter_context(client)
        t0 = time.perf_counter()

        def run(i: int) -> _Run:
            start = time.perf_counter()
            rs = client.execute_py(STATEMENT, {"i": i})
            return _Run(i, rs, start - t0, time.perf_counter() - start)

        runs: list[_Run] = []
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo") as pool:
                for future in [pool.submit(run, i) for i in range(args.count)]:
                    runs.append(future.result())
        except NebulaError as exc:
            print(f"nebula-sync demo: a statement failed: {format_error(exc)}", file=sys.stderr)
            return exit_code(exc)
        total = time.perf_counter() - t0

        header = ["#", "statement", "result", "served by", "started", "took", "graphd"]
        rows = [
            [
                str(r.index),
                r.result.statement or "",
                format_value(r.result.scalar()),
                r.result.host or "?",
                f"+{r.started * 1000:.1f} ms",
                f"{r.wall * 1000:.1f} ms",
                f"{r.result.latency_us} us",
            ]  # fmt: skip
            for r in runs
        ]
        print(_render_table(header, rows, max_width=None), file=out)
        served = Counter(r.result.host for r in runs)
        for host in hosts:
            print(f"{host} served {served.get(host, 0)} statement(s)", file=out)
        sequential = sum(r.wall for r in runs)
        print(
            f"\nGot {len(runs)} results in {total * 1000:.1f} ms total "
            f"(their own times add up to {sequential * 1000:.1f} ms: they overlapped)\n",
            file=out,
        )
        print("client.stats():", file=out)
        print(format_stats(client), file=out)
    return EXIT_OK
