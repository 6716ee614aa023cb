"""A fake of graphd's HTTP web service (``/status``, ``/stats``, ``/flags``) for tests.

A real threaded HTTP/1.1 server (:class:`http.server.ThreadingHTTPServer`) on loopback that answers
the way graphd 3.x does (``docs``: ``graphd-protocol.md`` §6):

* ``GET /status`` and ``GET /``: ``{"status":"running","git_info_sha":"<sha>"}`` (compact JSON).
* ``GET /stats``: ``name=value`` lines; ``format=json``: a pretty JSON array of ``{name: value}``
  objects; ``stats=a,b``: only those, a name graphd does not know gets graphd's error string as
  its value (``Stats not found "foo"``, ``"x" is not a valid metric name``, ...).
* ``GET /flags``: ``name=value`` lines (strings quoted, bools ``1``/``0``, unknown ``nullptr``);
  ``format=json``: ``{"flags":[{"name":…,"value":…}]}``; ``flags=a,b`` filters; ``verbose=true``
  adds ``default``/``type``/``description``/``file``/``is_default``.
* Another method on one of those paths: ``405`` (so ``PUT /flags`` never changes anything here);
  any other path: ``404``. Bodies of error replies are empty, as graphd's are.

Fault switches for tests: :meth:`FakeWebService.set_status_code` (answer everything with an error
status), :meth:`FakeWebService.set_stall` (hold every request without answering until released or
stopped) and :meth:`FakeWebService.set_body_override` (answer every request with fixed bytes).

Importing this module starts nothing. Thread-safe: every public method may be called from any
thread while the server runs.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qsl, urlsplit

import attrs

__all__ = ["DEFAULT_GIT_INFO_SHA", "FakeWebService", "default_flags", "default_stats"]

log = logging.getLogger("nebula_sync.testing.http")

DEFAULT_GIT_INFO_SHA = "fa4e5d1"

_WINDOWS = ("5", "60", "600", "3600")
_GET_PATHS = frozenset({"/", "/status", "/stats", "/flags"})
# request bodies the fake reads and throws away (graphd's GET handlers ignore them too)
_MAX_DISCARD = 1 << 20

StatsProvider = Callable[[], Mapping[str, Union[int, float]]]


def default_stats() -> dict[str, int | float]:
    """A plausible, fixed set of graphd counters in graphd's ``<counter>.<method>.<window>`` style."""
    # counter -> (methods, value in the 60 s window); other windows scale from it
    base: dict[str, tuple[tuple[str, ...], int]] = {
        "num_queries": (("sum", "rate"), 120),
        "num_active_queries": (("sum",), 1),
        "num_query_errors": (("sum",), 2),
        "num_slow_queries": (("sum",), 0),
        "num_sentences": (("sum", "rate"), 130),
        "num_opened_sessions": (("sum",), 3),
        "num_active_sessions": (("sum",), 2),
        "num_auth_failed_sessions": (("sum",), 0),
        "num_reclaimed_expired_sessions": (("sum",), 0),
        "query_latency_us": (("avg", "p75", "p95", "p99"), 1800),
        "slow_query_latency_us": (("avg", "p75", "p95", "p99"), 0),
    }
    scale = {"5": 1, "60": 1, "600": 10, "3600": 60}
    out: dict[str, int | float] = {}
    for counter, (methods, v60) in base.items():
        for method in methods:
            for window in _WINDOWS:
                if method == "rate":
                    value: int = v60 // 60
                elif method == "avg" or method.startswith("p"):
                    bump = {"avg": 0, "p75": 400, "p95": 2500, "p99": 9000}.get(method, 0)
                    value = v60 + bump if v60 else 0
                elif counter.startswith("num_active"):
                    value = v60  # gauges: the same in every window
                else:
                    value = v60 * scale[window] if window != "5" else v60 // 12
                out[f"{counter}.{method}.{window}"] = value
    return out


@attrs.frozen
class _Flag:
    value: object
    type: str
    default: object
    description: str = ""
    file: str = "src/graph/GraphFlags.cpp"


def _flag(value: object, type_: str, description: str, file: str = "src/graph/GraphFlags.cpp") -> _Flag:
    return _Flag(value, type_, value, description, file)


