"""Unit tests of the pools and the client's pooling, with in-memory fake connections (no sockets).

``ConnectionPool`` (one host's connections), ``SessionBroker`` (every host's session slots) and
``NebulaClient`` wired to :mod:`fakeconn` through ``connection_factory=``. The fake world records
open connections, sessions, statements in flight per session, and any I/O made while a pool,
broker or client lock is held (the locks are swapped for owner-tracking ones); every test ends by
checking that nothing was recorded as a violation.

Synchronisation is by events, barriers and conditions only: a thread parked in a pool's condition
wait, a broker waiter or a fake gate is reported to a :class:`fakeconn.Probe` the test waits on.
Every wait is bounded (``WAIT_LIMIT``). Time-based pool behaviour (backoff) uses a fake clock
patched into ``nebula_sync._pool`` / ``nebula_sync._client`` where the test would otherwise depend
on real time passing.
"""

from __future__ import annotations

import collections
import functools
import gc
import itertools
import random
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any, Callable, Optional, Protocol, cast

import pytest
from fakeconn import (
    WAIT_LIMIT,
    FakeConnection,
    FakeWorld,
    join_all,
    observed_waiter_class,
)
from waiting import wait_until

from nebula_sync import _client, _pool
from nebula_sync._client import NebulaClient
from nebula_sync._pool import ConnectionPool, HostEntry, HostState, Lease, ServerSession, SessionBroker
from nebula_sync.config import ConnectionConfig, HostAddress, SessionConfig, SessionPoolConfig
from nebula_sync.errors import (
    AuthenticationError,
    ClientClosed,
    ConnectionFailed,
    NoHostAvailable,
    OutcomeUnknown,
    PoolTimeout,
    SessionInvalid,
)

ADDR = HostAddress("10.0.0.1", 9669)
HOST = str(ADDR)
ADDRS = [HostAddress(f"10.0.0.{i}", 9669) for i in range(1, 5)]


# ---- helpers -----------------------------------------------------------------------------------


#: deadline horizon for calls that a correct test never lets time out: well past ``WAIT_LIMIT``, so
#: a thread that should be woken by something (a release, a close) but is not fails the test's
#: bounded join instead of quietly timing out on its own and passing
HORIZON = 60.0


def soon(seconds: float = HORIZON) -> float:
    """A deadline that a correct test never reaches (it bounds a hang instead)."""
    return time.monotonic() + seconds


class Worker(threading.Thread):
    """Run ``fn`` in a daemon thread; keep its result or exception for the test to check."""

    def __init__(self, fn: Callable[[], Any], name: str = "worker") -> None:
        super().__init__(name=name, daemon=True)
        self._fn = fn
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # noqa: B036 - the test inspects whatever happened
            self.error = exc

    def finish(self, timeout: float = WAIT_LIMIT) -> Any:
        """The result (re-raising the thread's exception); fails if the thread is still running."""
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} still running after {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result

    def failure(self, timeout: float = WAIT_LIMIT) -> BaseException:
        """The exception the thread ended with; fails if it returned normally or still runs."""
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} still running after {timeout}s"
        assert self.error is not None, f"{self.name} returned {self.result!r} instead of raising"
        return self.error


class FakeClock:
    """Stands in for the ``time`` module of ``nebula_sync._pool``: ``monotonic()`` moves only on
    :meth:`advance`. Used only where nothing waits on real time with a fake-clock deadline."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SteppedClock:
    """Stands in for the ``time`` module of ``nebula_sync._client``: frozen at the real monotonic
    time it was created, plus whatever :meth:`advance` added. Deadlines the client derives from it
    are never earlier than real ones, so nothing times out early."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_session_ids = itertools.count(1)


class FakePool(Protocol):
    """A ``ConnectionPool`` as these tests see it: one that hands out :class:`FakeConnection`."""

    address: HostAddress
    max_size: int
    opened: int
    discarded: int
    pings: int

    def acquire(self, deadline: Optional[float]) -> FakeConnection: ...
    def release(self, conn: FakeConnection) -> None: ...
    def counts(self) -> tuple[int, int, int]: ...
    def close(self, *, abort_active: bool = False) -> None: ...


def take(pool: FakePool, deadline: Optional[float] = None) -> FakeConnection:
    """``pool.acquire`` with a :func:`soon` deadline unless one is given."""
    return pool.acquire(soon() if deadline is None else deadline)


def new_session() -> ServerSession:
    return ServerSession(next(_session_ids), 0, "UTC")


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    w = FakeWorld()
    yield w
    assert w.violations == [], w.violations


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads far more often than the default 5 ms, so races have a chance to show."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


