"""Regression tests of ``Connection.open()``, the TLS statement path's deadline and ``close()`` from
another thread, over real loopback sockets.

- The TLS statement path gives the wait for the reply only the time left after the send.
- ``open()`` shares its deadline among the addresses a name resolves to (each address does not get
  the whole connect timeout), and a connect that used up the time, or a name the resolver cannot
  encode, is a ``ConnectionFailed``, never a bare ``ValueError`` / ``UnicodeError``; ``HostAddress``
  rejects such a name up front.
- ``open()`` closes the socket whatever the handshake raised; ``ConnectionConfig`` rejects a
  ``handshake_key`` that cannot be sent.
- ``close()`` wakes a caller about to poll for its reply even when a new socket got the closed
  socket's file descriptor number.

Name resolution is simulated by patching ``socket.getaddrinfo`` for made-up names only; a "silent"
address is a loopback listener whose accept queue is full, so the kernel drops the SYNs and a
connect to it hangs. Every certificate is made at test time with ``trustme``.
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Optional

import attrs
import pytest
import trustme
from rawserver import ExpectEof, Handshake, RawServer, ReadFrame, WaitFor, verify_ok

from nebula_sync import ConnectionConfig, NebulaClient, SessionPoolConfig, TLSConfig
from nebula_sync._connection import Connection
from nebula_sync.config import HostAddress
from nebula_sync.errors import ConnectionFailed, NebulaError, OutcomeUnknown, RequestTimeout
from nebula_sync.testing import FakeGraphd

TIMEOUT = 10.0  # bound on every call that should not time out
#: how much later than its deadline a call may end (scheduling on a loaded machine); each test's
#: numbers make the old behaviour overrun by clearly more than this
MARGIN = 1.0
#: a made-up name, resolved by the ``resolve`` fixture only
NAME = "graphd.test"

Address = tuple[str, int]


# ---- fixtures and helpers --------------------------------------------------------------------


@attrs.frozen
class Pki:
    ca_file: str
    server_cert: trustme.LeafCert

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_cert.configure_cert(ctx)
        return ctx

    def tls(self) -> TLSConfig:
        return TLSConfig(ca_file=self.ca_file)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return Pki(ca_file=str(d / "ca.pem"), server_cert=ca.issue_cert(NAME, "127.0.0.1"))


@pytest.fixture
def tls_graphd(pki: Pki) -> Iterator[FakeGraphd]:
    """A fake graphd serving TLS with a certificate for ``graphd.test`` and 127.0.0.1."""
    with FakeGraphd(ssl_context=pki.server_context()) as server:
        yield server


@pytest.fixture
def silent() -> Iterator[Address]:
    """A loopback address whose connects hang: a listener with a full accept queue (backlog 0 and
    one connection nobody accepts), so the kernel drops every further SYN."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address: Address = listener.getsockname()
        with socket.create_connection(address, timeout=TIMEOUT):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.2)
                with pytest.raises(socket.timeout):  # the premise of every test using it
                    probe.connect(address)
            yield address


class Resolver:
    """What the patched ``socket.getaddrinfo`` answers for the made-up names (others go to the
    real resolver): a list of addresses, after an optional delay (a slow DNS server), or an error."""

    def __init__(self) -> None:
        self._names: dict[str, tuple[list[Address], float, Optional[BaseException]]] = {}
        self._lock = threading.Lock()

    def set(self, name: str, addresses: Sequence[Address] = (), *, delay: float = 0.0,
            error: Optional[BaseException] = None) -> None:  # fmt: skip
        with self._lock:
            self._names[name] = (list(addresses), delay, error)

    def lookup(self, host: Any) -> Optional[list[Any]]:
        with self._lock:
            entry = self._names.get(host)
        if entry is None:
            return None
        addresses, delay, error = entry
        if delay:
            threading.Event().wait(delay)  # an injected delay: the slow resolver is the fault
        if error is not None:
            raise error
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", a) for a in addresses]


@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    resolver = Resolver()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        found = resolver.lookup(host)
        return real(host, port, *args, **kwargs) if found is None else found

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return resolver


