"""Connection pools (one per host) and the session broker (all hosts' session pools).

Both are thread-safe. Neither does network I/O while holding its lock: a slot is reserved under
the lock and the connection is opened (or closed) outside it.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import attrs

from nebula_sync._connection import Connection
from nebula_sync.config import ConnectionConfig, HostAddress, SessionPoolConfig
from nebula_sync.errors import ClientClosed, NebulaError, NoHostAvailable, PoolTimeout

__all__ = ["ConnectionPool", "HostEntry", "Lease", "ServerSession", "SessionBroker"]

log = logging.getLogger("nebula_sync.pool")

ConnectionFactory = Callable[[HostAddress, ConnectionConfig], Connection]


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


class ConnectionPool:
    """Connections to one graphd: an idle stack and an active set under one lock and condition.

    :param address: the host.
    :param config: connection settings (timeouts, ping policy, idle/lifetime limits).
    :param max_size: most connections open at once (idle + active + being opened).
    :param factory: builds an unopened connection; tests inject fakes here.

    Thread-safe. Every :meth:`acquire` must be paired with a :meth:`release` (in a ``finally``).
    """

    def __init__(
        self,
        address: HostAddress,
        config: ConnectionConfig,
        max_size: int,
        factory: ConnectionFactory = Connection,
    ) -> None:
        self.address = address
        self.config = config
        self.max_size = max_size
        self._factory = factory
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._idle: collections.deque[Connection] = collections.deque()
        self._active: set[Connection] = set()
        self._opening = 0
        self._waiting = 0
        self._closed = False
        self.opened = 0
        self.discarded = 0
        self.pings = 0

    # ---- checkout / check-in -----------------------------------------------------------------

    def acquire(self, deadline: float | None) -> Connection:
        """Take an idle connection (validated) or open a new one; wait if the pool is full.

        :param deadline: ``time.monotonic()`` limit for waiting and connecting.
        :raises ConnectionFailed: a new connection could not be opened (nothing was sent).
        :raises PoolTimeout: the pool stayed full until the deadline.
        :raises ClientClosed: the pool was closed.
        """
        while True:
            conn: Connection | None = None
            stale: list[Connection] = []
            with self._lock:
                while True:
                    if self._closed:
                        raise ClientClosed("the connection pool is closed", host=str(self.address))
                    now = time.monotonic()
                    while self._idle:
                        candidate = self._idle.pop()  # LIFO: the most recently used is the warmest
                        if self._expired(candidate, now):
                            stale.append(candidate)
                            continue
                        conn = candidate
                        break
                    if conn is not None:
                        self._active.add(conn)
                        break
                    if self._open_count_locked() < self.max_size:
                        self._opening += 1  # reserve the slot; connect outside the lock
                        break
                    left = _remaining(deadline)
                    if left is not None and left <= 0:
                        raise PoolTimeout(
                            f"all {self.max_size} connections to {self.address} stayed busy "
                            "(max_connections_per_host)",
                            host=str(self.address),
                        )
                    self._waiting += 1
                    try:
                        self._cond.wait(left)
                    finally:
                        self._waiting -= 1
                if stale:
                    self.discarded += len(stale)
            for old in stale:
                old.close()
            if conn is None:
                return self._open_reserved(deadline)
            try:
                ok = self._validate(conn, deadline)
            except BaseException:
                # KeyboardInterrupt and the like mid-check: the slot must not stay taken.
                self._forget(conn)
                raise
            if ok:
                return conn
            self._forget(conn)

    def _open_count_locked(self) -> int:
        """Connections that count against ``max_size``: idle ones are taken before this is asked;
        an active one that broke (its socket is closed, it waits to be released) holds no slot,
        so its holder can open another, e.g. to sign out a session it was setting up."""
        live = len(self._active)
        for conn in self._active:
            if not conn.is_usable:
                live -= 1
        return live + self._opening

    def _expired(self, conn: Connection, now: float) -> bool:
        cfg = self.config
        if not conn.is_usable:
            return True
        if cfg.max_idle_time is not None and now - conn.last_used > cfg.max_idle_time:
            return True
        return cfg.max_lifetime is not None and now - conn.created_at > cfg.max_lifetime

    def _validate(self, conn: Connection, deadline: float | None) -> bool:
        """Check a reused connection outside the lock: dropped by the peer? stale enough to ping?"""
        if conn.is_dropped():
            log.debug("connection #%s to %s was dropped while idle", conn.id, self.address)
            return False
        cfg = self.config
        idle = time.monotonic() - conn.last_used
        if cfg.ping_before_execute or (cfg.ping_after_idle is not None and idle > cfg.ping_after_idle):
            self.pings += 1
            timeout = cfg.ping_timeout
            left = _remaining(deadline)
            if left is not None:
                timeout = max(0.001, min(timeout, left))
            try:
                conn.ping(timeout)
            except NebulaError as exc:
                log.debug("ping on connection #%s to %s failed: %s", conn.id, self.address, exc)
                return False
        return True

    def _open_reserved(self, deadline: float | None) -> Connection:
        try:
            conn = self._factory(self.address, self.config)
            conn.open(deadline)
        except BaseException:
            with self._lock:
                self._opening -= 1
                self._cond.notify()
            raise
        with self._lock:
            self._opening -= 1
            if not self._closed:
                self._active.add(conn)
                self.opened += 1
                return conn
            self._cond.notify()
        conn.close()
        raise ClientClosed("the connection pool was closed while connecting", host=str(self.address))

    def reuse(self, conn: Connection, deadline: float | None) -> bool:
        """Validate a checked-out connection a session kept while idle (see ``ServerSession.conn``).

        ``False`` means it was expired, dropped or failed its ping, and has been discarded.
        """
        try:
            ok = not self._closed and not self._expired(conn, time.monotonic()) and self._validate(
                conn, deadline
            )  # (the checks a reused idle connection gets, minus the lock)
        except BaseException:
            self._forget(conn)
            raise
        if not ok:
            self._forget(conn)
        return ok

    def _forget(self, conn: Connection) -> None:
        with self._lock:
            self._active.discard(conn)
            self.discarded += 1
            self._cond.notify()
        conn.close()

    def release(self, conn: Connection) -> None:
        """Return a connection; a broken, expired or foreign one is closed instead of kept."""
        keep = False
        with self._lock:
            if conn not in self._active:
                raise ValueError(f"{conn!r} does not belong to the pool for {self.address}")
            self._active.discard(conn)
            if not self._closed and not self._expired(conn, time.monotonic()):
                self._idle.append(conn)
                keep = True
            else:
                self.discarded += 1
            if self._waiting:
                self._cond.notify()
        if not keep:
            conn.close()

    def add_idle(self, conn: Connection) -> None:
        """Adopt an open connection (e.g. from a host probe) as idle, if there is room."""
        with self._lock:
            if not self._closed and len(self._idle) + len(self._active) + self._opening < self.max_size:
                self._idle.append(conn)
                self.opened += 1
                self._cond.notify()
                return
        conn.close()

    # ---- maintenance -------------------------------------------------------------------------

    def close_idle(self) -> None:
        """Close every idle connection (e.g. when the host went down)."""
        with self._lock:
            idle, self._idle = list(self._idle), collections.deque()
        for conn in idle:
            conn.close()

    def close(self, *, abort_active: bool = False) -> None:
        """Close the pool: idle connections now; active ones when released (or now, if aborting)."""
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), collections.deque()
            active = list(self._active) if abort_active else []
            self._cond.notify_all()
        for conn in idle + active:
            conn.close()

    def drop_after_fork(self) -> None:
        """In a forked child: forget every inherited connection without touching the parent's."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        for conn in [*self._idle, *self._active]:
            conn.close()  # the connection knows it was inherited: releases the fd only
        self._idle = collections.deque()
        self._active = set()
        self._opening = 0
        self._waiting = 0

    def counts(self) -> tuple[int, int, int]:
        """``(idle, active, waiting)`` right now; ``active`` counts open connections in use and being
        opened (a broken one waiting to be released is closed already)."""
        with self._lock:
            return len(self._idle), self._open_count_locked(), self._waiting


