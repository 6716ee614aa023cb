"""The fake graphd server: a threaded TCP server speaking graphd's Thrift protocol."""

from __future__ import annotations

import collections
import ipaddress
import logging
import re
import secrets
import selectors
import socket
import ssl
import struct
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Optional, Union

import attrs
from thrift.protocol.TProtocol import TProtocolException
from thrift.Thrift import TApplicationException

from nebula_sync._thrift import service, ttypes, wire
from nebula_sync._thrift.ttypes import Struct
from nebula_sync.errors import ProtocolError
from nebula_sync.testing import _engine
from nebula_sync.testing._compact import parse_compact_message
from nebula_sync.testing._http import FakeWebService
from nebula_sync.testing._json import response_json
from nebula_sync.testing._model import (
    EXECUTE_METHODS,
    Drop,
    LoggedStatement,
    RawReply,
    ReplyContext,
    Rule,
    ServerStats,
    SessionInfo,
    monotonic,
)

__all__ = ["FakeGraphd"]

log = logging.getLogger("nebula_sync.testing")

E_BAD_USERNAME_PASSWORD = -1001
E_SESSION_INVALID = -1002
E_CLIENT_SERVER_INCOMPATIBLE = -3061

_READ_LENGTH = struct.Struct("!I").unpack
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take to finish the TLS handshake
_RECV_CHUNK = 256 * 1024  # the most a connection reads ahead of what has arrived
# How long the accept loop leaves a listener alone after accept() or select() failed in a way that
# would fail again at once (EMFILE: out of file descriptors): retrying at once would spin a core.
_ACCEPT_BACKOFF = 0.1


def _to_value(obj: Any, name: str) -> ttypes.Value:
    """Python value (or a ready ``ttypes.Value``) -> ``ttypes.Value``, via ``nebula_sync._params``."""
    if isinstance(obj, ttypes.Value):
        return obj
    from nebula_sync import _params  # imported late: only scripted Python rows need it

    value: ttypes.Value = _params.to_value(obj, name)
    return value


def _make_dataset(columns: Optional[Sequence[str]], rows: Optional[Iterable[Sequence[Any]]]
                  ) -> Optional[ttypes.DataSet]:  # fmt: skip
    if columns is None and rows is None:
        return None
    if columns is None:
        raise ValueError("scripted rows need column names (columns=[...])")
    names = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in columns]
    out_rows = []
    for r, row in enumerate(rows or ()):
        values = list(row)
        if len(values) != len(names):
            raise ValueError(f"scripted row {r} has {len(values)} values for {len(names)} columns")
        out_rows.append(ttypes.Row(values=[
            _to_value(v, f"row {r}, column {columns[i]!r}") for i, v in enumerate(values)
        ]))  # fmt: skip
    return ttypes.DataSet(column_names=names, rows=out_rows)


class _Conn:
    """One accepted client connection. ``closing``/``reset`` are guarded by the server's lock."""

    __slots__ = ("closing", "ip", "port", "reset", "sock", "thread")

    def __init__(self, sock: socket.socket, ip: str, port: int) -> None:
        self.sock = sock
        self.ip = ip
        self.port = port
        self.thread: Optional[threading.Thread] = None
        self.closing = False
        self.reset = False


@attrs.define
class _Session:
    """Server-side session state; guarded by the server's lock."""

    session_id: int
    user: str
    client_ip: str
    space: str = ""
    last_used: float = 0.0
    running: int = 0


@attrs.define
class _Outcome:
    """How to answer one request."""

    result: Any = None  # the result struct to send; None = no reply (oneway)
    drop: Optional[Drop] = None
    reset: bool = False
    raw: Optional[RawReply] = None
    abort: bool = False  # the server is stopping or the connection is being closed: just close


@attrs.define
class _Effects:
    """What the rules that fired during one request asked for (besides answering)."""

    drop_mid: bool = False
    reset: bool = False
    raw: Optional[RawReply] = None


class _Aborted(Exception):
    """A wait was cut short because the server stops or the connection is being closed."""


class _DropNow(Exception):
    """A rule asked to drop the connection before replying."""

    def __init__(self, reset: bool) -> None:
        super().__init__("drop")
        self.reset = reset


