"""Chaos: 16 threads, 3 hosts, 20,000 statements while a fault thread breaks things at random.

Each host is a :class:`FakeGraphd` behind a :class:`FaultProxy`; the client only knows the proxies.
A fault thread (seeded RNG, bounded in count and time) keeps injecting, one at a time:

* host faults (the fake graphd): kill and restart on the same port, refuse connects, stall every
  reply (shorter and longer than ``request_timeout``), run every statement longer than
  ``request_timeout``, drop every connection (RST or FIN), forget every session;
* network faults (the proxy): reset every connection, delay or trickle replies, black-hole
  replies, reset or close after N reply bytes, truncate a reply, corrupt a reply header, refuse
  connects.

At most one host is stopped or refusing at a time. Each worker runs ``RETURN $t * 1000000 + $i``
(so it can check its own result); every third statement is marked ``idempotent=True`` and is
retried by the caller (at most ``MAX_RETRIES`` times) on any ``NebulaError``. Asserted:

* every statement returned its own correct result or raised a typed ``NebulaError`` -- never a
  wrong result, never another exception;
* no call took longer than ``wait_timeout + request_timeout + MARGIN`` (each call is timed);
* every idempotent statement succeeded in the end, and every worker ran all its statements
  within ``RUN_BOUND``;
* graphd never ran two statements at once on one session (the fake graphd's counters);
* after ``close()``: 0 connections on every host, and no session whose id the client received
  (a session whose ``authenticate`` reply a fault swallowed is one no client can sign out: it
  stays until graphd's idle timeout; at most one per failed ``authenticate`` call); the
  process's file descriptors and threads back to where they started (bounded wait).

The figures are printed (``-s``) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import attrs
import pytest

from nebula_sync import ConnectionConfig, NebulaClient, SessionPoolConfig
from nebula_sync._connection import Connection
from nebula_sync.config import HostAddress
from nebula_sync.errors import NebulaError
from nebula_sync.testing import FakeGraphd
from nebula_sync.testing._proxy import FaultProxy

SEED = 20240611
THREADS = 16
STATEMENTS = 20_000
PER_THREAD = STATEMENTS // THREADS
IDEMPOTENT_EVERY = 3
MAX_RETRIES = 40  # with the caller's backoff (capped at 0.5 s): about 20 s per statement at most
WAIT_TIMEOUT = 1.0
REQUEST_TIMEOUT = 0.5
CONNECT_TIMEOUT = 0.5
#: scheduling slack on a loaded 2-core box (16 workers, 3 servers, 3 proxies, all in one process)
MARGIN = 0.75
LATENCY_BOUND = WAIT_TIMEOUT + REQUEST_TIMEOUT + MARGIN
RUN_BOUND = 90.0  # seconds: the workers stop (and the test fails) if the run takes longer
MAX_FAULTS = 200  # bounds the run time: statements after the last fault run on healed hosts
#: the workers go on past their STATEMENTS until this many faults were injected (a fast machine
#: would otherwise finish its statements while the faults had barely started)
MIN_FAULTS = 100
PAUSE = (0.1, 0.4)  # seconds between one fault's end and the next on the same host


@attrs.define
class Tally:
    """What the workers saw; each worker has its own, merged at the end."""

    ok: int = 0
    wrong: list[str] = attrs.field(factory=list)
    untyped: list[str] = attrs.field(factory=list)
    errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    retries: int = 0
    idempotent: int = 0
    idempotent_failed: list[str] = attrs.field(factory=list)
    slow: list[str] = attrs.field(factory=list)
    max_latency: float = 0.0
    calls: int = 0
    #: statements this worker finished (succeeded, failed for good, or gave up on): PER_THREAD
    #: unless it was stopped early; a sum after :meth:`merge`
    done: int = 0

    def merge(self, other: Tally) -> None:
        self.ok += other.ok
        self.wrong += other.wrong
        self.untyped += other.untyped
        self.errors.update(other.errors)
        self.retries += other.retries
        self.idempotent += other.idempotent
        self.idempotent_failed += other.idempotent_failed
        self.slow += other.slow
        self.max_latency = max(self.max_latency, other.max_latency)
        self.calls += other.calls
        self.done += other.done


def call(client: NebulaClient, t: int, i: int, idempotent: bool) -> Any:
    """Statement ``i`` of thread ``t`` through one of the three execute paths; its rows."""
    kind = i % 4
    if kind == 2:  # a {{ }} template plus a server-side parameter
        rs = client.execute_py("RETURN {{t}} * 1000000 + $i", {"t": t, "i": i}, idempotent=idempotent)
        return rs.rows()
    if kind == 3:  # graphd's JSON interface
        doc = client.execute_json("RETURN $t * 1000000 + $i", {"t": t, "i": i}, idempotent=idempotent)
        return [tuple(row["row"]) for row in doc["results"][0]["data"]]
    return client.execute("RETURN $t * 1000000 + $i", {"t": t, "i": i}, idempotent=idempotent).rows()


def worker(client: NebulaClient, t: int, stop: threading.Event, enough: threading.Event,
           tally: Tally) -> None:  # fmt: skip
    """Runs ``PER_THREAD`` statements, and more until ``enough`` faults were injected."""
    for i in itertools.count():
        if stop.is_set() or (i >= PER_THREAD and enough.is_set()):
            return
        idempotent = i % IDEMPOTENT_EVERY == 0
        tally.idempotent += idempotent
        expected = t * 1_000_000 + i
        attempts = 0
        while True:
            attempts += 1
            start = time.monotonic()
            error: BaseException | None = None
            rows: Any = None
            try:
                rows = call(client, t, i, idempotent)
            except NebulaError as exc:
                error = exc
            except Exception as exc:
                tally.untyped.append(f"{t}/{i}: {type(exc).__name__}: {exc}")
                error = exc
            took = time.monotonic() - start
            tally.calls += 1
            tally.max_latency = max(tally.max_latency, took)
            if took > LATENCY_BOUND:
                tally.slow.append(f"{t}/{i}: {took:.3f}s ({type(error).__name__ if error else 'ok'})")
            if error is None:
                if rows == [(expected,)]:
                    tally.ok += 1
                else:
                    tally.wrong.append(f"{t}/{i}: expected {expected}, got {rows!r}")
                break
            if isinstance(error, NebulaError):
                tally.errors[type(error).__name__] += 1
            if not idempotent:
                break
            if attempts > MAX_RETRIES or stop.is_set():
                tally.idempotent_failed.append(f"{t}/{i}: {type(error).__name__}: {error}")
                break
            tally.retries += 1
            # The caller's own backoff between retries (NoHostAvailable fails at once while every
            # host is backing off; see test_borrow_waits_for_a_host_backing_off_within_wait_timeout).
            stop.wait(min(0.5, 0.025 * 2**attempts))
        tally.done = i + 1


@attrs.define
class Host:
    server: FakeGraphd
    proxy: FaultProxy
    down: bool = False


@attrs.frozen
class Fault:
    """One kind of fault: ``begin`` it, and after a random duration in ``span``, ``heal`` it."""

    name: str
    begin: Callable[[Host], object]
    heal: Optional[Callable[[Host], object]] = None
    span: tuple[float, float] = (0.0, 0.0)
    down: bool = False  # makes the host unreachable (at most one such host at a time)


class FaultThread(threading.Thread):
    """Keeps one fault going on each host at a time, on three independent timelines.

    Every host's timeline is: a fault begins, lasts a random time, heals, a short pause, the next
    fault begins. One thread runs all three from a time-ordered queue. Bounded by ``MAX_FAULTS``
    and by ``stop``; whatever is still broken when it stops is healed.
    """

    def __init__(self, hosts: list[Host], stop: threading.Event, seed: int) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.hosts = hosts
        self.stop = stop
        self.rng = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.failure: BaseException | None = None
        #: set once MIN_FAULTS faults were injected, or when the thread ends
        self.enough = threading.Event()

    def catalogue(self) -> list[Fault]:
        rng = self.rng

        def proxy(name: str, set_mode: Callable[[FaultProxy], object], span: tuple[float, float]) -> Fault:
            return Fault(name, lambda h: set_mode(h.proxy), lambda h: h.proxy.pass_through(), span)

        return [
            Fault("host killed and restarted", lambda h: h.server.stop(), lambda h: h.server.start(),
                  (0.1, 0.6), down=True),
            Fault("host refusing connects", lambda h: h.server.refuse_connections(True),
                  lambda h: h.server.refuse_connections(False), (0.1, 0.5), down=True),
            Fault("host stalled < request_timeout", lambda h: h.server.stall(True),
                  lambda h: h.server.stall(False), (0.05, REQUEST_TIMEOUT * 0.5)),
            Fault("host stalled > request_timeout", lambda h: h.server.stall(True),
                  lambda h: h.server.stall(False), (REQUEST_TIMEOUT, REQUEST_TIMEOUT * 2.5)),
            # Statements run longer than request_timeout: each one the client gives up on goes on
            # running on graphd (then answers a closed connection), as a slow query does.
            Fault("host ran statements > request_timeout",
                  lambda h: h.server.script(re.compile(r"^RETURN "),
                                            delay=rng.uniform(REQUEST_TIMEOUT * 1.2, REQUEST_TIMEOUT * 2)),
                  lambda h: h.server.clear_scripts(), (REQUEST_TIMEOUT, REQUEST_TIMEOUT * 2.5)),
            Fault("host dropped connections (RST)", lambda h: h.server.drop_connections(reset=True)),
            Fault("host dropped connections (FIN)", lambda h: h.server.drop_connections(reset=False)),
            Fault("host forgot sessions", lambda h: h.server.forget_sessions()),
            Fault("proxy reset connections", lambda h: h.proxy.reset()),
            proxy("proxy delayed replies", lambda p: p.delay(rng.uniform(0.01, 0.6)), (0.1, 0.5)),
            proxy("proxy dripped replies", lambda p: p.drip(rng.randint(1, 16), 0.005), (0.1, 0.4)),
            proxy("proxy black-holed replies", lambda p: p.stall(), (0.1, 0.8)),
            proxy("proxy reset after N reply bytes", lambda p: p.reset_after(rng.randint(0, 40)),
                  (0.05, 0.3)),
            proxy("proxy closed after N reply bytes", lambda p: p.close_after(rng.randint(0, 40)),
                  (0.05, 0.3)),
            proxy("proxy truncated a reply",
                  lambda p: p.truncate_reply(rng.randint(0, 30), rng.choice(["hang", "close", "reset"])),
                  (0.05, 0.3)),
            # Header bytes only (THeader magic, flags): corrupting a value's bytes would change
            # the value itself, which no client can detect (TCP's checksum is what prevents that).
            proxy("proxy corrupted reply headers", lambda p: p.corrupt(offset=rng.choice([4, 5, 6])),
                  (0.05, 0.3)),
            Fault("proxy refusing connects", lambda h: h.proxy.refuse(), lambda h: h.proxy.resume_accepting(),
                  (0.1, 0.5), down=True),
        ]  # fmt: skip

    def run(self) -> None:
        catalogue = self.catalogue()
        seq = itertools.count()
        now = time.monotonic()
        # (when, tie-breaker, host index, fault to heal or None = begin a new one)
        queue: list[tuple[float, int, int, Optional[Fault]]] = [
            (now + self.rng.uniform(0.0, 0.2), next(seq), i, None) for i in range(len(self.hosts))
        ]

        def schedule(span: tuple[float, float], index: int, fault: Optional[Fault]) -> None:
            heapq.heappush(queue, (time.monotonic() + self.rng.uniform(*span), next(seq), index, fault))

        try:
            while queue and sum(self.counts.values()) < MAX_FAULTS:
                when, _, index, healing = heapq.heappop(queue)
                if self.stop.wait(max(0.0, when - time.monotonic())):
                    heapq.heappush(queue, (when, next(seq), index, healing))
                    break
                host = self.hosts[index]
                if healing is not None:
                    assert healing.heal is not None
                    healing.heal(host)
                    host.down = False
                    schedule(PAUSE, index, None)
                    continue
                someone_down = any(h.down for h in self.hosts)
                fault = self.rng.choice([f for f in catalogue if not (f.down and someone_down)])
                fault.begin(host)
                self.counts[fault.name] += 1
                if sum(self.counts.values()) >= MIN_FAULTS:
                    self.enough.set()
                if fault.heal is None:
                    schedule(PAUSE, index, None)
                else:
                    host.down = fault.down
                    schedule(fault.span, index, fault)
        except BaseException as exc:
            self.failure = exc
        finally:
            self.enough.set()
            for _, _, index, healing in queue:
                if healing is not None and healing.heal is not None:
                    healing.heal(self.hosts[index])
                    self.hosts[index].down = False


class SessionLedger:
    """The session ids the client received from ``authenticate``, and how many calls failed.

    Thread-safe. Its :meth:`factory` is the client's ``connection_factory``.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: set[int] = set()
        self.failed = 0

    def factory(self, address: HostAddress, config: ConnectionConfig) -> Connection:
        return LedgerConnection(address, config, self)


