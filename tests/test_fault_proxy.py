"""Tests of nebula_sync.testing._proxy.FaultProxy: every mode over real loopback sockets.

The upstream is a trivial echo server (tests/rawserver.py), so whatever a client sends comes back
through the proxy's reply path. Synchronisation is on the proxy's counters (``wait_until``), never on
sleeps; every socket has a timeout, so a broken proxy fails a test instead of hanging it.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import attrs
import pytest
from rawserver import Handshake, RawServer, ReadFrame, Reply, Serve, Step, WaitFor, execute_reply

from nebula_sync._connection import Connection
from nebula_sync.config import ConnectionConfig, HostAddress
from nebula_sync.errors import ConnectionFailed, OutcomeUnknown, ProtocolError, RequestTimeout
from nebula_sync.testing._proxy import FaultProxy, ProxyStats

TIMEOUT = 10.0  # bound on every blocking client call; never reached when the proxy works
#: How long a step may take beyond what it should: wide enough for a loaded 2-core machine, yet
#: half of TIMEOUT, so a step that waited for a TIMEOUT (or longer) deadline still fails.
SLACK = TIMEOUT / 2
QUIET = 0.3  # how long "nothing arrives" is checked for


def echo(conn: socket.socket, server: RawServer) -> None:
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


@pytest.fixture
def upstream() -> Iterator[RawServer]:
    with RawServer(echo) as server:
        yield server
    assert not server.errors


@pytest.fixture
def proxy(upstream: RawServer) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=("127.0.0.1", upstream.port)) as p:
        yield p
        assert not p.errors


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def connect(proxy: FaultProxy, clients: list[socket.socket]) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
    clients.append(s)
    return s


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return buf


def recv_to_end(sock: socket.socket) -> tuple[bytes, OSError | None]:
    """Everything until EOF or an error (returned, not raised)."""
    buf = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return buf, None
            buf += chunk
    except OSError as exc:
        return buf, exc


def assert_quiet(sock: socket.socket) -> None:
    """Nothing (not even EOF) arrives within QUIET seconds."""
    sock.settimeout(QUIET)
    with pytest.raises(socket.timeout):
        data = sock.recv(1)
        pytest.fail(f"expected silence, got {data!r}")
    sock.settimeout(TIMEOUT)


# ---- basics ----------------------------------------------------------------------------------


def test_pass_through_copies_both_ways_and_counts(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    assert proxy.mode == "pass_through"
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    data = bytes(range(256)) * 1024  # 256 KiB: several chunks, beyond one recv
    s = connect(proxy, clients)
    sender = threading.Thread(target=s.sendall, args=(data,), daemon=True)
    sender.start()
    assert recv_exactly(s, len(data)) == data
    sender.join(TIMEOUT)
    # The proxy counts a write after it returned: the client may read the bytes a moment earlier
    # (in both directions: the echo may come back before the last upstream write was counted).
    st = proxy.wait_until(lambda st: st.bytes_to_client == st.bytes_to_upstream == len(data))
    assert st.accepted == 1 and st.open == 1
    assert st.bytes_from_client == st.bytes_to_upstream == len(data)
    assert st.bytes_from_upstream == st.bytes_to_client == len(data)
    s.close()
    proxy.wait_until(lambda st: st.open == 0)


def test_half_close_propagates(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    s = connect(proxy, clients)
    s.sendall(b"bye")
    s.shutdown(socket.SHUT_WR)  # the echo server sees EOF, returns, and closes
    assert recv_to_end(s) == (b"bye", None)
    proxy.wait_until(lambda st: st.open == 0)


def test_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(upstream=("10.1.2.3", 9669))
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(upstream=("127.0.0.1", 9669), host="0.0.0.0")


def test_modes_validate_arguments(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError):
        proxy.delay(-1)
    with pytest.raises(ValueError):
        proxy.drip(0, 0.1)
    with pytest.raises(ValueError):
        proxy.truncate_reply(3, then="explode")
    with pytest.raises(ValueError):
        proxy.corrupt()
    with pytest.raises(ValueError):
        proxy.corrupt(lambda f: f, offset=3)
    with pytest.raises(ValueError):
        proxy.corrupt(offset=3, xor=0)
    assert proxy.mode == "pass_through"


def test_start_once_and_stop_idempotent(upstream: RawServer) -> None:
    p = FaultProxy(upstream=("127.0.0.1", upstream.port))
    p.stall()  # allowed before start: just sets the mode
    p.start()
    assert p.mode == "stall"
    with pytest.raises(RuntimeError):
        p.start()
    p.stop()
    p.stop()
    p.pass_through()  # after stop: harmless, no loop
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.port), timeout=TIMEOUT).close()


# ---- delay, drip, stall ----------------------------------------------------------------------


def test_delay_holds_each_reply_chunk(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    proxy.delay(0.3)
    s = connect(proxy, clients)
    start = time.monotonic()
    s.sendall(b"ping")
    assert recv_exactly(s, 4) == b"ping"
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 0.3 + SLACK
    # Requests are not delayed: they reach the upstream at once.
    assert proxy.stats().bytes_to_upstream == 4


def test_switching_mode_releases_held_bytes(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    proxy.delay(60)
    s = connect(proxy, clients)
    s.sendall(b"one")
    proxy.wait_until(lambda st: st.bytes_from_upstream == 3)
    s.sendall(b"two")
    proxy.wait_until(lambda st: st.bytes_from_upstream == 6)
    assert proxy.stats().bytes_to_client == 0
    start = time.monotonic()
    proxy.pass_through()
    assert recv_exactly(s, 6) == b"onetwo"  # released at once, in order
    assert time.monotonic() - start < 5


def test_drip_trickles_replies(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    proxy.drip(3, 0.05)
    s = connect(proxy, clients)
    data = bytes(range(12))
    start = time.monotonic()
    s.sendall(data)
    pieces: list[bytes] = []
    while sum(len(p) for p in pieces) < len(data):
        chunk = s.recv(100)
        assert chunk
        pieces.append(chunk)
    assert b"".join(pieces) == data
    assert all(len(p) <= 3 for p in pieces), pieces
    assert time.monotonic() - start >= 3 * 0.05  # 4 pieces, 3 intervals between them


def test_stall_is_a_black_hole(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    proxy.stall()
    s = connect(proxy, clients)
    s.sendall(b"hello?")
    proxy.wait_until(lambda st: st.bytes_from_client == 6)
    assert_quiet(s)
    st = proxy.stats()
    assert st.bytes_to_upstream == 0  # dropped: the request never reached the server
    assert st.bytes_to_client == 0
    proxy.pass_through()
    s.sendall(b"again")
    assert recv_exactly(s, 5) == b"again"


def test_stall_forwarding_requests_swallows_replies(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    proxy.stall(forward_requests=True)
    s = connect(proxy, clients)
    s.sendall(b"runs anyway")
    proxy.wait_until(lambda st: st.bytes_from_upstream == 11)  # the server did answer
    assert_quiet(s)
    assert proxy.stats().bytes_to_client == 0


def test_stall_keeps_client_waiting_when_upstream_closes(clients: list[socket.socket]) -> None:
    def read_one_and_close(conn: socket.socket, server: RawServer) -> None:
        server.read_frame(conn)
        server.event("read").set()

    with RawServer(read_one_and_close) as closer, FaultProxy(upstream=("127.0.0.1", closer.port)) as proxy:
        proxy.stall(forward_requests=True)
        s = connect(proxy, clients)
        s.sendall(frame(b"x"))
        assert closer.wait("read", TIMEOUT)
        closer.wait_until(lambda srv: not srv._conns)  # the upstream side is closed
        assert_quiet(s)  # the upstream's FIN is swallowed too
        proxy.pass_through()
        assert recv_to_end(s) == (b"", None)  # ... and delivered once the stall ends


def test_stall_with_upstream_down_still_accepts(clients: list[socket.socket]) -> None:
    port = _closed_port()
    with FaultProxy(upstream=("127.0.0.1", port)) as proxy:
        proxy.stall()
        s = connect(proxy, clients)
        proxy.wait_until(lambda st: st.upstream_failures == 1)
        s.sendall(b"anyone?")
        assert_quiet(s)
        assert proxy.stats().open == 1


def test_upstream_down_closes_client(clients: list[socket.socket]) -> None:
    with FaultProxy(upstream=("127.0.0.1", _closed_port())) as proxy:
        s = connect(proxy, clients)
        data, _err = recv_to_end(s)
        assert data == b""
        st = proxy.wait_until(lambda st: st.open == 0)
        assert st.upstream_failures == 1


# ---- resets and closes -----------------------------------------------------------------------


def test_reset_resets_every_open_connection(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    a, b = connect(proxy, clients), connect(proxy, clients)
    for s in (a, b):
        s.sendall(b"hi")
        assert recv_exactly(s, 2) == b"hi"
    assert proxy.reset() == 2
    for s in (a, b):
        with pytest.raises(ConnectionResetError):
            s.recv(10)
    st = proxy.stats()
    assert st.resets == 2 and st.open == 0
    # The mode is unchanged: new connections work.
    c = connect(proxy, clients)
    c.sendall(b"ok")
    assert recv_exactly(c, 2) == b"ok"


@pytest.mark.parametrize("n", [0, 1, 37, 99])
def test_reset_after_n_reply_bytes(proxy: FaultProxy, clients: list[socket.socket], n: int) -> None:
    proxy.reset_after(n)
    s = connect(proxy, clients)
    data = bytes(range(100))
    s.sendall(data)
    proxy.wait_until(lambda st: st.resets == 1)
    got, err = recv_to_end(s)
    assert got == data[:n]
    assert isinstance(err, ConnectionResetError)


def test_reset_after_counts_across_replies_per_connection(
    proxy: FaultProxy, clients: list[socket.socket]
) -> None:
    s = connect(proxy, clients)
    s.sendall(b"before")
    assert recv_exactly(s, 6) == b"before"  # bytes before the mode was set do not count
    proxy.reset_after(10)
    s.sendall(b"12345")
    assert recv_exactly(s, 5) == b"12345"
    s.sendall(b"6789012345")
    got, err = recv_to_end(s)
    assert got == b"67890"
    assert isinstance(err, ConnectionResetError)


@pytest.mark.parametrize("n", [0, 10])
def test_close_after_n_reply_bytes_is_clean(proxy: FaultProxy, clients: list[socket.socket], n: int) -> None:
    proxy.close_after(n)
    s = connect(proxy, clients)
    s.sendall(bytes(range(50)))
    got, err = recv_to_end(s)
    assert (got, err) == (bytes(range(n)), None)  # FIN, not RST
    assert proxy.stats().resets == 0
    s.sendall(b"ignored")  # the proxy drains until the client closes
    s.close()
    proxy.wait_until(lambda st: st.open == 0)


# ---- frame-aware faults ----------------------------------------------------------------------


def test_truncate_reply_then_hang(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    proxy.truncate_reply(6)
    s = connect(proxy, clients)
    f = frame(b"abcdefghij")
    s.sendall(f)
    assert recv_exactly(s, 6) == f[:6]
    assert_quiet(s)
    proxy.pass_through()  # a truncated connection stays cut
    s.sendall(f)
    assert_quiet(s)


@pytest.mark.parametrize("then", ["close", "reset"])
def test_truncate_reply_then_close_or_reset(
    proxy: FaultProxy, clients: list[socket.socket], then: str
) -> None:
    proxy.truncate_reply(5, then=then)
    s = connect(proxy, clients)
    f = frame(b"0123456789")
    s.sendall(f)
    got, err = recv_to_end(s)
    assert got == f[:5]
    if then == "close":
        assert err is None
    else:
        assert isinstance(err, ConnectionResetError)


def test_truncate_reply_waits_for_the_next_frame(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    s = connect(proxy, clients)
    first, second = frame(b"A" * 20), frame(b"B" * 20)
    s.sendall(first[:8])
    assert recv_exactly(s, 8) == first[:8]
    proxy.truncate_reply(5)  # set in the middle of a reply: applies to the next one
    s.sendall(first[8:] + second)
    assert recv_exactly(s, len(first) - 8 + 5) == first[8:] + second[:5]
    assert_quiet(s)


def test_truncate_reply_shorter_frame_passes_whole(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    proxy.truncate_reply(100, then="close")
    s = connect(proxy, clients)
    f = frame(b"short")
    s.sendall(f + frame(b"never"))
    assert recv_to_end(s) == (f, None)


@pytest.mark.parametrize("offset", [0, 4, 9, -1])
def test_corrupt_flips_a_byte_of_every_frame(
    proxy: FaultProxy, clients: list[socket.socket], offset: int
) -> None:
    proxy.corrupt(offset=offset, xor=0x20)
    s = connect(proxy, clients)
    for payload in (b"abcdefgh", b"ijklmnopqrstu"):
        f = frame(payload)
        s.sendall(f)
        want = bytearray(f)
        want[offset] ^= 0x20
        assert recv_exactly(s, len(f)) == bytes(want)


def test_corrupt_with_function_sees_whole_frames(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    seen: list[bytes] = []

    def rewrite(f: bytes) -> bytes:
        seen.append(f)
        return frame(f[4:].upper())

    proxy.corrupt(rewrite)
    s = connect(proxy, clients)
    f = frame(b"hello world")
    s.sendall(f[:7])  # the echo returns the frame in two pieces; the proxy buffers it whole
    proxy.wait_until(lambda st: st.bytes_from_upstream == 7)
    s.sendall(f[7:])
    assert recv_exactly(s, len(f)) == frame(b"HELLO WORLD")
    assert seen == [f]


def test_corrupt_function_error_resets_and_is_recorded(
    upstream: RawServer, clients: list[socket.socket]
) -> None:
    def boom(f: bytes) -> bytes:
        raise KeyError("boom")

    with FaultProxy(upstream=("127.0.0.1", upstream.port)) as proxy:
        proxy.corrupt(boom)
        s = connect(proxy, clients)
        s.sendall(frame(b"x"))
        got, err = recv_to_end(s)
        assert got == b"" and isinstance(err, ConnectionResetError)
        assert [type(e) for e in proxy.errors] == [KeyError]


# ---- accepting -------------------------------------------------------------------------------


def test_refuse_and_resume(proxy: FaultProxy, clients: list[socket.socket]) -> None:
    s = connect(proxy, clients)
    proxy.refuse()
    assert not proxy.accepting
    with pytest.raises(ConnectionRefusedError):
        connect(proxy, clients)
    s.sendall(b"still")  # open connections are unaffected
    assert recv_exactly(s, 5) == b"still"
    port = proxy.port
    proxy.resume_accepting()
    assert proxy.accepting and proxy.port == port
    t = connect(proxy, clients)
    t.sendall(b"back")
    assert recv_exactly(t, 4) == b"back"
    proxy.refuse()
    proxy.pass_through()  # also accepts again
    connect(proxy, clients)


def test_max_connections_rejects_extra(upstream: RawServer, clients: list[socket.socket]) -> None:
    with FaultProxy(upstream=("127.0.0.1", upstream.port), max_connections=2) as proxy:
        a, b = connect(proxy, clients), connect(proxy, clients)
        proxy.wait_until(lambda st: st.open == 2)
        try:
            c = connect(proxy, clients)
        except ConnectionResetError:
            pass  # the RST beat the end of connect(): fine, it was rejected
        else:
            got, err = recv_to_end(c)
            assert got == b"" and isinstance(err, ConnectionResetError)
        st = proxy.wait_until(lambda st: st.rejected == 1)
        assert st.accepted == 2
        for s in (a, b):
            s.sendall(b"ok")
            assert recv_exactly(s, 2) == b"ok"


# ---- stop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["delay", "drip", "stall"])
def test_stop_interrupts_waits(upstream: RawServer, clients: list[socket.socket], mode: str) -> None:
    proxy = FaultProxy(upstream=("127.0.0.1", upstream.port)).start()
    try:
        if mode == "delay":
            proxy.delay(60)
        elif mode == "drip":
            proxy.drip(1, 60)
        else:
            proxy.stall(forward_requests=True)
        s = connect(proxy, clients)
        s.sendall(b"0123456789")
        proxy.wait_until(lambda st: st.bytes_from_upstream == 10)
    finally:
        start = time.monotonic()
        proxy.stop()  # raises RuntimeError if its loop did not end within join_timeout
        assert time.monotonic() - start < SLACK  # not kept for the 60 s the fault holds bytes
    assert proxy._thread is not None and not proxy._thread.is_alive()
    got, _err = recv_to_end(s)
    assert len(got) <= 1  # drip sends its first byte at once; nothing else arrives
    assert proxy.stats().open == 0


def test_wait_until_times_out(proxy: FaultProxy) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        proxy.wait_until(lambda st: st.accepted == 1, timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 5.0 / 2  # not wait_until's default timeout (5 s)
    assert isinstance(proxy.stats(), ProxyStats)


# ---- with a Connection -----------------------------------------------------------------------

CFG = ConnectionConfig(connect_timeout=TIMEOUT, request_timeout=TIMEOUT, tcp_keepalive=False)


@pytest.fixture
def graphd() -> Iterator[RawServer]:
    with RawServer([Serve()]) as server:
        yield server
    assert not server.errors


def _open(proxy: FaultProxy) -> Connection:
    conn = Connection(HostAddress("127.0.0.1", proxy.port), CFG)
    conn.open(time.monotonic() + TIMEOUT)
    return conn


def _run(conn: Connection, timeout: float = TIMEOUT) -> object:
    return conn.execute(1, b"RETURN 1", None, time.monotonic() + timeout)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (lambda p: p.reset_after(0), OutcomeUnknown),
        (lambda p: p.reset_after(20), OutcomeUnknown),
        (lambda p: p.close_after(3), OutcomeUnknown),
        (lambda p: p.truncate_reply(30, then="close"), OutcomeUnknown),
        (lambda p: p.corrupt(offset=-1), ProtocolError),
        (lambda p: p.corrupt(offset=18, xor=0x01), ProtocolError),  # the envelope version
    ],
)
def test_connection_through_faults(graphd: RawServer, fault: object, error: type[Exception]) -> None:
    with FaultProxy(upstream=("127.0.0.1", graphd.port)) as proxy:
        conn = _open(proxy)
        assert _run(conn) is not None
        fault(proxy)  # type: ignore[operator]
        with pytest.raises(error):
            _run(conn)
        assert not conn.is_usable
        proxy.pass_through()
        fresh = _open(proxy)
        assert _run(fresh) is not None
        fresh.close()


def test_connection_stalled_times_out_then_recovers(graphd: RawServer) -> None:
    with FaultProxy(upstream=("127.0.0.1", graphd.port)) as proxy:
        conn = _open(proxy)
        proxy.stall()
        start = time.monotonic()
        with pytest.raises(RequestTimeout):
            _run(conn, 0.3)
        assert 0.3 <= time.monotonic() - start < 0.3 + SLACK  # the deadline, not request_timeout
        assert not conn.is_usable
        late = Connection(HostAddress("127.0.0.1", proxy.port), attrs.evolve(CFG, connect_timeout=0.3))
        with pytest.raises(ConnectionFailed):  # the stall applies to new connections too
            late.open()
        assert not late.is_usable
        proxy.pass_through()
        fresh = _open(proxy)
        assert _run(fresh) is not None
        fresh.close()


def test_idle_connection_reset_is_seen_by_is_dropped(graphd: RawServer) -> None:
    with FaultProxy(upstream=("127.0.0.1", graphd.port)) as proxy:
        conn = _open(proxy)
        assert not conn.is_dropped()
        assert proxy.reset() == 1
        sock = conn._sock
        assert sock is not None
        select.select([sock], [], [], TIMEOUT)  # wait for the RST to be readable
        assert conn.is_dropped()
        with pytest.raises((ConnectionFailed, OutcomeUnknown)):
            _run(conn)
        assert not conn.is_usable


def test_connection_refused_and_slow_replies(graphd: RawServer) -> None:
    with FaultProxy(upstream=("127.0.0.1", graphd.port)) as proxy:
        proxy.refuse()
        with pytest.raises(ConnectionFailed):
            _open(proxy)
        proxy.pass_through()
        conn = _open(proxy)
        proxy.drip(7, 0.001)
        assert _run(conn).latency_in_us == 7  # type: ignore[attr-defined]
        proxy.delay(0.05)
        assert _run(conn).latency_in_us == 7  # type: ignore[attr-defined]
        conn.close()


def test_late_reply_through_proxy_never_reaches_a_later_request() -> None:
    script: list[Step] = [
        Handshake(), ReadFrame(), WaitFor("late"), Reply(lambda r: execute_reply(r, latency_in_us=111))
    ]  # fmt: skip
    second: list[Step] = [
        Handshake(),
        ReadFrame(),
        Reply(lambda r: execute_reply(r, latency_in_us=222)),
    ]
    with RawServer(handlers=[script, second]) as server:
        with FaultProxy(upstream=("127.0.0.1", server.port)) as proxy:
            conn = _open(proxy)
            with pytest.raises(RequestTimeout):
                _run(conn, 0.2)
            server.event("late").set()  # the late reply now travels through the proxy
            with pytest.raises(ConnectionFailed):
                _run(conn)  # the timed-out connection is closed: it can't read the late bytes
            fresh = _open(proxy)
            assert _run(fresh).latency_in_us == 222  # type: ignore[attr-defined]
            fresh.close()
        assert not server.errors


def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port