# ---- sessions --------------------------------------------------------------------------------


class ServerSession:
    """A graphd session: its id and what the server told us about it.

    Used by one borrower at a time (the broker guarantees it); not thread-safe.
    """

    __slots__ = (
        "conn", "created_at", "id", "last_used", "space", "space_raw", "timezone_name", "timezone_offset",
    )  # fmt: skip

    def __init__(self, session_id: int, timezone_offset: int, timezone_name: str) -> None:
        #: the connection this session last used, kept while it is idle so that the next borrower
        #: skips the connection pool; it stays checked out of (counted active in) that pool
        self.conn: Connection | None = None
        self.id = session_id
        self.timezone_offset = timezone_offset
        self.timezone_name = timezone_name
        self.created_at = self.last_used = time.monotonic()
        self.space = ""
        self.space_raw = b""  # graphd's last space_name, so it is decoded only when it changes

    def __repr__(self) -> str:
        return f"<ServerSession {self.id} space={self.space!r}>"


class HostState:
    UP = "up"
    DOWN = "down"


#: the per-host statistics counters (:meth:`SessionBroker.count`, ``NebulaClient.stats()``)
COUNTER_NAMES = (
    "statements", "errors", "sessions_created", "sessions_signed_out", "session_renewals", "connect_failures",
)  # fmt: skip


