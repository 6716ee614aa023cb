"""End-to-end benchmark: ``RETURN 1`` round trips, nebula_sync vs nebula3-python vs a raw socket.

All clients talk to the same replay server (``benchmarks/_replay.py``), a separate process on
loopback that answers from pre-encoded replies in the protocol it is spoken to (nebula_sync: THeader
+ binary; nebula3-python: THeader + fbthrift compact v2), so the server costs little and the same for
everyone. Measured in the same run, with 1 and 8 threads:

* ``nebula_sync``: one :class:`~nebula_sync.NebulaClient` shared by the threads (``size`` = threads),
  ``client.execute("RETURN 1")``;
* ``nebula3 SessionPool``: one ``SessionPool`` shared by the threads, ``pool.execute("RETURN 1")``;
* ``nebula3 session/thread``: one ``ConnectionPool``, one ``Session`` per thread (its docs' advice:
  sessions are not thread-safe), ``session.execute("RETURN 1")``;
* ``raw socket``: the floor, one socket per thread sending the exact bytes nebula_sync sends and
  reading the reply frame, with no client logic at all.

For each: statements per second (wall clock), the client's CPU time per statement
(``time.process_time()``: every thread of this process; the server is another process), the part
of it spent in the kernel, and the voluntary context switches per statement (``getrusage``; each
GIL-releasing system call can hand the GIL to another thread). Each configuration runs
``--rounds`` times, interleaved round by round; the best and median rounds are reported, and the
ratios between clients both of the best rounds and as the median of per-round (paired) ratios.

Run::

    /tmp/venv/bin/python benchmarks/bench_e2e.py            # about two minutes
    /tmp/venv/bin/python benchmarks/bench_e2e.py --quick    # a smoke run
    /tmp/venv/bin/python benchmarks/bench_e2e.py --profile  # + cProfile of nebula_sync, 1 thread
    /tmp/venv/bin/python benchmarks/bench_e2e.py --breakdown  # + CPU per statement by layer
    /tmp/venv/bin/python benchmarks/bench_e2e.py --lean       # + the minimal statement path (_lean.py)
    /tmp/venv/bin/python benchmarks/bench_e2e.py --pin split  # clients on CPU 0, server on CPU 1

Not a test: it reports (and exits 0) whatever the figures are.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.metadata
import io
import logging
import os
import platform
import pstats
import resource
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from nebula_sync import ConnectionConfig, NebulaClient, SessionConfig, SessionPoolConfig
from nebula_sync._thrift import service, wire

HERE = Path(__file__).resolve().parent
SPACE = "bench"
STATEMENT = "RETURN 1"

# A worker runs ``count`` statements on its own resources; setup/teardown are not timed.
Worker = Callable[[int], None]


@attrs.frozen
class Run:
    """One timed run: ``statements`` in ``wall`` seconds, using ``cpu`` seconds of client CPU, of
    which ``sys`` in the kernel, with ``switches`` voluntary context switches (the client's threads
    blocking: in the kernel, or waiting for the GIL or a lock)."""

    statements: int
    wall: float
    cpu: float
    sys: float = 0.0
    switches: int = 0

    @property
    def rate(self) -> float:
        return self.statements / self.wall

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.statements * 1e6

    @property
    def sys_us(self) -> float:
        return self.sys / self.statements * 1e6

    @property
    def switches_per_stmt(self) -> float:
        return self.switches / self.statements


# ---- the replay server ---------------------------------------------------------------------


class ReplayServer:
    """``benchmarks/_replay.py`` in a child process; it exits when we close its stdin."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen([sys.executable, str(HERE / "_replay.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"replay server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.address = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ---- the clients ---------------------------------------------------------------------------


class Bench:
    """A client configuration: ``setup(threads)`` gives one worker per thread; ``teardown()``."""

    name = ""

    def setup(self, threads: int) -> list[Worker]:
        raise NotImplementedError

    def teardown(self) -> None:
        pass