def address_of(server: FakeGraphd) -> Address:
    return (server.host, server.port)


# ---- the TLS statement path keeps its deadline -------------------------------------------------


class _TimedSendall:
    """A socket that notes when its ``sendall`` returned; everything else is the real one."""

    def __init__(self, real: socket.socket) -> None:
        self._real = real
        self.sent_at = 0.0

    def sendall(self, data: bytes) -> None:
        self._real.sendall(data)
        self.sent_at = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_tls_statement_after_a_slow_send_times_out_on_the_deadline(
    serve: Callable[..., RawServer], conns: list[Connection], pki: Pki
) -> None:
    """A TLS graphd that passes the handshake, reads nothing for a while (the client's send of a
    large statement blocks), then drains the request and never answers: the wait for the reply gets
    only what the send left of the deadline, not a whole new timeout."""
    limit, stall = 2.0, 1.5  # the old code waited stall + limit
    server_ctx = pki.server_context()

    def stall_then_drain(raw: socket.socket, server: RawServer) -> None:
        with server_ctx.wrap_socket(raw, server_side=True) as tls:
            req = server.read_request(tls)
            assert req is not None and req.method == "verifyClientVersion"
            tls.sendall(verify_ok(req))
            if server.stopping.wait(stall):  # not reading: the injected fault
                return
            tls.settimeout(0.2)  # so that stop() is noticed (it cannot shut a wrapped socket down)
            while not server.stopping.is_set():  # read all of it, never answer, until the client hangs up
                try:
                    if not tls.recv(1 << 20):
                        return
                except socket.timeout:
                    pass

    server = serve(stall_then_drain)
    conn = Connection(server.host_address, ConnectionConfig(tls=pki.tls(), request_timeout=limit))
    conns.append(conn)
    conn.open(time.monotonic() + TIMEOUT)
    assert conn._sock is not None
    timed = conn._sock = _TimedSendall(conn._sock)  # type: ignore[assignment]
    stmt = b"RETURN 1 //" + b"x" * (16 << 20)  # far more than the socket buffers hold
    start = time.monotonic()
    with pytest.raises(RequestTimeout):
        conn.execute(1, stmt, None, start + limit)
    elapsed = time.monotonic() - start
    assert timed.sent_at - start > stall / 2  # the premise: the send waited for the server
    assert limit <= elapsed < limit + MARGIN, f"{elapsed:.2f}s for a {limit}s deadline"
    assert not conn.is_usable


# ---- open(): the addresses of a name share the deadline ----------------------------------------


def test_open_shares_the_deadline_among_the_addresses_of_a_name(silent: Address, resolve: Resolver) -> None:
    resolve.set(NAME, [silent] * 3)  # the old code gave each address the whole timeout: 3 s
    conn = Connection(HostAddress(NAME, silent[1]), ConnectionConfig(connect_timeout=1.0))
    limit = 1.0
    start = time.monotonic()
    with pytest.raises(ConnectionFailed, match=f"could not connect to {NAME}"):
        conn.open(start + limit)
    elapsed = time.monotonic() - start
    assert elapsed < limit + MARGIN, f"{elapsed:.2f}s for a {limit}s deadline"
    assert not conn.is_usable


def test_tls_open_past_a_silent_first_address_reaches_the_next(
    silent: Address, resolve: Resolver, tls_graphd: FakeGraphd, pki: Pki, conns: list[Connection]
) -> None:
    """The first address does not eat the whole connect timeout, leaving none for the TLS
    handshake (the old code then raised ``ValueError: Timeout value out of range``)."""
    resolve.set(NAME, [silent, address_of(tls_graphd)])
    timeout = 1.0
    conn = Connection(
        HostAddress(NAME, tls_graphd.port), ConnectionConfig(tls=pki.tls(), connect_timeout=timeout)
    )
    conns.append(conn)
    start = time.monotonic()
    conn.open()
    elapsed = time.monotonic() - start
    assert elapsed < timeout + MARGIN, f"{elapsed:.2f}s for a {timeout}s connect timeout"
    assert conn.is_usable and isinstance(conn._sock, ssl.SSLSocket)
    conn.ping()
    assert conn.is_usable


