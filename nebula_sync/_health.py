"""Health checks of every graphd a :class:`~nebula_sync.NebulaClient` talks to.

Per host, two probes run at once:

* **web**: ``GET /status`` on graphd's HTTP web service (:class:`~nebula_sync.web.GraphdWebClient`):
  the HTTP status, whether graphd says ``"running"``, and the latency. Needs no credentials.
* **thrift**: a fresh connection to the Thrift port (TCP connect + the ``verifyClientVersion``
  handshake), then a ping (``execute(0, "YIELD 1")``, which any live graphd answers), then close.
  It uses the client's :class:`~nebula_sync.ConnectionConfig` (TLS, framing, handshake key) but
  none of its pools: it neither borrows nor disturbs a session, and works while every session is busy.

Neither proves graphd can reach metad or storaged; run a real query for that.

Thread-safety: :func:`check_health` may be called from any thread, concurrently; it only reads the
client's immutable configuration. The reports are immutable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

import attrs

from nebula_sync.config import ConnectionConfig, HostAddress, parse_address, parse_hosts
from nebula_sync.errors import ClientClosed, NebulaError, WebServiceError
from nebula_sync.web import DEFAULT_WEB_PORT, GraphdWebClient

if TYPE_CHECKING:
    from nebula_sync._client import NebulaClient
    from nebula_sync._pool import ConnectionFactory

__all__ = ["HealthReport", "HostHealth", "check_health"]

WebPorts = Union[int, Mapping[str, str], None]


@attrs.frozen(kw_only=True)
class HostHealth:
    """What the probes of one graphd found. Immutable.

    Latencies are seconds measured by the client; ``None`` when the probe got no answer.

    :param host: the Thrift address, ``"host:port"``, as the client names it.
    :param web_address: the web service address probed (``None``: the web probe was not run).
    :param http_status: the HTTP status of ``GET /status`` (``None``: no HTTP response).
    :param running: graphd answered ``/status`` with ``"status": "running"``.
    :param web_latency_s: time until the HTTP response (any status).
    :param web_error: why the web probe failed (``None`` when it succeeded or was not run).
    :param thrift_connect_s: time to connect and complete the version handshake.
    :param thrift_latency_s: round-trip time of the ping on that connection.
    :param thrift_error: why the Thrift probe failed (``None`` when it succeeded).
    """

    host: str
    web_address: Optional[str]
    http_status: Optional[int] = None
    running: bool = False
    web_latency_s: Optional[float] = None
    web_error: Optional[str] = None
    thrift_connect_s: Optional[float] = None
    thrift_latency_s: Optional[float] = None
    thrift_error: Optional[str] = None

    @property
    def web_checked(self) -> bool:
        """Whether the web probe was run (``web_port=None`` skips it)."""
        return self.web_address is not None

    @property
    def web_healthy(self) -> bool:
        """``/status`` answered 200 with ``"running"`` (``True`` when the web probe was skipped)."""
        if not self.web_checked:
            return True
        return self.http_status == 200 and self.running and self.web_error is None

    @property
    def thrift_healthy(self) -> bool:
        """The Thrift port accepted a connection, the handshake and a ping."""
        return self.thrift_error is None and self.thrift_latency_s is not None

    @property
    def healthy(self) -> bool:
        """Both probes succeeded."""
        return self.web_healthy and self.thrift_healthy

    @property
    def errors(self) -> tuple[str, ...]:
        """The failures, labelled (``"web: ..."``, ``"thrift: ..."``); empty when healthy."""
        out = []
        if self.web_checked and not self.web_healthy:
            out.append(f"web: {self.web_error or f'HTTP {self.http_status}, running={self.running}'}")
        if not self.thrift_healthy:
            out.append(f"thrift: {self.thrift_error or 'no ping reply'}")
        return tuple(out)


@attrs.frozen(kw_only=True)
class HealthReport:
    """The result of :func:`check_health`: one :class:`HostHealth` per host, in the client's order.

    Immutable. Iterating yields the hosts' reports.

    :param hosts: per-host results.
    :param elapsed_s: how long the whole check took.
    :param timeout: the timeout each probe had.
    """

    hosts: tuple[HostHealth, ...]
    elapsed_s: float
    timeout: float

    @property
    def healthy(self) -> bool:
        """Every host passed every probe."""
        return all(h.healthy for h in self.hosts)

    @property
    def any_healthy(self) -> bool:
        """At least one host passed every probe (the client can still serve statements)."""
        return any(h.healthy for h in self.hosts)

    @property
    def healthy_hosts(self) -> tuple[str, ...]:
        """The Thrift addresses of the hosts that passed every probe."""
        return tuple(h.host for h in self.hosts if h.healthy)

    @property
    def unhealthy_hosts(self) -> tuple[str, ...]:
        """The Thrift addresses of the hosts that failed a probe."""
        return tuple(h.host for h in self.hosts if not h.healthy)

    def host(self, name: str) -> HostHealth:
        """The report of host ``"h:p"`` (the Thrift address); ``KeyError`` if unknown."""
        key = _host_key(name)
        for h in self.hosts:
            if h.host == key:
                return h
        raise KeyError(name)

    def __iter__(self) -> Iterator[HostHealth]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (e.g. for a ``/health`` endpoint)."""
        return {
            "healthy": self.healthy,
            "elapsed_s": round(self.elapsed_s, 6),
            "hosts": [
                {
                    "host": h.host,
                    "healthy": h.healthy,
                    "web_address": h.web_address,
                    "http_status": h.http_status,
                    "running": h.running,
                    "web_latency_s": h.web_latency_s,
                    "thrift_connect_s": h.thrift_connect_s,
                    "thrift_latency_s": h.thrift_latency_s,
                    "errors": list(h.errors),
                }
                for h in self.hosts
            ],
        }