class FakeGraphd:
    """An in-process stand-in for NebulaGraph's graphd, speaking its Thrift protocol over TCP.

    It accepts THeader frames carrying the binary (protocol id 0) or fbthrift compact v2 (id 2)
    protocol, and framed binary, and answers in the framing and protocol it was spoken to, so both
    nebula_sync and the official ``nebula3-python`` client can use it. It keeps users, sessions and
    spaces, runs a small statement engine (``USE``, ``SHOW SPACES``, ``RETURN``/``YIELD`` of
    expressions, see :mod:`nebula_sync.testing._engine`), replays scripted responses
    (:meth:`script`), injects faults (:meth:`stall`, :meth:`refuse_connections`,
    :meth:`drop_connections`, :meth:`forget_sessions`, ``stop()``/``start()`` on the same port)
    and counts what happened (:meth:`stats`, :meth:`wait_for`, :meth:`statement_log`).

    ::

        with FakeGraphd(users={"root": "nebula"}) as server:
            server.script("MATCH (v) RETURN v", columns=["v"], rows=[[1], [2]])
            run_my_code(server.address)        # "127.0.0.1:<port>"
            assert server.stats().sessions_open == 0

    Every method is thread-safe. One lock guards all state; nothing blocks while it is held (no
    socket reads or writes; binding a listener is the only socket call made under it). Each
    connection is served by its own daemon thread; every wait inside the server (delays, holds,
    stalls) ends when :meth:`stop` runs, and :meth:`stop` joins the threads within a bound.

    :param host: loopback IP address to listen on (``127.0.0.0/8`` or ``::1``).
    :param port: TCP port; ``0`` picks a free one (then kept across ``stop()``/``start()``).
    :param users: ``{user: password}``; when given, ``authenticate`` checks credentials
        (``E_BAD_USERNAME_PASSWORD``). ``None`` (default) accepts anyone, like graphd with
        ``enable_authorize=false``.
    :param spaces: the graph spaces that exist.
    :param client_versions: the ``verifyClientVersion`` whitelist (graphd's ``client_white_list``).
    :param check_client_version: ``False`` accepts every version (``enable_client_white_list``).
    :param session_idle_timeout: seconds a session may stay unused before it expires (checked when
        it is next used); ``None`` = never (graphd's default is 28800).
    :param max_sessions_per_ip_per_user: graphd's ``max_sessions_per_ip_per_user``; ``0`` = no limit.
    :param time_zone_offset_seconds: sent in ``AuthResponse``.
    :param time_zone_name: sent in ``AuthResponse``.
    :param max_frame_size: larger request frames make the server close the connection.
    :param stop_timeout: how long :meth:`stop` waits for the server's threads.
    :param clock: the clock session idle times are measured with (seconds, monotonic); tests can
        pass a fake clock to expire sessions without waiting.
    :param web_port: also serve graphd's HTTP web service (``/status``, ``/stats``, ``/flags``) on
        this port (``0`` picks a free one; see :attr:`web`); ``None`` (default) serves none. Its
        ``/stats`` report this server's live counters under graphd's counter names, and it stops
        and starts with the server.
    :param log_size: how many entries :meth:`statement_log` keeps (the oldest are dropped);
        ``None`` keeps everything.
    :param ssl_context: a server-side ``ssl.SSLContext`` (``ssl.PROTOCOL_TLS_SERVER`` with the
        server's certificate loaded): every accepted connection is wrapped in TLS from its first
        byte, as graphd with ``--enable_graph_ssl`` does. When the context requires client
        certificates (``verify_mode = CERT_REQUIRED``), that is mutual TLS. A client that fails
        the handshake (plaintext, untrusted, no certificate) is disconnected.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        users: Optional[Mapping[str, str]] = None,
        spaces: Iterable[str] = ("basketballplayer", "test"),
        client_versions: Iterable[str] = ("3.0.0",),
        check_client_version: bool = True,
        session_idle_timeout: Optional[float] = None,
        max_sessions_per_ip_per_user: int = 300,
        time_zone_offset_seconds: int = 0,
        time_zone_name: str = "UTC",
        max_frame_size: int = 64 * 1024 * 1024,
        stop_timeout: float = 5.0,
        clock: Callable[[], float] = monotonic,
        web_port: Optional[int] = None,
        log_size: Optional[int] = 100_000,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._family = _check_loopback(host)
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, not {port}")
        if session_idle_timeout is not None and session_idle_timeout <= 0:
            raise ValueError("session_idle_timeout must be positive or None")
        if max_sessions_per_ip_per_user < 0:
            raise ValueError("max_sessions_per_ip_per_user must be >= 0")
        self._host = host
        self._port = port
        self._users = dict(users) if users is not None else None
        self._spaces = list(dict.fromkeys(spaces))
        self._client_versions = frozenset(client_versions)
        self._check_client_version = check_client_version
        self._session_idle_timeout = session_idle_timeout
        self._max_sessions = max_sessions_per_ip_per_user
        self._tz_offset = time_zone_offset_seconds
        self._tz_name = time_zone_name
        self._max_frame_size = max_frame_size
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._web: Optional[FakeWebService] = None
        if web_port is not None:
            self._web = FakeWebService(host, web_port, stats_provider=self._web_stats)

        # One lock for everything below; the condition wakes every waiter (rule holds, delays,
        # stalls, wait_for) whenever state changes, and each waiter re-checks its own predicate.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._running = False
        self._refusing = False
        self._stalled = False
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._conns: set[_Conn] = set()
        self._sessions: dict[int, _Session] = {}
        self._rules: list[Rule] = []
        self._log: collections.deque[LoggedStatement] = collections.deque(maxlen=log_size)
        self._stats = _Counters()
        self._ssl_context = ssl_context

    # ---- properties ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port (the real one once started, even if ``0`` was asked for)."""
        return self._port

    @property
    def address(self) -> str:
        """``"host:port"`` (``"[::1]:port"`` for IPv6), as clients take it."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def running(self) -> bool:
        """Whether the server is started."""
        with self._lock:
            return self._running

    @property
    def spaces(self) -> list[str]:
        """The graph spaces that exist (a copy)."""
        with self._lock:
            return list(self._spaces)

    def __repr__(self) -> str:
        return f"FakeGraphd({self.address}, running={self.running})"

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeGraphd:
        """Start listening (again, on the same port after :meth:`stop`). Returns ``self``."""
        with self._lock:
            if self._running:
                return self
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            if not self._refusing or self._port == 0:
                try:
                    self._listener = self._bind()
                except BaseException:
                    self._wake_r.close()
                    self._wake_w.close()
                    raise
                if self._refusing:
                    self._listener.close()
                    self._listener = None
            self._running = True
            # made here, not in the thread: once start() returns the server holds every file
            # descriptor it keeps while running (tests compare the process's open descriptors)
            sel = selectors.DefaultSelector()
            thread = threading.Thread(target=self._accept_loop, args=(self._wake_r, sel),
                                      name=f"fake-graphd-accept-{self._port}", daemon=True)
            self._accept_thread = thread
        thread.start()
        if self._web is not None:
            self._web.start()
        return self

    @property
    def web(self) -> Optional[FakeWebService]:
        """The HTTP web service (when ``web_port`` was given), e.g. ``server.web.address``."""
        return self._web

    def _web_stats(self) -> dict[str, Union[int, float]]:
        """Live counters under graphd's names, for the web service's ``/stats``."""
        st = self.stats()
        values: dict[str, Union[int, float]] = {
            "num_queries": st.statements,
            "num_active_queries": st.statements_running,
            "num_opened_sessions": st.authentications - st.authentication_failures,
            "num_active_sessions": st.sessions_open,
            "num_auth_failed_sessions": st.authentication_failures,
            "num_reclaimed_expired_sessions": st.sessions_expired,
        }
        out: dict[str, Union[int, float]] = {}
        for name, value in values.items():
            for window in (5, 60, 600, 3600):
                out[f"{name}.sum.{window}"] = value
        return out

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop: close the listener and every connection, end every wait, join the threads.

        Sessions, spaces, rules and counters survive (graphd keeps sessions in metad); use
        :meth:`forget_sessions` to drop them. Idempotent. ``timeout`` defaults to ``stop_timeout``.
        """
        with self._lock:
            if not self._running:
                return
            self._running = False
            listener, self._listener = self._listener, None
            conns = list(self._conns)
            for conn in conns:
                conn.closing = True
            accept_thread, self._accept_thread = self._accept_thread, None
            wake_w = self._wake_w  # its reading end belongs to the accept thread, which closes it
            self._wake_r = self._wake_w = None
            self._cond.notify_all()
        if listener is not None:
            _close_listener(listener)
        _wake(wake_w)
        for conn in conns:
            _shutdown(conn.sock, socket.SHUT_RDWR)
        deadline = monotonic() + (self._stop_timeout if timeout is None else timeout)
        if accept_thread is not None and accept_thread is not threading.current_thread():
            accept_thread.join(max(0.0, deadline - monotonic()))
        for conn in conns:
            if conn.thread is not None and conn.thread is not threading.current_thread():
                conn.thread.join(max(0.0, deadline - monotonic()))
        if wake_w is not None:
            # Closing it leaves the reading end at EOF, readable for good: an accept thread that
            # has not seen the wake byte yet (the join above timed out) still wakes and exits.
            wake_w.close()
        if self._web is not None:
            self._web.stop()

    close = stop

    def __enter__(self) -> FakeGraphd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bind(self) -> socket.socket:
        """A listening socket on (host, port); records the port. Caller holds the lock."""
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        return sock

    # ---- faults --------------------------------------------------------------------------

    def refuse_connections(self, refuse: bool = True) -> None:
        """Close (``True``) or reopen (``False``) the listening socket.

        While refusing, connection attempts fail with "connection refused"; connections already
        open keep working. Reopening binds the same port again.
        """
        to_close = None
        with self._lock:
            self._refusing = refuse
            if not self._running:
                return
            if refuse:
                to_close, self._listener = self._listener, None
            elif self._listener is None:
                self._listener = self._bind()
            wake_w = self._wake_w
        if to_close is not None:
            _close_listener(to_close)
        _wake(wake_w)

    def stall(self, stalled: bool = True) -> None:
        """While stalled, connections are accepted and requests read, but nothing is answered
        (nor executed) until the stall is lifted or the server stops."""
        with self._cond:
            self._stalled = stalled
            self._cond.notify_all()

    def drop_connections(self, reset: bool = True) -> int:
        """Close every connection the server has accepted: with a TCP reset (default) or a normal
        close (FIN).

        Requests in progress are abandoned. Returns how many connections were dropped. The
        connections are gone (and counted as closed) when this returns.
        """
        with self._cond:
            conns = list(self._conns)
            for conn in conns:
                conn.closing = True
                conn.reset = conn.reset or reset
            self._cond.notify_all()
        for conn in conns:
            if reset:
                # SO_LINGER 0 makes the owner thread's close() send RST; SHUT_RD wakes its recv
                # without sending anything (SHUT_WR would send a FIN first).
                try:
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
                _shutdown(conn.sock, socket.SHUT_RD)
            else:
                _shutdown(conn.sock, socket.SHUT_RDWR)
        deadline = monotonic() + self._stop_timeout
        for conn in conns:
            if conn.thread is not None and conn.thread is not threading.current_thread():
                conn.thread.join(max(0.0, deadline - monotonic()))
        return len(conns)

    def forget_sessions(self) -> int:
        """Drop every session, as a graphd that lost its state would; returns how many."""
        with self._cond:
            count = len(self._sessions)
            self._sessions.clear()
            self._cond.notify_all()
            return count

    def kill_session(self, session_id: int) -> bool:
        """Drop one session (its next use gets ``E_SESSION_INVALID``); ``False`` if unknown."""
        with self._cond:
            found = self._sessions.pop(session_id, None) is not None
            self._cond.notify_all()
            return found

    def add_space(self, name: str) -> None:
        """Create a graph space (no-op if it exists)."""
        with self._lock:
            if name not in self._spaces:
                self._spaces.append(name)

    def drop_space(self, name: str) -> None:
        """Remove a graph space; sessions using it keep the name."""
        with self._lock:
            if name in self._spaces:
                self._spaces.remove(name)

    # ---- scripted responses --------------------------------------------------------------

    def script(
        self,
        statement: Union[str, re.Pattern[str], None] = None,
        *,
        method: Optional[str] = None,
        session: Optional[int] = None,
        columns: Optional[Sequence[str]] = None,
        rows: Optional[Iterable[Sequence[Any]]] = None,
        error: Optional[int] = None,
        message: str = "",
        delay: float = 0.0,
        hold: bool = False,
        drop: Union[Drop, str, None] = None,
        reset: bool = False,
        raw: Optional[RawReply] = None,
        plan_desc: Optional[ttypes.PlanDescription] = None,
        comment: Optional[str] = None,
        times: Optional[int] = None,
    ) -> Rule:
        """Script the answer to matching requests; returns the :class:`Rule` (a handle).

        Matching: ``statement`` is an exact statement (surrounding blanks and a trailing ``;``
        ignored) or a compiled regex (``search``); ``None`` matches every request of the method.
        A rule is tried against the whole statement string first, then against each
        ``;``-separated statement in it. ``method`` restricts the rule to one wire method
        (default: the four execute methods; give ``"authenticate"``, ``"verifyClientVersion"`` or
        ``"signout"`` to script those). ``session`` restricts it to one session id; session id 0
        (connection pings) is only ever matched by ``session=0``. The most recently added matching
        rule wins; ``times`` limits how often a rule fires.

        Effects, in this order: ``hold`` (wait until :meth:`Rule.release`), ``delay`` seconds,
        ``drop`` (:attr:`Drop.BEFORE_REPLY` closes the connection without answering,
        :attr:`Drop.MID_REPLY` sends half the reply frame then closes; ``reset=True`` closes with a
        TCP reset instead of a FIN), then the answer: ``error`` (code, with ``message``), or
        ``columns`` + ``rows`` (Python values converted with ``nebula_sync._params.to_value``, or
        ``ttypes.Value``), optionally with ``plan_desc``/``comment``. A rule without an answer lets
        the engine run the statement after its other effects. ``raw`` replaces the reply with
        exactly these bytes, or with ``raw(ctx)`` for a :class:`ReplyContext`.
        """
        if method is not None and method not in service.METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {sorted(service.METHODS)}")
        if statement is not None and method is not None and method not in EXECUTE_METHODS:
            raise ValueError(f"{method} carries no statement; leave statement=None")
        if delay < 0:
            raise ValueError("delay must be >= 0")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        drop_kind = Drop(drop) if drop is not None else None
        data = _make_dataset(columns, rows)
        if error is not None and data is not None:
            raise ValueError("give either error= or columns=/rows=, not both")
        rule = Rule(server=self, statement=statement, method=method, session=session, data=data,
                    error=error, message=message, delay=float(delay), hold=hold, drop=drop_kind,
                    reset=reset, raw=raw, plan_desc=plan_desc, comment=comment,
                    times=times)  # fmt: skip
        with self._cond:
            self._rules.append(rule)
        return rule

    def clear_scripts(self) -> None:
        """Remove every rule (requests they hold are released)."""
        with self._cond:
            for rule in self._rules:
                rule._released = True
            self._rules.clear()
            self._cond.notify_all()

    def _remove_rule(self, rule: Rule) -> None:
        with self._cond:
            rule._released = True
            if rule in self._rules:
                self._rules.remove(rule)
            self._cond.notify_all()

    def _find_rule(self, method: str, statement: Optional[str], session_id: Optional[int],
                   whole: bool, skip: Optional[Rule] = None) -> Optional[Rule]:  # fmt: skip
        """The newest matching rule (counting the hit); ``whole`` = matching the whole request,
        ``skip`` = a rule already applied to this request. Caller holds the lock."""
        for rule in reversed(self._rules):
            if rule is not skip and rule._matches(method, statement, session_id, whole):
                rule._hits += 1
                self._cond.notify_all()
                return rule
        return None

    # ---- observation ---------------------------------------------------------------------

    def stats(self) -> ServerStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return self._snapshot()

    def wait_for(self, predicate: Callable[[ServerStats], bool], timeout: float = 10.0) -> ServerStats:
        """Block until ``predicate(stats)`` holds; returns those stats.

        Raises :class:`TimeoutError` (with the last stats) after ``timeout`` seconds. This is the
        way to synchronise a test with the server without sleeping.
        """
        last: list[ServerStats] = []

        def check() -> bool:
            snap = self._snapshot()
            last[:] = [snap]
            return predicate(snap)

        with self._cond:
            if not self._cond.wait_for(check, timeout):
                raise TimeoutError(f"condition not reached within {timeout} s; stats: {last[0]}")
            return last[0]

    def reset_stats(self) -> None:
        """Zero the counters (gauges such as open connections keep their current value)."""
        with self._lock:
            old = self._stats
            self._stats = _Counters()
            self._stats.connections_open = old.connections_open
            self._stats.running = old.running
            self._log.clear()

    def statement_log(self) -> list[LoggedStatement]:
        """The statements run on valid sessions so far (the last ``log_size``), oldest first."""
        with self._lock:
            return list(self._log)

    def sessions(self) -> list[SessionInfo]:
        """The open sessions."""
        with self._lock:
            self._expire_sessions()
            return [SessionInfo(s.session_id, s.user, s.client_ip, s.space)
                    for s in self._sessions.values()]  # fmt: skip

    def _snapshot(self) -> ServerStats:
        """Caller holds the lock."""
        self._expire_sessions()
        c = self._stats
        by_user: dict[str, int] = {}
        for s in self._sessions.values():
            by_user[s.user] = by_user.get(s.user, 0) + 1
        return ServerStats(
            connections_open=c.connections_open,
            connections_accepted=c.connections_accepted,
            requests=c.requests,
            handshakes=c.handshakes,
            handshakes_rejected=c.handshakes_rejected,
            authentications=c.authentications,
            authentication_failures=c.authentication_failures,
            signouts=c.signouts,
            sessions_open=len(self._sessions),
            sessions_by_user=by_user,
            sessions_expired=c.sessions_expired,
            pings=c.pings,
            invalid_session_requests=c.invalid_session_requests,
            statements=c.statements,
            statements_by_session=dict(c.by_session),
            statements_running=c.running,
            max_concurrent_statements=c.max_running,
            max_concurrent_statements_per_session=max(c.max_by_session.values(), default=0),
            max_concurrent_by_session=dict(c.max_by_session),
        )

    def _expire_sessions(self) -> None:
        """Drop sessions idle longer than the timeout. Caller holds the lock."""
        if self._session_idle_timeout is None:
            return
        limit = self._clock() - self._session_idle_timeout
        expired = [sid for sid, s in self._sessions.items() if s.last_used <= limit and s.running == 0]
        for sid in expired:
            del self._sessions[sid]
        self._stats.sessions_expired += len(expired)

    # ---- accepting -----------------------------------------------------------------------

    def _accept_loop(self, wake_r: socket.socket, sel: selectors.BaseSelector) -> None:
        """Accept connections until the server stops (or restarts with another wake socket).

        Waits with ``selectors`` (epoll on Linux), not ``select.select``, which cannot watch file
        descriptors >= 1024. An error that would recur at once (out of file descriptors) pauses
        the listener for ``_ACCEPT_BACKOFF`` seconds instead of being retried in a busy loop.
        Closes ``sel`` (made by :meth:`start`) when it ends.
        """
        try:
            sel.register(wake_r, selectors.EVENT_READ)
            watched: Optional[socket.socket] = None  # the listener registered with ``sel``
            paused: Optional[socket.socket] = None  # a listener left alone until ``paused_until``
            paused_until = 0.0
            while True:
                with self._lock:
                    if not self._running or self._wake_r is not wake_r:
                        return
                    listener = self._listener
                if paused is not None and (paused is not listener or monotonic() >= paused_until):
                    paused = None  # the pause is over, or refuse_connections() replaced the listener
                wanted = listener if paused is None else None
                if watched is not wanted:
                    if watched is not None:
                        _unregister(sel, watched)
                        watched = None
                    if wanted is not None:
                        try:
                            sel.register(wanted, selectors.EVENT_READ)
                            watched = wanted
                        except (OSError, ValueError):  # closed under us: whoever closed it wakes us
                            paused, paused_until = wanted, monotonic() + _ACCEPT_BACKOFF
                            continue
                timeout = None if paused is None else max(0.0, paused_until - monotonic())
                try:
                    events = sel.select(timeout)
                except OSError as exc:  # not seen in practice; whatever it is, retry at a slow pace
                    log.warning("fake graphd: waiting for connections failed: %s; retrying", exc)
                    with self._cond:  # stop() notifies
                        self._cond.wait_for(lambda: not self._running, _ACCEPT_BACKOFF)
                    continue
                ready = {key.fileobj for key, _ in events}
                if wake_r in ready:
                    try:
                        while wake_r.recv(512):
                            pass
                    except OSError:  # BlockingIOError: drained
                        pass
                if watched is None or watched not in ready:
                    continue
                try:
                    sock, peer = watched.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue  # the client went away before we took it: nothing to wait for
                except OSError as exc:
                    # closed under us (refuse/stop, which wake us), or out of file descriptors
                    # (EMFILE/ENFILE/ENOBUFS): the listener stays readable, so leave it alone a while
                    log.debug("fake graphd: accept failed: %s", exc)
                    paused, paused_until = watched, monotonic() + _ACCEPT_BACKOFF
                    continue
                if not self._serve_accepted(sock, peer):
                    return
        finally:
            sel.close()
            wake_r.close()  # here, not in stop(): epoll forgets a closed socket and would never wake

    def _serve_accepted(self, sock: socket.socket, peer: Any) -> bool:
        """Start serving an accepted connection; ``False`` (socket closed) if the server stopped."""
        sock.setblocking(True)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        conn = _Conn(sock, peer[0], peer[1])
        with self._cond:
            if not self._running:
                sock.close()
                return False
            self._conns.add(conn)
            self._stats.connections_accepted += 1
            self._stats.connections_open += 1
            conn.thread = threading.Thread(target=self._serve, args=(conn,),
                                           name=f"fake-graphd-conn-{peer[1]}", daemon=True)
            # Started under the lock so that nobody who sees the connection in _conns can
            # try to join a thread that has not started yet (the thread needs no lock to start).
            conn.thread.start()
            self._cond.notify_all()
        return True

    # ---- serving one connection ----------------------------------------------------------

    def _serve(self, conn: _Conn) -> None:
        try:
            if self._ssl_context is not None and not self._start_tls(conn, self._ssl_context):
                return
            while True:
                frame = self._read_frame(conn)
                if frame is None:
                    break
                with self._cond:
                    self._stats.requests += 1
                    self._cond.notify_all()
                if not self._wait(conn, lambda: not self._stalled, None):
                    break
                try:
                    keep = self._handle_frame(conn, frame)
                except _Aborted:
                    break
                except Exception:  # a bug in the fake: log it and drop the connection
                    log.exception("fake graphd: unexpected error serving %s:%s", conn.ip, conn.port)
                    break
                if not keep:
                    break
        finally:
            with self._lock:
                reset = conn.reset
            if reset:
                try:
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
            conn.sock.close()
            with self._cond:
                self._conns.discard(conn)
                self._stats.connections_open -= 1
                self._cond.notify_all()

    def _start_tls(self, conn: _Conn, context: ssl.SSLContext) -> bool:
        """Wrap ``conn`` in server-side TLS and run the handshake; ``False`` if it failed."""
        with self._lock:  # swapped under the lock: stop()/drop_connections() see one socket or the other
            if conn.closing:
                return False
            try:
                conn.sock = context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError) as exc:
                log.debug("fake graphd: cannot wrap %s:%s in TLS: %s", conn.ip, conn.port, exc)
                return False
            sock = conn.sock
        try:
            sock.settimeout(_TLS_HANDSHAKE_TIMEOUT)
            sock.do_handshake()
            sock.settimeout(None)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.debug("fake graphd: TLS handshake with %s:%s failed: %s", conn.ip, conn.port, exc)
            return False
        return True

    def _read_exact(self, conn: _Conn, size: int) -> Optional[bytes]:
        """``size`` bytes from the connection; ``None`` if it ends first or fails.

        The buffer grows with what arrives (at most ``_RECV_CHUNK`` ahead), never to the declared
        frame size up front: a client claiming a large frame must send it to make us hold it.
        """
        buf = bytearray()
        while len(buf) < size:
            try:
                chunk = conn.sock.recv(min(size - len(buf), _RECV_CHUNK))
            except (OSError, ValueError):  # ValueError: a TLS socket shut down by another thread
                return None
            if not chunk:
                return None
            if len(chunk) == size:  # all of it in one read: the usual case, no copy
                return chunk
            buf += chunk
        return bytes(buf)

    def _read_frame(self, conn: _Conn) -> Optional[bytes]:
        head = self._read_exact(conn, 4)
        if head is None:
            return None
        (length,) = _READ_LENGTH(head)
        if length < 2 or length > self._max_frame_size:
            log.debug("fake graphd: frame length %d from %s:%s; closing", length, conn.ip, conn.port)
            return None
        return self._read_exact(conn, length)

    def _wait(self, conn: _Conn, done: Callable[[], bool], timeout: Optional[float]) -> bool:
        """Wait until ``done()`` (or ``timeout`` seconds, if given). ``False`` if the server stops or
        the connection is being closed meanwhile."""
        deadline = None if timeout is None else monotonic() + timeout
        with self._cond:
            while True:
                if conn.closing or not self._running:
                    return False
                if done():
                    return True
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)

    def _handle_frame(self, conn: _Conn, frame: bytes) -> bool:
        """Decode, run and answer one request. Returns whether to keep the connection."""
        try:
            info = wire.parse_frame(frame)
        except ProtocolError as exc:
            log.debug("fake graphd: %s; closing", exc)
            return False
        payload = frame[info.offset :]
        if info.transforms:
            if any(t != 1 for t in info.transforms):
                log.debug("fake graphd: unsupported THeader transforms %s", info.transforms)
                return False
            for _ in info.transforms:
                inflated = _inflate(payload, self._max_frame_size)
                if inflated is None:
                    log.debug("fake graphd: zlib payload from %s:%s is corrupt or inflates beyond "
                              "max_frame_size (%d); closing", conn.ip, conn.port, self._max_frame_size)
                    return False
                payload = inflated
        if info.proto_id not in (wire.PROTO_BINARY, wire.PROTO_COMPACT):
            log.debug("fake graphd: unsupported protocol id %d", info.proto_id)
            return False
        compact = info.proto_id == wire.PROTO_COMPACT
        try:
            if compact:
                name, mtype, seqid, _ = parse_compact_message(payload, None)
            else:
                name, mtype, seqid, body_pos = wire.parse_message_header(payload, 0)
                # the name as sent (parse_message_header decodes it as ASCII, replacing the rest),
                # so that an unknown method's exception echoes it
                name = bytes(payload[8 : body_pos - 4]).decode("utf-8", "surrogateescape")
        except ProtocolError as exc:
            log.debug("fake graphd: bad envelope: %s; closing", exc)
            return False

        def context(result: Any, statement: Optional[str] = None,
                    session_id: Optional[int] = None) -> ReplyContext:  # fmt: skip
            return ReplyContext(
                method=name, seqid=seqid, mtype=mtype, framing=info.framing,
                proto_id=info.proto_id, header_seqid=info.seqid, flags=info.flags,
                transforms=info.transforms, statement=statement, session_id=session_id,
                result=result,
            )  # fmt: skip

        entry = service.METHODS.get(name)
        if entry is None:
            problem = TApplicationException(TApplicationException.UNKNOWN_METHOD,
                                            f"Method name {_printable(name)} not found")  # fmt: skip
            self._send(conn, context(None).reply(problem, mtype=wire.EXCEPTION))
            return True
        args_cls, result_cls = entry
        if mtype not in (wire.CALL, wire.ONEWAY):
            problem = TApplicationException(TApplicationException.INVALID_MESSAGE_TYPE,
                                            f"Invalid message type {mtype} for {name}")  # fmt: skip
            self._send(conn, context(None).reply(problem, mtype=wire.EXCEPTION))
            return True
        try:
            if compact:
                _, _, _, args = parse_compact_message(payload, args_cls)
            else:
                args = wire.decode_struct(payload, body_pos, [args_cls, args_cls.thrift_spec])
        except ProtocolError as exc:
            if result_cls is None:
                return True
            problem = TApplicationException(TApplicationException.PROTOCOL_ERROR, str(exc))
            self._send(conn, context(None).reply(problem, mtype=wire.EXCEPTION))
            return True

        try:
            outcome = self._dispatch(conn, name, args)
        except _DropNow as drop:
            if drop.reset:
                with self._lock:
                    conn.reset = True
            return False
        if outcome.abort:
            return False
        if outcome.drop is Drop.BEFORE_REPLY:
            if outcome.reset:
                with self._lock:
                    conn.reset = True
            return False
        if result_cls is None:  # oneway: never answered
            return True
        statement = getattr(args, "stmt", None)
        ctx = context(outcome.result,
                      statement.decode("utf-8", "replace") if statement is not None else None,
                      getattr(args, "sessionId", None))  # fmt: skip
        if outcome.raw is not None:
            data = outcome.raw if isinstance(outcome.raw, bytes) else outcome.raw(ctx)
        else:
            try:
                data = ctx.reply()
            except (TProtocolException, RecursionError) as exc:
                # A value nested deeper than thrift's binary codec goes (64 structs, e.g. lists
                # ~30 deep). graphd would send it (and the client fail to decode it); we cannot.
                log.warning("fake graphd: cannot encode the reply to %s: %s", name, exc)
                problem = TApplicationException(TApplicationException.INTERNAL_ERROR,
                                                f"the fake graphd cannot encode the reply: {exc}")
                data = ctx.reply(problem, mtype=wire.EXCEPTION)
        if outcome.drop is Drop.MID_REPLY:
            self._send(conn, data[: max(1, len(data) // 2)])
            if outcome.reset:
                with self._lock:
                    conn.reset = True
            return False
        return self._send(conn, data)

    def _send(self, conn: _Conn, data: bytes) -> bool:
        try:
            conn.sock.sendall(data)
        except (OSError, ValueError):  # ValueError: a TLS socket shut down by another thread
            return False
        return True

    # ---- request handlers ----------------------------------------------------------------

    def _dispatch(self, conn: _Conn, method: str, args: Any) -> _Outcome:
        if method == "verifyClientVersion":
            return self._verify_client_version(conn, args)
        if method == "authenticate":
            return self._authenticate(conn, args)
        if method == "signout":
            return self._signout(conn, args)
        return self._execute(conn, method, args)

    def _apply(self, conn: _Conn, rule: Rule, effects: _Effects) -> None:
        """Run a rule's hold/delay/drop effects; record reply tampering in ``effects``."""
        if rule.hold and not self._wait(conn, lambda: rule._released, None):
            raise _Aborted()
        if rule.delay and not self._wait(conn, lambda: False, rule.delay):
            raise _Aborted()
        if rule.drop is Drop.BEFORE_REPLY:
            raise _DropNow(rule.reset)
        if rule.drop is Drop.MID_REPLY:
            effects.drop_mid = True
            effects.reset = effects.reset or rule.reset
        if rule.raw is not None:
            effects.raw = rule.raw

    def _finish(self, result: Any, effects: _Effects) -> _Outcome:
        return _Outcome(result=result, drop=Drop.MID_REPLY if effects.drop_mid else None,
                        reset=effects.reset, raw=effects.raw)  # fmt: skip

    def _verify_client_version(self, conn: _Conn, args: service.VerifyClientVersionArgs) -> _Outcome:
        effects = _Effects()
        with self._cond:
            self._stats.handshakes += 1
            rule = self._find_rule("verifyClientVersion", None, None, True)
        if rule is not None:
            self._apply(conn, rule, effects)
            if rule.error is not None:
                resp = ttypes.VerifyClientVersionResp(error_code=rule.error,
                                                      error_msg=rule.message.encode("utf-8"))
                return self._finish(service.VerifyClientVersionResult(success=resp), effects)
        req = args.req or ttypes.VerifyClientVersionReq()
        version = (req.version if req.version is not None else b"3.0.0").decode("utf-8", "replace")
        if self._check_client_version and version not in self._client_versions:
            with self._lock:
                self._stats.handshakes_rejected += 1
            resp = ttypes.VerifyClientVersionResp(
                error_code=E_CLIENT_SERVER_INCOMPATIBLE,
                error_msg=f"Graph client handshakeKey({version}) is not accepted.".encode(),
            )
        else:
            resp = ttypes.VerifyClientVersionResp(error_code=0)
        return self._finish(service.VerifyClientVersionResult(success=resp), effects)

    def _authenticate(self, conn: _Conn, args: service.AuthenticateArgs) -> _Outcome:
        effects = _Effects()
        with self._cond:
            rule = self._find_rule("authenticate", None, None, True)
        if rule is not None:
            self._apply(conn, rule, effects)
            if rule.error is not None:
                with self._cond:
                    self._stats.authentication_failures += 1
                    self._cond.notify_all()
                resp = ttypes.AuthResponse(error_code=rule.error, error_msg=rule.message.encode("utf-8"))
                return self._finish(service.AuthenticateResult(success=resp), effects)
        user = (args.username or b"").decode("utf-8", "replace")
        password = (args.password or b"").decode("utf-8", "replace")
        failure: Optional[tuple[int, str]] = None
        if self._users is not None:
            if user not in self._users:
                failure = (E_BAD_USERNAME_PASSWORD, "User not exist")
            elif self._users[user] != password:
                failure = (E_BAD_USERNAME_PASSWORD, "Invalid password")
        with self._cond:
            if failure is None:
                self._expire_sessions()
                count = sum(1 for s in self._sessions.values()
                            if s.user == user and s.client_ip == conn.ip)  # fmt: skip
                if self._max_sessions and count >= self._max_sessions:
                    failure = (E_SESSION_INVALID,
                               f"Create Session failed: Too many sessions created from {conn.ip} by "
                               f"user {user}. the threshold is {self._max_sessions}. You can change "
                               f"it by modifying 'max_sessions_per_ip_per_user' in "
                               f"nebula-graphd.conf")  # fmt: skip
            if failure is not None:
                self._stats.authentication_failures += 1
                self._cond.notify_all()
                resp = ttypes.AuthResponse(error_code=failure[0], error_msg=failure[1].encode("utf-8"))
                return self._finish(service.AuthenticateResult(success=resp), effects)
            sid = 0
            while sid == 0 or sid in self._sessions:
                sid = secrets.randbelow(2**62) + 1
            self._sessions[sid] = _Session(sid, user, conn.ip, last_used=self._clock())
            self._stats.authentications += 1
            self._cond.notify_all()
        resp = ttypes.AuthResponse(error_code=0, session_id=sid,
                                   time_zone_offset_seconds=self._tz_offset,
                                   time_zone_name=self._tz_name.encode("utf-8"))  # fmt: skip
        return self._finish(service.AuthenticateResult(success=resp), effects)

    def _signout(self, conn: _Conn, args: service.SignoutArgs) -> _Outcome:
        effects = _Effects()
        with self._cond:
            rule = self._find_rule("signout", None, args.sessionId, True)
        if rule is not None:
            self._apply(conn, rule, effects)
        with self._cond:
            self._stats.signouts += 1
            self._sessions.pop(args.sessionId or 0, None)
            self._cond.notify_all()
        return _Outcome(result=None)

    def _execute(self, conn: _Conn, method: str, args: Any) -> _Outcome:
        started = monotonic()
        json_reply = method in ("executeJson", "executeJsonWithParameter")
        sid = args.sessionId or 0
        text = (args.stmt or b"").decode("utf-8", "replace")
        raw_params = getattr(args, "parameterMap", None) or {}
        params = {(k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v
                  for k, v in raw_params.items()}  # fmt: skip
        effects = _Effects()

        def reply(resp: ttypes.ExecutionResponse) -> _Outcome:
            if resp.latency_in_us is None:
                resp.latency_in_us = int((monotonic() - started) * 1_000_000)
            result: Struct
            if json_reply:
                result = service.ExecuteJsonResult(success=response_json(resp))
            else:
                result = service.ExecuteResult(success=resp)
            return self._finish(result, effects)

        if sid == 0:
            with self._cond:
                self._stats.pings += 1
                self._cond.notify_all()
                rule = self._find_rule(method, text, 0, True)
            if rule is not None:
                self._apply(conn, rule, effects)
                if rule._answers:
                    return reply(self._rule_response(rule, None))
            return reply(ttypes.ExecutionResponse(error_code=E_SESSION_INVALID, latency_in_us=0,
                                                  error_msg=b"Invalid session id"))  # fmt: skip

        with self._cond:
            self._expire_sessions()
            session = self._sessions.get(sid)
            if session is None:
                self._stats.invalid_session_requests += 1
                self._cond.notify_all()
            else:
                session.last_used = self._clock()
                session.running += 1
                self._stats.statement_started(sid, session.running)
                self._log.append(LoggedStatement(sid, text, method, params))
                self._cond.notify_all()
        if session is None:
            return reply(ttypes.ExecutionResponse(
                error_code=E_SESSION_INVALID, latency_in_us=0,
                error_msg=f"SessionId[{sid}] does not exist".encode(),
            ))  # fmt: skip
        try:
            resp = self._run(conn, method, session, text, params, effects)
        finally:
            with self._cond:
                session.running -= 1
                session.last_used = self._clock()
                self._stats.running -= 1
                self._cond.notify_all()
        return reply(resp)

    def _rule_response(self, rule: Rule, space: Optional[str]) -> ttypes.ExecutionResponse:
        return ttypes.ExecutionResponse(
            error_code=rule.error if rule.error is not None else 0,
            data=rule.data if rule.error is None else None,
            space_name=space.encode("utf-8") if space is not None else None,
            error_msg=rule.message.encode("utf-8") if rule.error is not None else None,
            plan_desc=rule.plan_desc,
            comment=rule.comment.encode("utf-8") if rule.comment is not None else None,
        )

    def _run(self, conn: _Conn, method: str, session: _Session, text: str,
             params: Mapping[str, ttypes.Value], effects: _Effects) -> ttypes.ExecutionResponse:  # fmt: skip
        """Run a (multi-)statement request for ``session``; the last statement's result wins."""

        def space_now() -> str:
            with self._lock:
                return session.space

        def error(code: int, message: str) -> ttypes.ExecutionResponse:
            return ttypes.ExecutionResponse(error_code=code, space_name=space_now().encode("utf-8"),
                                            error_msg=message.encode("utf-8"))  # fmt: skip

        sid = session.session_id
        with self._cond:
            rule = self._find_rule(method, text, sid, True)
        if rule is not None:
            self._apply(conn, rule, effects)
            if rule._answers:
                return self._rule_response(rule, space_now())
        try:
            parts = _engine.parse_request(text)
        except _engine.EngineError as exc:
            return error(exc.code, exc.message)
        if not parts:
            return error(_engine.E_STATEMENT_EMPTY, "StatementEmpty: ")

        # graphd parses and validates the whole request before running any of it
        plan: list[Union[Rule, _engine.Statement, None]] = []
        with self._lock:
            space, spaces = session.space, list(self._spaces)
        for stmt_text, parsed in parts:
            sub_rule = None
            if len(parts) > 1:
                with self._cond:
                    sub_rule = self._find_rule(method, stmt_text, sid, False, skip=rule)
            if sub_rule is not None:
                plan.append(sub_rule)
                continue
            if isinstance(parsed, _engine.EngineError):
                return error(parsed.code, parsed.message)
            try:
                space = _engine.check_statement(parsed, params, space, spaces)
            except _engine.EngineError as exc:
                return error(exc.code, exc.message)
            plan.append(parsed)

        data: Optional[ttypes.DataSet] = None
        plan_desc: Optional[ttypes.PlanDescription] = None
        comment: Optional[bytes] = None
        for step in plan:
            if isinstance(step, Rule):
                self._apply(conn, step, effects)
                if step._answers:
                    if step.error is not None:
                        return error(step.error, step.message)
                    data, plan_desc = step.data, step.plan_desc
                    comment = step.comment.encode("utf-8") if step.comment is not None else None
                else:
                    data = None  # a rule with effects only stands in for a statement we can't run
                continue
            assert isinstance(step, _engine.Statement)
            with self._lock:
                current, spaces = session.space, list(self._spaces)
            try:
                result = _engine.run_statement(step, params, current, spaces)
            except _engine.EngineError as exc:
                return error(exc.code, exc.message)
            with self._lock:
                session.space = result.space
            data, plan_desc, comment = result.data, None, None
        return ttypes.ExecutionResponse(error_code=0, data=data,
                                        space_name=space_now().encode("utf-8"),
                                        plan_desc=plan_desc, comment=comment)  # fmt: skip


@attrs.define
class _Counters:
    """Mutable counters behind :class:`ServerStats`; guarded by the server's lock."""

    connections_open: int = 0
    connections_accepted: int = 0
    requests: int = 0
    handshakes: int = 0
    handshakes_rejected: int = 0
    authentications: int = 0
    authentication_failures: int = 0
    signouts: int = 0
    sessions_expired: int = 0
    pings: int = 0
    invalid_session_requests: int = 0
    statements: int = 0
    running: int = 0
    max_running: int = 0
    by_session: dict[int, int] = attrs.field(factory=dict)
    max_by_session: dict[int, int] = attrs.field(factory=dict)

    def statement_started(self, sid: int, running_on_session: int) -> None:
        self.statements += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.by_session[sid] = self.by_session.get(sid, 0) + 1
        self.max_by_session[sid] = max(self.max_by_session.get(sid, 0), running_on_session)


def _check_loopback(host: str) -> socket.AddressFamily:
    """The address family for ``host``; raises ``ValueError`` unless it is a loopback address."""
    if host == "localhost":
        raise ValueError("give a loopback IP address (e.g. 127.0.0.1), not 'localhost'")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be a loopback IP address, not {host!r}") from None
    if not addr.is_loopback:
        raise ValueError(f"the fake graphd only listens on loopback addresses, not {host}")
    return socket.AF_INET6 if addr.version == 6 else socket.AF_INET


def _close_listener(sock: socket.socket) -> None:
    """Stop listening at once, then close.

    ``close()`` alone is not enough while the accept thread sits in ``select()`` on the socket:
    the kernel keeps the socket listening until ``select()`` returns. ``shutdown()`` on a listening
    socket stops it (and resets connections not yet accepted) immediately.
    """
    _shutdown(sock, socket.SHUT_RDWR)
    sock.close()


def _unregister(sel: selectors.BaseSelector, sock: socket.socket) -> None:
    """Stop watching ``sock``, which may have been closed meanwhile."""
    try:
        sel.unregister(sock)
    except (KeyError, ValueError, OSError):
        pass


def _inflate(data: bytes, limit: int) -> Optional[bytes]:
    """``data`` (a zlib stream) inflated, or ``None`` if it is corrupt, incomplete or would inflate
    to more than ``limit`` bytes (inflating stops there: a small frame can hold a zlib bomb)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        return None
    if len(out) > limit or not inflater.eof:
        return None
    return out


def _printable(name: str) -> str:
    """``name`` for a message: printable ASCII as is, every other byte (of UTF-8) as ``\\xNN``."""
    raw = name.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in raw)


def _wake(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    try:
        sock.send(b"x")
    except OSError:
        pass


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass
