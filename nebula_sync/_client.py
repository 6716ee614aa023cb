"""``NebulaClient``: the thread-safe facade over session pools, connection pools and failover."""

from __future__ import annotations

import codecs
import collections
import json
import logging
import math
import multiprocessing.util
import os
import re
import threading
import time
import warnings
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, Optional, cast

import attrs

from nebula_sync import _fork, _params
from nebula_sync._connection import Connection
from nebula_sync._pool import (
    ConnectionFactory,
    ConnectionPool,
    HostEntry,
    HostState,
    Lease,
    ServerSession,
    SessionBroker,
)
from nebula_sync._result import ResultSet, _wrap_decoded
from nebula_sync._thrift import ttypes
from nebula_sync._thrift.fast import DecodedResponse
from nebula_sync.config import (
    ConnectionConfig,
    HostsSpec,
    SessionConfig,
    SessionPoolConfig,
    check_seconds,
    parse_hosts,
)
from nebula_sync.errors import (
    AuthenticationError,
    ClientClosed,
    ConnectionFailed,
    IncompatibleServer,
    NebulaError,
    NoHostAvailable,
    OutcomeUnknown,
    ProtocolError,
    ReplyTooLarge,
    ServerError,
    UnreadableReply,
    error_code_name,
    lookup,
    redact_statement,
)

if TYPE_CHECKING:
    from nebula_sync._health import HealthReport, WebPorts

__all__ = ["ClientStats", "HostStats", "NebulaClient", "Session"]

log = logging.getLogger("nebula_sync.client")

_SESSION_INVALID = (-1002, -1003)
#: sign-outs kept for close() to try again (a host that flaps for days must not grow the list)
_MAX_ORPHANS = 1000
_DEFAULT: Any = object()  # "not given" for per-call timeouts (None means "no limit")
Params = Optional[Mapping[str, Any]]


def _request_timeout(cfg: ConnectionConfig, timeout: Any) -> Optional[float]:
    """The reply timeout for one call: ``timeout`` if given (validated), else the configured one."""
    if timeout is _DEFAULT:
        return cfg.request_timeout
    if timeout is not None:
        check_seconds("timeout", timeout)
        return float(timeout)
    return None


def _inf(limit: float | None) -> float:
    return math.inf if limit is None else limit

_BAD_CREDENTIALS = -1001  # E_BAD_USERNAME_PASSWORD
#: a connect cut short by the caller's own deadline after less than this (seconds) does not mark
#: the host down (see _checkout)
_CONNECT_EVIDENCE = 0.25


def _not_a_flag(idempotent: object) -> NoReturn:
    # a string such as "false" would be true, and would let a write be retried (run twice)
    raise TypeError(f"idempotent must be True or False, not {type(idempotent).__name__} ({idempotent!r})")