class LedgerConnection(Connection):
    """A connection that records what its ``authenticate`` calls returned in a ledger."""

    __slots__ = ("ledger",)

    def __init__(self, address: HostAddress, config: ConnectionConfig, ledger: SessionLedger) -> None:
        super().__init__(address, config)
        self.ledger = ledger

    def authenticate(self, username: str, password: str, deadline: float | None) -> Any:
        ledger = self.ledger
        try:
            resp = super().authenticate(username, password, deadline)
        except NebulaError:
            with ledger.lock:
                ledger.failed += 1
            raise
        if resp.error_code == 0 and resp.session_id is not None:
            with ledger.lock:
                ledger.received.add(resp.session_id)
        return resp


def heal_and_close(hosts: list[Host], client: NebulaClient) -> None:
    """Undo every fault on every host, then close the client (its sign-outs can reach graphd)."""
    for h in hosts:
        h.proxy.pass_through()
        h.server.stall(False)
        h.server.clear_scripts()
        h.server.refuse_connections(False)
        h.server.start()
    client.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_chaos() -> None:
    threads_before = threading.active_count()
    fds_before = open_fds()
    started = time.monotonic()
    hosts: list[Host] = []
    for _ in range(3):
        server = FakeGraphd(log_size=100, stop_timeout=5.0).start()
        proxy = FaultProxy((server.host, server.port), connect_timeout=CONNECT_TIMEOUT).start()
        hosts.append(Host(server, proxy))
    ledger = SessionLedger()
    client = NebulaClient(
        [h.proxy.address for h in hosts],
        "root",
        "nebula",
        session_pool_config=SessionPoolConfig(size=4, wait_timeout=WAIT_TIMEOUT),
        conn_config=ConnectionConfig(connect_timeout=CONNECT_TIMEOUT, request_timeout=REQUEST_TIMEOUT,
                                     ping_timeout=REQUEST_TIMEOUT),  # fmt: skip
        close_timeout=5.0,
        connection_factory=ledger.factory,
    )
    stop = threading.Event()
    faults = FaultThread(hosts, stop, SEED)
    tallies = [Tally() for _ in range(THREADS)]
    workers = [threading.Thread(target=worker, args=(client, t, stop, faults.enough, tallies[t]),
                                name=f"chaos-{t}") for t in range(THREADS)]  # fmt: skip
    ran_out_of_time = False
    try:
        faults.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join(max(0.0, RUN_BOUND - (time.monotonic() - started)))
            if w.is_alive():
                ran_out_of_time = True
                stop.set()  # out of time: stop everyone (the test fails below)
        stop.set()
        for w in workers:
            w.join(LATENCY_BOUND * (MAX_RETRIES + 2))
        hung = [w.name for w in workers if w.is_alive()]
        faults.join(30)
        run_seconds = time.monotonic() - started
        stats = client.stats()
    finally:
        stop.set()
        heal_and_close(hosts, client)
    left = []
    for h in hosts:
        # Sign-outs are read before the end of their connection, so once every connection is
        # closed, the sessions still open are the ones that stay.
        try:
            st = h.server.wait_for(lambda s: s.connections_open == 0, 10.0)
        except TimeoutError:
            st = h.server.stats()
        left.append((st.sessions_open, st.connections_open))
    left_ids = [s.session_id for h in hosts for s in h.server.sessions()]
    signed_in = [sid for sid in left_ids if sid in ledger.received]
    proxy_open = [h.proxy.stats().open for h in hosts]
    for h in hosts:
        h.proxy.stop()
        h.server.stop()
    deadline = time.monotonic() + 10.0
    while (open_fds() > fds_before or threading.active_count() > threads_before) and (
        time.monotonic() < deadline
    ):
        threading.Event().wait(0.02)  # polling process counters, bounded by the deadline
    fds_left = open_fds() - fds_before
    threads_left = threading.active_count() - threads_before

    total = Tally()
    for tally in tallies:
        total.merge(tally)
    server_stats = [h.server.stats() for h in hosts]  # counters survive the kills and restarts
    statements = sum(st.statements for st in server_stats)
    unfinished = {t: tally.done for t, tally in enumerate(tallies) if tally.done < PER_THREAD}
    figures = {
        "seed": SEED,
        "run seconds": round(run_seconds, 1),
        "statements (calls, incl. caller retries)": total.calls,
        "distinct statements": sum(tally.done for tally in tallies),
        "statements run by graphd": statements,
        "most statements at once on one session, per host": [
            st.max_concurrent_statements_per_session for st in server_stats
        ],
        "most statements at once, per host": [st.max_concurrent_statements for st in server_stats],
        "ok": total.ok,
        "wrong results": len(total.wrong),
        "untyped exceptions": len(total.untyped),
        "failures by type": dict(total.errors.most_common()),
        "idempotent statements": total.idempotent,
        "caller retries of idempotent statements": total.retries,
        "idempotent statements that never succeeded": len(total.idempotent_failed),
        "max latency s": round(total.max_latency, 3),
        "latency bound s": LATENCY_BOUND,
        "calls over the bound": len(total.slow),
        "faults injected": dict(faults.counts.most_common()),
        "faults total": sum(faults.counts.values()),
        "sessions/connections left per host": left,
        "sessions left that the client had received": len(signed_in),
        "authenticate calls that failed (reply lost or refused)": ledger.failed,
        "proxy connections left": proxy_open,
        "FDs left": fds_left,
        "threads left": threads_left,
        "session renewals": sum(h.session_renewals for h in stats.hosts),
        "connections opened": sum(h.connections_opened for h in stats.hosts),
        "connect failures": sum(h.connect_failures for h in stats.hosts),
    }
    print("\nchaos figures:")
    for key, value in figures.items():
        print(f"  {key}: {value}")

    assert faults.failure is None, repr(faults.failure)
    assert total.wrong == [], total.wrong[:10]
    assert total.untyped == [], total.untyped[:10]
    assert total.slow == [], total.slow[:10]
    assert total.idempotent_failed == [], total.idempotent_failed[:10]
    assert not ran_out_of_time, f"the run took longer than {RUN_BOUND} s"
    assert hung == [], f"workers still running after the stop: {hung}"
    assert unfinished == {}, f"workers that stopped early (worker: statements done): {unfinished}"
    # What graphd saw: a session never runs two statements at once, whatever the faults did.
    # (No bound on all of a host's statements at once: a statement the client gave up on, its
    # reply late or lost or its connection gone, still runs on graphd -- a slow one, or one a
    # stalled host resumes -- next to the statements of the sessions the client uses meanwhile,
    # so hosts x size does not hold: runs see 8 at once on a host with size=4.)
    per_session = {str(h.server.address): st.max_concurrent_by_session for h, st in zip(hosts, server_stats)}
    assert all(st.max_concurrent_statements_per_session <= 1 for st in server_stats), {
        host: {sid: n for sid, n in by_session.items() if n > 1} for host, by_session in per_session.items()
    }
    assert sum(faults.counts.values()) >= MIN_FAULTS, "too few faults were injected"
    assert all(conns == 0 for _, conns in left), left
    assert signed_in == [], f"sessions the client knew were not signed out: {signed_in}"
    assert len(left_ids) <= ledger.failed, (left, ledger.failed)
    assert fds_left <= 0 and threads_left <= 0, (fds_left, threads_left)