# ---- open(): every failure to reach the host is a ConnectionFailed -----------------------------


def test_tls_open_with_no_time_left_after_the_connect_is_connection_failed(
    resolve: Resolver, tls_graphd: FakeGraphd, pki: Pki, conns: list[Connection]
) -> None:
    """A slow resolver uses up the connect timeout: no time is left for the TLS handshake. The old
    code connected anyway and set a negative socket timeout: ``ValueError``."""
    timeout, slow = 1.0, 1.3
    resolve.set(NAME, [address_of(tls_graphd)], delay=slow)
    conn = Connection(
        HostAddress(NAME, tls_graphd.port), ConnectionConfig(tls=pki.tls(), connect_timeout=timeout)
    )
    conns.append(conn)
    start = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        conn.open()
    assert info.value.host == f"{NAME}:{tls_graphd.port}"
    assert time.monotonic() - start < slow + MARGIN
    assert not conn.is_usable


def test_tls_open_whose_connect_used_up_the_time_does_not_start_the_handshake(
    tls_graphd: FakeGraphd, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the connect succeeds, but only as the connect timeout runs out: open() says so at once
    # instead of starting a TLS handshake with no time (a negative socket timeout)
    real = Connection._connect

    def slow_connect(self: Connection, deadline: Optional[float]) -> socket.socket:
        sock = real(self, deadline)
        assert deadline is not None
        threading.Event().wait(max(0.0, deadline - time.monotonic()) + 0.05)  # the injected slowness
        return sock

    monkeypatch.setattr(Connection, "_connect", slow_connect)
    cfg = ConnectionConfig(tls=pki.tls(), connect_timeout=0.5)
    conn = Connection(HostAddress(*address_of(tls_graphd)), cfg)
    with pytest.raises(ConnectionFailed, match="no time left for the TLS handshake"):
        conn.open()
    assert not conn.is_usable
    assert tls_graphd.stats().handshakes == 0


def test_a_garbled_handshake_over_tls_is_not_blamed_on_a_client_certificate(
    tls_graphd: FakeGraphd, pki: Pki
) -> None:
    # the reply came and cannot be read: not the "server rejected the TLS session" case
    tls_graphd.script(method="verifyClientVersion", raw=lambda ctx: ctx.frame(ctx.message()[:-5]), times=1)
    cfg = ConnectionConfig(tls=pki.tls(), connect_timeout=TIMEOUT)
    conn = Connection(HostAddress(*address_of(tls_graphd)), cfg)
    with pytest.raises(ConnectionFailed, match="version handshake") as info:
        conn.open()
    assert "certificate" not in str(info.value), str(info.value)
    assert not conn.is_usable


def test_a_name_the_resolver_cannot_encode_is_connection_failed(resolve: Resolver) -> None:
    with pytest.raises(UnicodeError) as encoding:
        ("a" * 64 + ".example").encode("idna")  # what getaddrinfo raises for such a name
    idna_error = encoding.value
    resolve.set(NAME, error=idna_error)
    conn = Connection(HostAddress(NAME, 9669), ConnectionConfig(connect_timeout=TIMEOUT))
    with pytest.raises(ConnectionFailed, match=f"could not resolve {NAME}") as info:
        conn.open(time.monotonic() + TIMEOUT)
    assert info.value.__cause__ is idna_error
    assert not conn.is_usable


@pytest.mark.parametrize(
    "host", ["a" * 64 + ".example", "graphd..example"], ids=["long label", "empty label"]
)
def test_host_address_rejects_a_name_idna_cannot_encode(host: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"host name '{host}' is not a valid DNS name")):
        HostAddress(host, 9669)