@pytest.fixture
def observed_waiters(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Broker waiters report their wait to ``world.probe`` as ``"broker.waiter"``."""
    monkeypatch.setattr(_pool, "_Waiter", observed_waiter_class(world.probe))


@pytest.fixture
def make_pool(world: FakeWorld) -> Iterator[Callable[..., FakePool]]:
    pools: list[ConnectionPool] = []

    def make(max_size: int = 2, address: HostAddress = ADDR, **config: Any) -> FakePool:
        pool = ConnectionPool(address, ConnectionConfig(**config), max_size, world.factory)
        world.watch(pool)
        pools.append(pool)
        return cast(FakePool, pool)

    yield make
    for pool in pools:
        pool.close(abort_active=True)


@pytest.fixture
def make_broker(world: FakeWorld) -> Callable[..., SessionBroker]:
    def make(
        hosts: int = 2, size: int = 2, backoff_base: float = 1.0, wait_timeout: float = 5.0
    ) -> SessionBroker:
        entries = [
            HostEntry(addr, ConnectionPool(addr, ConnectionConfig(), size, world.factory))
            for addr in ADDRS[:hosts]
        ]
        broker = SessionBroker(
            entries, SessionPoolConfig(size=size, wait_timeout=wait_timeout), backoff_base=backoff_base
        )
        return world.watch(broker)  # type: ignore[no-any-return]

    return make


@pytest.fixture
def make_client(world: FakeWorld) -> Iterator[Callable[..., NebulaClient]]:
    clients: list[NebulaClient] = []

    def make(hosts: int = 1, size: int = 2, wait_timeout: Optional[float] = 10.0, *,
             password: str = "nebula", close_timeout: Optional[float] = 5.0,
             conn_config: Optional[ConnectionConfig] = None,
             session_config: Optional[SessionConfig] = None) -> NebulaClient:  # fmt: skip
        client = NebulaClient(
            [str(a) for a in ADDRS[:hosts]],
            "root",
            password,
            session_pool_config=SessionPoolConfig(size=size, wait_timeout=wait_timeout),
            conn_config=conn_config or ConnectionConfig(request_timeout=30.0),
            session_config=session_config,
            close_timeout=close_timeout,
            connection_factory=world.factory,
        )
        clients.append(client)
        return world.watch(client)  # type: ignore[no-any-return]

    yield make
    for client in clients:
        client.close()


def pool_of(client: NebulaClient, host: str) -> ConnectionPool:
    for entry in client._hosts:
        if entry.name == host:
            return entry.conn_pool
    raise KeyError(host)


def entry_of(client: NebulaClient, host: str) -> HostEntry:
    for entry in client._hosts:
        if entry.name == host:
            return entry
    raise KeyError(host)


# =================================================================================================
# ConnectionPool
# =================================================================================================


def test_pool_reuses_idle_connections_lifo(world: FakeWorld, make_pool: Callable[..., FakePool]) -> None:
    pool = make_pool(max_size=3)
    a, b, c = (take(pool) for _ in range(3))
    for conn in (a, b, c):
        pool.release(conn)
    assert pool.counts() == (3, 0, 0)
    assert take(pool) is c  # the most recently released first
    assert take(pool) is b
    assert take(pool) is a
    assert world.counts["opens"] == 3 and pool.opened == 3 and pool.discarded == 0


def test_pool_never_exceeds_max_size_under_contention(
    world: FakeWorld, make_pool: Callable[..., FakePool], busy_switching: None
) -> None:
    max_size, threads, rounds = 4, 24, 150
    pool = make_pool(max_size=max_size)
    lock = threading.Lock()
    held: set[int] = set()
    peak = {"held": 0, "counted": 0}
    barrier = threading.Barrier(threads)
    rng = random.Random(7)
    breaks = {rng.randrange(threads * rounds) for _ in range(40)}  # some connections break in use

    def run(t: int) -> None:
        barrier.wait(WAIT_LIMIT)
        for i in range(rounds):
            conn = take(pool)
            try:
                with lock:
                    assert conn.id not in held, "a connection was handed to two borrowers"
                    held.add(conn.id)
                    peak["held"] = max(peak["held"], len(held))
                idle, active, _ = pool.counts()
                with lock:
                    peak["counted"] = max(peak["counted"], idle + active)
                if t * rounds + i in breaks:
                    with lock:
                        # closed: no longer one of the open connections (and, being closed, no
                        # longer counted by the pool either: both at once, or another thread could
                        # add the connection the pool opens in its place before this one is gone)
                        held.discard(conn.id)
                        conn.close()  # broke while in use: the pool must discard it on release
            finally:
                with lock:
                    held.discard(conn.id)
                pool.release(conn)

    workers = [Worker(functools.partial(run, t), name=f"pool-{t}") for t in range(threads)]
    for w in workers:
        w.finish(30)
    assert peak["held"] <= max_size
    assert peak["counted"] <= max_size
    assert world.max_open_per_host[HOST] <= max_size
    idle, active, waiting = pool.counts()
    assert (active, waiting) == (0, 0)
    assert idle == world.open_count(HOST) == pool.opened - pool.discarded
    assert pool.discarded >= 1  # the broken ones were replaced


def test_pool_waiter_wakes_when_a_connection_is_released(
    world: FakeWorld, make_pool: Callable[..., FakePool]
) -> None:
    pool = make_pool(max_size=1)
    conn = take(pool)
    waiter = Worker(lambda: take(pool))
    world.probe.wait_for(f"pool:{HOST}.wait")
    assert pool.counts() == (0, 1, 1)
    pool.release(conn)
    assert waiter.finish() is conn
    assert pool.counts() == (0, 1, 0)
    assert world.counts["opens"] == 1


def test_pool_acquire_times_out_at_the_deadline(world: FakeWorld, make_pool: Callable[..., FakePool]) -> None:
    pool = make_pool(max_size=1)
    held = take(pool)
    start = time.monotonic()
    with pytest.raises(PoolTimeout) as info:
        pool.acquire(start + 0.1)
    elapsed = time.monotonic() - start
    assert 0.09 <= elapsed < WAIT_LIMIT
    assert HOST in str(info.value)
    # A deadline already passed fails at once, without waiting.
    waits = world.probe.count(f"pool:{HOST}.wait")
    with pytest.raises(PoolTimeout):
        pool.acquire(time.monotonic() - 1.0)
    assert world.probe.count(f"pool:{HOST}.wait") == waits
    assert pool.counts() == (0, 1, 0)
    pool.release(held)
    assert pool.acquire(time.monotonic() - 1.0) is held  # an idle connection needs no waiting


def test_pool_failed_open_releases_its_slot(world: FakeWorld, make_pool: Callable[..., FakePool]) -> None:
    pool = make_pool(max_size=2)
    world.hosts[HOST].refuse = True
    for _ in range(100):
        with pytest.raises(ConnectionFailed):
            take(pool)
    assert pool.counts() == (0, 0, 0)
    world.hosts[HOST].refuse = False
    a, b = take(pool), take(pool)  # both slots are free again
    assert a is not b and a.is_usable and b.is_usable
    assert world.counts["open_failures"] == 100 and world.counts["opens"] == 2


def test_pool_failed_open_wakes_a_waiter(world: FakeWorld, make_pool: Callable[..., FakePool]) -> None:
    pool = make_pool(max_size=1)
    gate = world.gate("open")
    world.hosts[HOST].open_gate = gate
    world.hosts[HOST].fail_opens = 1
    first = Worker(lambda: take(pool), name="first")
    gate.wait_entered()  # holds the only slot while connecting
    second = Worker(lambda: take(pool), name="second")
    world.probe.wait_for(f"pool:{HOST}.wait")
    gate.open()
    assert isinstance(first.failure(), ConnectionFailed)
    conn = second.finish()  # woken by the failure, got the slot, connected
    assert conn.is_usable and pool.counts() == (0, 1, 0)


def test_pool_discards_broken_and_expired_connections_on_checkout(
    world: FakeWorld, make_pool: Callable[..., FakePool]
) -> None:
    pool = make_pool(max_size=3, max_idle_time=60.0, max_lifetime=3600.0)
    a, b, c = (take(pool) for _ in range(3))
    for conn in (a, b, c):
        pool.release(conn)
    c.close()  # broken while idle
    b.last_used = time.monotonic() - 61  # idle too long
    a.created_at = time.monotonic() - 3601  # too old
    got = take(pool)
    assert got not in (a, b, c) and got.is_usable
    assert a.closed and b.closed and c.closed
    assert pool.discarded == 3 and pool.counts() == (0, 1, 0)
    assert world.open_count(HOST) == 1


def test_pool_discards_broken_and_expired_connections_on_release(
    world: FakeWorld, make_pool: Callable[..., FakePool]
) -> None:
    pool = make_pool(max_size=3, max_lifetime=3600.0)
    a, b, c = (take(pool) for _ in range(3))
    a.close()  # broke during use
    b.created_at = time.monotonic() - 3601
    pool.release(a)
    pool.release(b)
    pool.release(c)
    assert b.closed and not c.closed
    assert pool.counts() == (1, 0, 0) and pool.discarded == 2
    assert take(pool) is c
    assert world.open_count(HOST) == 1


def test_pool_replaces_connections_dropped_while_idle(
    world: FakeWorld, make_pool: Callable[..., FakePool]
) -> None:
    pool = make_pool(max_size=3)
    conns = [take(pool) for _ in range(3)]
    for conn in conns:
        pool.release(conn)
    world.drop_idle(HOST)  # the peer closed all three
    got = take(pool)
    assert got not in conns and got.is_usable
    assert all(c.closed for c in conns)
    assert all(c.calls["ping"] == 0 for c in conns)  # is_dropped() alone caught them
    assert pool.discarded == 3 and pool.counts() == (0, 1, 0)


def test_pool_replaces_a_connection_that_fails_its_ping(
    world: FakeWorld, make_pool: Callable[..., FakePool]
) -> None:
    pool = make_pool(max_size=2, ping_before_execute=True)
    a = take(pool)
    assert pool.pings == 0  # a new connection is not pinged
    pool.release(a)
    a.ping_fails = True
    b = take(pool)
    assert b is not a and a.closed and pool.pings == 1
    pool.release(b)
    assert take(pool) is b and pool.pings == 2  # ping_before_execute: every checkout


def test_pool_pings_only_after_idle_time(world: FakeWorld, make_pool: Callable[..., FakePool]) -> None:
    pool = make_pool(max_size=1, ping_after_idle=5.0)
    a = take(pool)
    pool.release(a)
    assert take(pool) is a and pool.pings == 0
    pool.release(a)
    a.last_used = time.monotonic() - 6
    assert take(pool) is a and pool.pings == 1 and a.calls["ping"] == 1


def test_pool_release_of_a_foreign_connection_raises(
    world: FakeWorld, make_pool: Callable[..., FakePool]
) -> None:
    pool = make_pool(max_size=2)
    other = make_pool(max_size=2, address=ADDRS[1])
    theirs = other.acquire(soon())
    with pytest.raises(ValueError):
        pool.release(theirs)
    stray: FakeConnection = world.factory(ADDR, ConnectionConfig())
    with pytest.raises(ValueError):
        pool.release(stray)
    mine = take(pool)
    pool.release(mine)
    with pytest.raises(ValueError):
        pool.release(mine)  # twice
    assert pool.counts() == (1, 0, 0)
    other.release(theirs)  # still fine where it belongs
    assert other.counts() == (1, 0, 0)


def test_pool_close_wakes_waiters_with_client_closed(
    world: FakeWorld, make_pool: Callable[..., FakePool]
) -> None:
    pool = make_pool(max_size=1)
    held = take(pool)
    waiters = [Worker(lambda: take(pool), name=f"w{i}") for i in range(3)]
    world.probe.wait_for(f"pool:{HOST}.wait", 3)
    pool.close()
    for w in waiters:
        assert isinstance(w.failure(), ClientClosed)
    assert not held.closed  # in use: closed when it comes back
    pool.release(held)
    assert held.closed and pool.counts() == (0, 0, 0) and world.open_count() == 0
    with pytest.raises(ClientClosed):
        take(pool)


def test_pool_closed_while_connecting(world: FakeWorld, make_pool: Callable[..., FakePool]) -> None:
    pool = make_pool(max_size=1)
    gate = world.gate("open")
    world.hosts[HOST].open_gate = gate
    opener = Worker(lambda: take(pool))
    gate.wait_entered()
    pool.close()
    gate.open()
    assert isinstance(opener.failure(), ClientClosed)
    assert world.counts["opens"] == 1 and world.open_count() == 0  # the late connection was closed
    assert pool.counts() == (0, 0, 0)


def test_pool_does_no_io_under_its_lock(world: FakeWorld, make_pool: Callable[..., FakePool]) -> None:
    """A connect (or a validation ping) that blocks must not stall other threads' pool calls."""
    pool = make_pool(max_size=3, ping_before_execute=True)
    a = take(pool)
    gate = world.gate("open")
    world.hosts[HOST].open_gate = gate
    opener = Worker(lambda: take(pool), name="opener")
    gate.wait_entered()  # parked inside open(), holding a reserved slot
    Worker(lambda: pool.release(a), name="release").finish()
    assert Worker(lambda: take(pool), name="reuse").finish() is a
    assert pool.counts() == (0, 2, 0)
    # Now a validation ping that blocks, while the connect is still blocked.
    pool.release(a)
    ping_gate = world.gate("ping")
    a.ping_gate = ping_gate
    pinger = Worker(lambda: take(pool), name="pinger")
    ping_gate.wait_entered()
    assert pool.counts() == (0, 2, 0)  # opener's reservation + the connection being pinged
    gate.open()  # third slot: a fresh connection for this thread, while the ping still hangs
    fresh = Worker(lambda: take(pool), name="fresh").finish()
    b = opener.finish()
    assert fresh is not a and b is not a and fresh is not b
    ping_gate.open()
    assert pinger.finish() is a
    assert pool.counts() == (0, 3, 0)
    assert world.violations == []


def test_pool_slot_survives_an_exception_during_validation(
    world: FakeWorld, make_pool: Callable[..., FakePool]
) -> None:
    """An exception that is not a NebulaError (a signal handler's, KeyboardInterrupt) raised while
    an idle connection is validated must not leave the connection counted as active."""
    pool = make_pool(max_size=1, ping_before_execute=True)
    a = take(pool)
    pool.release(a)
    a.ping_raises = KeyboardInterrupt()
    assert isinstance(Worker(lambda: take(pool)).failure(), KeyboardInterrupt)
    a.ping_raises = None
    assert pool.counts()[1] == 0, "the connection stayed 'active' with no borrower"
    conn = pool.acquire(time.monotonic() + 0.2)
    assert conn.is_usable


# =================================================================================================
# SessionBroker
# =================================================================================================


def test_broker_round_robin_across_hosts(make_broker: Callable[..., SessionBroker]) -> None:
    broker = make_broker(hosts=3, size=2)
    order = []
    for _ in range(9):
        lease = broker.borrow(soon())
        order.append(broker.hosts.index(lease.host))
        broker.release(lease, lease.session or new_session())
    assert order == [0, 1, 2] * 3
    # Now every host has one idle session; six borrows take them and one new slot per host.
    leases = [broker.borrow(soon()) for _ in range(6)]
    assert collections.Counter(broker.hosts.index(lease.host) for lease in leases) == {0: 2, 1: 2, 2: 2}
    assert sum(lease.session is not None for lease in leases) == 3
    with pytest.raises(PoolTimeout):
        broker.borrow(time.monotonic())


def test_broker_never_exceeds_size_per_host_under_contention(
    make_broker: Callable[..., SessionBroker], busy_switching: None
) -> None:
    hosts, size, threads, rounds = 3, 2, 24, 200
    broker = make_broker(hosts=hosts, size=size)
    lock = threading.Lock()
    per_host: collections.Counter[int] = collections.Counter()
    peak: collections.Counter[int] = collections.Counter()
    in_use: set[int] = set()
    created: list[ServerSession] = []
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait(WAIT_LIMIT)
        for _ in range(rounds):
            lease = broker.borrow(soon())
            index = broker.hosts.index(lease.host)
            session = lease.session
            with lock:
                if session is None:
                    session = new_session()
                    created.append(session)
                assert session.id not in in_use, "a session was lent to two borrowers"
                in_use.add(session.id)
                per_host[index] += 1
                peak[index] = max(peak[index], per_host[index])
            with lock:
                in_use.discard(session.id)
                per_host[index] -= 1
            broker.release(lease, session)

    workers = [Worker(run, name=f"borrower-{t}") for t in range(threads)]
    for w in workers:
        w.finish(30)
    assert all(peak[i] <= size for i in range(hosts)), peak
    assert len(created) <= hosts * size  # sessions are reused, never created beyond the cap
    assert broker.busy_count() == 0
    assert sum(len(h.idle) for h in broker.hosts) == len(created)
    assert all(len(h.idle) <= size for h in broker.hosts)


@pytest.mark.usefixtures("observed_waiters")
def test_broker_serves_waiters_first_come_first_served(
    world: FakeWorld, make_broker: Callable[..., SessionBroker]
) -> None:
    broker = make_broker(hosts=2, size=1)
    first, second = broker.borrow(soon()), broker.borrow(soon())
    order: list[int] = []

    def wait_then_pass_on(i: int) -> None:
        lease = broker.borrow(soon())
        order.append(i)  # before giving it back: the next waiter can only be served after this
        broker.release(lease, lease.session or new_session())

    workers = []
    for i in range(8):  # arrivals one at a time, each parked before the next starts
        workers.append(Worker(functools.partial(wait_then_pass_on, i), name=f"waiter-{i}"))
        world.probe.wait_for("broker.waiter", i + 1)
    assert broker.snapshot()[0]["waiters"] == 8
    broker.release(second, new_session())  # host 1's slot: goes to waiter 0, then down the line
    for w in workers:
        w.finish()
    assert order == list(range(8))
    broker.release(first, new_session())
    assert broker.busy_count() == 0 and broker.snapshot()[0]["waiters"] == 0


@pytest.mark.usefixtures("observed_waiters")
def test_broker_hands_a_released_session_to_the_oldest_waiter_not_a_newcomer(
    world: FakeWorld, make_broker: Callable[..., SessionBroker]
) -> None:
    broker = make_broker(hosts=1, size=1)
    session = new_session()
    lease = broker.borrow(soon())
    oldest = Worker(lambda: broker.borrow(soon()), name="oldest")
    world.probe.wait_for("broker.waiter", 1)
    broker.release(lease, session)
    # The hand-off happened inside release(): a newcomer finds nothing, even with the oldest
    # waiter not yet awake.
    with pytest.raises(PoolTimeout):
        broker.borrow(time.monotonic())
    got = oldest.finish()
    assert got.session is session
    # A newcomer that is willing to wait queues behind an existing waiter.
    later = Worker(lambda: broker.borrow(soon()), name="later")
    world.probe.wait_for("broker.waiter", 2)
    newest = Worker(lambda: broker.borrow(soon()), name="newest")
    world.probe.wait_for("broker.waiter", 3)
    broker.release(got, session)
    assert later.finish().session is session
    assert broker.snapshot()[0]["waiters"] == 1  # "newest" still waits
    broker.release(later.result, session)
    assert newest.finish().session is session
    broker.release(newest.result, session)


def test_broker_waiter_timeout_racing_a_release_never_loses_the_session(
    make_broker: Callable[..., SessionBroker], busy_switching: None
) -> None:
    broker = make_broker(hosts=1, size=1)
    host = broker.hosts[0]
    session = new_session()
    rng = random.Random(11)
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(300):
        lease = broker.borrow(time.monotonic())
        assert lease.session in (None, session)
        start = threading.Barrier(2)
        patience = rng.uniform(0.0, 0.0015)

        def waiter(patience: float = patience, start: threading.Barrier = start) -> str:
            start.wait(WAIT_LIMIT)
            try:
                got = broker.borrow(time.monotonic() + patience)
            except PoolTimeout:
                return "timeout"
            broker.release(got, got.session)
            return "served"

        w = Worker(waiter)
        start.wait(WAIT_LIMIT)
        spin_until = time.monotonic() + rng.uniform(0.0, 0.0015)
        while time.monotonic() < spin_until:  # jitter, not synchronisation
            pass
        broker.release(lease, session)
        outcomes[w.finish()] += 1
        snap = broker.snapshot()[0]
        assert (snap["sessions_busy"], snap["sessions_idle"], snap["waiters"]) == (0, 1, 0)
        assert list(host.idle) == [session]
    assert outcomes["served"] > 0  # the race was actually exercised both ways
    assert outcomes["timeout"] > 0


def test_broker_many_impatient_waiters_keep_every_session(
    make_broker: Callable[..., SessionBroker], busy_switching: None
) -> None:
    size, threads, rounds = 2, 12, 150
    broker = make_broker(hosts=1, size=size)
    lock = threading.Lock()
    created: list[ServerSession] = []
    barrier = threading.Barrier(threads)

    def run(seed: int) -> collections.Counter[str]:
        rng = random.Random(seed)
        seen: collections.Counter[str] = collections.Counter()
        barrier.wait(WAIT_LIMIT)
        for _ in range(rounds):
            try:
                lease = broker.borrow(time.monotonic() + rng.uniform(0.0, 0.0005))
            except PoolTimeout:
                seen["timeout"] += 1
                continue
            seen["served"] += 1
            session = lease.session
            if session is None:
                session = new_session()
                with lock:
                    created.append(session)
            hold_until = time.monotonic() + rng.uniform(0.0, 0.0002)
            while time.monotonic() < hold_until:
                pass
            broker.release(lease, session)
        return seen

    workers = [Worker(functools.partial(run, s), name=f"impatient-{s}") for s in range(threads)]
    totals: collections.Counter[str] = collections.Counter()
    for w in workers:
        totals.update(w.finish(30))
    assert totals["served"] > 0
    assert len(created) <= size
    assert broker.busy_count() == 0 and broker.snapshot()[0]["waiters"] == 0
    assert sorted(s.id for s in broker.hosts[0].idle) == sorted(s.id for s in created)
    for _ in range(size):  # every slot is still there
        broker.borrow(time.monotonic())


def test_broker_mark_down_skips_host_until_backoff_then_one_probe(
    make_broker: Callable[..., SessionBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(_pool, "time", clock)
    broker = make_broker(hosts=2, size=2, backoff_base=1.0)
    a, b = broker.hosts
    broker.mark_down(b, ConnectionFailed("refused"))
    assert b.state == HostState.DOWN

    def borrow_release_hosts(n: int) -> list[HostEntry]:
        seen = []
        for _ in range(n):
            lease = broker.borrow(clock.now)
            seen.append(lease.host)
            broker.release(lease, lease.session or new_session())
        return seen

    assert borrow_release_hosts(6) == [a] * 6
    clock.advance(0.7)  # backoff is 1s +-20%: not yet
    assert borrow_release_hosts(4) == [a] * 4
    clock.advance(0.6)
    # Backoff over: many borrowers at once, exactly one of them gets the probe.
    threads = 8
    barrier = threading.Barrier(threads)

    def grab() -> Optional[Lease]:
        barrier.wait(WAIT_LIMIT)
        try:
            return broker.borrow(clock.now)
        except PoolTimeout:
            return None

    workers = [Worker(grab, name=f"grab-{i}") for i in range(threads)]
    leases = [lease for lease in (w.finish() for w in workers) if lease is not None]
    probes = [lease for lease in leases if lease.probe]
    assert len(probes) == 1 and probes[0].host is b
    assert sorted(lease.host is a for lease in leases) == [False, True, True]  # A full, B: the probe
    with pytest.raises(PoolTimeout):
        broker.borrow(clock.now)  # B's second slot is not lent while the probe is out
    broker.mark_up(b)
    assert b.state == HostState.UP
    broker.release(probes[0], new_session())
    more = broker.borrow(clock.now)
    assert more.host is b and not more.probe


def test_broker_failed_probe_backs_off_longer(
    make_broker: Callable[..., SessionBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(_pool, "time", clock)
    broker = make_broker(hosts=2, size=1, backoff_base=1.0)
    a, b = broker.hosts
    broker.mark_down(b, ConnectionFailed("refused"))
    clock.advance(1.3)
    held = broker.borrow(clock.now)
    probe = broker.borrow(clock.now)
    assert held.host is a and probe.host is b and probe.probe
    broker.mark_down(b, ConnectionFailed("still refused"))  # the probe failed: 2s +-20% now
    broker.release(probe, None)
    clock.advance(1.5)
    with pytest.raises(PoolTimeout):
        broker.borrow(clock.now)
    clock.advance(1.0)
    again = broker.borrow(clock.now)
    assert again.host is b and again.probe
    broker.mark_up(b)
    broker.release(again, new_session())
    broker.release(held, new_session())
    assert {broker.borrow(clock.now).host for _ in range(2)} == {a, b}  # both lend again
    assert b.failures == 0 and b.state == HostState.UP


def test_broker_no_host_available_when_all_hosts_back_off(
    make_broker: Callable[..., SessionBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(_pool, "time", clock)
    broker = make_broker(hosts=2, size=2, backoff_base=1.0)
    for host in broker.hosts:
        broker.mark_down(host, ConnectionFailed(f"{host.name} refused"))
    # Fails at once: the caller's deadline comes before any host's retry time (0.8-1.2 s away).
    outcome = Worker(lambda: broker.borrow(clock.now + 0.5)).failure()
    assert isinstance(outcome, NoHostAvailable)
    assert all(h.name in str(outcome) for h in broker.hosts)
    clock.advance(1.3)
    probe = broker.borrow(clock.now)
    assert probe.probe and probe.host.state == HostState.DOWN


@pytest.mark.usefixtures("observed_waiters")
def test_broker_close_wakes_waiters_waits_for_leases_returns_idle(
    world: FakeWorld, make_broker: Callable[..., SessionBroker]
) -> None:
    broker = make_broker(hosts=2, size=1)
    a, b = broker.hosts
    sa, sb = new_session(), new_session()
    la, lb = broker.borrow(soon()), broker.borrow(soon())
    assert (la.host, lb.host) == (a, b)
    waiter = Worker(lambda: broker.borrow(soon()), name="waiter")
    world.probe.wait_for("broker.waiter")
    closer = Worker(lambda: broker.close(WAIT_LIMIT), name="closer")
    assert isinstance(waiter.failure(), ClientClosed)
    world.probe.wait_for("broker.wait")  # close() is waiting for the two leases
    with pytest.raises(ClientClosed):
        broker.borrow(soon())
    assert broker.release(lb, sb) is None  # before the sweep: kept for close() to return
    assert broker.release(la, sa) is None
    idle = closer.finish()
    assert sorted((h.name, s.id) for h, s in idle) == sorted([(a.name, sa.id), (b.name, sb.id)])
    assert broker.busy_count() == 0 and not a.idle and not b.idle


def test_broker_close_is_bounded_and_late_release_returns_the_session(
    make_broker: Callable[..., SessionBroker],
) -> None:
    broker = make_broker(hosts=1, size=2)
    idle_session, late_session = new_session(), new_session()
    late = broker.borrow(soon())
    other = broker.borrow(soon())
    broker.release(other, idle_session)
    start = time.monotonic()
    idle = broker.close(0.1)
    assert 0.09 <= time.monotonic() - start < WAIT_LIMIT
    assert [s for _, s in idle] == [idle_session]
    assert broker.release(late, late_session) is late_session  # swept: the caller signs it out
    assert broker.busy_count() == 0 and not broker.hosts[0].idle
    assert broker.close(0) == []  # again: nothing more
    with pytest.raises(ClientClosed):
        broker.borrow(soon())


def test_broker_release_of_a_lease_twice_is_refused(make_broker: Callable[..., SessionBroker]) -> None:
    broker = make_broker(hosts=1, size=1)
    lease = broker.borrow(soon())
    broker.release(lease, None)
    try:
        with pytest.raises((ValueError, RuntimeError)):
            broker.release(lease, None)
    finally:
        assert broker.busy_count() == 0


@pytest.mark.usefixtures("observed_waiters")
def test_broker_waiter_learns_when_the_last_host_goes_down(
    world: FakeWorld, make_broker: Callable[..., SessionBroker]
) -> None:
    broker = make_broker(hosts=1, size=1, backoff_base=0.05)
    host = broker.hosts[0]
    lease = broker.borrow(soon())
    waiter = Worker(lambda: broker.borrow(time.monotonic() + 1.0), name="waiter")
    world.probe.wait_for("broker.waiter")
    # The lease's connect failed (the client marks the host down, then gives the lease back).
    broker.mark_down(host, ConnectionFailed("refused"))
    broker.release(lease, None)
    waiter.join(WAIT_LIMIT)
    outcome = waiter.error if waiter.error is not None else waiter.result
    # Either failing fast (NoHostAvailable) or re-probing the host after its backoff is right;
    # waiting the full wait_timeout for a host nobody will ever re-probe is not.
    assert isinstance(outcome, NoHostAvailable) or (isinstance(outcome, Lease) and outcome.probe), outcome


@pytest.mark.usefixtures("observed_waiters")
def test_broker_waiter_gets_the_probe_when_backoff_passes(
    world: FakeWorld, make_broker: Callable[..., SessionBroker]
) -> None:
    broker = make_broker(hosts=2, size=1, backoff_base=0.05)
    a, b = broker.hosts
    broker.mark_down(b, ConnectionFailed("refused"))  # re-probe allowed after ~0.05s
    held = broker.borrow(soon())
    assert held.host is a
    waiter = Worker(lambda: broker.borrow(time.monotonic() + 1.0), name="waiter")
    world.probe.wait_for("broker.waiter")
    waiter.join(WAIT_LIMIT)
    try:
        assert waiter.error is None, waiter.error
        assert waiter.result.host is b and waiter.result.probe
    finally:
        broker.release(held, None)


def test_broker_interrupted_waiter_does_not_leak_the_slot(
    make_broker: Callable[..., SessionBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    class InterruptedEvent(threading.Event):
        def wait(self, timeout: Optional[float] = None) -> bool:
            raise KeyboardInterrupt

    class InterruptedWaiter(_pool._Waiter):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.event = InterruptedEvent()

    broker = make_broker(hosts=1, size=1)
    session = new_session()
    lease = broker.borrow(soon())
    monkeypatch.setattr(_pool, "_Waiter", InterruptedWaiter)
    assert isinstance(Worker(lambda: broker.borrow(soon())).failure(), KeyboardInterrupt)
    monkeypatch.undo()
    broker.release(lease, session)
    assert broker.busy_count() == 0, "the released session went to a waiter that no longer exists"
    assert broker.borrow(time.monotonic()).session is session


# =================================================================================================
# NebulaClient (with fake connections)
# =================================================================================================


def test_client_threads_get_their_own_results(
    world: FakeWorld, make_client: Callable[..., NebulaClient], busy_switching: None
) -> None:
    hosts, size, threads, per_thread = 3, 2, 32, 150
    client = make_client(hosts=hosts, size=size, wait_timeout=30.0)
    barrier = threading.Barrier(threads)

    def run(t: int) -> list[str]:
        wrong: list[str] = []
        barrier.wait(WAIT_LIMIT)
        for i in range(per_thread):
            tag = f"T{t}-{i}"
            if i % 10 == 0:
                doc = client.execute_json(f"RETURN '{tag}'")
                row = doc["results"][0]["data"][0]["row"]
                if row[0] != f"RETURN '{tag}'":
                    wrong.append(f"{tag}: json got {row[0]!r}")
            elif i % 10 == 1:
                rs = client.execute_py("RETURN {{tag}} AS label", {"tag": tag})
                if tag not in rs.rows()[0][0]:
                    wrong.append(f"{tag}: execute_py got {rs.rows()[0][0]!r}")
            else:
                rs = client.execute(f"RETURN '{tag}'")
                stmt, _sid, host = rs.rows()[0]
                if stmt != f"RETURN '{tag}'" or host != rs.host:
                    wrong.append(f"{tag}: got {stmt!r} from {host}, result says {rs.host}")
        return wrong

    workers = [Worker(functools.partial(run, t), name=f"client-{t}") for t in range(threads)]
    wrong = [msg for w in workers for msg in w.finish(30)]
    assert wrong == []
    total = threads * per_thread
    assert sum(world.executed.values()) == total  # nothing ran twice, nothing was lost
    assert world.max_running_per_session == 1
    assert world.max_sessions <= hosts * size
    assert all(world.max_open_per_host[str(a)] <= size for a in ADDRS[:hosts])
    stats = client.stats()
    assert stats.sessions_busy == 0 and sum(h.statements for h in stats.hosts) == total
    assert all(h.statements > 0 for h in stats.hosts)  # spread over every host
    client.close()
    assert world.session_ids() == set() and world.open_count() == 0


def test_client_statement_path_checks_what_the_general_path_checks(
    world: FakeWorld, make_client: Callable[..., NebulaClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain statement on an idle session that kept a fresh connection skips the general path;
    a stale, too old or dropped one goes through it and gets its full checks."""
    config = ConnectionConfig(request_timeout=30.0, ping_after_idle=5.0)
    client = make_client(hosts=1, size=1, conn_config=config)
    general: list[str] = []
    run = client._run

    def spy(prepared: Any, *args: Any, **kwargs: Any) -> Any:
        general.append(prepared.text)
        return run(prepared, *args, **kwargs)

    monkeypatch.setattr(client, "_run", spy)
    sid = client.execute("RETURN 0").rows()[0][1]
    assert general == ["RETURN 0"]  # the first statement authenticates: the general path
    entry = entry_of(client, HOST)
    session = entry.idle[-1]
    conn = session.conn
    assert conn is not None
    polls = conn.calls["is_dropped"]
    got = [client.execute(f"RETURN {i}").rows()[0][:2] for i in (1, 2)]
    assert got == [("RETURN 1", sid), ("RETURN 2", sid)]
    # the fast path: checked like a pooled connection (is_dropped), not pinged, general path unused
    assert general == ["RETURN 0"] and conn.calls["ping"] == 0 and conn.calls["is_dropped"] == polls + 2
    # Idle longer than ping_after_idle: pinged first (once), then used.
    conn.last_used = time.monotonic() - 6
    assert client.execute("RETURN 3").rows()[0][1] == sid
    assert general[-1] == "RETURN 3" and conn.calls["ping"] == 1
    # A session idle longer than the pool's max_idle_time: signed out and replaced.
    session.last_used -= SessionPoolConfig().max_idle_time + 1  # type: ignore[operator]
    renewed = client.execute("RETURN 4").rows()[0][1]
    assert renewed != sid and sid not in world.session_ids() and general[-1] == "RETURN 4"
    # Dropped by the peer while idle: replaced before use, the statement runs once.
    session = entry.idle[-1]
    assert session.conn is not None
    session.conn.dropped = True  # type: ignore[attr-defined]
    assert client.execute("RETURN 5").rows()[0][1] == renewed and general[-1] == "RETURN 5"
    assert world.executed["RETURN 5"] == 1 and session.conn is not conn and entry.idle[-1].conn.is_usable
    # Parameters change nothing here; a timeout of its own takes the general path.
    assert client.execute("RETURN $p", {"p": 1}).rows()[0][1] == renewed and general[-1] == "RETURN 5"
    assert client.execute_py("RETURN {{x}}", {"x": 1}).rows()[0][0] == "RETURN 1"
    assert general[-1] == "RETURN 5"
    client.execute("RETURN 6", timeout=5.0)
    assert general[-1] == "RETURN 6"
    assert world.violations == [] and world.max_running_per_session == 1
    assert client.stats().host(HOST).statements == 9 and client._broker.busy_count() == 0


def test_client_statement_path_under_contention(
    world: FakeWorld, make_client: Callable[..., NebulaClient], busy_switching: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads racing on the short path (take_ready / give_back_ready) and, when a session is
    busy, the general path: what graphd observes stays right."""
    hosts, size, threads, per_thread = 2, 3, 9, 120
    client = make_client(hosts=hosts, size=size, wait_timeout=30.0)
    broker = client._broker
    fast = {"n": 0}
    give_back_ready = broker.give_back_ready

    def counted(*args: Any) -> bool:
        fast["n"] += 1  # (a lost update under contention only undercounts)
        return give_back_ready(*args)

    monkeypatch.setattr(broker, "give_back_ready", counted)
    barrier = threading.Barrier(threads)

    def run(t: int) -> list[str]:
        barrier.wait(WAIT_LIMIT)
        wrong = []
        for i in range(per_thread):
            rs = client.execute(f"RETURN {t}-{i}")
            if rs.rows()[0][0] != f"RETURN {t}-{i}" or rs.rows()[0][2] != rs.host:
                wrong.append(f"{t}-{i}: {rs.rows()[0]}")
        return wrong

    workers = [Worker(functools.partial(run, t), name=f"fast-{t}") for t in range(threads)]
    assert [msg for w in workers for msg in w.finish(30)] == []
    total = threads * per_thread
    assert sum(world.executed.values()) == total and world.violations == []
    assert world.max_running_per_session == 1 and world.max_sessions <= hosts * size
    assert fast["n"] > 0  # the short path was taken...
    stats = client.stats()
    assert sum(h.statements for h in stats.hosts) == total and stats.sessions_busy == 0
    assert all(h.statements > 0 for h in stats.hosts)  # ...and both hosts served
    client.close()
    assert world.session_ids() == set() and world.open_count() == 0


def test_client_statement_path_interrupted_keeps_nothing(
    world: FakeWorld, make_client: Callable[..., NebulaClient]
) -> None:
    """Ctrl-C anywhere on the short path (here: in the poll before reuse, and while the
    statement runs) gives the session back; the next statements run normally."""
    client = make_client(hosts=1, size=1)
    sid = client.execute("RETURN 0").rows()[0][1]
    conn = entry_of(client, HOST).idle[-1].conn
    assert conn is not None

    def interrupted() -> bool:
        raise KeyboardInterrupt

    conn.is_dropped = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        client.execute("RETURN 1")
    del conn.is_dropped
    assert client._broker.busy_count() == 0 and world.executed["RETURN 1"] == 0
    assert client.execute("RETURN 2").rows()[0][1] == sid
    running = entry_of(client, HOST).idle[-1].conn
    assert running is not None

    def interrupted_mid_read(*args: Any) -> Any:
        running.close()  # as Connection does when interrupted after sending
        raise KeyboardInterrupt

    running.execute = interrupted_mid_read  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        client.execute("RETURN 3")
    assert client._broker.busy_count() == 0
    # the statement was sent: its session is retired (graphd may still run it); a new one runs the next
    wait_until(lambda: sid not in world.session_ids())
    assert client.execute("RETURN 4").rows()[0][1] not in (sid, None)
    assert world.violations == [] and client.stats().host(HOST).statements == 4


def test_client_wrong_password_leaks_nothing_and_backs_off(
    world: FakeWorld, make_client: Callable[..., NebulaClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(_client, "time", clock)
    world.password = "right"
    # size=1 and no waiting: a single leaked slot would turn the next call into PoolTimeout.
    client = make_client(hosts=1, size=1, wait_timeout=0.0, password="hunter2")
    for _ in range(100):
        with pytest.raises(AuthenticationError) as info:
            client.execute("RETURN 1")
        assert "hunter2" not in str(info.value)  # the password is never shown
    assert world.counts["authenticate"] == 1  # the other 99 were backed off without a round trip
    clock.advance(0.06)  # first backoff (0.05s) over: one more attempt, then 0.1s
    for _ in range(10):
        with pytest.raises(AuthenticationError):
            client.execute("RETURN 1")
    assert world.counts["authenticate"] == 2
    clock.advance(0.06)
    with pytest.raises(AuthenticationError):
        client.execute("RETURN 1")
    assert world.counts["authenticate"] == 2
    clock.advance(0.05)
    with pytest.raises(AuthenticationError):
        client.execute("RETURN 1")
    assert world.counts["authenticate"] == 3 == world.counts["auth_failures"]
    stats = client.stats()
    assert stats.sessions_busy == 0 and stats.host(HOST).connections_active == 0
    assert client._broker.busy_count() == 0 and not client.closed
    world.password = "hunter2"  # the server now accepts it
    clock.advance(5.0)
    assert client.execute("RETURN 2").rows()[0][0] == "RETURN 2"
    assert world.counts["authenticate"] == 4 and len(world.session_ids()) == 1


def test_client_session_invalid_reauthenticates_once_and_retries(
    world: FakeWorld, make_client: Callable[..., NebulaClient]
) -> None:
    client = make_client(hosts=1, size=1)
    first = client.execute("RETURN 1").rows()[0][1]
    assert world.counts["authenticate"] == 1
    world.expire_sessions()  # graphd restarted: the pooled session is gone
    rs = client.execute("RETURN 2")
    assert rs.rows()[0][0] == "RETURN 2"
    renewed = rs.rows()[0][1]
    assert renewed != first
    assert world.counts["authenticate"] == 2 and world.counts["rejected_session"] == 1
    assert world.executed["RETURN 2"] == 1
    assert client.stats().host(HOST).session_renewals == 1
    assert client.execute("RETURN 3").rows()[0][1] == renewed and world.counts["authenticate"] == 2
    # JSON path too.
    world.expire_sessions()
    doc = client.execute_json("RETURN 4")
    assert doc["results"][0]["data"][0]["row"][0] == "RETURN 4" and world.counts["authenticate"] == 3
    # A server that rejects every session: exactly one re-authentication and one retry, then the error.
    world.reject_sessions = True
    auths, sends = world.counts["authenticate"], world.counts["execute"]
    with pytest.raises(SessionInvalid):
        client.execute("RETURN 5")
    assert world.counts["authenticate"] == auths + 1
    assert world.counts["execute"] == sends + 2
    assert client._broker.busy_count() == 0


def test_client_connect_failure_marks_host_down_and_runs_elsewhere(
    world: FakeWorld, make_client: Callable[..., NebulaClient]
) -> None:
    client = make_client(hosts=2, size=2)
    a, b = (str(x) for x in ADDRS[:2])
    client._broker.backoff_base = 60.0  # no real time passes in this test; keep A backed off
    world.hosts[a].refuse = True
    world.drop_idle(a)  # its warm connection from construction is gone too
    rows = [client.execute(f"RETURN {i}").rows()[0] for i in range(8)]
    assert [row[0] for row in rows] == [f"RETURN {i}" for i in range(8)]  # no error reached the caller
    assert {row[2] for row in rows} == {b}
    stats = client.stats()
    assert stats.host(a).state == HostState.DOWN and stats.host(a).connect_failures == 1
    assert world.counts["open_failures"] == 1  # A was tried once, then skipped while backing off
    # A comes back; once its backoff is over, one statement probes it and it is up again.
    world.hosts[a].refuse = False
    with client._broker._lock:
        entry_of(client, a).retry_at = 0.0
    hosts = [client.execute(f"RETURN {i}").rows()[0][2] for i in range(4)]
    assert a in hosts and client.stats().host(a).state == HostState.UP


def test_client_starts_with_a_host_down(world: FakeWorld, make_client: Callable[..., NebulaClient]) -> None:
    a, b = (str(x) for x in ADDRS[:2])
    world.hosts[a].refuse = True
    client = make_client(hosts=2, size=2)
    with client._broker._lock:  # no real time passes here: keep A backing off whatever happens
        entry_of(client, a).retry_at = time.monotonic() + 60.0
    assert {client.execute(f"RETURN {i}").rows()[0][2] for i in range(6)} == {b}
    assert client.stats().host(a).state == HostState.DOWN


def test_client_no_host_at_all_fails_construction_cleanly(world: FakeWorld) -> None:
    world.hosts[HOST].refuse = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            NebulaClient(HOST, connection_factory=world.factory)
        except NoHostAvailable:
            pass
        else:
            pytest.fail("NoHostAvailable not raised")
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert world.open_count() == 0


def test_client_broken_after_send_is_outcome_unknown_unless_idempotent(
    world: FakeWorld, make_client: Callable[..., NebulaClient]
) -> None:
    client = make_client(hosts=1, size=1)
    sid = client.execute("RETURN 0").rows()[0][1]
    world.add_rule("INSERT 1", "break_after_send", times=1)
    with pytest.raises(OutcomeUnknown):
        client.execute("INSERT 1")
    assert world.executed["INSERT 1"] == 1  # it did run; the client must not run it again
    # graphd may still be running it: the session is retired (signed out), the connection closed
    wait_until(lambda: sid not in world.session_ids())
    broken = [c for c in world.conns if c.calls["execute"] and c.closed]
    assert len(broken) == 1
    assert client.execute("RETURN 1").rows()[0][1] not in (sid, None)  # a new session
    # Idempotent: retried (on a new connection), and runs twice.
    world.add_rule("INSERT 2", "break_after_send", times=1)
    assert client.execute("INSERT 2", idempotent=True).rows()[0][0] == "INSERT 2"
    assert world.executed["INSERT 2"] == 2
    # Idempotent but always failing: retried a bounded number of times.
    world.add_rule("INSERT 3", "break_after_send")
    with pytest.raises(OutcomeUnknown):
        client.execute("INSERT 3", idempotent=True)
    assert 2 <= world.executed["INSERT 3"] <= 3
    # Broken before the request was written: nothing ran, so the retry is transparent.
    world.add_rule("INSERT 4", "break_before_send", times=1)
    assert client.execute("INSERT 4").rows()[0][0] == "INSERT 4"
    assert world.executed["INSERT 4"] == 1
    assert client._broker.busy_count() == 0 and world.max_running_per_session == 1


def test_client_close_signs_out_every_session_and_is_idempotent(
    world: FakeWorld, make_client: Callable[..., NebulaClient]
) -> None:
    client = make_client(hosts=2, size=2)
    with client.session() as s1, client.session() as s2, client.session() as s3:
        ids = {s.execute("RETURN 1").rows()[0][1] for s in (s1, s2, s3)}
    assert len(ids) == 3 and world.session_ids() == ids
    client.execute("RETURN 2")
    created = world.counts["sessions_created"]
    client.close()
    assert world.session_ids() == set()
    assert world.counts["signout"] == created
    assert world.open_count() == 0
    counts = dict(world.counts)
    client.close()  # idempotent: nothing more happens
    assert dict(world.counts) == counts
    for call in (
        lambda: client.execute("RETURN 3"),
        lambda: client.execute_py("RETURN {{x}}", {"x": 1}),
        lambda: client.execute_json("RETURN 3"),
    ):
        with pytest.raises(ClientClosed):
            call()
    with pytest.raises(ClientClosed), client.session():
        pass
    assert client.ping() is False and client.closed and client.stats().closed
    assert world.counts["execute"] == counts["execute"]


def test_a_failed_sign_out_send_moves_on_to_another_connection(
    world: FakeWorld, make_client: Callable[..., NebulaClient]
) -> None:
    # The kept connection passes the dropped check, and then the send fails (the peer's RST came
    # in between): the sign-out is sent on another connection, not given up.
    client = make_client(hosts=1, size=1)
    client.execute("RETURN 1")
    (kept,) = world.conns

    def fail(session_id: int) -> None:
        kept.close()
        raise ConnectionFailed("reset by peer (fake)", host=kept.host)

    kept.signout = fail  # type: ignore[method-assign]
    client.close()
    assert world.session_ids() == set()
    assert len(world.conns) == 2 and world.counts["signout"] == 1
    assert client.stats().hosts[0].sessions_signed_out == 1


def test_close_gives_up_signing_out_on_a_host_it_cannot_connect_to(
    world: FakeWorld, make_client: Callable[..., NebulaClient]
) -> None:
    # Every session's kept connection was dropped and the host now refuses connections: close()
    # tries one new connection for the host, not one per session (on a host that drops SYNs each
    # try takes connect_timeout), and leaves the sessions to graphd's idle timeout.
    client = make_client(hosts=1, size=3)
    with client.session() as a, client.session() as b, client.session() as c:
        for s in (a, b, c):
            s.execute("RETURN 1")
    assert len(world.session_ids()) == 3
    for conn in world.conns:
        conn.dropped = True
    world.hosts[HOST].refuse = True
    attempts = world.counts["open_attempts"]
    client.close()
    assert world.counts["open_attempts"] == attempts + 1
    assert world.counts["signout"] == 0 and len(world.session_ids()) == 3
    assert client.stats().hosts[0].sessions_signed_out == 0


def test_client_close_waits_for_a_statement_in_flight(
    world: FakeWorld, make_client: Callable[..., NebulaClient]
) -> None:
    client = make_client(hosts=1, size=2, close_timeout=WAIT_LIMIT)
    gate = world.gate("slow")
    world.add_rule("SLOW", "block", gate=gate)
    client.execute("RETURN 1")
    slow = Worker(lambda: client.execute("SLOW"), name="slow")
    gate.wait_entered()
    closer = Worker(client.close, name="closer")
    world.probe.wait_for("broker.wait")  # close() is waiting for the lease
    with pytest.raises(ClientClosed):
        client.execute("RETURN 2")
    assert world.session_ids() and world.counts["signout"] == 0  # nothing signed out yet
    gate.open()
    assert slow.finish().rows()[0][0] == "SLOW"  # it completed normally
    closer.finish()
    assert world.session_ids() == set() and world.open_count() == 0


def test_client_close_timeout_cuts_off_a_stuck_statement(
    world: FakeWorld, make_client: Callable[..., NebulaClient]
) -> None:
    client = make_client(hosts=1, size=1, close_timeout=0.1)
    gate = world.gate("stuck")
    world.add_rule("STUCK", "block", gate=gate)
    stuck = Worker(lambda: client.execute("STUCK"), name="stuck")
    gate.wait_entered()
    start = time.monotonic()
    client.close()
    assert time.monotonic() - start < WAIT_LIMIT
    assert isinstance(stuck.failure(), OutcomeUnknown)  # its connection was closed under it
    # Its session came back after the sweep and was signed out on a fresh connection.
    assert world.session_ids() == set() and world.open_count() == 0
    gate.open()


def test_client_no_io_under_locks_with_hosts_failing(
    world: FakeWorld, make_client: Callable[..., NebulaClient], busy_switching: None
) -> None:
    """Load with connections dropping and sessions expiring: the fake records any call made
    while the broker, a pool or the client's auth lock is held (checked by the ``world`` fixture)."""
    client = make_client(
        hosts=2, size=2, wait_timeout=30.0, conn_config=ConnectionConfig(ping_after_idle=0.0)
    )
    threads, per_thread = 8, 60
    barrier = threading.Barrier(threads)

    def run(t: int) -> None:
        barrier.wait(WAIT_LIMIT)
        for i in range(per_thread):
            if t == 0 and i % 10 == 5:
                world.drop_idle()
            if t == 1 and i % 20 == 7:
                world.expire_sessions()
            tag = f"RETURN '{t}-{i}'"
            assert client.execute(tag, idempotent=True).rows()[0][0] == tag

    workers = [Worker(functools.partial(run, t), name=f"io-{t}") for t in range(threads)]
    join_all(workers, 30)
    for w in workers:
        w.finish(0)
    assert world.max_running_per_session == 1
    client.close()
    assert world.session_ids() == set() and world.open_count() == 0