_WS_FILE = "src/webservice/WebService.cpp"
_DEFAULT_FLAGS: dict[str, _Flag] = {
    "port": _flag(9669, "int32", "Graph daemon listening port", "src/daemons/GraphDaemon.cpp"),
    "ws_http_port": _flag(19669, "int32", "Port to listen on with HTTP protocol", _WS_FILE),
    "ws_ip": _flag("0.0.0.0", "string", "IP/Hostname to bind to", _WS_FILE),
    "meta_server_addrs": _flag("127.0.0.1:9559", "string", "list of meta server addresses"),
    "session_idle_timeout_secs": _flag(28800, "int32", "seconds before an idle session expires"),
    "session_reclaim_interval_secs": _flag(60, "int32", "seconds between session reclaims"),
    "client_idle_timeout_secs": _flag(28800, "int32", "seconds before an idle connection is closed"),
    "max_allowed_connections": _flag(2147483647, "int32", "maximum number of client connections"),
    "max_sessions_per_ip_per_user": _flag(300, "int32", "maximum sessions per IP and user"),
    "slow_query_threshold_us": _flag(200000, "int64", "queries slower than this are slow queries"),
    "enable_authorize": _flag(False, "bool", "whether to authenticate users"),
    "enable_optimizer": _flag(True, "bool", "whether to optimize execution plans"),
    "system_memory_high_watermark_ratio": _flag(0.8, "double", "memory ratio above which queries fail"),
    "timezone_name": _flag("UTC+00:00:00", "string", "the server's timezone"),
    "default_charset": _flag("utf8", "string", "default charset of a new space"),
    "default_collate": _flag("utf8_bin", "string", "default collation of a new space"),
    "local_config": _flag(True, "bool", "read the configuration from the local file"),
}


def default_flags() -> dict[str, object]:
    """The fake's default flags as ``{name: value}`` (a plausible subset of graphd's)."""
    return {name: f.value for name, f in _DEFAULT_FLAGS.items()}


def _infer_flag_type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    raise TypeError(f"a flag value must be bool, int, float or str, not {type(value).__name__}")


def _folly_str(value: object) -> str:
    """How graphd prints a JSON value as text (``folly::dynamic::asString``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _flag_text(value: object) -> str:
    """graphd's ``GetFlagsHandler::valToString``."""
    if value is None:
        return "nullptr"
    if isinstance(value, str):
        return f'"{value}"'
    return _folly_str(value)


def _valid_pct(part: str) -> bool:
    """graphd's ``StatsManager::strToPct``: ``p`` plus 1..6 characters that parse as a number."""
    digits = part[1:]
    if not 0 < len(digits) <= 6:
        return False
    try:
        float(digits)
    except ValueError:
        return False
    return True