def _host_key(text: str) -> str:
    parsed = parse_hosts(text)
    if len(parsed) != 1:
        raise ValueError(f"expected one host address, got {text!r}")
    return str(parsed[0])


def _web_addresses(addresses: tuple[HostAddress, ...], web_port: WebPorts) -> dict[str, Optional[str]]:
    """``{thrift address: web address or None}``; validates ``web_port``."""
    if web_port is None:
        return {str(a): None for a in addresses}
    if isinstance(web_port, Mapping):
        given: dict[str, str] = {}
        for key, value in web_port.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("web_port mapping must map 'host:port' strings to 'host:port' strings")
            # checked now (a typo is an error, not an "outage"), as the web client reads it:
            # a missing port means graphd's default web port
            given[_host_key(key)] = str(parse_address(value, DEFAULT_WEB_PORT))
        missing = [str(a) for a in addresses if str(a) not in given]
        if missing:
            raise ValueError(f"web_port mapping has no web address for {missing}")
        return {str(a): given[str(a)] for a in addresses}
    if isinstance(web_port, bool) or not isinstance(web_port, int):
        raise TypeError(f"web_port must be an int, a mapping or None, not {type(web_port).__name__}")
    if not 0 < web_port < 65536:
        raise ValueError(f"web_port must be in 1..65535, got {web_port}")
    return {str(a): str(HostAddress(a.host, web_port)) for a in addresses}


_WEB_FIELDS = ("http_status", "running", "web_latency_s", "web_error")
_THRIFT_FIELDS = ("thrift_connect_s", "thrift_latency_s", "thrift_error")


def _error_text(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, NebulaError) else str(exc)
    return f"{type(exc).__name__}: {text}"


def _probe_web(web: GraphdWebClient, address: str, out: dict[str, Any]) -> None:
    start = time.monotonic()
    try:
        status = web.status(address)
    except WebServiceError as exc:
        out["web_error"] = _error_text(exc)
        if exc.status is not None:
            out["http_status"] = exc.status
            out["web_latency_s"] = time.monotonic() - start
    except Exception as exc:  # a health check reports, it never raises
        out["web_error"] = _error_text(exc)
    else:
        out["http_status"] = 200
        out["running"] = status.is_running
        out["web_latency_s"] = status.latency_s
        if not status.is_running:
            out["web_error"] = f"graphd reports status {status.status!r}"