class HostEntry:
    """One host's session pool and connection pool, plus its health. Guarded by the broker lock."""

    def __init__(self, address: HostAddress, conn_pool: ConnectionPool) -> None:
        self.address = address
        self.name = str(address)
        self.conn_pool = conn_pool
        self.idle: collections.deque[ServerSession] = collections.deque()
        self.busy = 0  # leases out (sessions in use, or slots whose session is being created)
        self.state = HostState.UP
        self.failures = 0
        self.retry_at = 0.0
        self.probing = False
        self.last_error: str | None = None
        # A plain dict with every name present: ``counters[name] += 1`` on a dict subclass (such as
        # Counter) takes the slow generic path, and the statement path counts every statement.
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)


@attrs.define(slots=True)
class Lease:
    """A borrowed session slot on one host. ``session is None`` means: authenticate one first."""

    host: HostEntry
    session: Optional[ServerSession]
    probe: bool = False
    returned: bool = False
    #: statements sent and server errors received under this lease, not yet counted on the host
    statements: int = 0
    errors: int = 0


class _Waiter:
    __slots__ = ("avoid", "deadline", "error", "event", "lease")

    def __init__(self, deadline: float | None = None, avoid: HostEntry | None = None) -> None:
        self.deadline = deadline
        self.avoid = avoid
        self.event = threading.Event()
        self.lease: Lease | None = None
        self.error: BaseException | None = None