def test_client_reconnects_over_tls_past_a_silent_address(
    silent: Address, resolve: Resolver, tls_graphd: FakeGraphd, pki: Pki
) -> None:
    """After its connection drops, the client reconnects to a name that now lists a silent address
    first: the statement still succeeds (the old code's execute() and close() raised the open()'s
    bare ``ValueError``)."""
    resolve.set(NAME, [address_of(tls_graphd)])
    client = NebulaClient(
        f"{NAME}:{tls_graphd.port}",
        "root",
        "nebula",
        conn_config=ConnectionConfig(tls=pki.tls(), connect_timeout=1.0, request_timeout=TIMEOUT),
        session_pool_config=SessionPoolConfig(size=1, wait_timeout=TIMEOUT),
    )
    with client:
        assert client.execute("RETURN 1").rows() == [(1,)]
        resolve.set(NAME, [silent, address_of(tls_graphd)])
        assert tls_graphd.drop_connections() >= 1
        assert client.execute("RETURN 2").rows() == [(2,)]
    tls_graphd.wait_for(lambda s: s.connections_open == 0, 5.0)


# ---- open() never leaves the socket open -------------------------------------------------------


def test_handshake_key_that_cannot_be_sent_is_rejected() -> None:
    with pytest.raises(ValueError, match="handshake_key"):
        ConnectionConfig(handshake_key="3.0.0\udc80")  # a lone surrogate: no UTF-8 for it


