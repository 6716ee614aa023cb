"""Session hygiene: no session or connection is left on graphd, whatever path a client took.

* 200 clients opened, used and closed in a loop leave 0 sessions and 0 connections on the server
  (and the process's file descriptors back where they were);
* the per-user session limit (graphd's ``max_sessions_per_ip_per_user``) gives a clear error that
  names the limit, and the client recovers once sessions are free;
* the unhappy paths (timeouts, server errors, exceptions inside ``session()`` blocks, forgotten
  sessions, a kept connection dropped while idle, ``close()`` cutting off a statement) leave
  nothing behind either.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest
from waiting import wait_until

from nebula_sync import ConnectionConfig, NebulaClient, SessionConfig, SessionPoolConfig
from nebula_sync._connection import Connection
from nebula_sync.config import HostAddress
from nebula_sync.errors import (
    AuthenticationError,
    ClientClosed,
    OutcomeUnknown,
    RequestTimeout,
    StatementSyntaxError,
)
from nebula_sync.testing import FakeGraphd

Factory = Callable[..., FakeGraphd]


def make_client(server: FakeGraphd, *, size: int = 2, wait: float = 5.0, **kw: Any) -> NebulaClient:
    return NebulaClient(
        server.address,
        kw.pop("username", "root"),
        kw.pop("password", "nebula"),
        session_pool_config=SessionPoolConfig(size=size, wait_timeout=wait),
        conn_config=kw.pop("conn_config", ConnectionConfig(connect_timeout=2.0, request_timeout=5.0)),
        **kw,
    )


def settled(server: FakeGraphd, timeout: float = 5.0) -> Any:
    return server.wait_for(lambda s: s.sessions_open == 0 and s.connections_open == 0, timeout)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def recording_factory() -> tuple[list[Connection], Callable[[HostAddress, ConnectionConfig], Connection]]:
    """A ``connection_factory`` and the list of every connection it made."""
    conns: list[Connection] = []

    def factory(address: HostAddress, config: ConnectionConfig) -> Connection:
        conns.append(Connection(address, config))
        return conns[-1]

    return conns, factory


# ---- many clients ------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_200_clients_opened_and_closed_leave_nothing(fake_graphd: FakeGraphd) -> None:
    fds_before = open_fds()
    for i in range(200):
        with make_client(fake_graphd, size=2) as client:
            assert client.execute("RETURN $i", {"i": i}).rows() == [(i,)]
            if i % 10 == 0:
                # Some clients use two sessions at once, and a held session block.
                with client.session() as session, ThreadPoolExecutor(1) as pool:
                    other = pool.submit(client.execute, "RETURN 'other'")
                    assert session.execute("RETURN 'held'").rows() == [("held",)]
                    assert other.result(5).rows() == [("other",)]
    stats = settled(fake_graphd)
    assert stats.sessions_open == 0 and stats.connections_open == 0
    assert stats.authentications == stats.signouts == 200 + 20  # 20 clients used two sessions
    assert stats.statements == 200 + 20 * 2
    wait_until(lambda: open_fds() <= fds_before)


def test_200_clients_from_8_threads_leave_nothing(fake_graphd: FakeGraphd) -> None:
    def one(i: int) -> int:
        with make_client(fake_graphd, size=1) as client:
            value: int = client.execute("RETURN $i", {"i": i}).rows()[0][0]
            return value

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(one, range(200))) == list(range(200))
    stats = settled(fake_graphd)
    assert stats.authentications == stats.signouts == 200


# ---- the per-user session limit ----------------------------------------------------------------


def test_session_limit_names_the_limit_and_the_client_recovers(fake_graphd_factory: Factory) -> None:
    server = fake_graphd_factory(max_sessions_per_ip_per_user=2)
    rule = server.script("RETURN 'hold'", hold=True)
    holder = make_client(server, size=2)
    other = make_client(server, size=2)
    try:
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(holder.execute, "RETURN 'hold'") for _ in range(2)]
            server.wait_for(lambda s: s.statements_running == 2 and s.sessions_open == 2)
            with pytest.raises(AuthenticationError) as info:
                other.execute("RETURN 1")
            text = str(info.value)
            assert "max_sessions_per_ip_per_user" in text and "threshold is 2" in text, text
            assert "root" in text and server.address in text, text
            assert not info.value.is_retryable()
            # The failure released everything it took.
            st = other.stats()
            assert st.sessions_busy == 0 and st.sessions_idle == 0
            assert st.hosts[0].state == "up"  # a session limit is not a dead host
            rule.release()
            assert [f.result(5).rows() for f in held] == [[("hold",)], [("hold",)]]
        holder.close()
        server.wait_for(lambda s: s.sessions_open == 0)
        # Sessions are free again: the other client gets one (after its short auth backoff).
        deadline = time.monotonic() + 5.0
        while True:
            try:
                assert other.execute("RETURN 'recovered'").rows() == [("recovered",)]
                break
            except AuthenticationError:
                assert time.monotonic() < deadline, "the client never recovered"
                threading.Event().wait(0.05)  # the client's own backoff (<= 2 s) is running
        assert server.stats().sessions_open == 1
    finally:
        holder.close()
        other.close()
    settled(server)


def test_a_host_at_its_session_limit_sends_callers_to_another_host(fake_graphd_factory: Factory) -> None:
    # Host a allows one session, host b three: six callers at once all get a session, on b (or
    # a's one) as they come free, instead of a's refusal ("Too many sessions") reaching them.
    a = fake_graphd_factory(max_sessions_per_ip_per_user=1)
    b = fake_graphd_factory()
    rules = [server.script("RETURN 'held'", hold=True) for server in (a, b)]
    client = NebulaClient([a.address, b.address], "root", "nebula",
                          session_pool_config=SessionPoolConfig(size=3, wait_timeout=10.0),
                          conn_config=ConnectionConfig(request_timeout=10.0))  # fmt: skip
    try:
        with ThreadPoolExecutor(6) as pool:
            calls = [pool.submit(client.execute, "RETURN 'held'") for _ in range(6)]
            wait_until(lambda: a.stats().statements_running + b.stats().statements_running == 4)
            assert a.stats().authentication_failures >= 1  # a's limit was hit
            for rule in rules:
                rule.release()
            assert [c.result(10).rows() for c in calls] == [[("held",)]] * 6
        assert a.stats().max_concurrent_statements_per_session == 1
        assert b.stats().max_concurrent_statements_per_session == 1
    finally:
        for rule in rules:
            rule.release()
        client.close()
    settled(a)
    settled(b)


def test_a_caller_sent_from_a_refusing_host_does_not_hold_up_others(fake_graphd_factory: Factory) -> None:
    # X is refused a new session on a and waits for b's (held by a block); Z, behind it, may still
    # take a's free slot, which accepts sessions again: it must not wait behind X.
    a, b = fake_graphd_factory(), fake_graphd_factory()
    client = NebulaClient([a.address, b.address], "root", "nebula",
                          session_pool_config=SessionPoolConfig(size=1, wait_timeout=10.0))  # fmt: skip
    try:
        with contextlib.ExitStack() as blocks:
            opened = [blocks.enter_context(client.session()) for _ in range(2)]
            for block in opened:
                block.execute("RETURN 1")
            on_a = next(block for block in opened if block.host == a.address)
            on_a.execute("USE test")  # so its session is signed out as the block ends: a's slot is empty
            on_a._finish()
            a.script(method="authenticate", error=-1002, message="Too many sessions", times=1)
            with ThreadPoolExecutor(1) as pool:
                x = pool.submit(client.execute, "RETURN 10 AS v")
                wait_until(lambda: len(client._broker._waiters) == 1)  # X waits for b, avoiding a
                with client.session(wait_timeout=0.5) as z:  # a PoolTimeout if it queued behind X
                    assert z.execute("RETURN 30 AS v").rows() == [(30,)] and z.host == a.address
                blocks.close()  # b's block ends: X gets its session
                assert x.result(10).rows() == [(10,)]
    finally:
        client.close()


def test_a_refusing_host_with_no_other_host_up_raises_the_refusal(fake_graphd_factory: Factory) -> None:
    a, b = fake_graphd_factory(), fake_graphd_factory()
    client = NebulaClient([a.address, b.address], "root", "nebula",
                          session_pool_config=SessionPoolConfig(size=2, wait_timeout=10.0),
                          conn_config=ConnectionConfig(connect_timeout=1.0, request_timeout=5.0))  # fmt: skip
    try:
        b.stop()
        client._broker.backoff_base = 30.0  # b stays down for the test
        while client.stats().host(b.address).state != "down":
            client.execute("RETURN 1", idempotent=True)  # finds b down (and retries on a)
        a.script(method="authenticate", error=-1002, message="Too many sessions", times=1)
        a.forget_sessions()  # the next call needs a new session, and a refuses it
        with pytest.raises(AuthenticationError, match="Too many sessions"):
            client.execute("RETURN 2")  # not a PoolTimeout after wait_timeout: nothing can take it
    finally:
        client.close()


def test_a_refused_renewal_on_the_fast_path_goes_to_another_host(fake_graphd_factory: Factory) -> None:
    a, b = fake_graphd_factory(), fake_graphd_factory()
    client = NebulaClient([a.address, b.address], "root", "nebula",
                          session_pool_config=SessionPoolConfig(size=1, wait_timeout=5.0))  # fmt: skip
    try:
        first = client.execute("RETURN 1")
        client._broker._rr = [h.name for h in client._hosts].index(str(first.host))  # the same host next
        lost = a if first.host == a.address else b
        lost.forget_sessions()  # graphd lost the session: the statement gets E_SESSION_INVALID
        lost.script(method="authenticate", error=-1002, message="Too many sessions", times=1)
        rs = client.execute("RETURN 5 AS v")  # the renewal is refused on that host
        assert rs.rows() == [(5,)] and rs.host != first.host
    finally:
        client.close()


def test_session_limit_inside_one_client_larger_than_the_limit(fake_graphd_factory: Factory) -> None:
    # size=4 but graphd allows 2 sessions: the pool must work with the 2 it gets, without leaking.
    server = fake_graphd_factory(max_sessions_per_ip_per_user=2)
    errors: list[str] = []
    ok = 0
    lock = threading.Lock()
    with make_client(server, size=4) as client:

        def work(t: int) -> None:
            nonlocal ok
            for i in range(25):
                try:
                    value = client.execute("RETURN $t * 100 + $i", {"t": t, "i": i}).rows()[0][0]
                except AuthenticationError as exc:
                    assert "threshold is 2" in str(exc)
                    continue
                with lock:
                    if value != t * 100 + i:
                        errors.append(f"{t}/{i}: {value}")
                    ok += 1

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(work, range(4)))
        assert server.stats().sessions_open <= 2
    assert errors == []
    assert ok >= 50  # the two sessions it got did most of the work
    settled(server)


# ---- the unhappy paths -------------------------------------------------------------------------


def test_unhappy_paths_leave_no_session_behind(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script("RETURN 'slow'", delay=1.0)
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=0.2)
    client = make_client(fake_graphd, size=3, conn_config=cfg, session_config=SessionConfig(space="test"))
    try:
        with pytest.raises(RequestTimeout):
            client.execute("RETURN 'slow'")
        with pytest.raises(StatementSyntaxError):
            client.execute("RETURN (")
        with pytest.raises(ZeroDivisionError), client.session() as session:
            session.execute("USE basketballplayer")
            raise ZeroDivisionError  # the caller's own failure inside a session block
        fake_graphd.forget_sessions()
        assert client.execute("RETURN 1").rows() == [(1,)]
        for s in fake_graphd.sessions():
            fake_graphd.kill_session(s.session_id)
        with ThreadPoolExecutor(3) as pool:
            assert len(list(pool.map(lambda i: client.execute("RETURN $i", {"i": i}), range(30)))) == 30
        fake_graphd.script("RETURN 'drop'", drop="mid_reply", times=1)
        with pytest.raises(OutcomeUnknown):
            client.execute("RETURN 'drop'")
        assert client.execute("RETURN 2").rows() == [(2,)]  # so at least one session is open
        spaces = [s.space for s in fake_graphd.sessions()]
        assert spaces and set(spaces) == {"test"}, spaces
    finally:
        client.close()
    settled(fake_graphd)


def test_wrong_password_clients_leave_nothing() -> None:
    with FakeGraphd(users={"root": "nebula"}) as server:
        for _ in range(20):
            with make_client(server, password="wrong") as client, pytest.raises(AuthenticationError):
                client.execute("RETURN 1")
        stats = settled(server)
        assert stats.authentications == 0 and stats.sessions_open == 0


@pytest.mark.parametrize("reset", [False, True], ids=["FIN", "RST"])
def test_close_signs_out_a_session_whose_kept_connection_was_dropped(
    fake_graphd: FakeGraphd, reset: bool
) -> None:
    # An idle session keeps the connection it last used. If graphd (or anything between) closed
    # that connection, the sign-out must not go into it: after a FIN the send itself succeeds
    # and the request is lost; after an RST the send fails. Either way the next one is used.
    conns, factory = recording_factory()
    client = make_client(fake_graphd, size=1, connection_factory=factory)
    try:
        assert client.execute("RETURN 1").rows() == [(1,)]
        assert fake_graphd.drop_connections(reset=reset) == 1
        (kept,) = conns
        wait_until(kept.is_dropped)  # the FIN or RST has reached the client's socket
    finally:
        client.close()
    stats = settled(fake_graphd)
    assert stats.authentications == 1 and stats.signouts == 1


def test_close_tries_one_connection_to_a_host_it_cannot_reach(fake_graphd: FakeGraphd) -> None:
    # graphd is killed (every connection gets its FIN) and does not come back: the kept
    # connections are dead and a new one is refused. close() tries one new connection for the
    # host, not one per session, and returns; the sessions stay until graphd's idle timeout.
    conns, factory = recording_factory()
    client = make_client(fake_graphd, size=3, connection_factory=factory)
    try:
        with client.session() as a, client.session() as b, client.session() as c:
            for s in (a, b, c):
                s.execute("RETURN 1")
        made = len(conns)
        assert made == 3 and len(fake_graphd.sessions()) == 3
        fake_graphd.stop()
        wait_until(lambda: all(conn.is_dropped() for conn in conns))
    finally:
        client.close()
    assert len(conns) == made + 1  # one connection attempt, refused
    assert client.stats().hosts[0].sessions_signed_out == 0
    fake_graphd.start()
    assert len(fake_graphd.sessions()) == 3  # left to graphd's idle timeout


def test_close_cutting_off_a_statement_still_signs_its_session_out(fake_graphd: FakeGraphd) -> None:
    rule = fake_graphd.script("RETURN 'stuck'", hold=True)
    # request_timeout is far longer than close_timeout: a close() that waited for the stuck
    # statements to time out is told apart from a slow machine
    request_timeout = 20.0
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=request_timeout)
    client = make_client(fake_graphd, size=2, close_timeout=0.2, conn_config=cfg)
    with ThreadPoolExecutor(3) as pool:
        stuck = [pool.submit(client.execute, "RETURN 'stuck'") for _ in range(2)]
        fake_graphd.wait_for(lambda s: s.statements_running == 2)
        waiting = pool.submit(client.execute, "RETURN 'queued'")
        wait_until(lambda: client.stats().hosts[0].session_waiters == 1)
        start = time.monotonic()
        client.close()
        assert time.monotonic() - start < request_timeout / 2  # cut off at close_timeout
        for f in stuck:
            with pytest.raises(OutcomeUnknown):
                f.result(5)
        with pytest.raises(ClientClosed):
            waiting.result(5)
    # The two sessions whose statements were cut off are signed out (on fresh connections).
    stats = fake_graphd.wait_for(lambda s: s.sessions_open == 0)
    assert stats.signouts == 2
    rule.release()
    settled(fake_graphd)