def test_borrow_waits_for_a_host_backing_off_within_wait_timeout() -> None:
    servers = [FakeGraphd().start() for _ in range(2)]
    try:
        client = NebulaClient(
            [s.address for s in servers],
            "root",
            "nebula",
            session_pool_config=SessionPoolConfig(size=2, wait_timeout=10.0),
            conn_config=ConnectionConfig(connect_timeout=0.5, request_timeout=1.0),
        )
        with client:
            for s in servers:
                s.stop()
            with pytest.raises(NebulaError):
                client.execute("RETURN 1")  # both hosts fail to connect: both back off (~0.2 s)
            assert [h.state for h in client.stats().hosts] == ["down", "down"]
            for s in servers:
                s.start()
            # Both hosts are healthy again and re-probe-able within 0.25 s, far inside wait_timeout:
            # the call waits for the re-probe, not for its wait_timeout.
            start = time.monotonic()
            assert client.execute("RETURN 2", idempotent=True).rows() == [(2,)]
            assert time.monotonic() - start < 10.0 / 2
    finally:
        for s in servers:
            s.stop()


# ---- at most once under the same faults --------------------------------------------------------

#: the fault window of the at-most-once run: its workers stop starting statements at its end
ONCE_SECONDS = 8.0
ONCE_SEED = 20240612
ONCE_THREADS = 8
#: the fault thread's pace (a fault per host every 0.1-1.65 s) gave 40-48 in ONCE_SECONDS
ONCE_MIN_FAULTS = 15
#: what an at-most-once call ended with: a result, or an error that says nothing ran
#: (``is_retryable()``); any other error is recorded by its class name
RETURNED = "returned a result"
NOT_SENT = "raised a not-sent error"
#: the column alias that makes each non-idempotent statement's text unique: ``u<thread>_<i>``
UNIQUE_ALIAS = re.compile(r" AS (u\d+_\d+)$")


