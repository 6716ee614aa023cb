"""A client for graphd's HTTP web service: ``/status``, ``/stats`` and ``/flags`` (read-only).

graphd serves these on ``--ws_http_port`` (19669 in the shipped config). ``GET /status`` is the
cheapest health check there is: it needs no session and no credentials. It proves the process is up,
not that it can reach metad or storaged.

.. code-block:: python

    with GraphdWebClient("graphd1:19669") as web:
        if web.status().is_running:
            print(web.stats(["num_queries.sum.60", "num_active_sessions.sum.5"]))

The client never calls ``PUT /flags``: that endpoint changes the live server.

Thread-safety: :class:`GraphdWebClient` is thread-safe; one instance (one urllib3
:class:`~urllib3.PoolManager`) is meant to be shared by every thread of a process.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import ssl
import threading
import time
import warnings
import weakref
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Final, Union
from urllib.parse import urlencode

import attrs
import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ClosedPoolError,
    EmptyPoolError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as _Urllib3Timeout

from nebula_sync._version import __version__
from nebula_sync.config import HostAddress, parse_address
from nebula_sync.errors import ClientClosed, WebServiceError

__all__ = ["DEFAULT_WEB_PORT", "MAX_RESPONSE_BYTES", "GraphdWebClient", "StatValue", "WebStatus"]

log = logging.getLogger("nebula_sync.web")

#: graphd's ``--ws_http_port`` in the shipped ``nebula-graphd.conf`` (the built-in flag default is 11000)
DEFAULT_WEB_PORT: Final = 19669

#: the default cap on a response body, in bytes (``max_response_bytes``): graphd's ``/status`` is
#: about 60 bytes, and ``/stats`` and ``/flags`` with every name are far smaller than this
MAX_RESPONSE_BYTES: Final = 4 << 20

#: a ``/stats`` value: graphd reports int64 counters; a float is kept as a float
StatValue = Union[int, float]

# how much of an error response's body goes into the exception message
_BODY_SNIPPET = 200
# the most one read of a response body asks for
_READ_CHUNK = 64 << 10


class _Unset(enum.Enum):
    """Typed "not given" sentinel (``None`` means "no limit" for timeouts)."""

    token = 0


_UNSET: Final = _Unset.token


@attrs.frozen(kw_only=True)
class WebStatus:
    """What ``GET /status`` answered.

    :param status: graphd's ``status`` field; ``"running"`` for a live graphd.
    :param git_info_sha: the commit graphd was built from (``""`` if the build does not say).
    :param latency_s: seconds the request took, measured by the client (including the connect
        when no pooled connection was free).
    :param host: ``"host:port"`` of the web service that answered.
    """

    status: str
    git_info_sha: str
    latency_s: float
    host: str = ""

    @property
    def is_running(self) -> bool:
        """Whether graphd reports itself running."""
        return self.status == "running"


def _check_timeout(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be seconds as a float or None, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0 seconds (or None for no limit), got {value!r}")
    return float(value)


def _names_param(kind: str, names: Sequence[str] | None) -> list[str] | None:
    """Validate a ``stats=``/``flags=`` filter: a str is one name; duplicates are dropped."""
    if names is None:
        return None
    items = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for n in items:
        if not isinstance(n, str):
            raise TypeError(f"{kind} names must be str, got {type(n).__name__}")
        if not n or n != n.strip() or "," in n:
            # graphd splits the filter on ',' and drops empty parts: such a name cannot be asked for
            raise ValueError(f"invalid {kind} name {n!r}: empty, padded, or containing ','")
        if n not in out:
            out.append(n)
    return out


def _to_number(value: object) -> StatValue | None:
    """A ``/stats`` value as a number, or ``None`` if it is graphd's error string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            return None
    return None


class _State:
    """What the finalizer of an unclosed client needs; never references the client itself."""

    def __init__(self, pm: urllib3.PoolManager) -> None:
        self.pm = pm
        self.pid = os.getpid()
        self.closed = False


