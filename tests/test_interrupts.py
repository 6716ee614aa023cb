"""Interruptions and misuse on the statement path: Ctrl-C mid-send or while a ``session()`` block
gives its session back, a block left while another thread still runs a statement on it, a call's
own short deadline, and ``close()`` racing a background sign-out. Each leaves the pool whole (no
slot, connection or half-written request lost) and one statement per session on graphd.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from waiting import wait_until

from nebula_sync import ConnectionConfig, NebulaClient, SessionConfig, SessionPoolConfig
from nebula_sync._client import NebulaClient as _Client
from nebula_sync._connection import Connection
from nebula_sync.errors import ConnectionFailed
from nebula_sync.testing import FakeGraphd


def make_client(server: FakeGraphd, *, size: int = 1, **kw: Any) -> NebulaClient:
    return NebulaClient(
        server.address,
        "root",
        "nebula",
        session_pool_config=SessionPoolConfig(size=size, wait_timeout=5.0),
        conn_config=kw.pop("conn_config", ConnectionConfig(connect_timeout=5.0, request_timeout=5.0)),
        **kw,
    )


def test_ctrl_c_in_the_middle_of_a_send_never_leaves_half_a_request_on_a_reused_connection(
    fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A statement bigger than the socket buffer is sent in parts; Ctrl-C after the first part
    # used to leave the connection looking healthy: the next request was glued to the half-sent
    # one, graphd never answered it, and the caller waited for the whole request_timeout.
    with make_client(fake_graphd) as client:
        client.execute("RETURN 1")  # the session and its connection exist

        def interrupted(self: Connection, *args: Any) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(Connection, "_sendall", interrupted)
        big = "RETURN '" + "x" * (16 * 1024 * 1024) + "' AS s"
        with pytest.raises(KeyboardInterrupt):
            client.execute(big)
        monkeypatch.undo()
        assert client.stats().hosts[0].sessions_busy == 0
        assert client.execute("RETURN 7 AS i").rows() == [(7,)]  # not a RequestTimeout
    logged = [e.statement for e in fake_graphd.statement_log()]
    assert "RETURN 7 AS i" in logged and not any(s.startswith("RETURN 'xxx") for s in logged)


def test_ctrl_c_while_a_block_puts_its_session_back_keeps_the_pool_slot(fake_graphd: FakeGraphd) -> None:
    # Leaving the block restores the configured space; Ctrl-C during that used to lose the
    # block's lease for good (size=1: every later call a PoolTimeout, close() waiting it out).
    with make_client(fake_graphd, session_config=SessionConfig(space="basketballplayer")) as client:
        interrupted = threading.Event()

        def ctrl_c(*args: Any) -> None:
            interrupted.set()
            raise KeyboardInterrupt

        try:
            with pytest.raises(KeyboardInterrupt):
                with client.session() as session:
                    session.execute("USE test")
                    # Ctrl-C arrives while the block's session is being moved back
                    client._restore_space = ctrl_c  # type: ignore[method-assign,assignment]
            assert interrupted.is_set()
        finally:
            del client._restore_space
        assert client.stats().hosts[0].sessions_busy == 0
        # the interrupted session may be in either space: it is not reused, a new one runs this
        assert client.execute("RETURN 2 AS v").space_name == "basketballplayer"
    assert fake_graphd.stats().max_concurrent_statements_per_session == 1


def test_leaving_a_block_waits_for_a_statement_another_thread_runs_on_it(fake_graphd: FakeGraphd) -> None:
    # A misuse the block guards against: its session must not go back to the pool (and to the
    # next caller) while another thread's statement still runs on it.
    rule = fake_graphd.script("RETURN 'slow' AS v", hold=True)
    results: list[Any] = []
    block_exiting = threading.Event()
    with make_client(fake_graphd, size=1) as client:

        def block() -> None:
            with client.session() as session:
                def slow() -> None:
                    results.append(session.execute("RETURN 'slow' AS v"))

                worker = threading.Thread(target=slow, daemon=True)
                worker.start()
                wait_until(lambda: fake_graphd.stats().statements_running == 1)
                block_exiting.set()
            worker.join(10)

        owner = threading.Thread(target=block)
        owner.start()
        try:
            assert block_exiting.wait(10)
            other = threading.Thread(target=lambda: results.append(client.execute("RETURN 2 AS v")))
            other.start()  # size=1: it needs the block's session, once it is really free
            wait_until(lambda: client.stats().hosts[0].session_waiters == 1 or len(results) > 0)
        finally:
            rule.release()
        owner.join(10)
        other.join(10)
        assert sorted(str(r.rows()[0][0]) for r in results) == ["2", "slow"]
        host = client.stats().hosts[0]
        assert host.connections_active == 0 and host.sessions_busy == 0
    assert fake_graphd.stats().max_concurrent_statements_per_session == 1


def test_a_call_running_out_of_its_own_time_does_not_mark_the_host_down(fake_graphd: FakeGraphd) -> None:
    # A connect cut short by the caller's own (short) timeout says nothing about the host: it
    # used to mark the host down for every thread, with a growing backoff.
    conn_config = ConnectionConfig(connect_timeout=10.0, request_timeout=10.0)
    with make_client(fake_graphd, size=2, conn_config=conn_config) as client:
        with client.session() as session:  # a block's statement is bounded by its timeout alone
            session.execute("RETURN 0")
            rule = fake_graphd.script(method="verifyClientVersion", hold=True)
            try:
                for _ in range(3):
                    kept = session._lease.session.conn if session._lease.session else None
                    if kept is not None:
                        kept.close()  # the next statement must open a connection
                    client._hosts[0].conn_pool.close_idle()
                    with pytest.raises(ConnectionFailed):
                        session.execute("RETURN 1", timeout=0.2)  # its handshake gets no reply in time
            finally:
                rule.remove()
                rule.release()
        stats = client.stats().hosts[0]
        assert stats.state == "up" and stats.connect_failures == 0 and stats.retry_in == 0
        assert client.execute("RETURN 2 AS v").rows() == [(2,)]


def test_close_closes_the_pools_even_when_signing_out_fails(
    fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(fake_graphd)
    client.execute("RETURN 1")

    def broken(self: _Client, idle: Any) -> None:
        raise RuntimeError("sign-out step failed")

    monkeypatch.setattr(_Client, "_sign_out_all", broken)
    with pytest.raises(RuntimeError):
        client.close()
    assert all(h.conn_pool._closed for h in client._hosts)
    fake_graphd.wait_for(lambda s: s.connections_open == 0, timeout=5.0)


def test_a_background_sign_out_is_started_before_close_can_see_it(
    fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # close() joins the background sign-out threads it finds; one it found before it was started
    # made close() fail ("cannot join thread before it is started") half-way through.
    seen: list[bool] = []
    real_start = threading.Thread.start
    with make_client(fake_graphd) as client:

        def start(thread: threading.Thread) -> None:
            if thread.name.startswith("nebula_sync-signout"):
                # close() takes this lock to list the threads: held, it cannot list this one yet
                seen.append(client._orphans_lock.locked() and thread in client._signout_threads)
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)
        client.execute("RETURN 1")
        session = client._broker.hosts[0].idle.pop()  # taken out of the pool, as a retired one is
        kept, session.conn = session.conn, None
        if kept is not None:  # no kept connection: the sign-out needs another one, in the background
            client._hosts[0].conn_pool.release(kept)
        client._signout(client._hosts[0], session, None, wait=False)
        assert seen == [True]
    fake_graphd.wait_for(lambda s: s.sessions_open == 0, timeout=5.0)