class NebulaSync(Bench):
    name = "nebula_sync"

    def __init__(self, address: str) -> None:
        self.address = address
        self.client: NebulaClient | None = None

    def setup(self, threads: int) -> list[Worker]:
        client = self.client = NebulaClient(
            self.address, "root", "nebula",
            session_pool_config=SessionPoolConfig(size=max(threads, 1), wait_timeout=10.0),
            conn_config=ConnectionConfig(connect_timeout=5.0, request_timeout=10.0),
            session_config=SessionConfig(space=SPACE),
        )  # fmt: skip
        rs = client.execute(STATEMENT)
        assert rs.rows() == [(1,)], rs.rows()
        execute = client.execute

        def work(count: int) -> None:
            for _ in range(count):
                execute(STATEMENT)

        return [work] * threads

    def teardown(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class Nebula3SessionPool(Bench):
    name = "nebula3 SessionPool"

    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.pool: Any = None

    def setup(self, threads: int) -> list[Worker]:
        from nebula3.Config import SessionPoolConfig as N3Config
        from nebula3.gclient.net.SessionPool import SessionPool

        cfg = N3Config()
        cfg.min_size = threads
        cfg.max_size = threads
        cfg.timeout = 10_000
        pool = self.pool = SessionPool("root", "nebula", SPACE, [self.addr])
        assert pool.init(cfg)
        assert pool.execute(STATEMENT).row_values(0)[0].as_int() == 1
        execute = pool.execute

        def work(count: int) -> None:
            for _ in range(count):
                execute(STATEMENT)

        return [work] * threads

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


class Nebula3SessionPerThread(Bench):
    name = "nebula3 session/thread"

    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.pool: Any = None
        self.sessions: list[Any] = []

    def setup(self, threads: int) -> list[Worker]:
        from nebula3.Config import Config
        from nebula3.gclient.net import ConnectionPool

        cfg = Config()
        cfg.max_connection_pool_size = threads
        cfg.timeout = 10_000
        pool = self.pool = ConnectionPool()
        assert pool.init([self.addr], cfg)
        self.sessions = [pool.get_session("root", "nebula") for _ in range(threads)]
        assert self.sessions[0].execute(STATEMENT).row_values(0)[0].as_int() == 1
        workers: list[Worker] = []
        for session in self.sessions:

            def work(count: int, execute: Any = session.execute) -> None:
                for _ in range(count):
                    execute(STATEMENT)

            workers.append(work)
        return workers

    def teardown(self) -> None:
        for s in self.sessions:
            s.release()
        self.sessions = []
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def _request_bytes() -> bytes:
    """Exactly the frame nebula_sync sends for ``RETURN 1`` (session id and seqid fixed)."""
    args = service.ExecuteWithParameterArgs(sessionId=424242, stmt=STATEMENT.encode(), parameterMap={})
    body = wire.encode_struct(args, [type(args), type(args).thrift_spec])
    return wire.theader_frame(wire.binary_message(b"executeWithParameter", wire.CALL, 1, body), 1)


class RawSocket(Bench):
    name = "raw socket (floor)"

    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.socks: list[socket.socket] = []

    def setup(self, threads: int) -> list[Worker]:
        request = _request_bytes()
        unpack = struct.Struct("!I").unpack_from
        workers: list[Worker] = []
        for _ in range(threads):
            sock = socket.create_connection(self.addr, timeout=10.0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(sock)

            def work(count: int, sock: socket.socket = sock) -> None:
                send, recv = sock.sendall, sock.recv
                for _ in range(count):
                    send(request)
                    data = recv(65536)
                    while len(data) < 4 or len(data) < 4 + unpack(data, 0)[0]:
                        more = recv(65536)
                        if not more:
                            raise ConnectionError("replay server closed the connection")
                        data += more

            workers.append(work)
        return workers

    def teardown(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []


class LeanPrototype(Bench):
    """``_lean.py``: the minimal statement path, for reference (``--lean``)."""

    name = "lean prototype"

    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.workers: list[Any] = []

    def setup(self, threads: int) -> list[Worker]:
        from _lean import LeanWorker
        from _replay import SESSION_ID

        self.workers = [LeanWorker(*self.addr, SESSION_ID) for _ in range(threads)]
        assert self.workers[0].execute(STATEMENT).rows() == [(1,)]
        out: list[Worker] = []
        for w in self.workers:

            def work(count: int, execute: Any = w.execute) -> None:
                for _ in range(count):
                    execute(STATEMENT)

            out.append(work)
        return out

    def teardown(self) -> None:
        for w in self.workers:
            w.close()
        self.workers = []


# ---- timing --------------------------------------------------------------------------------


def timed(bench: Bench, threads: int, statements: int, warmup: int) -> Run:
    """Run ``statements`` (split over ``threads``) after a warm-up; only the loop is timed."""
    workers = bench.setup(threads)
    try:
        per = max(1, statements // threads)
        for w in workers:
            w(warmup)
        gate = threading.Barrier(threads + 1)
        errors: list[BaseException] = []

        def run(w: Worker) -> None:
            gate.wait()
            try:
                w(per)
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=run, args=(w,)) for w in workers]
        for t in pool:
            t.start()
        gate.wait()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for t in pool:
            t.join()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        if errors:
            raise errors[0]
        kernel, switches = usage.ru_stime - usage0.ru_stime, usage.ru_nvcsw - usage0.ru_nvcsw
        return Run(per * threads, wall, cpu, kernel, switches)
    finally:
        bench.teardown()


def profile_nebula_sync(address: str, statements: int) -> str:
    """cProfile of nebula_sync's 1-thread loop: the top functions by own time."""
    bench = NebulaSync(address)
    (work,) = bench.setup(1)
    try:
        work(1000)
        prof = cProfile.Profile()
        prof.enable()
        work(statements)
        prof.disable()
    finally:
        bench.teardown()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime").print_stats(60)
    return out.getvalue()


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of process ``pid`` to ``cpus`` (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few statements and rounds (smoke run)")
    ap.add_argument("--rounds", type=int, default=None, help="runs per configuration (best is reported)")
    ap.add_argument("--statements", type=int, default=None, help="statements per run")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of nebula_sync (1 thread)")
    ap.add_argument("--lean", action="store_true",
                    help="also run the minimal pure-Python statement path of _lean.py, for reference")
    ap.add_argument("--breakdown", action="store_true",
                    help="also attribute nebula_sync's CPU per statement to its layers (_breakdown.py)")
    ap.add_argument("--pin", choices=["split", "same"], default=None,
                    help="pin the clients to CPU 0 and the replay server to CPU 1 (split) or 0 (same); "
                         "default: the scheduler places both")
    args = ap.parse_args()
    if args.pin and not hasattr(os, "sched_setaffinity"):
        ap.error("--pin needs os.sched_setaffinity (Linux)")
    if args.pin == "split" and len(os.sched_getaffinity(0)) < 2:
        ap.error("--pin split needs two CPUs")
    rounds = args.rounds or (1 if args.quick else 5)
    statements = args.statements or (1_000 if args.quick else 8_000)
    warmup = 50 if args.quick else 300
    logging.getLogger("nebula3").setLevel(logging.ERROR)

    server = ReplayServer()
    try:
        if args.pin:
            pin(os.getpid(), {0})
            pin(server.proc.pid, {1} if args.pin == "split" else {0})
        host, port = "127.0.0.1", server.port
        benches: list[Bench] = [
            RawSocket(host, port),
            NebulaSync(server.address),
            Nebula3SessionPool(host, port),
            Nebula3SessionPerThread(host, port),
        ]
        if args.lean:
            benches.insert(1, LeanPrototype(host, port))
        print(f"Python {platform.python_version()}, thrift {importlib.metadata.version('thrift')}, "
              f"nebula3-python {importlib.metadata.version('nebula3-python')}, {os.cpu_count()} CPUs; "
              f"{statements} x {STATEMENT!r} per run, best of {rounds} round(s); "
              f"load average {os.getloadavg()[0]:.2f}; "
              f"placement: {args.pin or 'scheduler'}")  # fmt: skip
        results: dict[tuple[str, int], list[Run]] = {}
        for r in range(rounds):
            for threads in (1, 8):
                order = benches if r % 2 == 0 else list(reversed(benches))
                for b in order:
                    results.setdefault((b.name, threads), []).append(timed(b, threads, statements, warmup))
        report(benches, results)
        if args.breakdown:
            import _breakdown

            print("\nnebula_sync CPU per statement by layer (1 thread, best of 5):")
            _breakdown.run(server.address, statements)
        if args.profile:
            print("\ncProfile, nebula_sync, 1 thread (sorted by own time):")
            print(profile_nebula_sync(server.address, statements))
    finally:
        server.close()
    return 0


def report(benches: list[Bench], results: dict[tuple[str, int], list[Run]]) -> None:
    """Best and median rounds per client, then ratios: of the best rounds, and the median of the
    ratios taken round by round (each round runs every client back to back, so a paired ratio is
    less sensitive to a busy machine than either figure alone)."""

    def best(name: str, threads: int) -> Run:
        return max(results[(name, threads)], key=lambda run: run.rate)

    for threads in (1, 8):
        print(f"\n{threads} thread{'s' if threads > 1 else ''}:")
        print(f"  {'client':<24} {'best/s':>9} {'median/s':>9} {'CPU us/stmt':>12} {'median CPU':>11} "
              f"{'med. kernel':>11} {'med. switch':>11}")  # fmt: skip
        for b in benches:
            runs = results[(b.name, threads)]
            top = best(b.name, threads)
            med = statistics.median(run.rate for run in runs)
            med_cpu = statistics.median(run.cpu_us for run in runs)
            med_sys = statistics.median(run.sys_us for run in runs)
            med_sw = statistics.median(run.switches_per_stmt for run in runs)
            print(f"  {b.name:<24} {top.rate:>9,.0f} {med:>9,.0f} {top.cpu_us:>12.1f} {med_cpu:>11.1f} "
                  f"{med_sys:>11.1f} {med_sw:>11.2f}")  # fmt: skip
    print("\nratios: best rounds | median of per-round ratios (min-max)")
    for threads in (1, 8):
        ns = results[("nebula_sync", threads)]
        sp = results[("nebula3 SessionPool", threads)]
        st = results[("nebula3 session/thread", threads)]
        floor = results[("raw socket (floor)", threads)]
        vs3 = [a.rate / max(b.rate, c.rate) for a, b, c in zip(ns, sp, st)]
        vs_floor = [f.rate / a.rate for a, f in zip(ns, floor)]
        cpu = [min(b.cpu_us, c.cpu_us) / a.cpu_us for a, b, c in zip(ns, sp, st)]
        b_ns, b_sp, b_st = best("nebula_sync", threads), best("nebula3 SessionPool", threads), \
            best("nebula3 session/thread", threads)  # fmt: skip
        b_floor = best("raw socket (floor)", threads)

        def spread(xs: list[float]) -> str:
            return f"{statistics.median(xs):.2f}x ({min(xs):.2f}-{max(xs):.2f})"

        print(f"  {threads} thread(s):")
        print(f"    nebula_sync / fastest nebula3 throughput: "
              f"{b_ns.rate / max(b_sp.rate, b_st.rate):.2f}x | {spread(vs3)}")  # fmt: skip
        print(f"    raw floor / nebula_sync throughput:       "
              f"{b_floor.rate / b_ns.rate:.2f}x | {spread(vs_floor)}")  # fmt: skip
        print(f"    nebula3 / nebula_sync CPU per statement:  "
              f"{min(b_sp.cpu_us, b_st.cpu_us) / b_ns.cpu_us:.2f}x | {spread(cpu)}")  # fmt: skip
        lean = results.get(("lean prototype", threads))
        if lean:
            b_lean = best("lean prototype", threads)
            print(f"    lean prototype / fastest nebula3:         "
                  f"{b_lean.rate / max(b_sp.rate, b_st.rate):.2f}x | "
                  f"{spread([a.rate / max(b.rate, c.rate) for a, b, c in zip(lean, sp, st)])}")  # fmt: skip
            print(f"    raw floor / lean prototype:               "
                  f"{b_floor.rate / b_lean.rate:.2f}x | "
                  f"{spread([f.rate / a.rate for a, f in zip(lean, floor)])}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