def _finalize_unclosed(state: _State, desc: str) -> None:
    if state.closed:
        return
    state.closed = True
    if state.pid != os.getpid():
        # A forked child that never used the client: the manager is the parent's, with the parent's
        # sockets, and its locks may have been held by a parent thread at fork time. Neither clear
        # nor lock it; the garbage collector only closes this process's copies of its descriptors.
        # The parent warns about its own copy.
        return
    warnings.warn(f"unclosed {desc}; call close() or use it as a context manager", ResourceWarning,
                  stacklevel=1)
    state.pm.clear()


class GraphdWebClient:
    """Reads graphd's HTTP web service (``/status``, ``/stats``, ``/flags``) over urllib3.

    Every method takes the web address of one graphd as ``host`` (``"graphd1:19669"``; ``port``
    is used when it has none), or uses the only configured host when ``host`` is omitted.
    A host does not have to be among the configured ones.

    Requests are ``GET`` only. One :class:`urllib3.PoolManager` keeps at most ``maxsize``
    keep-alive connections per host; a caller that finds them all busy waits up to ``timeout`` for
    one. Connect failures (refused, connect timeout) are retried ``retries`` times with a short
    backoff: nothing reached graphd then. A read timeout, a broken reply or an HTTP error status is
    never retried.

    :param hosts: web addresses of graphd (``"h:p"``, a comma-separated str, or a sequence), or
        ``None`` to always pass ``host`` to each call.
    :param port: the port for hosts given without one.
    :param timeout: seconds to wait for a free pooled connection, for the response to start
        (urllib3's read timeout), and for its whole body after that; ``None`` = no limit.
    :param connect_timeout: seconds to wait for a TCP (and TLS) connect; defaults to ``timeout``.
    :param retries: how many times to retry a request whose connection could not be made.
    :param maxsize: keep-alive connections per host.
    :param max_response_bytes: the largest response body read; a longer one (graphd's replies are
        small: a wrong port or a proxy streaming something else) raises :class:`WebServiceError`.
    :param scheme: ``"http"`` (what graphd serves) or ``"https"`` (a TLS-terminating proxy).
    :param ca_file: https only: a PEM file of CAs to trust instead of the system store.
    :param verify: https only: verify the server's certificate and host name (default ``True``).
        ``False`` is the explicit opt-out; urllib3 then warns (``InsecureRequestWarning``) on
        every request.
    :param cert_file: https only: client certificate (PEM) for mutual TLS.
    :param key_file: https only: the client certificate's key, if not in ``cert_file``.
    :param ssl_context: https only: a ready :class:`ssl.SSLContext` (e.g.
        ``TLSConfig.create_context()``) instead of the four options above.

    :raises ValueError, TypeError: for invalid arguments.

    .. note:: Thread-safe. Per-call state lives in local variables; the shared state is the pool
       manager (itself thread-safe) and the closed flag. After ``fork()`` the child builds its
       own pool manager on first use and never touches the sockets inherited from the parent.
    """

    def __init__(
        self,
        hosts: str | Sequence[str] | None = None,
        *,
        port: int = DEFAULT_WEB_PORT,
        timeout: float | None = 2.0,
        connect_timeout: float | None | _Unset = _UNSET,
        retries: int = 1,
        maxsize: int = 4,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        scheme: str = "http",
        ca_file: str | None = None,
        verify: bool = True,
        cert_file: str | None = None,
        key_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an int in 1..65535, got {port!r}")
        self._port = port
        if hosts is None:
            host_list: list[str] = []
        elif isinstance(hosts, str):
            host_list = [h for h in (p.strip() for p in hosts.split(",")) if h]
        else:
            host_list = list(hosts)
        addrs = [parse_address(h, port) for h in host_list]
        self._addrs: tuple[HostAddress, ...] = tuple(dict.fromkeys(addrs))
        self._timeout = _check_timeout("timeout", timeout)
        self._connect_timeout = (
            self._timeout if connect_timeout is _UNSET else _check_timeout("connect_timeout", connect_timeout)
        )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        self._retries = retries
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
        self._maxsize = maxsize
        cap = max_response_bytes
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"max_response_bytes must be an int >= 1, got {max_response_bytes!r}")
        self._max_body = max_response_bytes
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be 'http' or 'https', got {scheme!r}")
        self._scheme = scheme
        if not isinstance(verify, bool):
            raise TypeError(f"verify must be a bool, not {type(verify).__name__}")
        tls_given = any(f is not None for f in (ca_file, cert_file, key_file))
        if scheme == "http" and (tls_given or ssl_context is not None or not verify):
            raise ValueError("ca_file, cert_file, key_file, verify and ssl_context need scheme='https'")
        if ssl_context is not None and (tls_given or not verify):
            raise ValueError("pass either ssl_context or ca_file/cert_file/key_file/verify, not both")
        if key_file is not None and cert_file is None:
            raise ValueError("key_file needs cert_file")
        self._tls: dict[str, Any] = {}
        if ssl_context is not None:
            self._tls = {"ssl_context": ssl_context}
        elif scheme == "https":
            self._tls = {
                "cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE",
                "ca_certs": ca_file,
                "cert_file": cert_file,
                "key_file": key_file,
            }
            if not verify:
                self._tls["assert_hostname"] = False
        # Guards the closed flag and pool creation, never network I/O (close() clears outside it).
        self._lock = threading.Lock()
        self._state = _State(self._new_pool_manager())
        self._finalizer = weakref.finalize(self, _finalize_unclosed, self._state, repr(self))
        self._finalizer.atexit = False  # at exit the process's sockets go anyway

    # ---- properties ------------------------------------------------------------------------

    @property
    def hosts(self) -> tuple[str, ...]:
        """The configured web addresses, as ``"host:port"``."""
        return tuple(str(a) for a in self._addrs)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._state.closed

    def __repr__(self) -> str:
        return f"GraphdWebClient(hosts={list(self.hosts)!r}, scheme={self._scheme!r})"

    # ---- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every pooled connection; later calls raise :class:`~nebula_sync.errors.ClientClosed`.

        Idempotent. A request already in flight finishes (bounded by its timeout) and its connection
        is then discarded. In a forked child it closes nothing of the parent's.
        """
        if self._state.pid != os.getpid():
            # A forked child: the inherited lock may have been held by a parent thread at fork time
            # (it would never be released here), and the inherited manager's sockets are the
            # parent's. Replace both, never locking or clearing the inherited ones.
            self._reset_after_fork()
        with self._lock:
            if self._state.closed:
                return
            self._state.closed = True
            pm = self._state.pm
        self._finalizer.detach()
        pm.clear()  # closes sockets: outside the lock

    def __enter__(self) -> GraphdWebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- endpoints -------------------------------------------------------------------------

    def status(self, host: str | None = None) -> WebStatus:
        """``GET /status``: whether graphd is running, and its build.

        :raises WebServiceError: no response, an HTTP error status, or not the expected JSON.
        """
        addr = self._addr(host)
        url, code, body, latency = self._get(addr, "/status", {})
        doc = self._json(url, addr, code, body)
        if not isinstance(doc, dict) or not isinstance(doc.get("status"), str):
            raise WebServiceError(
                f"GET {url}: expected a JSON object with a 'status' string, got {_snippet(body)!r}",
                status=code,
                host=str(addr),
            )
        sha = doc.get("git_info_sha", "")
        return WebStatus(
            status=doc["status"],
            git_info_sha=sha if isinstance(sha, str) else str(sha),
            latency_s=latency,
            host=str(addr),
        )

    def stats(self, names: Sequence[str] | None = None, host: str | None = None) -> dict[str, StatValue]:
        """``GET /stats?format=json[&stats=a,b]``: graphd's counters as numbers.

        Names look like ``num_queries.sum.60``: ``<counter>.<sum|count|avg|rate|pNN>.<5|60|600|3600>``
        (window in seconds). ``names=None`` reads every counter; a str is one name; an empty
        sequence returns ``{}`` without a request.

        A name graphd does not know is an error, not a silent omission: graphd answers it with an
        error string instead of a number, and this raises :class:`WebServiceError` naming every
        such name with graphd's reason.

        :raises WebServiceError: an unknown name, no response, an HTTP error status, or bad JSON.
        """
        wanted = _names_param("stats", names)
        if wanted is not None and not wanted:
            return {}
        addr = self._addr(host)
        params = {"format": "json"}
        if wanted:
            params["stats"] = ",".join(wanted)
        url, code, body, _ = self._get(addr, "/stats", params)
        doc = self._json(url, addr, code, body)
        if not isinstance(doc, list):
            raise self._shape_error(url, addr, code, "a JSON array of {name: value} objects", body)
        out: dict[str, StatValue] = {}
        bad: dict[str, object] = {}
        for item in doc:
            if not isinstance(item, dict):
                raise self._shape_error(url, addr, code, "a JSON array of {name: value} objects", body)
            for name, raw in item.items():
                value = _to_number(raw)
                if value is None:
                    bad[name] = raw
                else:
                    out[name] = value
        if bad:
            reasons = "; ".join(f"{n}: {v}" for n, v in bad.items())
            raise WebServiceError(
                f"GET {url}: graphd has no value for {sorted(bad)}: {reasons}", status=code, host=str(addr)
            )
        missing = [n for n in (wanted or ()) if n not in out]
        if missing:
            raise WebServiceError(f"GET {url}: graphd left out {missing}", status=code, host=str(addr))
        return out

    def flags(self, names: Sequence[str] | None = None, host: str | None = None) -> dict[str, object]:
        """``GET /flags?format=json[&flags=a,b]``: graphd's gflags, read-only.

        Values are ``int`` (int32/uint32/int64/uint64 flags), ``float`` (double), ``bool`` or
        ``str``; ``None`` for a flag graphd cannot convert. ``names=None`` reads every flag; a str
        is one name; an empty sequence returns ``{}`` without a request. A name graphd does not know
        (it answers ``null``) raises :class:`WebServiceError` naming it.

        :raises WebServiceError: an unknown name, no response, an HTTP error status, or bad JSON.
        """
        wanted = _names_param("flags", names)
        if wanted is not None and not wanted:
            return {}
        addr = self._addr(host)
        params = {"format": "json"}
        if wanted:
            params["flags"] = ",".join(wanted)
        url, code, body, _ = self._get(addr, "/flags", params)
        doc = self._json(url, addr, code, body)
        items = doc.get("flags") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise self._shape_error(url, addr, code, 'a JSON object {"flags": [...]}', body)
        out: dict[str, object] = {}
        for item in items:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                raise self._shape_error(url, addr, code, 'flags as {"name": ..., "value": ...}', body)
            value = item.get("value")
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise WebServiceError(
                    f"GET {url}: flag {name!r} has a {type(value).__name__} value, expected a scalar",
                    status=code,
                    host=str(addr),
                )
            out[name] = value
        if wanted:
            unknown = [n for n in wanted if out.get(n) is None]
            if unknown:
                raise WebServiceError(
                    f"GET {url}: graphd has no flag {unknown}", status=code, host=str(addr)
                )
        return out

    # ---- plumbing ----------------------------------------------------------------------------

    def _new_pool_manager(self) -> urllib3.PoolManager:
        timeout = urllib3.Timeout(connect=self._connect_timeout, read=self._timeout)
        # Only connect errors are retried: the server did not get the request. Reads, statuses and
        # redirects get no retries (read=0 still wraps the error in MaxRetryError with its reason).
        retry = urllib3.Retry(
            total=self._retries,
            connect=self._retries,
            read=0,
            redirect=0,
            status=0,
            other=0,
            allowed_methods=frozenset({"GET"}),
            raise_on_redirect=False,
            raise_on_status=False,
            respect_retry_after_header=False,
            backoff_factor=0.05,
            backoff_max=0.5,
        )
        return urllib3.PoolManager(
            num_pools=max(10, len(self._addrs)),
            maxsize=self._maxsize,
            block=True,
            timeout=timeout,
            retries=retry,
            headers={"User-Agent": f"nebula_sync/{__version__}", "Accept": "application/json, text/plain"},
            **self._tls,
        )

    def _addr(self, host: str | None) -> HostAddress:
        if host is not None:
            return parse_address(host, self._port)
        if len(self._addrs) == 1:
            return self._addrs[0]
        raise ValueError(
            f"pass host=: {len(self._addrs)} hosts configured ({', '.join(self.hosts) or 'none'})"
        )

    def _pool(self, addr: HostAddress) -> HTTPConnectionPool:
        state = self._state
        if state.pid != os.getpid():
            self._reset_after_fork()
        with self._lock:
            if state.closed:
                raise ClientClosed(f"{self!r} is closed", host=str(addr))
            # No I/O here: the pool manager only builds (or looks up) the pool object.
            return state.pm.connection_from_host(addr.host, addr.port, scheme=self._scheme)

    def _reset_after_fork(self) -> None:
        # The inherited sockets are shared with the parent: never reuse them. The parent's lock may
        # have been held at fork time, so it is replaced too. Two child threads racing here each
        # build a pool manager; the loser's is dropped unused. pid goes last.
        self._lock = threading.Lock()
        self._state.pm = self._new_pool_manager()
        self._state.pid = os.getpid()

    def _get(self, addr: HostAddress, path: str, params: Mapping[str, str]) -> tuple[str, int, bytes, float]:
        """GET ``path``; return the URL, status, body and seconds taken. Non-2xx raises."""
        query = urlencode(params, safe=",")
        target = f"{path}?{query}" if query else path
        url = f"{self._scheme}://{str(addr)}{target}"
        pool = self._pool(addr)
        log.debug("GET %s", url)
        start = time.monotonic()
        try:
            resp = pool.urlopen(
                "GET",
                target,
                redirect=False,
                assert_same_host=False,
                # urllib3 types this int, but it goes to queue.get(timeout=), which takes a float
                pool_timeout=self._timeout,  # type: ignore[arg-type]
                # the body is read by _read_body, capped in size and time; it is decompressed
                # there too: urllib3's own decoding reads on, past the deadline, for as long as
                # what arrives inflates to nothing
                preload_content=False,
                decode_content=False,
            )
        except MaxRetryError as exc:
            reason = exc.reason if exc.reason is not None else exc
            raise self._transport_error(url, addr, reason) from reason
        except ClosedPoolError as exc:
            raise ClientClosed(f"GET {url}: {self!r} was closed", host=str(addr)) from exc
        except EmptyPoolError as exc:
            raise WebServiceError(
                f"GET {url}: no free connection within {self._timeout}s (maxsize={self._maxsize})",
                host=str(addr),
            ) from exc
        except HTTPError as exc:
            raise self._transport_error(url, addr, exc) from exc
        code = resp.status
        body = self._read_body(resp, url, addr)
        latency = time.monotonic() - start
        log.debug("GET %s -> %d (%d bytes, %.3fs)", url, code, len(body), latency)
        if not 200 <= code < 300:
            snippet = _snippet(body)
            raise WebServiceError(
                f"GET {url} answered HTTP {code} {resp.reason or ''}".rstrip()
                + (f": {snippet}" if snippet else ""),
                status=code,
                host=str(addr),
            )
        return url, code, body, latency

    def _read_body(self, resp: urllib3.BaseHTTPResponse, url: str, addr: HostAddress) -> bytes:
        """Read the whole body of ``resp``: at most ``max_response_bytes``, within ``timeout``.

        The connection always goes back to its pool: reusable after a complete body, closed
        otherwise (a body read only in part would desync the next request on it).
        """
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: list[bytes] = []
        size = 0
        complete = False
        read = resp.read1  # urllib3 >= 2.2; read(amt) could wait several times per call
        try:
            while True:
                cut = False  # whether this read's wait was shortened to end at the deadline
                if deadline is not None and timeout is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._body_error(url, addr, resp.status, f"did not arrive within {timeout}s")
                    # read1() waits at most once for bytes (only a chunk-size line of a chunked body
                    # can take several); that wait is the socket's timeout, which urllib3 sets again
                    # for the next request on this connection. The socket is gone when the server
                    # said "Connection: close": the wait is then bounded by the read timeout alone.
                    conn = resp.connection
                    sock = getattr(conn, "sock", None) if conn is not None else None
                    if sock is not None and left < timeout:
                        sock.settimeout(left)
                        cut = True
                try:
                    chunk = read(_READ_CHUNK)
                except ReadTimeoutError as exc:
                    what = f"did not arrive within {timeout}s" if cut else f"stalled for {timeout}s"
                    raise self._body_error(url, addr, resp.status, what) from exc
                if not chunk:
                    complete = True
                    return self._decoded(resp, b"".join(chunks), url, addr)
                size += len(chunk)
                if size > self._max_body:
                    raise self._body_error(url, addr, resp.status, f"is larger than {self._max_body} bytes")
                chunks.append(chunk)
        except HTTPError as exc:  # a broken connection, a bad content-encoding
            raise self._transport_error(url, addr, exc) from exc
        finally:
            if not complete:
                resp.close()  # closes the connection: the rest of the body is never read
            resp.release_conn()

    def _decoded(self, resp: urllib3.BaseHTTPResponse, body: bytes, url: str, addr: HostAddress) -> bytes:
        """``body`` decompressed as its ``Content-Encoding`` says, to at most ``max_response_bytes``
        (a small body can inflate to gigabytes)."""
        encoding = (resp.headers.get("Content-Encoding") or "").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise self._body_error(url, addr, resp.status, f"has an unknown Content-Encoding {encoding!r}")
        # gzip; deflate as zlib data, or raw deflate as some servers send it
        formats = [16 + zlib.MAX_WBITS] if "gzip" in encoding else [zlib.MAX_WBITS, -zlib.MAX_WBITS]
        for wbits in formats:
            inflater = zlib.decompressobj(wbits)
            try:
                out = inflater.decompress(body, self._max_body + 1)
            except zlib.error:
                continue
            if len(out) > self._max_body:
                raise self._body_error(url, addr, resp.status, f"is larger than {self._max_body} bytes")
            if inflater.eof:
                return out
        raise self._body_error(url, addr, resp.status, f"is not valid {encoding} data")

    @staticmethod
    def _body_error(url: str, addr: HostAddress, code: int, what: str) -> WebServiceError:
        return WebServiceError(f"GET {url}: the response body {what}", status=code, host=str(addr))

    def _transport_error(self, url: str, addr: HostAddress, reason: BaseException) -> WebServiceError:
        if isinstance(reason, NewConnectionError):
            what = f"could not connect: {reason}"
        elif isinstance(reason, ReadTimeoutError):
            what = f"no response within {self._timeout}s"
        elif isinstance(reason, _Urllib3Timeout):
            what = f"could not connect within {self._connect_timeout}s"
        elif isinstance(reason, SSLError):
            what = f"TLS failed: {reason}"
        elif isinstance(reason, ProtocolError):
            what = f"the connection broke before a complete response: {reason}"
        else:
            what = f"request failed: {reason}"
        return WebServiceError(f"GET {url}: {what}", status=None, host=str(addr))

    @staticmethod
    def _json(url: str, addr: HostAddress, code: int, body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise WebServiceError(
                f"GET {url}: response is not valid JSON ({exc}): {_snippet(body)!r}",
                status=code,
                host=str(addr),
            ) from exc
        except RecursionError as exc:  # json's decoder recurses once per nesting level
            raise WebServiceError(
                f"GET {url}: response JSON is nested too deeply to parse: {_snippet(body)!r}",
                status=code,
                host=str(addr),
            ) from exc

    @staticmethod
    def _shape_error(url: str, addr: HostAddress, code: int, expected: str, body: bytes) -> WebServiceError:
        return WebServiceError(
            f"GET {url}: expected {expected}, got {_snippet(body)!r}", status=code, host=str(addr)
        )


def _snippet(body: bytes) -> str:
    text = body[: _BODY_SNIPPET + 1].decode("utf-8", "backslashreplace").strip()
    return text if len(text) <= _BODY_SNIPPET else text[:_BODY_SNIPPET] + "..."
