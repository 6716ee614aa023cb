"""Fault injection and lifecycle of the fake graphd: stop/start, refuse, stall, drops, counters."""

from __future__ import annotations

import errno
import os
import resource
import select
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

import attrs
import pytest

from nebula_sync._thrift import service
from nebula_sync.testing import FakeGraphd, ServerStats

if TYPE_CHECKING:
    from conftest import RawClient

RawFactory = Callable[..., "RawClient"]
Factory = Callable[..., FakeGraphd]


def connect(server: FakeGraphd) -> None:
    """Open and close a TCP connection (raises if the connection is refused)."""
    socket.create_connection((server.host, server.port), timeout=5).close()


def no_data_within(sock: socket.socket, seconds: float) -> bool:
    readable, _, _ = select.select([sock], [], [], seconds)
    return not readable


# ---- construction and addresses --------------------------------------------------------------


def test_address_and_ports(fake_graphd_cluster: list[FakeGraphd]) -> None:
    ports = {s.port for s in fake_graphd_cluster}
    assert len(ports) == 3 and 0 not in ports
    for server in fake_graphd_cluster:
        assert server.host == "127.0.0.1"
        assert server.address == f"127.0.0.1:{server.port}"
        assert server.running
        assert "running=True" in repr(server)


def test_other_loopback_addresses(fake_graphd_factory: Factory, raw_client: RawFactory) -> None:
    server = fake_graphd_factory(host="127.0.0.3")
    assert server.address.startswith("127.0.0.3:")
    assert raw_client(server).verify().error_code == 0


def test_ipv6_loopback(raw_client: RawFactory) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python build")
    try:
        server = FakeGraphd("::1").start()
    except OSError as exc:
        pytest.skip(f"::1 unavailable here: {exc}")
    try:
        assert server.address == f"[::1]:{server.port}"
        assert raw_client(server).verify().error_code == 0
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "localhost", "::"])
def test_only_loopback(host: str) -> None:
    with pytest.raises(ValueError):
        FakeGraphd(host)


@pytest.mark.parametrize(
    "kwargs",
    [{"port": -1}, {"port": 70000}, {"session_idle_timeout": 0}, {"max_sessions_per_ip_per_user": -1}],
)
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FakeGraphd(**kwargs)  # type: ignore[arg-type]


def test_context_manager_and_idempotent_stop(raw_client: RawFactory) -> None:
    with FakeGraphd() as server:
        assert server.running
        assert server.start() is server  # already started: no-op
        raw_client(server).verify()
    assert not server.running
    server.stop()
    with pytest.raises(OSError):
        connect(server)


# ---- stop / start ----------------------------------------------------------------------------


