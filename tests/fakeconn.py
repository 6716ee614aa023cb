"""In-memory stand-ins for :class:`nebula_sync._connection.Connection`: no sockets, fully scriptable.

* :class:`FakeWorld` is the "server side" shared by every fake connection of a test: which
  connections are open, which sessions exist, how many statements run on each session at once
  (and the maximum ever seen), counters, and a list of :attr:`FakeWorld.violations` (a session
  running two statements at once, a connection used by two threads at once, a session used on the
  wrong host, I/O while holding a watched pool lock, ...). Tests assert it stays empty.
* :class:`FakeConnection` has the interface the pools and the client use: ``open(deadline)``,
  ``close()``, ``is_usable``, ``is_dropped()``, ``ping(timeout=None)``, ``authenticate``,
  ``signout``, ``execute``, ``execute_json`` and the attributes ``id, host, address, config,
  created_at, last_used, pid``. ``world.factory`` builds them (the ``connection_factory=`` hook).
* Scripting: per host (:class:`HostScript`: refuse to connect, park ``open()`` on a
  :class:`Gate`), per connection (``dropped``, ``ping_fails``, ``ping_raises``, ``ping_gate``),
  per statement (:meth:`FakeWorld.add_rule`: block on a gate, break before/after sending, answer
  an error code), and world-wide (wrong password, expire every session, reject every session).
* :class:`OwnedLock` / :class:`ObservedCondition` / :class:`Probe`: :meth:`FakeWorld.watch` swaps
  them into a pool, broker or client so that (a) every fake I/O call checks that the calling thread
  holds none of those locks, and (b) tests can wait, without sleeping, until a thread is parked in
  a condition wait.

Every blocking wait in this module is bounded by :data:`WAIT_LIMIT`: a scripted block that is never
released fails the test instead of hanging it.

Thread-safe: the world's state is guarded by one condition; a connection's own flags are plain
attributes that tests set before the connection is used concurrently.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable, Optional, Union

from nebula_sync import _pool
from nebula_sync._thrift import ttypes
from nebula_sync.config import ConnectionConfig, HostAddress
from nebula_sync.errors import ConnectionFailed, IncompatibleServer, OutcomeUnknown

__all__ = [
    "E_BAD_USERNAME_PASSWORD",
    "E_EXECUTION_ERROR",
    "E_SESSION_INVALID",
    "WAIT_LIMIT",
    "FakeConnection",
    "FakeWorld",
    "Gate",
    "HostScript",
    "ObservedCondition",
    "ObservedEvent",
    "OwnedLock",
    "Probe",
    "Rule",
    "join_all",
    "observed_waiter_class",
]

E_BAD_USERNAME_PASSWORD = -1001
E_SESSION_INVALID = -1002
E_EXECUTION_ERROR = -1005

#: the longest any fake (or test helper) blocks before declaring the test hung
WAIT_LIMIT = 10.0


# ---- lock instrumentation --------------------------------------------------------------------


class OwnedLock:
    """A ``threading.Lock`` that knows which thread holds it (for "no I/O under the lock" checks).

    Usable on its own (``with``) and as the lock of a ``threading.Condition``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._owner: Optional[int] = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        ok = self._lock.acquire(blocking, timeout)
        if ok:
            self._owner = threading.get_ident()
        return ok

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def _is_owned(self) -> bool:  # used by threading.Condition
        return self._owner == threading.get_ident()

    def held_by_me(self) -> bool:
        """Whether the calling thread holds this lock."""
        return self._owner == threading.get_ident()

    def __repr__(self) -> str:
        return f"<OwnedLock {self.name}>"