def _stat_error(name: str, known_counters: set[str]) -> str | None:
    """graphd's error string for a stats name it cannot read, or ``None`` if it reads as 0."""
    parts = [p for p in name.split(".") if p]
    if len(parts) != 3:
        return f'"{name}" is not a valid metric name'
    counter, method, window = parts[0], parts[1].lower(), parts[2]
    if window not in _WINDOWS:
        return f'Unsupported time range "{window}"'
    if method in ("sum", "count", "avg", "rate") or (method.startswith("p") and _valid_pct(method)):
        if counter not in known_counters:
            return f'Stats not found "{counter}"'
        return None  # graphd computes any method over a registered counter's time series
    if method.startswith("p"):
        return f'"{method}" is not a valid percentile form'
    return f'Unsupported statistic method "{method}"'


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], fake: FakeWebService) -> None:
        self.fake = fake
        super().__init__(addr, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        # headers and body go out in separate writes: without NODELAY, Nagle plus the client's
        # delayed ACK would add ~40 ms to every keep-alive request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.fake._ssl_context
        if ctx is not None:
            # The handshake runs in the handler thread (setup), so a slow client cannot block accept.
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-reply (timeouts, close()) are normal in tests: no tracebacks.
        log.debug("fake web service: error serving %s: %r", client_address, sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as proxygen
    server: _Server

    def setup(self) -> None:
        fake = self.server.fake
        fake._connection_opened(self.request)
        try:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.do_handshake()
            super().setup()
        except BaseException:
            fake._connection_closed(self.request)
            raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._connection_closed(self.request)

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("fake web service %s: %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or (length and not length.isdigit()):
            self.close_connection = True
            return
        n = int(length or 0)
        if n > _MAX_DISCARD:
            self.close_connection = True
            return
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                self.close_connection = True
                return
            n -= len(chunk)

    def _reply(self, code: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(code)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        fake = self.server.fake
        self._discard_body()
        fake._record(self.command, self.path)
        if not fake._wait_if_stalled():
            # stopped while stalled: hang up without a reply
            self.close_connection = True
            return
        override = fake._override()
        if override is not None:
            code, body = override
            self._reply(code, body, "text/plain" if code >= 300 else None)
            return
        parts = urlsplit(self.path)
        path = parts.path or "/"
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]  # graphd's router ignores one trailing '/'
        if path not in _GET_PATHS:
            self._reply(404)
            return
        if self.command != "GET":
            self._reply(405)
            return
        params: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            params.setdefault(key, value)
        try:
            if path in ("/", "/status"):
                body = fake._status_body()
            elif path == "/stats":
                body = fake._stats_body(params)
            else:
                body = fake._flags_body(params)
        except Exception as exc:  # a failing stats_provider, say: report it rather than hang up
            log.warning("fake web service: %s failed", path, exc_info=True)
            self._reply(500, f"fake web service: {exc!r}".encode(), "text/plain")
            return
        # graphd's proxygen handlers set no Content-Type
        self._reply(200, body)


class FakeWebService:
    """A fake graphd web service on a loopback port; see the module docstring for what it serves.

    :param host: address to listen on (loopback by default).
    :param port: port to listen on; ``0`` picks a free one (see :attr:`port` after :meth:`start`).
        A restart (``stop()`` then ``start()``) reuses the port first bound.
    :param stats_provider: called on every ``/stats`` request for ``{name: value}``; defaults to
        :func:`default_stats`. Counter names follow ``<counter>.<method>.<window>``.
    :param flags: flag values merged over :func:`default_flags`; a new name gets a type inferred
        from its Python type (``bool``, ``int64``, ``double``, ``string``).
    :param git_info_sha: what ``/status`` reports as ``git_info_sha``.
    :param ssl_context: a server-side :class:`ssl.SSLContext` to serve https instead of http.

    Thread-safe. Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        stats_provider: Optional[StatsProvider] = None,
        flags: Optional[Mapping[str, object]] = None,
        git_info_sha: str = DEFAULT_GIT_INFO_SHA,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._host = host
        self._port = port
        self._stats_provider: StatsProvider = stats_provider if stats_provider is not None else default_stats
        self._flags: dict[str, _Flag] = dict(_DEFAULT_FLAGS)
        for name, value in (flags or {}).items():
            self._flags[name] = self._make_flag(name, value)
        self._git_info_sha = git_info_sha
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # stall, connection and request changes
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stalled = False
        self._stalled_now = 0
        self._status_code: int | None = None
        self._body_override: bytes | None = None
        self._requests = 0
        self._log: deque[tuple[str, str]] = deque(maxlen=1000)
        self._connections_total = 0
        self._open: dict[Any, threading.Thread] = {}

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeWebService:
        """Bind and serve in a daemon thread; return ``self``. Idempotent while running."""
        with self._lock:
            if self._server is not None:
                return self
            server = _Server((self._host, self._port), self)
            self._port = server.server_address[1]
            self._server = server
            self._stopping = False
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-web-{self._port}",
                daemon=True,
            )
            self._thread = thread
        thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every client connection, release stalled requests (unanswered).

        Idempotent; waits up to ``timeout`` seconds for the handler threads. Clears the stall.
        """
        with self._cond:
            server, self._server = self._server, None
            if server is None:
                return
            self._stopping = True
            self._stalled = False
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            open_conns = list(self._open.items())
        for sock, _ in open_conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the other side
        deadline = time.monotonic() + timeout
        for _, handler_thread in open_conns:
            handler_thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeWebService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port served (the one asked for before the first :meth:`start`)."""
        return self._port

    @property
    def address(self) -> str:
        """``"host:port"``, the form :class:`~nebula_sync.web.GraphdWebClient` takes."""
        return f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"

    @property
    def url(self) -> str:
        """``http://host:port`` (``https`` with an ``ssl_context``)."""
        return f"{'https' if self._ssl_context is not None else 'http'}://{self.address}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    # ---- fault switches ------------------------------------------------------------------------

    def set_status_code(self, code: int | None) -> None:
        """Answer every request with HTTP ``code`` (a short text body); ``None`` restores normal replies."""
        if code is not None and not 100 <= code <= 599:
            raise ValueError(f"HTTP status must be in 100..599, got {code}")
        with self._lock:
            self._status_code = code

    def set_body_override(self, body: bytes | None) -> None:
        """Answer every request with ``200`` and exactly ``body`` (malformed-reply tests); ``None`` undoes."""
        with self._lock:
            self._body_override = body

    def set_stall(self, stalled: bool) -> None:
        """Hold every request (read, never answered) while ``stalled``; ``False`` lets them proceed.

        :meth:`stop` also releases them, hanging up without a reply.
        """
        with self._cond:
            self._stalled = bool(stalled)
            self._cond.notify_all()

    def wait_stalled(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` requests are held by the stall; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stalled_now >= count, timeout)

    def wait_open_connections(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until exactly ``count`` client connections are open; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._open) == count, timeout)

    # ---- counters ------------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        """Requests received (including stalled and failed ones) since construction."""
        with self._lock:
            return self._requests

    @property
    def request_log(self) -> list[tuple[str, str]]:
        """The last 1000 requests as ``(method, target)``, e.g. ``("GET", "/stats?format=json")``."""
        with self._lock:
            return list(self._log)

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since construction."""
        with self._lock:
            return self._connections_total

    @property
    def open_connections(self) -> int:
        """Client connections open right now."""
        with self._lock:
            return len(self._open)

    # ---- internals (called from handler threads) -----------------------------------------------

    @staticmethod
    def _make_flag(name: str, value: object) -> _Flag:
        known = _DEFAULT_FLAGS.get(name)
        type_ = _infer_flag_type(value)
        if known is not None and known.type == "double" and type_ == "int64":
            value, type_ = float(value), "double"  # type: ignore[arg-type]
        if known is not None and (
            known.type == type_ or (type_ == "int64" and known.type in ("int32", "uint32", "uint64"))
        ):
            return attrs.evolve(known, value=value)
        return _Flag(value, type_, value, "", "fake")

    def _connection_opened(self, sock: Any) -> None:
        with self._cond:
            self._connections_total += 1
            self._open[sock] = threading.current_thread()
            stopping = self._stopping
            self._cond.notify_all()
        if stopping:
            # accepted just before stop() looked at the open connections: hang up now
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _connection_closed(self, sock: Any) -> None:
        with self._cond:
            self._open.pop(sock, None)
            self._cond.notify_all()

    def _record(self, method: str, target: str) -> None:
        with self._cond:
            self._requests += 1
            self._log.append((method, target))
            self._cond.notify_all()

    def _wait_if_stalled(self) -> bool:
        """Block while stalled; ``False`` if the server stopped meanwhile (hang up)."""
        with self._cond:
            if self._stalled:
                self._stalled_now += 1
                self._cond.notify_all()
                try:
                    self._cond.wait_for(lambda: not self._stalled or self._stopping)
                finally:
                    self._stalled_now -= 1
            return not self._stopping

    def _override(self) -> tuple[int, bytes] | None:
        with self._lock:
            code, body = self._status_code, self._body_override
        if code is not None:
            return code, f"fake graphd web service: injected HTTP {code}".encode()
        if body is not None:
            return 200, body
        return None

    def _status_body(self) -> bytes:
        doc = {"status": "running", "git_info_sha": self._git_info_sha}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _stats_body(self, params: Mapping[str, str]) -> bytes:
        values = dict(self._stats_provider())
        names = [n for n in params.get("stats", "").split(",") if n]
        entries: list[tuple[str, object]] = []
        if not names:
            entries = list(values.items())
        else:
            counters = {name.split(".", 1)[0] for name in values}
            for name in names:
                if name in values:
                    entries.append((name, values[name]))
                    continue
                error = _stat_error(name, counters)
                entries.append((name, error if error is not None else self._lookup_stat(values, name)))
        if params.get("format") == "json":
            return json.dumps([{n: v} for n, v in entries], indent=2).encode()
        return "".join(f"{n}={_folly_str(v)}\n" for n, v in entries).encode()

    @staticmethod
    def _lookup_stat(values: Mapping[str, int | float], name: str) -> int | float:
        # graphd lower-cases the method; a method or window nobody recorded reads as 0
        counter, method, window = [p for p in name.split(".") if p]
        return values.get(f"{counter}.{method.lower()}.{window}", 0)

    def _flags_body(self, params: Mapping[str, str]) -> bytes:
        verbose = params.get("verbose") == "true"
        names = [n for n in params.get("flags", "").split(",") if n]
        with self._lock:
            table = dict(self._flags)
        selected: Iterable[str] = names if names else sorted(table)
        items: list[dict[str, object]] = []
        for name in selected:
            flag = table.get(name)
            item: dict[str, object] = {"name": name, "value": None if flag is None else flag.value}
            if verbose and flag is not None:
                item.update(
                    default=flag.default,
                    type=flag.type,
                    description=flag.description,
                    file=flag.file,
                    is_default=flag.value == flag.default and type(flag.value) is type(flag.default),
                )
            items.append(item)
        if params.get("format") == "json":
            return (json.dumps({"flags": items}, indent=2) + "\n").encode()
        lines: list[str] = []
        for item in items:
            if verbose:
                lines.append(f"--{item['name']}: {item.get('description', '')}\n")
                lines.append(
                    f"  file: {item.get('file', '')}, type: {item.get('type', '')}, "
                    f"default: {_flag_text(item.get('default'))}, current: {_flag_text(item['value'])}"
                    f"{'(default)' if item.get('is_default') else ''}\n"
                )
            else:
                lines.append(f"{item['name']}={_flag_text(item['value'])}\n")
        return "".join(lines).encode()