@attrs.define
class OnceTally:
    """What one at-most-once worker saw."""

    #: alias of each non-idempotent statement -> RETURNED, NOT_SENT or the class of its error
    outcomes: dict[str, str] = attrs.field(factory=dict)
    wrong: list[str] = attrs.field(factory=list)
    untyped: list[str] = attrs.field(factory=list)
    idempotent: int = 0


def unique_call(client: NebulaClient, t: int, i: int) -> Any:
    """Statement ``i`` of thread ``t``, not idempotent, its text unique (``AS u<t>_<i>``), through
    one of the three execute paths or a session block; its rows."""
    text = f"RETURN $t * 1000000 + $i AS u{t}_{i}"
    params = {"t": t, "i": i}
    kind = i % 4
    if kind == 1:  # a {{ }} template plus a server-side parameter
        return client.execute_py(text.replace("$t", "{{t}}"), params).rows()
    if kind == 2:
        doc = client.execute_json(text, params)
        return [tuple(row["row"]) for row in doc["results"][0]["data"]]
    if kind == 3:  # a held session has its own retry rules (Session._run)
        with client.session() as session:
            return session.execute(text, params).rows()
    return client.execute(text, params).rows()


def once_worker(client: NebulaClient, t: int, stop: threading.Event, until: float, tally: OnceTally) -> None:
    """Runs statements until ``until``: every third idempotent (the shared text of :func:`call`,
    the client may retry it), the others unique and not idempotent, one attempt each."""
    i = 0
    while not stop.is_set() and time.monotonic() < until:
        i += 1
        expected = t * 1_000_000 + i
        idempotent = i % IDEMPOTENT_EVERY == 0
        alias = f"u{t}_{i}"
        try:
            if idempotent:
                tally.idempotent += 1
                rows = call(client, t, i, True)
            else:
                rows = unique_call(client, t, i)
        except NebulaError as exc:
            if not idempotent:
                tally.outcomes[alias] = NOT_SENT if exc.is_retryable() else type(exc).__name__
            if exc.is_retryable():
                # the caller's own backoff: while every host backs off, NoHostAvailable comes at
                # once, and a worker without one would only spin
                stop.wait(0.02)
            continue
        except Exception as exc:
            tally.untyped.append(f"{t}/{i}: {type(exc).__name__}: {exc}")
            if not idempotent:
                tally.outcomes[alias] = type(exc).__name__
            continue
        if not idempotent:
            tally.outcomes[alias] = RETURNED
        if rows != [(expected,)]:
            tally.wrong.append(f"{t}/{i}: expected {expected}, got {rows!r}")