def test_open_closes_the_socket_whatever_the_handshake_raised(
    serve: Callable[..., RawServer], conns: list[Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_handshake(self: Connection, deadline: Optional[float]) -> None:
        raise RuntimeError("not a NebulaError")

    monkeypatch.setattr(Connection, "_handshake", failing_handshake)
    server = serve([ExpectEof()])
    conn = Connection(server.host_address, ConnectionConfig(connect_timeout=TIMEOUT))
    conns.append(conn)
    with pytest.raises(RuntimeError, match="not a NebulaError"):
        conn.open(time.monotonic() + TIMEOUT)
    assert not conn.is_usable and conn._sock is None
    server.wait_until(lambda s: s.eofs == 1)  # the socket really is closed


# ---- close() from another thread ---------------------------------------------------------------


class _CloseThenReuse:
    """A poller that replays one interleaving deterministically: another thread closes the
    connection just before the caller polls for its reply, and a new socket gets the closed one's
    file descriptor number (sockets are made until one does: the lowest free number is used).
    Everything else (``register``, ``unregister``) goes to the real poller."""

    def __init__(self, conn: Connection, real: Any) -> None:
        self._conn = conn
        self._real = real
        self.fd = -1
        self.reused = False
        self.taken: list[socket.socket] = []

    def poll(self, *timeout: Any) -> Any:
        if self.fd == -1:
            sock = self._conn._sock
            assert sock is not None
            self.fd = sock.fileno()
            self._conn.close()
            for _ in range(256):
                pair = self._pair()
                self.taken.extend(pair)
                if self.fd in (pair[0].fileno(), pair[1].fileno()):
                    self.reused = True
                    break
        return self._real.poll(*timeout)

    def _pair(self) -> tuple[socket.socket, socket.socket]:
        return socket.socketpair()  # connected, and nothing to read: a poll on it waits

    def close(self) -> None:
        for sock in self.taken:
            sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("wait", ["for the reply", "to send"])
def test_close_before_a_wait_wakes_the_caller_even_if_the_fd_is_reused(
    serve: Callable[..., RawServer], conns: list[Connection], wait: str
) -> None:
    # "to send": the same race on the way out, a statement too big for the socket buffer waiting
    # for room to write the rest (on the connection's poller, which close() re-points)
    if wait == "for the reply":
        steps: list[Any] = [Handshake(), ReadFrame(), ExpectEof()]  # never answers the call
        make_poller: Callable[..., _CloseThenReuse] = _CloseThenReuse
        stmt = b"RETURN 1"
        error_type: type[NebulaError] = OutcomeUnknown
    else:
        steps = [Handshake(), WaitFor("never", timeout=TIMEOUT)]  # never reads the request
        make_poller, stmt, error_type = _FullSocketPair, b"RETURN 1 //" + b"x" * (16 << 20), ConnectionFailed
    server = serve(steps)
    conn = Connection(server.host_address, ConnectionConfig(request_timeout=TIMEOUT, tcp_keepalive=False))
    conns.append(conn)
    conn.open(time.monotonic() + TIMEOUT)
    poller = make_poller(conn, conn._poller)
    conn._poller = poller
    try:
        start = time.monotonic()
        with pytest.raises(error_type) as info:
            conn.execute(1, stmt, None, start + TIMEOUT)
        elapsed = time.monotonic() - start
    finally:
        poller.close()
    assert poller.reused, f"no new socket got fd {poller.fd}"
    assert elapsed < TIMEOUT / 2, f"woken after {elapsed:.2f}s, not at once"
    assert type(info.value) is error_type, repr(info.value)
    assert not conn.is_usable
    if wait == "for the reply":
        assert "was closed while waiting for executeWithParameter" in str(info.value)
        server.wait_until(lambda s: s.eofs == 1)


class _FullSocketPair(_CloseThenReuse):
    """:class:`_CloseThenReuse` for a wait to write: the new sockets have full send buffers, so a
    poll for room to write on the one with the old number would wait."""

    def _pair(self) -> tuple[socket.socket, socket.socket]:
        pair = socket.socketpair()
        for sock in pair:
            sock.setblocking(False)
            try:
                while True:
                    sock.send(b"x" * 65536)
            except BlockingIOError:
                pass
        return pair



def test_a_socket_that_cannot_be_made_for_one_address_moves_on_to_the_next(
    resolve: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # socket.create_connection goes on to the next address when socket() itself fails (an IPv6
    # address on a kernel without IPv6: EAFNOSUPPORT), and so must open()
    real_socket = socket.socket
    refused: list[int] = []

    def make(family: int = -1, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_INET6:
            refused.append(family)
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(family, *args, **kwargs)

    with FakeGraphd() as server:
        real = resolve.lookup

        def lookup(host: Any) -> Optional[list[Any]]:
            if host != NAME:
                return real(host)
            tcp = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            v6 = (socket.AF_INET6, *tcp, ("::1", server.port, 0, 0))
            return [v6, (socket.AF_INET, *tcp, address_of(server))]

        monkeypatch.setattr(resolve, "lookup", lookup)
        monkeypatch.setattr(socket, "socket", make)
        conn = Connection(HostAddress(NAME, server.port), ConnectionConfig(connect_timeout=TIMEOUT))
        try:
            conn.open(time.monotonic() + TIMEOUT)
            assert conn.is_usable and refused == [socket.AF_INET6]
        finally:
            conn.close()


def test_no_socket_at_all_is_connection_failed(resolve: Resolver, monkeypatch: pytest.MonkeyPatch) -> None:
    # out of file descriptors (EMFILE): a ConnectionFailed naming the host, not a bare OSError
    resolve.set(NAME, [("127.0.0.1", 9)])

    def make(*args: Any, **kwargs: Any) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket, "socket", make)
    with pytest.raises(ConnectionFailed, match=f"could not connect to {NAME}:9: .*Too many open files"):
        Connection(HostAddress(NAME, 9), ConnectionConfig(connect_timeout=TIMEOUT)).open()


def test_the_hung_up_pipe_is_made_again_if_something_closed_it() -> None:
    # a daemon library's closerange() may close it behind our back; its number could then be
    # somebody else's: close() must never point a poller at that
    from nebula_sync import _connection

    first = _connection._hung_up_fd()
    os.close(first)
    a, b = socket.socketpair()  # takes the freed number (the lowest free one)
    try:
        assert first in (a.fileno(), b.fileno())
        fresh = _connection._hung_up_fd()
        assert fresh not in (a.fileno(), b.fileno())
        assert stat.S_ISFIFO(os.fstat(fresh).st_mode)
        poller = select.poll()
        poller.register(fresh, select.POLLIN)
        assert poller.poll(0), "the pipe does not read as hung up"
    finally:
        a.close()
        b.close()