class SessionBroker:
    """Every host's session pool, behind one lock: round-robin borrowing with FIFO waiting.

    At most ``size`` leases per host are out at once. A caller that finds every session busy
    queues; a released session (or a freed slot) is handed to the longest waiter directly, so
    borrowing is first come, first served across all hosts. Thread-safe.
    """

    def __init__(
        self,
        hosts: Sequence[HostEntry],
        config: SessionPoolConfig,
        *,
        backoff_base: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self.hosts = list(hosts)
        self.config = config
        self.size = config.size
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._rr = 0
        self._closed = False
        self._swept = False

    # ---- borrowing ---------------------------------------------------------------------------

    def take_ready(self) -> tuple[HostEntry, ServerSession, Connection] | None:
        """Borrow without waiting when the next host in turn is up and has an idle session that
        kept its connection (the statement path's common case): ``(host, session, connection)``,
        the session still holding the connection, to be returned with :meth:`give_back_ready` or,
        wrapped in a :class:`Lease`, :meth:`release`. ``None`` otherwise, with nothing taken:
        :meth:`borrow` then decides. Never overtakes a waiter. Thread-safe.
        """
        # acquire/try/finally, not ``with``: half the instructions, and this runs on every statement
        lock = self._lock
        lock.acquire()
        try:
            if self._waiters or self._closed:
                return None
            hosts = self.hosts
            rr = self._rr
            host = hosts[rr]
            idle = host.idle
            if host.state != HostState.UP or not idle:
                return None
            session = idle[-1]
            conn = session.conn
            if conn is None:
                return None
            idle.pop()
            self._rr = (rr + 1) % len(hosts)
            host.busy += 1
            return host, session, conn
        finally:
            lock.release()

    def give_back_ready(self, host: HostEntry, session: ServerSession, conn: Connection, now: float) -> bool:
        """Return a session from :meth:`take_ready` after one statement that succeeded, keeping
        ``conn``; as :meth:`release` does (counts, idle, hand-off to waiters). ``now``: the
        ``time.monotonic()`` the statement ended at (the session's last use). ``False``, with
        nothing done, once :meth:`close` began: then give it back as a :class:`Lease`.
        """
        lock = self._lock  # as in take_ready()
        lock.acquire()
        try:
            if self._closed:
                return False
            host.counters["statements"] += 1
            host.busy -= 1
            session.conn = conn
            session.last_used = now
            host.idle.append(session)
            if self._waiters:
                self._dispatch_locked()
                self._fail_hopeless_waiters_locked()
            return True
        finally:
            lock.release()

    def reserve_new(self, host: HostEntry) -> Lease | None:
        """A slot for a new session on ``host``, without waiting (for creating sessions ahead of
        demand): ``None`` if the host is not up, has no room, or the broker is closed. Give it
        back with :meth:`release`. Thread-safe."""
        with self._lock:
            if self._closed or host.state != HostState.UP or host.busy + len(host.idle) >= self.size:
                return None
            host.busy += 1
            return Lease(host, None)

    def borrow(self, deadline: float | None, avoid: HostEntry | None = None) -> Lease:
        """Take a session slot on some healthy host, waiting (FIFO) until ``deadline`` if all are busy.
        ``avoid``: a host that just refused a new session (its session limit): no new session is
        made there for this borrower (one it already has may still be lent).

        :raises PoolTimeout: nothing was free in time.
        :raises NoHostAvailable: every host is down and none can be retried before ``deadline``.
        :raises ClientClosed: the client was closed.
        """
        with self._lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            if self._waiters:
                # Serve the queue first (a backoff may have ended since it last moved); a new
                # caller never overtakes a waiter (FIFO).
                self._dispatch_locked()
            if all(w.avoid is not None for w in self._waiters):
                # no waiter left, or only ones that avoid the host with room (_dispatch_locked
                # passes them over): that room may be this caller's
                lease = self._take_locked(time.monotonic(), avoid)
                if lease is not None:
                    return lease
            if self._hopeless_locked(deadline):
                raise self._no_host_error_locked()
            left = _remaining(deadline)
            if left is not None and left <= 0:
                raise self._timeout_error_locked(0.0)
            # Every session is busy, or every host is backing off but one may be retried before
            # the deadline: queue (FIFO) until a hand-off or that retry time.
            waiter = _Waiter(deadline, avoid)
            self._waiters.append(waiter)
        waited_from = time.monotonic()
        try:
            while True:
                # Wake at the deadline, or when a down host's backoff ends: nothing else would
                # re-dispatch then, and the host may be the only one able to serve this waiter.
                waiter.event.wait(self._wait_slice(deadline))
                with self._lock:
                    if waiter.lease is not None:
                        return waiter.lease
                    if waiter.error is not None:
                        raise waiter.error
                    self._dispatch_locked()
                    if waiter.lease is not None:
                        return waiter.lease
                    left = _remaining(deadline)
                    if left is not None and left <= 0:
                        # Timed out: leave the queue. Under the lock, so no hand-off races this.
                        self._waiters.remove(waiter)
                        raise self._timeout_error_locked(time.monotonic() - waited_from)
                    if self._hopeless_locked(deadline):
                        self._waiters.remove(waiter)
                        raise self._no_host_error_locked()
        except BaseException:
            # Raised above, or interrupted mid-wait (KeyboardInterrupt): never keep a slot. A lease
            # handed over just before the interruption goes back; a queued waiter leaves.
            with self._lock:
                lease = waiter.lease
                if lease is not None and not lease.returned:
                    self._give_back_locked(lease, lease.session)
                    self._returned.notify_all()
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
            raise

    def _wait_slice(self, deadline: float | None) -> float | None:
        left = _remaining(deadline)
        with self._lock:
            now = time.monotonic()
            due = [h.retry_at - now for h in self.hosts if h.state != HostState.UP and h.retry_at > now]
        if due:
            nearest = min(due) + 0.001
            return nearest if left is None else min(left, nearest)
        return left

    def _hopeless_locked(self, deadline: float | None) -> bool:
        """Waiting until ``deadline`` cannot help: no host can lend now, no lease is out to come
        back, and no down host's backoff ends before the deadline (then it would be probed).

        The same condition makes a new caller's :meth:`borrow` raise ``NoHostAvailable``.
        """
        now = time.monotonic()
        if any(self._available_locked(h, now) or h.busy for h in self.hosts):
            return False
        retry = min((h.retry_at for h in self.hosts if not h.probing), default=None)
        if retry is None:
            return True  # every host is being probed right now; the probes will report
        return deadline is not None and retry >= deadline

    def _fail_hopeless_waiters_locked(self) -> None:
        if not self._waiters:
            return
        kept: collections.deque[_Waiter] = collections.deque()
        error: NoHostAvailable | None = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if self._hopeless_locked(waiter.deadline):
                error = error or self._no_host_error_locked()
                waiter.error = error
                waiter.event.set()
            else:
                kept.append(waiter)
        self._waiters = kept

    def _available_locked(self, host: HostEntry, now: float) -> bool:
        if host.state == HostState.UP:
            return True
        return now >= host.retry_at and not host.probing

    def _take_locked(self, now: float, avoid: HostEntry | None = None) -> Lease | None:
        count = len(self.hosts)
        start = self._rr
        self._rr = (start + 1) % count
        for i in range(count):
            host = self.hosts[(start + i) % count]
            if host.state != HostState.UP:
                if now < host.retry_at or host.probing or host.busy >= self.size:
                    continue
                host.probing = True  # this borrower probes the host; others keep skipping it
                host.busy += 1
                session = host.idle.pop() if host.idle else None
                return Lease(host, session, probe=True)
            if host.idle:
                host.busy += 1
                return Lease(host, host.idle.pop())
            if host.busy + len(host.idle) < self.size and host is not avoid:
                host.busy += 1
                return Lease(host, None)
        return None

    def _dispatch_locked(self) -> None:
        """Hand free sessions or slots to waiters, oldest first. A waiter that avoids a host (see
        :meth:`borrow`) is passed over when that host has the only room, so that it never holds
        up the waiters behind it."""
        if not self._waiters:
            return
        now = time.monotonic()
        for waiter in list(self._waiters):
            lease = self._take_locked(now, waiter.avoid)
            if lease is None:
                if waiter.avoid is None:
                    return  # nothing is free for anyone
                continue
            self._waiters.remove(waiter)
            waiter.lease = lease
            waiter.event.set()

    def _timeout_error_locked(self, waited: float) -> PoolTimeout:
        up = sum(1 for h in self.hosts if h.state == HostState.UP)
        return PoolTimeout(
            # the limit is the call's (a session(wait_timeout=...) or a statement's deadline), not
            # necessarily the configured wait_timeout: say how long it waited
            f"no session became free in time (waited {waited:.3f}s; {len(self.hosts)} host(s), {up} up, "
            f"size={self.size} sessions per host, all busy)"
        )

    def _no_host_error_locked(self) -> NoHostAvailable:
        now = time.monotonic()
        parts = []
        for h in self.hosts:
            detail = f"{h.name}: down, retry in {max(0.0, h.retry_at - now):.1f}s"
            if h.last_error:
                detail += f" ({h.last_error})"
            parts.append(detail)
        return NoHostAvailable("no graphd host is available: " + "; ".join(parts))

    # ---- returning ---------------------------------------------------------------------------

    def release(self, lease: Lease, session: ServerSession | None) -> ServerSession | None:
        """Give back a lease with its session (``None`` if it was discarded or never made).

        Returns the session when the client was closed and already swept its idle sessions: the
        caller must then sign it out itself. The lease's ``statements`` / ``errors`` feed the host
        counters.
        """
        host = lease.host
        with self._lock:
            if lease.returned:
                raise ValueError(f"lease on {host.name} was already released")
            if lease.statements:
                host.counters["statements"] += lease.statements
            if lease.errors:
                host.counters["errors"] += lease.errors
            leftover = self._give_back_locked(lease, session)
            if self._closed:
                self._returned.notify_all()  # close() waits for the last lease
            return leftover

    def _give_back_locked(self, lease: Lease, session: ServerSession | None) -> ServerSession | None:
        """Return a lease's slot (and session) under the lock; hand it on to waiters."""
        host = lease.host
        lease.returned = True
        host.busy -= 1
        if lease.probe:
            host.probing = False
        leftover = None
        if session is not None:
            if self._swept:
                leftover = session
            else:
                # After close() began, sessions still come back here so that its sweep signs
                # them out; until then they go idle for the next borrower.
                session.last_used = time.monotonic()
                host.idle.append(session)
        if self._waiters and not self._closed:
            self._dispatch_locked()
            self._fail_hopeless_waiters_locked()
        return leftover

    # ---- host health -------------------------------------------------------------------------

    def mark_down(self, host: HostEntry, error: BaseException) -> None:
        """Record a failed connect: back off exponentially (with jitter) before re-probing."""
        with self._lock:
            was_up = host.state == HostState.UP
            host.state = HostState.DOWN
            host.failures += 1
            delay = min(self.backoff_max, self.backoff_base * (2 ** (host.failures - 1)))
            host.retry_at = time.monotonic() + delay * random.uniform(0.8, 1.2)
            host.last_error = str(error)
            host.counters["connect_failures"] += 1
            self._dispatch_locked()
            self._fail_hopeless_waiters_locked()
        host.conn_pool.close_idle()
        if was_up:
            log.warning("graphd host %s is down (%s); retrying in about %.1fs", host.name, error, delay)

    def mark_up(self, host: HostEntry) -> None:
        """Record a successful connect to a host that was down."""
        with self._lock:
            was_down = host.state != HostState.UP
            host.state = HostState.UP
            host.failures = 0
            host.last_error = None
            self._dispatch_locked()
        if was_down:
            log.warning("graphd host %s is back up", host.name)

    # ---- lifecycle ---------------------------------------------------------------------------

    def close(self, wait: float | None) -> list[tuple[HostEntry, ServerSession]]:
        """Stop lending; wait up to ``wait`` seconds for leases out; return the idle sessions.

        Waiting callers are woken with :class:`ClientClosed`.
        """
        deadline = None if wait is None else time.monotonic() + wait
        with self._lock:
            self._closed = True
            while self._waiters:
                waiter = self._waiters.popleft()
                waiter.error = ClientClosed("the client was closed while waiting for a session")
                waiter.event.set()
            while any(h.busy for h in self.hosts):
                left = _remaining(deadline)
                if left is not None and left <= 0:
                    break
                self._returned.wait(left)
            idle = [(h, s) for h in self.hosts for s in h.idle]
            for h in self.hosts:
                h.idle.clear()
            self._swept = True
            return idle

    @property
    def closed(self) -> bool:
        return self._closed

    def busy_count(self) -> int:
        with self._lock:
            return sum(h.busy for h in self.hosts)

    def drop_after_fork(self) -> None:
        """In a forked child: forget the parent's sessions (never signed out here) and waiters."""
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self._waiters = collections.deque()
        for h in self.hosts:
            h.idle.clear()
            h.busy = 0
            h.probing = False
            h.conn_pool.drop_after_fork()

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-host numbers for ``stats()``: taken under the lock, so consistent."""
        out = []
        with self._lock:
            waiters = len(self._waiters)
            now = time.monotonic()
            for h in self.hosts:
                out.append(
                    {
                        "host": h.name,
                        "state": h.state,
                        "sessions_idle": len(h.idle),
                        "connections_parked": sum(1 for s in h.idle if s.conn is not None),
                        "sessions_busy": h.busy,
                        "waiters": waiters,
                        "retry_in": max(0.0, h.retry_at - now) if h.state != HostState.UP else 0.0,
                        "last_error": h.last_error,
                        "counters": dict(h.counters),
                    }
                )
        return out

    def count(self, host: HostEntry, name: str, n: int = 1) -> None:
        """Add to one of a host's counters."""
        with self._lock:
            host.counters[name] += n  # every name in COUNTER_NAMES is present from the start