def _probe_thrift(factory: ConnectionFactory, address: HostAddress, config: ConnectionConfig,
                  deadline: float, out: dict[str, Any]) -> None:  # fmt: skip
    start = time.monotonic()
    try:
        conn = factory(address, config)
        conn.open(deadline)
    except Exception as exc:
        out["thrift_error"] = _error_text(exc)
        return
    connected = time.monotonic()
    out["thrift_connect_s"] = connected - start
    try:
        left = deadline - connected
        if left <= 0:
            out["thrift_error"] = "no time left for the ping after connecting"
            return
        conn.ping(left)
        out["thrift_latency_s"] = time.monotonic() - connected
    except Exception as exc:
        out["thrift_error"] = _error_text(exc)
    finally:
        conn.close()


def check_health(
    client: NebulaClient,
    *,
    web_port: WebPorts = DEFAULT_WEB_PORT,
    timeout: float = 2.0,
) -> HealthReport:
    """Probe every host of ``client`` over HTTP (``/status``) and Thrift (connect + ping), at once.

    Never raises for an unhealthy host: failures are in the report. Returns within about
    ``timeout`` seconds whatever the hosts do; a probe still running then is reported as timed out
    and goes on in the background until its own timeouts hit, then closes its socket. (The web
    probe's connect, its wait for the response and its read of the whole body each have
    ``timeout``, and the body is capped at :data:`~nebula_sync.web.MAX_RESPONSE_BYTES`: a web
    server that keeps sending does not keep the probe's thread.)

    :param client: the client whose hosts (and connection settings) to check; it is not used
        otherwise: no session is borrowed.
    :param web_port: graphd's ``--ws_http_port`` on every host (``19669`` by default), or a mapping
        from each Thrift address (``"h:9669"``) to its web address (``"h:19669"``), or ``None`` to
        skip the web probe.
    :param timeout: seconds each probe may take; the probes run concurrently.
    :raises ClientClosed: the client is closed.
    :raises ValueError, TypeError: invalid ``web_port`` or ``timeout``.

    Thread-safe: any number of threads may run it at once.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    if client.closed:
        raise ClientClosed("the client is closed")
    addresses: tuple[HostAddress, ...] = client._addresses
    webs = _web_addresses(addresses, web_port)
    cfg = client._conn_config
    limit = float(timeout)
    probe_cfg = attrs.evolve(
        cfg,
        connect_timeout=limit if cfg.connect_timeout is None else min(cfg.connect_timeout, limit),
        request_timeout=limit,
        ping_timeout=limit,
    )
    start = time.monotonic()
    deadline = start + limit
    results: dict[str, dict[str, Any]] = {str(a): {} for a in addresses}
    web = GraphdWebClient(None, timeout=limit, retries=0, maxsize=1) if web_port is not None else None
    threads: list[tuple[str, str, threading.Thread]] = []
    for addr in addresses:
        name = str(addr)
        web_addr = webs[name]
        if web is not None and web_addr is not None:
            t = threading.Thread(target=_probe_web, args=(web, web_addr, results[name]),
                                 name=f"nebula-health-web-{name}", daemon=True)  # fmt: skip
            threads.append((name, "web", t))
        t = threading.Thread(target=_probe_thrift,
                             args=(client._factory, addr, probe_cfg, deadline, results[name]),
                             name=f"nebula-health-thrift-{name}", daemon=True)  # fmt: skip
        threads.append((name, "thrift", t))
    fields: dict[str, dict[str, Any]] = {str(a): {} for a in addresses}
    try:
        for _, _, t in threads:
            t.start()
        for _, _, t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for name, kind, t in threads:
            # A probe still running keeps writing into results[name]; copy what it has so far (a
            # dict copy is atomic) and call it timed out. Later writes are not seen. Ask first,
            # copy second: a probe that ends in between is then reported timed out, never as
            # done with its results missing.
            alive = t.is_alive()
            snap = dict(results[name])
            keys = _WEB_FIELDS if kind == "web" else _THRIFT_FIELDS
            fields[name].update({k: snap[k] for k in keys if k in snap})
            if alive:
                fields[name][f"{kind}_error"] = f"no answer within {limit:g}s"
    finally:
        if web is not None:
            web.close()  # a request still in flight ends by its own timeout, then is discarded
    hosts = tuple(HostHealth(host=str(a), web_address=webs[str(a)], **fields[str(a)]) for a in addresses)
    return HealthReport(hosts=hosts, elapsed_s=time.monotonic() - start, timeout=limit)