@pytest.mark.slow
def test_chaos_non_idempotent_statements_run_at_most_once() -> None:
    """The same faults as :func:`test_chaos`, for ``ONCE_SECONDS``; each non-idempotent statement
    has a text of its own. From what graphd logged: each ran at most once, exactly once when its
    call returned a result, and never when its call raised an error saying nothing ran."""
    hosts: list[Host] = []
    for _ in range(3):
        server = FakeGraphd(log_size=None, stop_timeout=5.0).start()  # every statement logged
        proxy = FaultProxy((server.host, server.port), connect_timeout=CONNECT_TIMEOUT).start()
        hosts.append(Host(server, proxy))
    client = NebulaClient(
        [h.proxy.address for h in hosts],
        "root",
        "nebula",
        session_pool_config=SessionPoolConfig(size=4, wait_timeout=WAIT_TIMEOUT),
        conn_config=ConnectionConfig(
            connect_timeout=CONNECT_TIMEOUT, request_timeout=REQUEST_TIMEOUT, ping_timeout=REQUEST_TIMEOUT
        ),
        close_timeout=5.0,
    )
    stop = threading.Event()
    faults = FaultThread(hosts, stop, ONCE_SEED)
    tallies = [OnceTally() for _ in range(ONCE_THREADS)]
    until = time.monotonic() + ONCE_SECONDS
    workers = [threading.Thread(target=once_worker, args=(client, t, stop, until, tallies[t]),
                                name=f"once-{t}") for t in range(ONCE_THREADS)]  # fmt: skip
    try:
        faults.start()
        for w in workers:
            w.start()
        # each call ends within LATENCY_BOUND (test_chaos): the last ones start just before `until`
        for w in workers:
            w.join(max(0.0, until + 4 * LATENCY_BOUND - time.monotonic()))
        hung = [w.name for w in workers if w.is_alive()]
        stop.set()
        for w in workers:
            w.join(LATENCY_BOUND * 2)
        faults.join(30)
    finally:
        stop.set()
        heal_and_close(hosts, client)
        for h in hosts:  # after stop() no statement runs any more: the logs are complete
            h.proxy.stop()
            h.server.stop()

    outcomes: dict[str, str] = {}
    for tally in tallies:
        outcomes.update(tally.outcomes)
    ran: collections.Counter[str] = collections.Counter()
    for h in hosts:
        for entry in h.server.statement_log():
            match = UNIQUE_ALIAS.search(entry.statement)
            if match:
                ran[match.group(1)] += 1
    run_twice = {alias: n for alias, n in ran.items() if n > 1}
    returned_not_run_once = {a: ran[a] for a, o in outcomes.items() if o == RETURNED and ran[a] != 1}
    not_sent_but_ran = {a: ran[a] for a, o in outcomes.items() if o == NOT_SENT and ran[a] != 0}
    never_called = sorted(set(ran) - set(outcomes))
    failed = collections.Counter(o for o in outcomes.values() if o != RETURNED)
    print("\nat-most-once figures:")
    print(f"  non-idempotent statements: {len(outcomes)}, idempotent: {sum(t.idempotent for t in tallies)}")
    print(f"  returned: {len(outcomes) - sum(failed.values())}, failed: {dict(failed.most_common())}")
    print(f"  faults injected: {sum(faults.counts.values())}")

    assert faults.failure is None, repr(faults.failure)
    assert hung == [], f"workers still running long after the fault window: {hung}"
    assert [u for t in tallies for u in t.untyped] == []
    assert [w for t in tallies for w in t.wrong] == []
    assert run_twice == {}, f"non-idempotent statements graphd ran more than once: {run_twice}"
    assert returned_not_run_once == {}, f"results of statements not run exactly once: {returned_not_run_once}"
    assert not_sent_but_ran == {}, f"'nothing ran' errors for statements graphd ran: {not_sent_but_ran}"
    assert never_called == [], never_called  # the log holds every statement (log_size=None)
    # the run meant something: faults hit the non-idempotent calls, and most still got through
    assert sum(faults.counts.values()) >= ONCE_MIN_FAULTS, dict(faults.counts)
    assert sum(failed.values()) >= 5, dict(failed)
    assert len(outcomes) - sum(failed.values()) >= 500