class Probe:
    """Named counters that tests can wait on: ``hit(name)`` from anywhere, ``wait_for(name, n)``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._counts: collections.Counter[str] = collections.Counter()

    def hit(self, name: str) -> None:
        with self._cond:
            self._counts[name] += 1
            self._cond.notify_all()

    def count(self, name: str) -> int:
        with self._cond:
            return self._counts[name]

    def wait_for(self, name: str, n: int = 1, timeout: float = WAIT_LIMIT) -> None:
        """Block until ``name`` was hit ``n`` times; fail the test after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._counts[name] >= n, timeout):
                raise AssertionError(
                    f"probe {name!r}: {self._counts[name]} hit(s) after {timeout}s, wanted {n}"
                )


class ObservedCondition(threading.Condition):
    """A ``Condition`` that reports each ``wait()`` to a :class:`Probe` (as ``name``) first.

    The report is made while the caller still holds the lock, so once a test has seen it, anything
    the test does under the same lock happens after the waiter released the lock inside ``wait()``.
    """

    def __init__(self, lock: Any, probe: Probe, name: str) -> None:
        super().__init__(lock)
        self._probe = probe
        self._name = name

    def wait(self, timeout: Optional[float] = None) -> bool:
        self._probe.hit(self._name)
        return super().wait(timeout)


class ObservedEvent(threading.Event):
    """An ``Event`` that reports each ``wait()`` to a :class:`Probe` (used for broker waiters)."""

    def __init__(self, probe: Probe, name: str) -> None:
        super().__init__()
        self._probe = probe
        self._name = name

    def wait(self, timeout: Optional[float] = None) -> bool:
        self._probe.hit(self._name)
        return super().wait(timeout)


def observed_waiter_class(probe: Probe, name: str = "broker.waiter") -> type[Any]:
    """A drop-in for ``nebula_sync._pool._Waiter`` whose event reports waits to ``probe``."""

    class ObservedWaiter(_pool._Waiter):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.event = ObservedEvent(probe, name)

    return ObservedWaiter


# ---- scripting -------------------------------------------------------------------------------


class Gate:
    """A latch a fake call parks on until the test opens it (or the connection is closed).

    ``entered`` counts the calls that reached the gate; :meth:`wait_entered` waits for them.
    """

    def __init__(self, world: FakeWorld, name: str) -> None:
        self._world = world
        self.name = name
        self._open = False

    def open(self) -> None:
        with self._world.cond:
            self._open = True
            self._world.cond.notify_all()

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def entered(self) -> int:
        return self._world.probe.count(f"gate:{self.name}")

    def wait_entered(self, n: int = 1, timeout: float = WAIT_LIMIT) -> None:
        self._world.probe.wait_for(f"gate:{self.name}", n, timeout)

    def park(self, conn: Optional[FakeConnection] = None) -> bool:
        """Wait until opened (``True``) or until ``conn`` is closed (``False``). Bounded."""
        world = self._world
        world.probe.hit(f"gate:{self.name}")
        with world.cond:
            done = world.cond.wait_for(lambda: self._open or (conn is not None and conn.closed), WAIT_LIMIT)
            if not done:
                world.violations.append(f"gate {self.name!r} was never opened (parked {WAIT_LIMIT}s)")
                raise AssertionError(f"gate {self.name!r} was never opened")
            return self._open


class HostScript:
    """How one fake graphd host behaves when connected to. Set before (or between) uses."""

    def __init__(self) -> None:
        #: ``open()`` raises ConnectionFailed (connection refused)
        self.refuse = False
        #: ``open()`` raises IncompatibleServer (the version handshake is rejected)
        self.incompatible = False
        #: ``open()`` parks here first (until the gate opens) when set
        self.open_gate: Optional[Gate] = None
        #: the next this many ``open()`` calls fail with ConnectionFailed (then it counts down)
        self.fail_opens = 0


Matcher = Union[str, Callable[[str], bool]]