def _escape_json_bytes(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: invalid UTF-8 as ``\\xNN`` escapes a JSON parser reads as text (``\\\\``)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(f"\\\\x{b:02x}" for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error("nebula_sync.json_bytes", _escape_json_bytes)


def _json_text(raw: bytes) -> str:
    """``execute_json``'s reply as text. graphd copies string bytes into its JSON unchecked, so a
    stored string that is not UTF-8 would make the whole document unreadable: its invalid bytes
    become the same ``\\xNN`` text :meth:`NebulaClient.execute` shows for them."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "nebula_sync.json_bytes")


def _earlier(a: float | None, b: float | None) -> float | None:
    """The earlier of two deadlines (``None``: no limit)."""
    if a is None:
        return b
    return a if b is None or a < b else b


def _not_sent(what: str, host: HostEntry, exc: OutcomeUnknown | ProtocolError) -> ConnectionFailed:
    """The error for a reply lost (or unreadable) while setting up a session: only the session is
    in doubt (graphd may have created it), the statement was not sent, so it may be retried
    elsewhere."""
    message = f"no usable reply to {what} from {host.name} ({exc.message}); the statement was not sent"
    return ConnectionFailed(message, host=host.name)


def _first_unknown(exc: NebulaError, unknown: OutcomeUnknown | None) -> NebulaError:
    """What a call ends with when ``exc`` ends it: an earlier attempt's unknown outcome, if there
    was one (a later failure other than graphd's own reply would hide that the statement may have
    run), else ``exc`` itself."""
    return exc if unknown is None or isinstance(exc, ServerError) else unknown


def _unreadable(exc: ProtocolError) -> ProtocolError:
    """What a statement that was sent ends with when its reply could not be read: the unknown
    outcome (``UnreadableReply``, caused by ``exc``), except that a ``ReplyTooLarge`` stays as it
    is (graphd ran it and would answer as much again: never retried)."""
    if isinstance(exc, (UnreadableReply, ReplyTooLarge)):
        return exc
    error = UnreadableReply(f"{exc.message}; the statement was sent and may have run", host=exc.host)
    error.__cause__ = exc
    return error


def _left(deadline: float | None) -> bool:
    return deadline is None or time.monotonic() < deadline


@attrs.frozen
class HostStats:
    """One host's numbers at the moment :meth:`NebulaClient.stats` was called."""

    host: str
    state: str
    connections_idle: int
    connections_active: int
    connection_waiters: int
    sessions_idle: int
    sessions_busy: int
    session_waiters: int
    retry_in: float
    last_error: Optional[str]
    statements: int
    errors: int
    sessions_created: int
    sessions_signed_out: int
    session_renewals: int
    connections_opened: int
    connections_discarded: int
    connect_failures: int
    pings: int


@attrs.frozen
class ClientStats:
    """An immutable snapshot of the client's pools, per host."""

    hosts: tuple[HostStats, ...]
    closed: bool

    @property
    def sessions_busy(self) -> int:
        return sum(h.sessions_busy for h in self.hosts)

    @property
    def sessions_idle(self) -> int:
        return sum(h.sessions_idle for h in self.hosts)

    @property
    def connections_open(self) -> int:
        return sum(h.connections_idle + h.connections_active for h in self.hosts)

    def host(self, name: str) -> HostStats:
        """The stats of host ``"h:p"``."""
        for h in self.hosts:
            if h.host == name:
                return h
        raise KeyError(name)


def _encode(text: str) -> bytes:
    """A statement's bytes for the wire; ``TypeError`` / ``ValueError`` for what can't be sent."""
    if not isinstance(text, str):
        raise TypeError(f"statement must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"statement is not valid Unicode text: a lone surrogate at position {exc.start}"
        ) from None


class _Prepared:
    """A statement ready to send: text for errors and logs, bytes and parameter map for the wire
    (made by :func:`_prepare`; the statement path passes the three fields without one)."""

    __slots__ = ("params", "stmt", "text")

    def __init__(self, text: str, stmt: bytes, params: dict[bytes, ttypes.Value] | None) -> None:
        self.text = text
        self.stmt = stmt
        self.params = params



def _prepare(statement: str, params: Params) -> _Prepared:
    if params is None:
        return _Prepared(statement, _encode(statement), None)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of names to values, got {type(params).__name__}")
    return _Prepared(statement, _encode(statement), _params.to_parameter_map(params))


def _prepare_py(statement: str, params: Params) -> _Prepared:
    if not isinstance(statement, str):
        raise TypeError(f"statement must be a str, got {type(statement).__name__}")
    if not params:
        return _prepare(_params.render_template(statement, {}), None)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of names to values, got {type(params).__name__}")
    for key in params:
        if not isinstance(key, str):
            raise TypeError(f"parameter names must be str, not {type(key).__name__} ({key!r})")
    rendered = _params.render_template(statement, params)
    # ``$name`` references are server-side parameters; send those the statement mentions.
    server = {k: v for k, v in params.items() if re.search(r"\$" + re.escape(k) + r"\b", rendered)}
    return _Prepared(rendered, _encode(rendered), _params.to_parameter_map(server) if server else None)


class NebulaClient:
    """A thread-safe client for a NebulaGraph 3.x cluster: create one per process, share it.

    Each call borrows a session from a per-host pool (round-robin over healthy hosts), runs the
    statement on one connection, and gives the session back. At most ``hosts × size`` statements
    wait for a reply at once; a session never runs two at once (one whose statement got no reply
    is retired, not reused while graphd may still be running it).

    :param hosts: ``"h:p"``, ``"h1:p1,h2:p2"``, ``["h:p", ...]``, ``[("h", p)]`` or ``"[::1]:9669"``.
    :param username: graphd user.
    :param password: its password (never logged or shown).
    :param session_pool_config: sessions per host and how long to wait for one.
    :param conn_config: timeouts, TLS, ping policy.
    :param session_config: space and statements applied after every authentication.
    :param min_healthy_hosts: construction fails unless this many hosts answer.
    :param close_timeout: how long :meth:`close` waits for statements in flight.

    :raises NoHostAvailable: fewer than ``min_healthy_hosts`` hosts could be reached.
    :raises IncompatibleServer: graphd rejected the client version.
    """

    def __init__(
        self,
        hosts: HostsSpec,
        username: str = "root",
        password: Optional[str] = None,
        *,
        session_pool_config: Optional[SessionPoolConfig] = None,
        conn_config: Optional[ConnectionConfig] = None,
        session_config: Optional[SessionConfig] = None,
        min_healthy_hosts: int = 1,
        close_timeout: Optional[float] = 10.0,
        connection_factory: Optional[ConnectionFactory] = None,
    ) -> None:
        self._closed = True  # until construction succeeds; __del__ must not warn before
        if not isinstance(username, str) or not username:
            raise ValueError("username must be a non-empty string")
        if password is not None and not isinstance(password, str):
            raise TypeError(f"password must be a str, got {type(password).__name__}")
        for name, value, cls in (
            ("session_pool_config", session_pool_config, SessionPoolConfig),
            ("conn_config", conn_config, ConnectionConfig),
            ("session_config", session_config, SessionConfig),
        ):
            if value is not None and not isinstance(value, cls):
                raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
        self._addresses = parse_hosts(hosts)
        if isinstance(min_healthy_hosts, bool) or not isinstance(min_healthy_hosts, int):
            raise TypeError("min_healthy_hosts must be an int")
        if not 1 <= min_healthy_hosts <= len(self._addresses):
            raise ValueError(
                f"min_healthy_hosts must be between 1 and the number of hosts "
                f"({len(self._addresses)}), got {min_healthy_hosts}"
            )
        if close_timeout is not None:
            check_seconds("close_timeout", close_timeout, allow_zero=True)
        for field, text in (("username", username), ("password", password or "")):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # Never quote the text: it may be the password.
                raise ValueError(f"{field} is not valid Unicode text (it holds a lone surrogate)") from None
        self._username = username
        self._password = password or ""
        self._pool_config = session_pool_config or SessionPoolConfig()
        self._conn_config = conn_config or ConnectionConfig()
        self._session_config = session_config or SessionConfig()
        #: the space every pooled session is returned in ("" = none configured)
        self._home_space = self._session_config.space or ""
        #: sessions can grow too old (max_idle_time / max_lifetime): check before each use
        self._ages_sessions = (
            self._pool_config.max_idle_time is not None or self._pool_config.max_lifetime is not None
        )
        # The fast path (_run_fast) takes a kept connection and its session as they are only
        # when both are younger and fresher than every limit that would make the general path
        # check, ping or replace them; infinity where no limit is set.
        conn_cfg, pool_cfg = self._conn_config, self._pool_config
        self._fast_path = not conn_cfg.ping_before_execute
        self._fresh_conn_idle = min(_inf(conn_cfg.max_idle_time), _inf(conn_cfg.ping_after_idle))
        self._fresh_conn_life = _inf(conn_cfg.max_lifetime)
        self._fresh_session_idle = _inf(pool_cfg.max_idle_time)
        self._fresh_session_life = _inf(pool_cfg.max_lifetime)
        self._min_healthy = min_healthy_hosts
        self._close_timeout = close_timeout
        self._factory: ConnectionFactory = connection_factory or Connection
        self._auth_lock = threading.Lock()
        self._auth_failures = 0
        self._auth_retry_at = 0.0
        self._auth_error: AuthenticationError | None = None
        self._close_lock = threading.Lock()
        # Sign-outs that could not be sent when a session was dropped (its host unreachable), and
        # the threads sending them in the background: close() waits for those threads, then tries
        # the sessions once more, so that no session the client knew of is left behind on graphd
        # when its host is reachable at close. Guarded by _orphans_lock.
        self._orphans_lock = threading.Lock()
        self._orphans: list[tuple[HostEntry, ServerSession]] = []
        #: sessions retired after an unknown outcome (the latest _MAX_ORPHANS): close() sends each
        #: a sign-out once more, as the first, oneway, may have been lost with its connection
        self._retired: collections.deque[tuple[HostEntry, ServerSession]] = collections.deque(
            maxlen=_MAX_ORPHANS
        )
        self._signout_threads: set[threading.Thread] = set()
        #: close() has listed the sign-out threads it waits for: later sign-outs run in the
        #: caller's thread (a background one could die with the process once close() returns)
        self._signouts_listed = False
        self._pid = os.getpid()
        self._build()
        self._closed = False
        try:
            self._probe_hosts()
            self._warm_up()
        except BaseException:
            # Also on Ctrl-C at any point here: what was opened or made is closed and signed out
            # (idempotent after the shutdowns the steps above do before raising their own errors).
            self._closed = True
            self._shutdown(sign_out=True)
            raise
        _register_fork_handler(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        hosts = ",".join(str(a) for a in self._addresses)
        return f"<NebulaClient {state} user={self._username!r} hosts={hosts}>"

    def _build(self) -> None:
        cap = self._conn_config.max_connections_per_host or self._pool_config.size
        # An idle session keeps its connection (the statement path then skips the connection
        # pool) only when every session of a host can have one: with fewer connections than
        # sessions, a kept one would sit idle while another session waits for it.
        self._keep_conns = cap >= self._pool_config.size
        entries = [
            HostEntry(addr, ConnectionPool(addr, self._conn_config, cap, self._factory))
            for addr in self._addresses
        ]
        self._broker = SessionBroker(entries, self._pool_config)
        self._hosts = entries

    def _probe_hosts(self) -> None:
        """Connect to every host at once (bounded by connect_timeout); keep the connections warm."""
        errors: dict[str, BaseException] = {}
        incompatible: list[IncompatibleServer] = []

        def probe(host: HostEntry) -> None:
            conn = self._factory(host.address, self._conn_config)
            try:
                conn.open(None)
            except IncompatibleServer as exc:
                incompatible.append(exc)
                errors[host.name] = exc
                return
            except NebulaError as exc:
                errors[host.name] = exc
                return
            except Exception as exc:  # never let the probe thread die with the socket open
                conn.close()
                errors[host.name] = ConnectionFailed(f"could not connect to {host.name}: {exc!r}",
                                                     host=host.name)  # fmt: skip
                return
            host.conn_pool.add_idle(conn)

        threads = [threading.Thread(target=probe, args=(h,), daemon=True) for h in self._hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for host in self._hosts:
            if host.name in errors:
                self._broker.mark_down(host, errors[host.name])
        if incompatible:
            self._shutdown(sign_out=False)
            raise incompatible[0]
        up = len(self._hosts) - len(errors)
        if up < self._min_healthy:
            self._shutdown(sign_out=False)
            detail = "; ".join(f"{name}: {err}" for name, err in errors.items())
            raise NoHostAvailable(
                f"only {up} of {len(self._hosts)} graphd host(s) reachable, "
                f"min_healthy_hosts={self._min_healthy}: {detail}"
            )

    def _warm_up(self) -> None:
        """Create ``SessionPoolConfig.min_idle`` sessions on every host that is up, one thread per
        host. Wrong credentials (``E_BAD_USERNAME_PASSWORD``) fail construction; any other
        failure (graphd's session limit, a timeout, ...) is logged and leaves that host to create
        its sessions when they are needed. Interrupted (Ctrl-C), it signs out what was made."""
        want = self._pool_config.min_idle
        if not want:
            return
        rejected: list[AuthenticationError] = []

        def warm(host: HostEntry) -> None:
            leases: list[Lease] = []
            try:
                for _ in range(want):
                    lease = self._broker.reserve_new(host)
                    if lease is None:
                        break
                    leases.append(lease)  # all held at once: each one is a new session
                deadline = self._deadlines(time.monotonic(), self._conn_config.request_timeout)[1]
                for lease in leases:
                    conn = self._checkout(lease, deadline)
                    try:
                        lease.session = self._authenticate(host, conn, deadline)
                    finally:
                        self._checkin(lease, conn)
            except NebulaError as exc:
                if isinstance(exc, AuthenticationError) and exc.code == _BAD_CREDENTIALS:
                    rejected.append(exc)
                else:
                    log.warning("could not create %d session(s) on %s at start: %s", want, host.name, exc)
            finally:
                for lease in leases:
                    self._give_back(lease)  # idle now (or an empty slot again, if none was made)

        threads = [threading.Thread(target=warm, args=(h,), daemon=True) for h in self._hosts]
        # Ctrl-C from here on: the constructor shuts down, so the sessions made (and those still
        # being made, which find the pool closed when given back) are signed out.
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if rejected:
            self._shutdown(sign_out=True)
            raise rejected[0]

    # ---- public API --------------------------------------------------------------------------

    def execute(
        self,
        statement: str,
        params: Params = None,
        *,
        timeout: Optional[float] = _DEFAULT,
        idempotent: bool = False,
    ) -> ResultSet:
        """Run one statement and return its result. Thread-safe.

        :param statement: nGQL text; ``$name`` refers to ``params[name]`` (sent to the server).
        :param params: server-side parameters.
        :param timeout: reply timeout for this call (default: ``request_timeout``).
        :param idempotent: the statement is safe to run twice, so the client may retry it after a
            failure that left its outcome unknown.
        :raises ServerError: graphd answered with an error code.
        :raises OutcomeUnknown: the request was sent but no reply came (see :class:`RequestTimeout`).
        :raises PoolTimeout: no session became free within ``wait_timeout``.
        """
        # _check() and _prepare() inlined: this is the statement path, where no _Prepared is made
        if self._closed:
            raise ClientClosed("the client is closed")
        if _fork._pid != self._pid:
            self._after_fork()
        if params is None:
            # _encode(), inlined for the common case; it makes the error for anything else
            try:
                stmt = statement.encode() if type(statement) is str else _encode(statement)
            except UnicodeEncodeError:
                stmt = _encode(statement)
            text, values = statement, None
        else:
            prepared = _prepare(statement, params)
            text, stmt, values = prepared.text, prepared.stmt, prepared.params
        if idempotent is not False and idempotent is not True:
            _not_a_flag(idempotent)
        if timeout is _DEFAULT and self._fast_path:
            fast = self._run_fast(text, stmt, values, idempotent)
            if fast is not None:
                return fast
        result: ResultSet = self._run(_Prepared(text, stmt, values), timeout, idempotent)
        return result

    def execute_py(
        self,
        statement: str,
        params: Params = None,
        *,
        timeout: Optional[float] = _DEFAULT,
        idempotent: bool = False,
    ) -> ResultSet:
        """Run a statement with ``{{name}}`` placeholders rendered as escaped nGQL literals.

        ``$name`` references in the statement are sent as server-side parameters. A missing
        placeholder name, or a value that can't be written as a literal, raises before anything is
        sent. Placeholders inside string literals are left alone.
        """
        self._check()
        prepared = _prepare_py(statement, params)
        if idempotent is not False and idempotent is not True:
            _not_a_flag(idempotent)
        if timeout is _DEFAULT and self._fast_path:  # as in execute()
            fast = self._run_fast(prepared.text, prepared.stmt, prepared.params, idempotent)
            if fast is not None:
                return fast
        result: ResultSet = self._run(prepared, timeout, idempotent)
        return result

    def execute_json(
        self,
        statement: str,
        params: Params = None,
        *,
        timeout: Optional[float] = _DEFAULT,
        idempotent: bool = False,
    ) -> Any:
        """Run a statement with graphd's JSON interface; return the parsed JSON document.

        :raises ServerError: the document reports an error code.
        """
        self._check()
        prepared = _prepare(statement, params)
        if idempotent is not False and idempotent is not True:
            _not_a_flag(idempotent)
        doc: Any = self._run(prepared, timeout, idempotent, as_json=True)
        return doc

    @contextmanager
    def session(self, *, wait_timeout: Optional[float] = _DEFAULT) -> Iterator[Session]:
        """Hold one session for a block of statements (e.g. ``USE`` then several queries).

        The :class:`Session` is for the calling thread only. On exit its space is restored (or the
        session is signed out) and it goes back to the pool.
        """
        self._check()
        wait = self._pool_config.wait_timeout if wait_timeout is _DEFAULT else wait_timeout
        if wait is not None:
            check_seconds("wait_timeout", wait, allow_zero=True)
        lease = self._broker.borrow(None if wait is None else time.monotonic() + wait)
        handle = Session(self, lease)
        try:
            yield handle
        finally:
            handle._finish()

    def ping(self, timeout: Optional[float] = _DEFAULT) -> bool:
        """Run ``RETURN 1`` through the normal path; ``True`` if it succeeded, ``False`` on any
        :class:`~nebula_sync.errors.NebulaError` (a bad ``timeout`` is still a ``ValueError``)."""
        try:
            rs = self.execute("RETURN 1", timeout=timeout, idempotent=True)
            return bool(rs.rows() and rs.rows()[0][0] == 1)
        except NebulaError as exc:
            log.debug("ping failed: %s", exc)
            return False

    def health(self, *, web_port: WebPorts = 19669, timeout: float = 2.0) -> HealthReport:
        """Check every host: graphd's HTTP ``/status`` and a Thrift connect + ping, concurrently.

        Borrows no session. Never raises for an unhealthy host: the immutable report says what
        failed, with latencies. See :func:`nebula_sync._health.check_health` for the parameters.
        """
        from nebula_sync._health import check_health

        return check_health(self, web_port=web_port, timeout=timeout)

    def stats(self) -> ClientStats:
        """An immutable snapshot: per host, connections, sessions, waiters, state and counters."""
        hosts = []
        for snap, entry in zip(self._broker.snapshot(), self._hosts):
            idle, active, waiting = entry.conn_pool.counts()
            parked = snap["connections_parked"]  # kept by idle sessions: idle, though checked out
            idle, active = idle + parked, active - parked
            c = snap["counters"]
            hosts.append(
                HostStats(
                    host=snap["host"],
                    state=snap["state"],
                    connections_idle=idle,
                    connections_active=active,
                    connection_waiters=waiting,
                    sessions_idle=snap["sessions_idle"],
                    sessions_busy=snap["sessions_busy"],
                    session_waiters=snap["waiters"],
                    retry_in=snap["retry_in"],
                    last_error=snap["last_error"],
                    statements=c.get("statements", 0),
                    errors=c.get("errors", 0),
                    sessions_created=c.get("sessions_created", 0),
                    sessions_signed_out=c.get("sessions_signed_out", 0),
                    session_renewals=c.get("session_renewals", 0),
                    connections_opened=entry.conn_pool.opened,
                    connections_discarded=entry.conn_pool.discarded,
                    connect_failures=c.get("connect_failures", 0),
                    pings=entry.conn_pool.pings,
                )
            )
        return ClientStats(tuple(hosts), self._closed)

    def close(self) -> None:
        """Stop lending sessions, wait (up to ``close_timeout``) for statements in flight, sign out
        every session and close every connection. Idempotent and thread-safe."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if os.getpid() != self._pid:
            # A forked child that never used the client: drop inherited sockets, sign nothing out.
            self._after_fork()
        self._shutdown(sign_out=True)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> NebulaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # No network I/O here: only a warning. Sockets are released by their own finalizers.
        if not getattr(self, "_closed", True):
            warnings.warn(
                f"unclosed {self!r}: call close() or use 'with NebulaClient(...)'; its sessions stay "
                "open on graphd until they expire",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )

    # ---- internals ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise ClientClosed("the client is closed")
        if _fork.pid() != self._pid:
            self._after_fork()

    def _after_fork(self) -> None:
        """Reset pools in a forked child: drop inherited sockets, never sign out the parent's sessions."""
        with _FORK_LOCK:
            if os.getpid() == self._pid:
                return
            self._auth_lock = threading.Lock()
            self._close_lock = threading.Lock()
            self._orphans_lock = threading.Lock()
            self._orphans = []  # the parent's sessions, and its threads: not this process's
            self._retired = collections.deque(maxlen=_MAX_ORPHANS)
            self._signout_threads = set()
            self._signouts_listed = False
            self._broker.drop_after_fork()
            for host in self._hosts:
                host.state = HostState.UP
                host.failures = 0
                host.retry_at = 0.0
            # Assigned last: other threads compare it without the lock.
            self._pid = os.getpid()

    def _shutdown(self, *, sign_out: bool) -> None:
        idle = self._broker.close(self._close_timeout)
        try:
            if sign_out:
                self._sign_out_all(idle)
        finally:
            for host, session in idle:  # connections kept by sessions a failed step left behind
                kept, session.conn = session.conn, None
                if kept is not None:
                    host.conn_pool.release(kept)
            abort = self._broker.busy_count() > 0
            for host in self._hosts:
                # Statements still running past close_timeout are cut off: their callers get
                # OutcomeUnknown (shutdown() wakes a thread blocked reading).
                host.conn_pool.close(abort_active=abort)

    def _sign_out_all(self, idle: list[tuple[HostEntry, ServerSession]]) -> None:
        """:meth:`close`'s sign-outs: the idle sessions, and those earlier sign-outs missed."""
        with self._orphans_lock:
            threads = list(self._signout_threads)
            self._signouts_listed = True
        # sign-outs on their way: let them finish (or fail) first; each is bounded by
        # connect_timeout, and all of them together by close_timeout
        limit = None if self._close_timeout is None else time.monotonic() + self._close_timeout
        for thread in threads:
            thread.join(None if limit is None else max(0.0, limit - time.monotonic()))
        with self._orphans_lock:
            orphans, self._orphans = self._orphans, []
        unreachable: set[str] = set()  # hosts a sign-out could not reach: not tried again
        for host, session in [*idle, *orphans]:
            self._signout(host, session, None, unreachable)
        pending = {id(session) for _, session in orphans}
        for host, session in list(self._retired):
            if id(session) not in pending and host.name not in unreachable:
                # once more: a oneway sign-out sent as a fault cut its connection is lost without a
                # trace (graphd ignores a sign-out of a session it no longer has); not counted
                try:
                    self._signout_on_another(host, session)
                except NebulaError as exc:
                    if isinstance(exc, ConnectionFailed):
                        unreachable.add(host.name)
        self._retired.clear()

    def _run(self, prepared: _Prepared, timeout: Optional[float], idempotent: bool,
             as_json: bool = False, *, lease: Lease | None = None, attempts: int = 0,
             start: float | None = None, unknown: OutcomeUnknown | None = None,
             avoid: HostEntry | None = None) -> Any:  # fmt: skip
        """The general statement path: borrow, attempt, retry as the rules allow.

        :meth:`_run_fast` continues here: with the ``lease`` it borrowed (to be checked in full),
        or after its failed first attempt (``attempts=1``), keeping its ``start``; ``unknown``:
        that attempt's error if the statement may have run. Once an attempt's outcome is unknown,
        that is what the call raises if a retry fails too: a later "not sent" or "pool timeout"
        would hide that the statement may have run. ``avoid``: a host that refused this call a new
        session (see :meth:`_elsewhere`).
        """
        req_timeout = self._conn_config.request_timeout if timeout is _DEFAULT else (
            _request_timeout(self._conn_config, timeout)
        )
        if start is None:
            start = time.monotonic()
        wait_deadline, overall = self._deadlines(start, req_timeout)
        while True:
            attempts += 1
            if lease is None:
                try:
                    lease = self._broker.borrow(wait_deadline, avoid)  # wait_deadline <= overall
                except NebulaError as exc:
                    raise _first_unknown(exc, unknown)  # noqa: B904  (exc is its __context__)
            try:
                resp, session = self._attempt(lease, prepared, req_timeout, overall, as_json,
                                              restore_space=True)  # fmt: skip
            except (ConnectionFailed, OutcomeUnknown) as exc:
                if isinstance(exc, OutcomeUnknown):
                    unknown = exc
                if self._may_retry(exc, attempts, overall, idempotent):
                    lease = None
                    continue
                raise _first_unknown(exc, unknown)  # noqa: B904
            except AuthenticationError as exc:
                # A host refused a new session for a reason other than the credentials (its
                # per-user session limit): the statement was not sent, so it may go on on a session
                # of another host, or one this host already has (none is made there for it).
                if attempts <= len(self._hosts) and _left(overall) and self._elsewhere(exc, lease.host):
                    log.debug("trying another host after: %s", exc)
                    avoid, lease = lease.host, None
                    continue
                raise _first_unknown(exc, unknown)  # noqa: B904
            except NebulaError as exc:  # the client closed during a retry, say; or graphd's reply
                raise _first_unknown(exc, unknown)  # noqa: B904
            return self._result(resp, prepared, lease.host, session, start, as_json)

    def _deadlines(self, start: float, req_timeout: Optional[float]) -> tuple[float | None, float | None]:
        """``(wait_deadline, overall)`` for a statement started at ``start``."""
        wait_timeout = self._pool_config.wait_timeout
        if wait_timeout is None:
            return None, None
        # One bound for the whole operation (borrow, connect, authenticate, retries, reply), so
        # a caller never waits longer than wait_timeout + request_timeout.
        wait_deadline = start + wait_timeout
        return wait_deadline, None if req_timeout is None else wait_deadline + req_timeout

    def _may_retry(self, exc: NebulaError, attempts: int, overall: float | None, idempotent: bool) -> bool:
        """Whether a failed attempt is tried again: on another host if nothing ran
        (``ConnectionFailed``), or when the outcome is unknown and the caller said the statement is
        idempotent; never beyond one attempt per host plus one, or past ``overall``.
        """
        if attempts >= len(self._hosts) + 1 or not _left(overall):
            return False
        if isinstance(exc, ConnectionFailed):
            if self._any_host_usable():
                log.debug("retrying on another host after: %s", exc)
                return True
            return False
        if idempotent:
            log.debug("retrying idempotent statement after: %s", exc)
            return True
        return False

    def _run_fast(self, text: str, stmt: bytes, values: dict[bytes, ttypes.Value] | None,
                  idempotent: bool) -> ResultSet | None:  # fmt: skip
        """The statement path's common case, with the fewest steps: an idle session that kept a
        fresh connection, the default timeout, a plain success. ``None`` if it does not apply
        (nothing was borrowed); anything unusual goes to the general helpers.

        Same rules as :meth:`_run` + :meth:`_attempt` (tests run both): the connection gets the
        checks :meth:`ConnectionPool.reuse` makes, the session :meth:`_too_old`'s, a reply that is
        not a plain success :meth:`_settle`, and a failure the same retry decision
        (:meth:`_may_retry`). No :class:`Lease` or :class:`_Prepared` is made unless one of those
        is needed. ``text``, ``stmt``, ``values``: the fields of a :class:`_Prepared`.
        """
        taken = self._broker.take_ready()
        if taken is None:
            return None
        host, session, conn = taken
        start = time.monotonic()
        sent = False
        try:  # from here on the session is ours: any exception (Ctrl-C in the poll too) gives it back
            # (a connection from before a fork never gets here: execute() reset the pools first)
            if (start - conn.last_used > self._fresh_conn_idle
                    or start - session.last_used > self._fresh_session_idle
                    or start - conn.created_at > self._fresh_conn_life
                    or start - session.created_at > self._fresh_session_life
                    or conn.is_dropped()):  # fmt: skip
                # Too old, to be pinged, or dropped: the general path checks it all again, in full.
                lease: Lease | None = Lease(host, session)
            else:
                lease = None
                session.conn = None
                req_timeout = self._conn_config.request_timeout
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("[%s] session %d: %.200s", conn.host, session.id,
                              redact_statement(text))  # fmt: skip
                sent = True
                resp = conn.execute(session.id, stmt, values,
                                    None if req_timeout is None else start + req_timeout, start)  # fmt: skip
        except BaseException as exc:
            return self._fast_rest(host, session, conn, _Prepared(text, stmt, values), idempotent, start,
                                   None, exc, sent)  # fmt: skip
        if lease is not None:
            prepared = _Prepared(text, stmt, values)
            return cast("ResultSet", self._run(prepared, _DEFAULT, idempotent, lease=lease, start=start))
        raw_space = resp.space_name
        if raw_space is not None and raw_space != session.space_raw:
            session.space_raw = raw_space
            session.space = raw_space.decode("utf-8", "replace")
        end = conn.last_used  # the time the reply was in (Connection.execute sets it): one clock read less
        if resp.error_code != 0 or session.space != self._home_space or not self._broker.give_back_ready(
            host, session, conn, end
        ):
            prepared = _Prepared(text, stmt, values)
            return self._fast_rest(host, session, conn, prepared, idempotent, start, resp, None, True)
        # _result(), inlined; a connection from a connection_factory may return a plain struct
        elapsed_us = int((end - start) * 1_000_000)
        if type(resp) is DecodedResponse:
            return _wrap_decoded(resp, text, host.name, elapsed_us, session.timezone_offset)
        return ResultSet.from_response(resp, statement=text, host=host.name, elapsed_us=elapsed_us,
                                       timezone_offset=session.timezone_offset)  # fmt: skip

    def _fast_rest(self, host: HostEntry, session: ServerSession, conn: Connection, prepared: _Prepared,
                   idempotent: bool, start: float, resp: Any, exc: BaseException | None,
                   sent: bool) -> ResultSet:  # fmt: skip
        """:meth:`_run_fast` after a failure (``exc``) or a reply that is not a plain success:
        what :meth:`_attempt` and :meth:`_run` do from the same point. ``sent``: the statement
        was handed to the connection (counted as one)."""
        lease = Lease(host, session, statements=int(sent))
        session.conn = None  # checked out (it may not have been yet): _checkin() decides
        req_timeout = self._conn_config.request_timeout
        overall = self._deadlines(start, req_timeout)[1]
        try:
            try:
                if exc is not None:
                    raise exc
                if resp.error_code != 0 or session.space != self._home_space:
                    resp, session = self._settle(lease, conn, session, resp, resp.error_code, prepared,
                                                 req_timeout, overall, False, restore_space=True)  # fmt: skip
            except ProtocolError as error:  # as in _attempt: a sent statement's outcome is unknown
                if not sent:
                    raise
                raise _unreadable(error)  # noqa: B904  (_unreadable chains error as the cause)
            finally:
                self._checkin(lease, conn)
        except (ConnectionFailed, OutcomeUnknown) as error:
            if sent and isinstance(error, OutcomeUnknown):  # as in _attempt: graphd may still run it
                self._retire(lease, None)
            self._give_back(lease)
            if self._may_retry(error, 1, overall, idempotent):
                earlier = error if isinstance(error, OutcomeUnknown) else None
                return cast("ResultSet", self._run(prepared, _DEFAULT, idempotent, attempts=1, start=start,
                                                   unknown=earlier))  # fmt: skip
            raise
        except AuthenticationError as error:  # renewing a session graphd had lost was refused
            self._give_back(lease)
            if _left(overall) and self._elsewhere(error, host):
                return cast("ResultSet", self._run(prepared, _DEFAULT, idempotent, attempts=1, start=start,
                                                   avoid=host))  # fmt: skip
            raise
        except BaseException as error:
            if sent and not isinstance(error, ServerError):
                self._retire(lease, None)
            self._give_back(lease)
            raise
        self._give_back(lease)
        return cast("ResultSet", self._result(resp, prepared, host, session, start, False))

    def _retire(self, lease: Lease, conn: Connection | None) -> None:
        """Drop the lease's session after a statement sent on it got no usable reply (none in time,
        a broken connection, a reply too big or malformed, Ctrl-C while waiting). graphd may still
        be running the statement, and a session runs one statement at a time: the session is
        signed out (on ``conn`` if that is still sound, else from a background thread, or in this
        one once close() no longer waits for threads; close() sends it once more) and never used
        again. The slot gets a new session when it is next needed; a session block goes on with a
        new session in the block's last known space."""
        session, lease.session = lease.session, None
        if session is not None:
            self._retired.append((lease.host, session))
            self._signout(lease.host, session, conn, wait=False)

    def _elsewhere(self, exc: AuthenticationError, host: HostEntry) -> bool:
        """Whether a call ``host`` refused a new session may go on elsewhere: the refusal is not
        about the credentials (it is graphd's per-user session limit, say), and another host is
        up or due for a re-probe. Nothing was sent."""
        return exc.code != _BAD_CREDENTIALS and self._any_host_usable(other_than=host)

    def _give_back(self, lease: Lease) -> None:
        """Return a lease to the broker (signing out its session if the client closed meanwhile)."""
        leftover = self._broker.release(lease, lease.session)
        if leftover is not None:
            self._signout(lease.host, leftover, None)

    def _any_host_usable(self, other_than: HostEntry | None = None) -> bool:
        """Whether a host (but ``other_than``) is up or due for a re-probe."""
        now = time.monotonic()
        return any(h is not other_than and (h.state == HostState.UP or now >= h.retry_at)
                   for h in self._hosts)  # fmt: skip

    def _result(self, resp: Any, prepared: _Prepared, host: HostEntry, session: ServerSession | None,
                start: float, as_json: bool) -> Any:  # fmt: skip
        if as_json:
            return resp
        elapsed_us = int((time.monotonic() - start) * 1_000_000)
        return ResultSet.from_response(
            resp,
            statement=prepared.text,
            host=host.name,
            elapsed_us=elapsed_us,
            timezone_offset=session.timezone_offset if session is not None else 0,
        )

    def _attempt(
        self,
        lease: Lease,
        prepared: _Prepared,
        req_timeout: Optional[float],
        overall: Optional[float],
        as_json: bool,
        *,
        restore_space: bool,
        release: bool = True,
        space: str | None = None,
    ) -> tuple[Any, ServerSession | None]:
        """Run one statement on the lease's host. Gives the lease back unless ``release`` is off.
        ``space``: where a session made here must be before the statement runs (a session block's
        space, when its session had to be replaced)."""
        host = lease.host
        try:
            conn = self._checkout(lease, overall)
            if lease.probe:
                self._broker.mark_up(host)
            try:
                session = lease.session
                if session is not None and self._ages_sessions and self._too_old(session):
                    lease.session = None
                    self._signout(host, session, conn, wait=False)
                    session = None
                if session is None:
                    session = lease.session = self._authenticate(host, conn, overall)
                    if space and session.space != space:
                        self._move_to(host, lease, conn, session, space, overall)
                lease.statements += 1
                try:
                    resp, code = self._send(conn, session, prepared, req_timeout, overall, as_json)
                    if code != 0 or (restore_space and session.space != self._home_space):
                        resp, session = self._settle(lease, conn, session, resp, code, prepared,
                                                     req_timeout, overall, as_json,
                                                     restore_space=restore_space, space=space)  # fmt: skip
                except ServerError:
                    raise  # a reply came, and _settle left the session where it belongs
                except ConnectionFailed:
                    raise  # the statement was not sent (or not whole): the session is fine
                except ProtocolError as exc:  # sent, and the reply could not be read
                    self._retire(lease, conn)
                    raise _unreadable(exc)  # noqa: B904  (_unreadable chains exc as the cause)
                except BaseException:
                    # sent, and no usable reply (none, too big, malformed, Ctrl-C while waiting):
                    # graphd may still be running it
                    self._retire(lease, conn)
                    raise
                return resp, session
            finally:
                self._checkin(lease, conn)
        finally:
            if release:
                self._give_back(lease)
            elif lease.statements or lease.errors:
                # A held session (client.session()) counts as it goes, not when it is returned.
                self._broker.count(host, "statements", lease.statements)
                self._broker.count(host, "errors", lease.errors)
                lease.statements = lease.errors = 0

    def _settle(
        self,
        lease: Lease,
        conn: Connection,
        session: ServerSession,
        resp: Any,
        code: int,
        prepared: _Prepared,
        req_timeout: Optional[float],
        overall: Optional[float],
        as_json: bool,
        *,
        restore_space: bool,
        space: str | None = None,
    ) -> tuple[Any, ServerSession]:
        """After an attempt's reply, when it is not a plain success: renew a session graphd no
        longer knows and send once more, raise a server error, or put the session back in the
        configured space before it returns to the pool. ``space``: a session block's last known
        space, for a renewal when the session's own is unknown.
        """
        host = lease.host
        if code in _SESSION_INVALID:
            # graphd rejected the statement before running it: renew the session, retry once.
            self._broker.count(host, "session_renewals")
            lost_space = session.space or space
            lease.session = None
            session = lease.session = self._authenticate(host, conn, overall)
            if not restore_space and lost_space and lost_space != session.space:
                # A held session (client.session()) had switched space: a renewed one must run
                # the statement in that space too, not the configured one.
                self._move_to(host, lease, conn, session, lost_space, overall)
            resp, code = self._send(conn, session, prepared, req_timeout, overall, as_json)
            if code in _SESSION_INVALID:
                lease.session = None  # rejected again: don't pool it
        if code != 0:
            lease.errors += 1
            error = self._server_error(resp, code, prepared, host, as_json)
            if restore_space and lease.session is not None and lease.session.space != self._home_space:
                # "USE other; <fails>" moved the session before failing: it must not go back to
                # the pool in that space (the next caller's statement would run there).
                self._restore_space(host, lease, conn, overall)
            raise error
        if restore_space and session.space != self._home_space:
            self._restore_space(host, lease, conn, overall)
        return resp, session

    def _checkout(self, lease: Lease, deadline: float | None) -> Connection:
        """The connection for this lease: the one its session kept (validated), else a pooled one.

        :raises ConnectionFailed: no connection could be opened; the host is marked down.
        """
        host = lease.host
        session = lease.session
        if session is not None and session.conn is not None:
            conn, session.conn = session.conn, None
            if host.conn_pool.reuse(conn, deadline):
                return conn
        began = time.monotonic()
        try:
            return host.conn_pool.acquire(deadline)
        except ConnectionFailed as exc:
            # A connect the caller's own deadline cut short (less than connect_timeout was left)
            # within moments says nothing about the host: it is not marked down for everyone. One
            # that waited longer is evidence (a hung graphd must be found with short deadlines
            # too), and a failed re-probe of a down host always restarts its backoff.
            now = time.monotonic()
            limit = self._conn_config.connect_timeout
            own = (deadline is not None and not lease.probe and now >= deadline
                   and now - began < _CONNECT_EVIDENCE
                   and (limit is None or deadline - began < limit))  # fmt: skip
            if not isinstance(exc, IncompatibleServer) and not own:
                self._broker.mark_down(host, exc)
            raise

    def _checkin(self, lease: Lease, conn: Connection) -> None:
        """After a statement: the session keeps a healthy connection; otherwise the pool gets it."""
        session = lease.session
        if session is not None and self._keep_conns and not self._broker.closed and conn.is_usable:
            # kept while idle: the next borrower skips the connection pool
            session.conn = conn
        else:
            lease.host.conn_pool.release(conn)

    def _too_old(self, session: ServerSession) -> bool:
        # the limits _run_fast compares inline (infinity where none is set)
        now = time.monotonic()
        return (now - session.last_used > self._fresh_session_idle
                or now - session.created_at > self._fresh_session_life)  # fmt: skip

    def _use(self, host: HostEntry, conn: Connection, session: ServerSession, space: str,
             deadline: float | None) -> None:  # fmt: skip
        """Switch ``session`` to ``space`` (raises the server's error if it can't)."""
        prepared = _prepare(SessionConfig(space=space).use_statement() or "", None)
        reply, code = self._send(conn, session, prepared, self._conn_config.request_timeout, deadline, False)
        if code != 0:
            raise self._server_error(reply, code, prepared, host, False)

    def _move_to(self, host: HostEntry, lease: Lease, conn: Connection, session: ServerSession, space: str,
                 deadline: float | None) -> None:  # fmt: skip
        """Put a session just made for a session block into the block's ``space`` before its
        statement runs. On failure the session is dropped (never used in another space); no
        (readable) reply to the ``USE`` is a :class:`ConnectionFailed`: the statement was not sent."""
        try:
            self._use(host, conn, session, space, deadline)
        except BaseException as exc:
            lease.session = None
            self._signout(host, session, conn, wait=False)
            if isinstance(exc, (OutcomeUnknown, ProtocolError)):
                raise _not_sent("the USE of the session block's space", host, exc) from exc
            raise

    def _send(
        self,
        conn: Connection,
        session: ServerSession,
        prepared: _Prepared,
        req_timeout: Optional[float],
        overall: Optional[float],
        as_json: bool,
    ) -> tuple[Any, int]:
        deadline = _earlier(overall, None if req_timeout is None else time.monotonic() + req_timeout)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("[%s] session %d: %.200s", conn.host, session.id, redact_statement(prepared.text))
        if as_json:
            raw = conn.execute_json(session.id, prepared.stmt, prepared.params, deadline)
            try:
                doc = json.loads(_json_text(raw))
                code = int(doc["errors"][0]["code"])
                results = doc.get("results") or [{}]
                space = results[0].get("spaceName")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError,
                    RecursionError) as exc:  # fmt: skip
                # (a list where a map belongs, an infinite code, nesting deeper than Python's stack)
                raise ProtocolError(f"graphd returned malformed JSON: {exc!r}", host=conn.host) from exc
            if space is not None:
                session.space = str(space)
                session.space_raw = session.space.encode("utf-8")
            return doc, code
        resp = conn.execute(session.id, prepared.stmt, prepared.params, deadline)
        raw_space = resp.space_name
        if raw_space is not None and raw_space != session.space_raw:
            session.space_raw = raw_space
            session.space = raw_space.decode("utf-8", "replace")
        return resp, resp.error_code

    def _server_error(self, resp: Any, code: int, prepared: _Prepared, host: HostEntry,
                      as_json: bool) -> NebulaError:  # fmt: skip
        if as_json:
            message = str(resp["errors"][0].get("message", ""))
            space = None
        else:
            message = (resp.error_msg or b"").decode("utf-8", "replace")
            space = resp.space_name.decode("utf-8", "replace") if resp.space_name else None
        return lookup(code)(
            message or error_code_name(code), code=code, statement=prepared.text, host=host.name, space=space
        )

    def _authenticate(self, host: HostEntry, conn: Connection, deadline: float | None) -> ServerSession:
        """Create a session on ``conn`` and apply :class:`SessionConfig` to it."""
        with self._auth_lock:
            if self._auth_error is not None and time.monotonic() < self._auth_retry_at:
                err = self._auth_error
                raise AuthenticationError(
                    f"{err.message} (not retried for another "
                    f"{self._auth_retry_at - time.monotonic():.2f}s after {self._auth_failures} failure(s))",
                    code=err.code,
                    host=err.host,
                )
        # Every request of the set-up is bounded by request_timeout, as a statement's reply is,
        # even when the call has no overall deadline (wait_timeout=None).
        req_timeout = self._conn_config.request_timeout
        reply_by = _earlier(deadline, None if req_timeout is None else time.monotonic() + req_timeout)
        try:
            resp = conn.authenticate(self._username, self._password, reply_by)
        except (OutcomeUnknown, ProtocolError) as exc:
            raise _not_sent("authenticate", host, exc) from exc
        if resp.error_code != 0 or resp.session_id is None:
            msg = (resp.error_msg or b"").decode("utf-8", "replace") or error_code_name(resp.error_code or 0)
            err = AuthenticationError(
                f"authentication of user {self._username!r} on {host.name} failed: "
                f"{error_code_name(resp.error_code or 0)}: {msg}",
                code=resp.error_code or 0,
                host=host.name,
            )
            if err.code == _BAD_CREDENTIALS:
                with self._auth_lock:
                    # Back off exponentially so a wrong password does not hammer graphd. (Other
                    # refusals, such as one host's per-user session limit, are that host's: the
                    # call may go on on another host, see _run.)
                    self._auth_failures += 1
                    self._auth_error = err
                    self._auth_retry_at = time.monotonic() + min(2.0, 0.05 * 2 ** (self._auth_failures - 1))
            raise err
        with self._auth_lock:
            self._auth_failures = 0
            self._auth_error = None
        name = (resp.time_zone_name or b"").decode("utf-8", "replace")
        session = ServerSession(resp.session_id, resp.time_zone_offset_seconds or 0, name)
        self._broker.count(host, "sessions_created")
        try:
            cfg = self._session_config
            setup = [s for s in (cfg.use_statement(), *cfg.init_statements) if s]
            for text in setup:
                prepared = _prepare(text, None)
                reply, code = self._send(conn, session, prepared, req_timeout, deadline, False)
                if code != 0:
                    raise self._server_error(reply, code, prepared, host, False)
        except BaseException as exc:
            self._signout(host, session, conn, wait=False)
            if isinstance(exc, (OutcomeUnknown, ProtocolError)):
                raise _not_sent("the session set-up", host, exc) from exc
            raise
        return session

    def _restore_space(self, host: HostEntry, lease: Lease, conn: Connection, deadline: float | None) -> None:
        """Put a session back in the configured space (or drop it) before it returns to the pool."""
        session = lease.session
        if session is None:
            return
        wanted = self._session_config.space
        if wanted is None:
            if session.space:
                # No configured space to go back to: a session that chose one is not shared.
                lease.session = None
                self._signout(host, session, conn, wait=False)
            return
        if session.space == wanted:
            return
        stmt = self._session_config.use_statement()
        assert stmt is not None
        try:
            reply, code = self._send(conn, session, _prepare(stmt, None), self._conn_config.request_timeout,
                                     deadline, False)  # fmt: skip
        except NebulaError:
            code = -1
        if code != 0:
            lease.session = None
            self._signout(host, session, conn, wait=False)

    def _signout(self, host: HostEntry, session: ServerSession, conn: Connection | None,
                 unreachable: set[str] | None = None, *, wait: bool = True) -> None:  # fmt: skip
        """Sign a session out (oneway, best effort) on ``conn``, else on the connection the session
        kept, else on a pooled or new one. The kept connection goes back to the pool.

        A connection the peer has closed is skipped: a oneway request written after its FIN is
        lost without an error (the send succeeds), and one after its RST fails; either way the
        session would stay on graphd until its idle timeout. ``unreachable`` (names of hosts, from
        :meth:`close`): a host whose pooled or new connection failed once is not tried again for
        the next session, as each try can take ``connect_timeout``; graphd drops those sessions
        after its idle timeout. ``wait=False`` (on a statement's path): a sign-out that needs
        another connection is sent from a background thread, so that the caller's deadline holds.
        """
        parked, session.conn = session.conn, None
        signed_out = False
        try:
            for use in (conn, parked):
                if use is None or not use.is_usable or use.is_dropped():
                    continue
                try:
                    use.signout(session.id)
                except NebulaError as exc:
                    log.debug("sign-out of session %d on %s failed, trying another connection: %s",
                              session.id, host.name, exc)  # fmt: skip
                    continue
                signed_out = True
                break
        finally:
            # Back to the pool before another is taken: in a full pool its slot is the one needed.
            if parked is not None:
                host.conn_pool.release(parked)
        if not signed_out:
            if unreachable is not None and host.name in unreachable:
                log.debug("not signing out session %d on %s: the host could not be reached",
                          session.id, host.name)  # fmt: skip
                return
            if not wait:
                # opening a connection can take connect_timeout, past the caller's deadline
                thread = threading.Thread(target=self._signout_in_background, args=(host, session),
                                          name=f"nebula_sync-signout-{host.name}", daemon=True)  # fmt: skip
                with self._orphans_lock:
                    wait = self._signouts_listed  # close() would not wait for a thread now
                    if not wait:
                        # started under the lock: close() only ever sees (and joins) started
                        # threads, and the thread's own discard waits for the add
                        self._signout_threads.add(thread)
                        try:
                            thread.start()
                        except RuntimeError:  # no thread to be had: close() signs it out
                            self._signout_threads.discard(thread)
                            if len(self._orphans) < _MAX_ORPHANS:
                                self._orphans.append((host, session))
                if not wait:
                    return
            self._signout_elsewhere(host, session, unreachable)
            return
        self._broker.count(host, "sessions_signed_out")

    def _signout_in_background(self, host: HostEntry, session: ServerSession) -> None:
        try:
            self._signout_elsewhere(host, session, None)
        finally:
            with self._orphans_lock:
                self._signout_threads.discard(threading.current_thread())

    def _signout_elsewhere(self, host: HostEntry, session: ServerSession,
                           unreachable: set[str] | None) -> None:  # fmt: skip
        """:meth:`_signout`'s last resort: a pooled or new connection (best effort, logged). A
        session it cannot sign out outside :meth:`close` is kept for close() to try again."""
        try:
            self._signout_on_another(host, session)
        except NebulaError as exc:
            log.debug("could not sign out session %d on %s: %s", session.id, host.name, exc)
            if unreachable is not None:
                if isinstance(exc, ConnectionFailed):
                    unreachable.add(host.name)
            elif os.getpid() == self._pid:
                with self._orphans_lock:
                    if len(self._orphans) < _MAX_ORPHANS:  # else graphd's idle timeout takes it
                        self._orphans.append((host, session))
            return
        self._broker.count(host, "sessions_signed_out")

    def _signout_on_another(self, host: HostEntry, session: ServerSession) -> None:
        """Send a sign-out on a pooled connection (validated by the pool), or on a new one that is
        closed at once if the pool is closed. Raises ``NebulaError`` if it can't."""
        deadline = time.monotonic() + (self._conn_config.connect_timeout or 5.0)
        try:
            other = host.conn_pool.acquire(deadline)
        except ClientClosed:
            other = self._factory(host.address, self._conn_config)
            other.open(deadline)
            try:
                other.signout(session.id)
            finally:
                other.close()
        else:
            try:
                other.signout(session.id)
            finally:
                host.conn_pool.release(other)


class Session:
    """One session held for a block of statements (see :meth:`NebulaClient.session`).

    Not thread-safe: use it from the thread that opened it. Statements run one at a time; a second
    thread calling it at the same time gets a ``RuntimeError``.
    """

    def __init__(self, client: NebulaClient, lease: Lease) -> None:
        self._client = client
        self._lease = lease
        self._busy = threading.Lock()
        self._done = False
        self._returned = False  # the lease went back (see _return_lease_if_free)
        #: the space the block's session was last seen in: a session that has to be replaced
        #: during the block (lost, too old) is moved there before the statement runs
        self._space: str | None = None
        #: the process the block was opened in: in a child forked inside the block, the session
        #: is the parent's, and the child must neither use it nor give it back (or sign it out)
        self._pid = _fork._pid

    @property
    def host(self) -> str:
        """The graphd this session lives on."""
        return self._lease.host.name

    @property
    def space(self) -> str:
        """The session's current space as graphd last reported it (``""`` before any; also after a
        statement that got no usable reply, which retires the session, until the next statement
        runs on its replacement)."""
        session = self._lease.session
        return "" if session is None else session.space

    def execute(self, statement: str, params: Params = None, *,
                timeout: Optional[float] = _DEFAULT, idempotent: bool = False) -> ResultSet:  # fmt: skip
        """Run a statement on this session (see :meth:`NebulaClient.execute`)."""
        result: ResultSet = self._run(_prepare(statement, params), timeout, idempotent, False)
        return result

    def execute_py(self, statement: str, params: Params = None, *,
                   timeout: Optional[float] = _DEFAULT, idempotent: bool = False) -> ResultSet:  # fmt: skip
        """Run a statement with ``{{name}}`` placeholders (see :meth:`NebulaClient.execute_py`)."""
        result: ResultSet = self._run(_prepare_py(statement, params), timeout, idempotent, False)
        return result

    def execute_json(self, statement: str, params: Params = None, *,
                     timeout: Optional[float] = _DEFAULT, idempotent: bool = False) -> Any:  # fmt: skip
        """Run a statement through graphd's JSON interface; the parsed document."""
        return self._run(_prepare(statement, params), timeout, idempotent, True)

    def _run(self, prepared: _Prepared, timeout: Optional[float], idempotent: bool, as_json: bool) -> Any:
        client = self._client
        client._check()
        if self._pid != _fork._pid:
            raise ClientClosed(
                "this session() block was opened before fork(): its session belongs to the parent "
                "process; open a new session() in this process"
            )
        if idempotent is not False and idempotent is not True:
            _not_a_flag(idempotent)
        if not self._busy.acquire(blocking=False):
            if self._done:
                raise ClientClosed("this session block has ended")
            raise RuntimeError("a Session runs one statement at a time; it is used by another thread")
        try:
            if self._done:  # checked under the lock: _finish() takes it before giving the lease back
                raise ClientClosed("this session block has ended")
            req_timeout = _request_timeout(client._conn_config, timeout)
            start = time.monotonic()
            overall = None if req_timeout is None else start + req_timeout
            if self._lease.session is not None:
                self._space = self._lease.session.space  # after the block's earlier statements
            attempts = 0
            unknown: OutcomeUnknown | None = None
            while True:
                attempts += 1
                try:
                    resp, session = client._attempt(self._lease, prepared, req_timeout, overall, as_json,
                                                    restore_space=False, release=False,
                                                    space=self._space)  # fmt: skip
                except (ConnectionFailed, OutcomeUnknown) as exc:
                    if isinstance(exc, OutcomeUnknown):
                        unknown = exc
                    # once more on this session's host: nothing was sent (ConnectionFailed), or
                    # the caller said running the statement twice is safe
                    if attempts < 2 and (idempotent or isinstance(exc, ConnectionFailed)) and _left(overall):
                        continue
                    raise _first_unknown(exc, unknown)  # noqa: B904
                except NebulaError as exc:  # a retry that could not even start a session, say
                    raise _first_unknown(exc, unknown)  # noqa: B904
                return client._result(resp, prepared, self._lease.host, session, start, as_json)
        finally:
            self._busy.release()
            if self._done:  # the block ended while this statement ran: its lease goes back now
                self._return_lease_if_free()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True  # no statement starts any more
        self._return_lease_if_free()

    def _return_lease_if_free(self) -> None:
        """Give the lease back unless a statement still runs on the block (a misuse, from another
        thread, or this one's from a signal handler): then that statement does it as it ends, so
        the session never goes back to the pool mid-statement, and nobody waits here. Called
        with ``_done`` set: whichever of the block's end and the statement's end comes last
        finds the lock free. At most once."""
        if self._pid != _fork._pid:
            return  # the parent's session: not this process's to give back or sign out
        if not self._busy.acquire(blocking=False):
            return
        try:
            if not self._returned:
                self._returned = True
                self._return_lease()
        finally:
            self._busy.release()

    def _return_lease(self) -> None:
        """Put the session back in the configured space, and give the lease back (always: also
        when that is interrupted, which drops the session instead)."""
        client = self._client
        lease = self._lease
        try:
            session = lease.session
            if session is not None and not client._broker.closed and session.space != client._home_space:
                try:
                    limit = client._conn_config.connect_timeout or 5.0
                    conn = client._checkout(lease, time.monotonic() + limit)
                except NebulaError:
                    lease.session = None
                    client._signout(lease.host, session, None)
                else:
                    try:
                        client._restore_space(lease.host, lease, conn, None)
                    finally:
                        client._checkin(lease, conn)
        except BaseException:
            # interrupted (Ctrl-C) while putting the session back: it may be in any space
            client._retire(lease, None)
            raise
        finally:
            leftover = client._broker.release(lease, lease.session)
            if leftover is not None:
                client._signout(lease.host, leftover, None)


# ---- fork handling -----------------------------------------------------------------------------

_FORK_LOCK = threading.Lock()
_CLIENTS: weakref.WeakSet[NebulaClient] = weakref.WeakSet()


def _register_fork_handler(client: NebulaClient) -> None:
    _CLIENTS.add(client)
    # multiprocessing's forked workers end with os._exit(): atexit handlers (where a client is
    # usually closed) never run there, and each worker would leave its sessions on graphd until
    # they expire. multiprocessing runs its own finalizers first: have it close the client there.
    multiprocessing.util.register_after_fork(client, _close_when_worker_ends)


def _close_when_worker_ends(client: NebulaClient) -> None:
    """In a new multiprocessing worker (after its registry reset): close ``client`` as it ends.
    Signs out only the worker's own sessions (the parent's were dropped at the fork)."""
    multiprocessing.util.Finalize(client, _close_if_alive, args=(weakref.ref(client),), exitpriority=10)


def _close_if_alive(ref: weakref.ref[NebulaClient]) -> None:
    client = ref()
    if client is not None:
        client.close()


def _reset_after_fork() -> None:
    # The child has one thread; every lock the parent's threads held is recreated.
    global _FORK_LOCK
    _FORK_LOCK = threading.Lock()
    for client in list(_CLIENTS):
        if not client._closed:
            client._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)