def test_stop_and_start_on_the_same_port(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    port = fake_graphd.port
    client = raw_client(fake_graphd)
    sid = client.session()
    client.execute(sid, "USE test")
    fake_graphd.stop()
    with pytest.raises(EOFError):
        client.recv_frame()  # the open connection was closed
    with pytest.raises(ConnectionRefusedError):
        connect(fake_graphd)
    fake_graphd.start()
    assert fake_graphd.port == port
    again = raw_client(fake_graphd)
    resp = again.execute(sid, "RETURN 1")
    assert (resp.error_code, resp.space_name) == (0, b"test")  # sessions survive a restart
    stats = fake_graphd.stats()
    assert stats.connections_accepted == 2 and stats.connections_open == 1


def test_stop_ends_every_wait(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("HOLD", hold=True)
    fake_graphd.script("SLOW", delay=3600)
    holding, sleeping, stalled = (raw_client(fake_graphd) for _ in range(3))
    sid = holding.session()
    for client, stmt in ((holding, b"HOLD"), (sleeping, b"SLOW")):
        client.send("executeWithParameter", service.ExecuteWithParameterArgs(
            sessionId=sid, stmt=stmt, parameterMap={}))  # fmt: skip
    fake_graphd.wait_for(lambda s: s.statements_running == 2)
    fake_graphd.stall()
    stalled.send("verifyClientVersion", service.VerifyClientVersionArgs())
    fake_graphd.wait_for(lambda s: s.requests == 4)
    started = time.monotonic()
    fake_graphd.stop(timeout=10)
    assert time.monotonic() - started < 5
    for client in (holding, sleeping, stalled):
        with pytest.raises(EOFError):
            client.recv_frame()
    stats = fake_graphd.stats()
    assert (stats.connections_open, stats.statements_running) == (0, 0)


# ---- refuse ----------------------------------------------------------------------------------


def test_refuse_connections(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    existing = raw_client(fake_graphd)
    sid = existing.session()
    fake_graphd.refuse_connections(True)
    with pytest.raises(ConnectionRefusedError):
        connect(fake_graphd)
    assert existing.execute(sid, "RETURN 1").error_code == 0  # open connections keep working
    fake_graphd.refuse_connections(False)
    assert raw_client(fake_graphd).execute(sid, "RETURN 1").error_code == 0
    fake_graphd.refuse_connections(False)  # no-op


def test_refusing_survives_restart(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.refuse_connections(True)
    fake_graphd.stop()
    fake_graphd.start()
    with pytest.raises(ConnectionRefusedError):
        connect(fake_graphd)
    fake_graphd.refuse_connections(False)
    assert raw_client(fake_graphd).verify().error_code == 0


def test_start_while_refusing_still_picks_a_port() -> None:
    server = FakeGraphd()
    server.refuse_connections(True)
    with server:
        assert server.port != 0
        with pytest.raises(ConnectionRefusedError):
            connect(server)


# ---- accepting -------------------------------------------------------------------------------


def test_accepts_on_file_descriptors_above_1023(fake_graphd_factory: Factory, raw_client: RawFactory) -> None:
    # select.select() cannot watch a descriptor >= 1024 (FD_SETSIZE): the fake's accept loop used
    # to accept nothing then, spinning at 100% CPU while clients timed out.
    need = 1100 + 100  # the descriptors held below, plus room for the server and the client
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    held: list[int] = []
    try:
        # pipe() takes the lowest free numbers, so once it hands out 1100 every lower one is in use
        while not held or held[-1] < 1100:
            held.extend(os.pipe())
        server = fake_graphd_factory()  # its listener and wake-up sockets are numbered above 1100
        client = raw_client(server, timeout=3.0)
        assert client.sock.fileno() > 1100
        assert client.verify().error_code == 0
        assert client.execute(client.session(), "RETURN 1").error_code == 0
        assert server.stats().connections_accepted == 1
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_accept_errors_back_off_instead_of_spinning(
    monkeypatch: pytest.MonkeyPatch, raw_client: RawFactory
) -> None:
    # accept() failing with EMFILE leaves the listener readable: retrying at once spins a core
    calls: list[float] = []

    class OutOfDescriptors(socket.socket):
        """A listener whose first three accept() calls fail as in a process out of descriptors."""

        def accept(self) -> tuple[socket.socket, object]:
            calls.append(time.monotonic())
            if len(calls) <= 3:
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return super().accept()

    real_bind = FakeGraphd._bind

    def bind(server: FakeGraphd) -> socket.socket:
        listener = OutOfDescriptors(fileno=real_bind(server).detach())
        listener.setblocking(False)
        return listener

    monkeypatch.setattr(FakeGraphd, "_bind", bind)
    with FakeGraphd() as server:
        client = raw_client(server, timeout=5.0)
        assert client.verify().error_code == 0  # served once accept() works again
        assert len(calls) == 4
        tries = list(calls)  # (stopping makes the listener readable: one more call may follow)
    gaps = [later - earlier for earlier, later in zip(tries, tries[1:])]
    assert min(gaps) >= 0.05, gaps  # the listener is left alone ~0.1 s after each failure


# ---- stall -----------------------------------------------------------------------------------


def test_stall_reads_but_does_not_answer(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    sid = client.session()
    fake_graphd.stall(True)
    late = raw_client(fake_graphd)  # connections are still accepted
    client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=b"USE test", parameterMap={}))  # fmt: skip
    fake_graphd.wait_for(lambda s: s.requests == 2)
    assert no_data_within(client.sock, 0.2)
    assert fake_graphd.stats().statements == 0  # not executed either
    fake_graphd.stall(False)
    resp = client.recv("executeWithParameter").success
    assert resp.space_name == b"test"
    assert late.verify().error_code == 0


# ---- drops and session loss ------------------------------------------------------------------


def test_drop_connections_with_reset(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    clients = [raw_client(fake_graphd) for _ in range(3)]
    sid = clients[0].session()
    fake_graphd.wait_for(lambda s: s.connections_open == 3)  # all accepted by the server
    assert fake_graphd.drop_connections() == 3
    assert fake_graphd.stats().connections_open == 0
    for client in clients:
        with pytest.raises(ConnectionResetError):
            client.recv_frame()
    assert raw_client(fake_graphd).execute(sid, "RETURN 1").error_code == 0  # the server lives on


def test_drop_connections_gracefully(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    client.verify()
    assert fake_graphd.drop_connections(reset=False) == 1
    with pytest.raises(EOFError):
        client.recv_frame()


def test_drop_connections_during_a_hold(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    rule = fake_graphd.script("HOLD", hold=True)
    client = raw_client(fake_graphd)
    sid = client.session()
    client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=b"HOLD", parameterMap={}))  # fmt: skip
    assert rule.wait_hits(1)
    fake_graphd.drop_connections()
    with pytest.raises(ConnectionResetError):
        client.recv_frame()
    assert fake_graphd.stats().statements_running == 0


def test_forget_sessions_like_a_restart(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    sid = client.session()
    fake_graphd.stop()
    fake_graphd.forget_sessions()
    fake_graphd.start()
    resp = raw_client(fake_graphd).execute(sid, "RETURN 1")
    assert resp.error_code == -1002


# ---- counters --------------------------------------------------------------------------------


def test_stats_is_an_immutable_snapshot(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    before = fake_graphd.stats()
    client = raw_client(fake_graphd)
    client.verify()
    assert before.handshakes == 0 and fake_graphd.stats().handshakes == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        before.handshakes = 5  # type: ignore[misc]
    assert before == ServerStats()


def test_counters(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    client.verify()
    a = client.session("ann")
    b = client.session("bob")
    client.session("bob")
    client.execute(a, "RETURN 1")
    client.execute(b, "RETURN 1")
    client.execute(b, "RETURN 1 +")  # failed statements count too
    client.execute(0, "YIELD 1")
    client.execute(99, "RETURN 1")
    client.signout(a)
    stats = fake_graphd.wait_for(lambda s: s.signouts == 1)
    assert stats == ServerStats(
        connections_open=1, connections_accepted=1, requests=10, handshakes=1,
        handshakes_rejected=0, authentications=3, authentication_failures=0, signouts=1,
        sessions_open=2, sessions_by_user={"bob": 2}, sessions_expired=0, pings=1,
        invalid_session_requests=1, statements=3, statements_by_session={a: 1, b: 2},
        statements_running=0, max_concurrent_statements=1,
        max_concurrent_statements_per_session=1, max_concurrent_by_session={a: 1, b: 1},
    )  # fmt: skip


def test_reset_stats(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    client.execute(client.session(), "RETURN 1")
    fake_graphd.reset_stats()
    stats = fake_graphd.stats()
    assert (stats.statements, stats.authentications, stats.requests) == (0, 0, 0)
    assert stats.connections_open == 1 and stats.sessions_open == 1  # gauges stay
    assert fake_graphd.statement_log() == []


def test_wait_for_times_out(fake_graphd: FakeGraphd) -> None:
    with pytest.raises(TimeoutError, match="statements=0"):
        fake_graphd.wait_for(lambda s: s.statements > 0, timeout=0.05)


def test_concurrent_clients(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    clients = [raw_client(fake_graphd, protocol=("binary", "compact")[i % 2]) for i in range(8)]

    def work(client: RawClient) -> int:
        sid = client.session()
        total = 0
        for n in range(25):
            total += client.execute(sid, f"RETURN {n} AS n").data.rows[0].values[0].iVal
        return total

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(work, clients)) == [300] * 8
    stats = fake_graphd.stats()
    assert stats.statements == 200 and stats.sessions_open == 8
    assert stats.max_concurrent_statements_per_session == 1


# ---- command line ----------------------------------------------------------------------------


def test_command_line(raw_client: RawFactory) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nebula_sync.testing", "--host", "127.0.0.1", "--port", "0",
         "--user", "root:nebula", "--space", "only"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake graphd listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        client = raw_client(("127.0.0.1", port))
        assert client.verify().error_code == 0
        assert client.authenticate("root", "bad").error_code == -1001
        sid = client.session("root", "nebula")
        assert client.execute(sid, "SHOW SPACES").data.rows[0].values[0].sVal == b"only"
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_command_line_rejects_bad_arguments() -> None:
    for args in (["--user", "no-colon"], ["--host", "8.8.8.8"]):
        done = subprocess.run([sys.executable, "-m", "nebula_sync.testing", *args],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert done.returncode != 0
        assert done.stderr