class Rule:
    """A scripted reaction to a statement (see :meth:`FakeWorld.add_rule`)."""

    ACTIONS = ("block", "break_before_send", "break_after_send", "error", "session_invalid")

    def __init__(self, match: Matcher, action: str, *, times: Optional[int], gate: Optional[Gate],
                 code: int) -> None:  # fmt: skip
        if action not in self.ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        if action == "block" and gate is None:
            raise ValueError("a 'block' rule needs a gate")
        self.match = match
        self.action = action
        self.times = times
        self.gate = gate
        self.code = code
        self.hits = 0

    def matches(self, text: str) -> bool:
        if callable(self.match):
            return bool(self.match(text))
        return text == self.match


class _Session:
    __slots__ = ("host", "id", "space", "user")

    def __init__(self, session_id: int, host: str, user: str) -> None:
        self.id = session_id
        self.host = host
        self.user = user
        self.space = ""


# ---- the world -------------------------------------------------------------------------------


class FakeWorld:
    """Everything the fake connections of one test share: the "cluster" and what happened to it."""

    def __init__(self, *, user: str = "root", password: str = "nebula") -> None:
        self.cond = threading.Condition()
        self.probe = Probe()
        self.user = user
        self.password = password
        self.hosts: collections.defaultdict[str, HostScript] = collections.defaultdict(HostScript)
        self.conns: list[FakeConnection] = []  # every connection ever made
        self.open_conns: set[FakeConnection] = set()
        self.sessions: dict[int, _Session] = {}
        self.reject_sessions = False  # every statement answers E_SESSION_INVALID
        self.running: collections.Counter[int] = collections.Counter()  # statements in flight per session
        self.max_running_per_session = 0
        self.max_sessions = 0
        self.max_open_per_host: collections.Counter[str] = collections.Counter()
        self.counts: collections.Counter[str] = collections.Counter()
        self.executed: collections.Counter[str] = collections.Counter()  # statement text -> times run
        self.violations: list[str] = []
        self.watched: list[OwnedLock] = []
        self.rules: list[Rule] = []
        self._ids = itertools.count(1)
        self._session_ids = itertools.count(7001)

    # -- building ------------------------------------------------------------------------------

    def factory(self, address: HostAddress, config: ConnectionConfig) -> Any:
        """The ``connection_factory`` / ``ConnectionPool`` factory: a new, unopened connection."""
        conn = FakeConnection(self, address, config)
        with self.cond:
            self.conns.append(conn)
        return conn

    def gate(self, name: str) -> Gate:
        return Gate(self, name)

    def add_rule(self, match: Matcher, action: str, *, times: Optional[int] = None,
                 gate: Optional[Gate] = None, code: int = E_EXECUTION_ERROR) -> Rule:  # fmt: skip
        """React to statements equal to ``match`` (or for which ``match(text)`` is true).

        ``action``: ``"block"`` (park on ``gate`` after the request "arrived"; a close of the
        connection ends it with ``OutcomeUnknown``), ``"break_before_send"`` (``ConnectionFailed``,
        nothing reached the server), ``"break_after_send"`` (the statement runs, then the
        connection dies before the reply: ``OutcomeUnknown``), ``"error"`` (answer ``code``),
        ``"session_invalid"`` (answer ``E_SESSION_INVALID``). ``times``: how many matches it
        applies to (``None``: all). The first applicable rule wins.
        """
        rule = Rule(match, action, times=times, gate=gate, code=code)
        with self.cond:
            self.rules.append(rule)
        return rule

    def _take_rule(self, text: str) -> Optional[Rule]:
        with self.cond:
            for rule in self.rules:
                if (rule.times is None or rule.hits < rule.times) and rule.matches(text):
                    rule.hits += 1
                    return rule
        return None

    # -- world-wide scripting ------------------------------------------------------------------

    def expire_sessions(self) -> list[int]:
        """Forget every session (a graphd restart): their next statement gets E_SESSION_INVALID."""
        with self.cond:
            gone = list(self.sessions)
            self.sessions.clear()
            return gone

    def drop_idle(self, host: Optional[str] = None) -> int:
        """Mark every open connection (of ``host``) as dropped by the peer; returns how many."""
        n = 0
        with self.cond:
            for conn in self.open_conns:
                if host is None or conn.host == host:
                    conn.dropped = True
                    n += 1
        return n

    # -- lock watching -------------------------------------------------------------------------

    def watch(self, obj: Any) -> Any:
        """Swap owner-tracking locks into a ``ConnectionPool``, ``SessionBroker`` or ``NebulaClient``.

        Call before the object is shared between threads. Afterwards every fake I/O call records a
        violation if its thread holds one of these locks, and condition waits are reported to
        :attr:`probe` as ``"<name>.wait"`` (``"pool:<host>.wait"``, ``"broker.wait"``).
        """
        if isinstance(obj, _pool.ConnectionPool):
            name = f"pool:{obj.address}"
            lock = OwnedLock(name)
            obj._lock = lock  # type: ignore[assignment]
            obj._cond = ObservedCondition(lock, self.probe, f"{name}.wait")
            self.watched.append(lock)
        elif isinstance(obj, _pool.SessionBroker):
            lock = OwnedLock("broker")
            obj._lock = lock  # type: ignore[assignment]
            obj._returned = ObservedCondition(lock, self.probe, "broker.wait")
            self.watched.append(lock)
            for host in obj.hosts:
                self.watch(host.conn_pool)
        else:  # a NebulaClient
            self.watch(obj._broker)
            for attr in ("_auth_lock", "_close_lock"):
                lock = OwnedLock(f"client.{attr}")
                setattr(obj, attr, lock)
                self.watched.append(lock)
        return obj

    def _check_io(self, what: str) -> None:
        for lock in self.watched:
            if lock.held_by_me():
                self.violations.append(f"{what} while holding {lock.name}")

    # -- views ---------------------------------------------------------------------------------

    def open_count(self, host: Optional[str] = None) -> int:
        with self.cond:
            return sum(1 for c in self.open_conns if host is None or c.host == host)

    def session_ids(self) -> set[int]:
        with self.cond:
            return set(self.sessions)

    def conns_of(self, host: str) -> list[FakeConnection]:
        with self.cond:
            return [c for c in self.conns if c.host == host]


class FakeConnection:
    """One fake connection to one fake graphd. Same interface as ``nebula_sync._connection.Connection``.

    Scriptable flags (set by tests): ``dropped`` (``is_dropped()`` says so), ``ping_fails`` (ping
    closes the connection and raises ``OutcomeUnknown``), ``ping_raises`` (ping raises this
    exception, e.g. ``KeyboardInterrupt``), ``ping_gate`` (ping parks on it).
    """

    def __init__(self, world: FakeWorld, address: HostAddress, config: ConnectionConfig) -> None:
        self.world = world
        self.id = next(world._ids)
        self.address = address
        self.host = str(address)
        self.config = config
        self.pid = os.getpid()
        self.created_at = time.monotonic()
        self.last_used = self.created_at
        self.state = "new"  # "new" -> "open" -> "closed"
        self.dropped = False
        self.ping_fails = False
        self.ping_raises: Optional[BaseException] = None
        self.ping_gate: Optional[Gate] = None
        self.inflight = 0
        self.calls: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"<FakeConnection #{self.id} to {self.host} {self.state}>"

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    @property
    def is_usable(self) -> bool:
        return self.state == "open" and self.pid == os.getpid()

    def open(self, deadline: Optional[float] = None) -> None:
        world = self.world
        world._check_io(f"open() of {self!r}")
        script = world.hosts[self.host]
        with world.cond:
            world.counts["open_attempts"] += 1
            if self.state != "new":
                world.violations.append(f"open() of {self!r} twice")
        if script.open_gate is not None:
            script.open_gate.park()
        if script.incompatible:
            with world.cond:
                world.counts["open_failures"] += 1
            raise IncompatibleServer(f"graphd at {self.host} rejected client version (fake)", host=self.host)
        with world.cond:
            refused = script.refuse or script.fail_opens > 0
            if script.fail_opens > 0:
                script.fail_opens -= 1
            if refused:
                world.counts["open_failures"] += 1
        if refused:
            raise ConnectionFailed(f"could not connect to {self.host}: refused (fake)", host=self.host)
        if deadline is not None and deadline <= time.monotonic():
            with world.cond:
                world.counts["open_failures"] += 1
            raise ConnectionFailed("no time left to connect", host=self.host)
        with world.cond:
            self.state = "open"
            world.open_conns.add(self)
            world.counts["opens"] += 1
            n = sum(1 for c in world.open_conns if c.host == self.host)
            world.max_open_per_host[self.host] = max(world.max_open_per_host[self.host], n)

    def close(self) -> None:
        world = self.world
        world._check_io(f"close() of {self!r}")
        with world.cond:
            if self.state == "open":
                world.counts["closes"] += 1
            self.state = "closed"
            world.open_conns.discard(self)
            world.cond.notify_all()  # wakes a call parked on a gate

    def is_dropped(self) -> bool:
        self.world._check_io(f"is_dropped() of {self!r}")
        self.calls["is_dropped"] += 1
        return self.dropped or not self.is_usable

    # -- calls ---------------------------------------------------------------------------------

    def _enter(self, what: str) -> None:
        """Start a request: checks, counts; raises ConnectionFailed if nothing can be sent."""
        world = self.world
        world._check_io(f"{what} on {self!r}")
        self.calls[what] += 1
        with world.cond:
            world.counts[what] += 1
            if not self.is_usable:
                raise ConnectionFailed(f"connection #{self.id} to {self.host} is closed", host=self.host)
            self.inflight += 1
            if self.inflight > 1:
                world.violations.append(f"{self!r} used by two threads at once ({what})")

    def _leave(self) -> None:
        with self.world.cond:
            self.inflight -= 1
        self.last_used = time.monotonic()

    def ping(self, timeout: Optional[float] = None) -> None:
        self._enter("ping")
        try:
            if self.ping_gate is not None and not self.ping_gate.park(self):
                raise OutcomeUnknown("connection closed during ping (fake)", host=self.host)
            if self.ping_raises is not None:
                raise self.ping_raises
            if self.ping_fails or self.dropped:
                self.close()
                raise OutcomeUnknown(f"{self.host} closed the connection before replying to execute",
                                     host=self.host)  # fmt: skip
        finally:
            self._leave()

    def authenticate(self, username: str, password: str, deadline: Optional[float]) -> ttypes.AuthResponse:
        self._enter("authenticate")
        world = self.world
        try:
            with world.cond:
                if username != world.user or password != world.password:
                    world.counts["auth_failures"] += 1
                    return ttypes.AuthResponse(
                        error_code=E_BAD_USERNAME_PASSWORD, error_msg=b"Bad username/password (fake)"
                    )
                sid = next(world._session_ids)
                world.sessions[sid] = _Session(sid, self.host, username)
                world.counts["sessions_created"] += 1
                world.max_sessions = max(world.max_sessions, len(world.sessions))
            return ttypes.AuthResponse(
                error_code=0, session_id=sid, time_zone_offset_seconds=0, time_zone_name=b"UTC"
            )
        finally:
            self._leave()

    def signout(self, session_id: int) -> None:
        self._enter("signout")
        world = self.world
        try:
            with world.cond:
                session = world.sessions.get(session_id)
                if session is None:
                    world.counts["signout_unknown"] += 1
                    return
                if session.host != self.host:
                    world.violations.append(
                        f"session {session_id} of {session.host} signed out on {self.host}"
                    )
                    return
                if world.running[session_id]:
                    world.violations.append(f"session {session_id} signed out while running a statement")
                del world.sessions[session_id]
        finally:
            self._leave()

    def execute(self, session_id: int, stmt: bytes, params: Optional[dict[bytes, ttypes.Value]],
                deadline: Optional[float], now: Optional[float] = None,
                ) -> ttypes.ExecutionResponse:  # fmt: skip
        code, text, space = self._run(session_id, stmt, "execute")
        if code:
            return ttypes.ExecutionResponse(
                error_code=code,
                latency_in_us=1,
                error_msg=f"fake error {code}".encode(),
                space_name=space.encode() if space else None,
            )
        values = [text.encode(), session_id, self.host.encode()]
        row = ttypes.Row(values=[ttypes.Value(sVal=values[0]), ttypes.Value(iVal=values[1]),
                                 ttypes.Value(sVal=values[2])])  # fmt: skip
        return ttypes.ExecutionResponse(
            error_code=0,
            latency_in_us=1,
            data=ttypes.DataSet(column_names=[b"stmt", b"session", b"host"], rows=[row]),
            space_name=space.encode() if space else None,
        )

    def execute_json(self, session_id: int, stmt: bytes, params: Optional[dict[bytes, ttypes.Value]],
                     deadline: Optional[float]) -> bytes:  # fmt: skip
        code, text, space = self._run(session_id, stmt, "execute_json")
        result: dict[str, Any] = {"spaceName": space or None, "latencyInUs": 1}
        if code == 0:
            result["columns"] = ["stmt", "session", "host"]
            result["data"] = [{"row": [text, session_id, self.host], "meta": [None, None, None]}]
        doc = {
            "errors": [{"code": code, "message": f"fake error {code}" if code else ""}],
            "results": [result],
        }
        return json.dumps(doc).encode()

    def _run(self, session_id: int, stmt: bytes, what: str) -> tuple[int, str, str]:
        """The common part of execute/execute_json: ``(error code, statement text, space)``."""
        world = self.world
        text = stmt.decode("utf-8")
        self._enter(what)
        counted = False
        try:
            rule = world._take_rule(text)
            if rule is not None and rule.action == "break_before_send":
                self.close()
                raise ConnectionFailed(f"sending to {self.host} failed: broken pipe (fake)", host=self.host)
            # From here on the request "reached" graphd.
            with world.cond:
                session = world.sessions.get(session_id)
                if session is None or session.host != self.host or world.reject_sessions:
                    world.counts["rejected_session"] += 1
                    return E_SESSION_INVALID, text, ""
                counted = True
                world.running[session_id] += 1
                world.max_running_per_session = max(world.max_running_per_session, world.running[session_id])
                if world.running[session_id] > 1:
                    world.violations.append(f"session {session_id} runs two statements at once")
                world.executed[text] += 1
                if text.upper().startswith("USE "):
                    session.space = text[4:].strip().strip("`")
                space = session.space
            if rule is not None:
                if rule.action == "session_invalid":
                    return E_SESSION_INVALID, text, space
                if rule.action == "error":
                    return rule.code, text, space
                if rule.action == "break_after_send":
                    self.close()
                    raise OutcomeUnknown(f"{self.host} closed the connection before replying (fake)",
                                         host=self.host)  # fmt: skip
                if rule.action == "block":
                    assert rule.gate is not None
                    if not rule.gate.park(self):
                        raise OutcomeUnknown(f"connection to {self.host} closed while waiting for the reply",
                                             host=self.host)  # fmt: skip
            return 0, text, space
        finally:
            if counted:
                with world.cond:
                    world.running[session_id] -= 1
            self._leave()


def join_all(threads: Iterable[threading.Thread], timeout: float = WAIT_LIMIT) -> None:
    """Join threads within one overall bound; fail the test if any is still running."""
    deadline = time.monotonic() + timeout
    alive = []
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            alive.append(t.name)
    if alive:
        raise AssertionError(f"threads still running after {timeout}s: {alive}")
