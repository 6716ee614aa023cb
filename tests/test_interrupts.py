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
from nebula_sync.errors import AuthenticationError, ConnectionFailed, OutcomeUnknown
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

        real = Connection._sendall

        def interrupted(self: Connection, sock: Any, data: bytes, *args: Any) -> None:
            if len(data) < 1024 * 1024:
                return real(self, sock, data, *args)  # others' small requests (a sign-out) go out
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


def test_a_block_left_mid_statement_gives_its_session_back_when_the_statement_ends(
    fake_graphd: FakeGraphd,
) -> None:
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


@pytest.mark.parametrize(("timeout", "down"), [(0.05, False), (1.0, True)], ids=["moments", "a-second"])
def test_a_connect_cut_short_by_the_call_marks_the_host_down_only_on_evidence(
    fake_graphd: FakeGraphd, timeout: float, down: bool
) -> None:
    # A connect cut short by the caller's own short timeout within moments says nothing about the
    # host (it used to mark the host down for every thread, with a growing backoff); a handshake
    # left unanswered for a second is how a hung graphd looks, short deadline or not.
    conn_config = ConnectionConfig(connect_timeout=10.0, request_timeout=10.0)
    with make_client(fake_graphd, size=2, conn_config=conn_config) as client:
        with client.session() as session:  # a block's statement is bounded by its timeout alone
            session.execute("RETURN 0")
            rule = fake_graphd.script(method="verifyClientVersion", hold=True)
            try:
                kept = session._lease.session.conn if session._lease.session else None
                if kept is not None:
                    kept.close()  # the next statement must open a connection
                client._hosts[0].conn_pool.close_idle()
                with pytest.raises(ConnectionFailed):
                    session.execute("RETURN 1", timeout=timeout)  # its handshake gets no reply in time
            finally:
                rule.remove()
                rule.release()
        stats = client.stats().hosts[0]
        assert (stats.state, stats.connect_failures) == (("down", 1) if down else ("up", 0))


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


def test_a_block_ended_from_inside_its_own_statement_does_not_hang(
    fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # e.g. a signal handler that unwinds an ExitStack while the block's statement runs on the same
    # thread: the block's end must not wait for a statement that cannot finish before it returns.
    with make_client(fake_graphd) as client:
        session_cm = client.session()
        session = session_cm.__enter__()
        real = _Client._attempt

        def attempt_ending_the_block(self: _Client, *args: Any, **kw: Any) -> Any:
            session_cm.__exit__(None, None, None)  # the block ends here, mid-statement
            return real(self, *args, **kw)

        monkeypatch.setattr(_Client, "_attempt", attempt_ending_the_block)
        done: list[Any] = []
        runner = threading.Thread(target=lambda: done.append(session.execute("RETURN 1 AS v")), daemon=True)
        runner.start()
        runner.join(10)
        assert not runner.is_alive(), "the block's end waited for its own statement"
        monkeypatch.undo()
        assert done and done[0].rows() == [(1,)]
        assert client.stats().hosts[0].sessions_busy == 0  # the statement gave the lease back
        assert client.execute("RETURN 2 AS v").rows() == [(2,)]


def test_a_failed_retry_raises_the_first_unknown_outcome_even_when_a_session_is_refused(
    fake_graphd_factory: Any,
) -> None:
    # The first attempt's connection drops after graphd took the statement; its session is
    # retired, and graphd refuses the retry a new session (its per-user session limit): the
    # caller must still learn that the outcome is unknown, not that a session was refused.
    server = fake_graphd_factory()
    with make_client(server) as client:
        client.execute("RETURN 0")
        server.script("RETURN 'lost'", drop="before_reply", times=1)
        server.script(method="authenticate", error=-1002, message="Too many sessions", times=1)
        with pytest.raises(OutcomeUnknown) as info:
            client.execute("RETURN 'lost'", idempotent=True)
        assert isinstance(info.value.__context__, AuthenticationError)


def test_a_sign_out_thread_that_cannot_start_leaves_it_to_close(
    fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("nebula_sync-signout"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    fake_graphd.script("RETURN 'lost'", drop="before_reply", times=1)
    client = make_client(fake_graphd)
    client.execute("RETURN 1")
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(OutcomeUnknown):
        client.execute("RETURN 'lost'")  # its session is retired; the sign-out needs a thread
    monkeypatch.undo()
    assert client.stats().hosts[0].sessions_busy == 0
    assert client.execute("RETURN 2 AS v").rows() == [(2,)]  # size=1: the slot came back
    client.close()  # signs the retired session out
    fake_graphd.wait_for(lambda s: s.sessions_open == 0, timeout=5.0)


def test_a_statement_that_was_not_sent_keeps_its_session(
    fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_client(fake_graphd) as client:
        client.execute("RETURN 0")
        real = Connection.execute

        def no_time(self: Connection, *args: Any, **kw: Any) -> Any:
            monkeypatch.setattr(Connection, "execute", real)
            raise self._no_time_to_send("executeWithParameter")

        monkeypatch.setattr(Connection, "execute", no_time)
        assert client.execute("RETURN 1 AS v").rows() == [(1,)]  # not sent: tried again at once
        assert client.execute("RETURN 2 AS v").rows() == [(2,)]
    # the same session throughout (its sign-out is oneway: wait for graphd to read it)
    fake_graphd.wait_for(lambda s: s.authentications == 1 and s.signouts == 1, timeout=5.0)


def test_a_statement_close_cut_off_signs_its_session_out_in_the_callers_thread(
    fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After close() the process may exit at once: a background (daemon) sign-out could be killed
    # before it ran, leaving the session on graphd.
    started: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    rule = fake_graphd.script("RETURN 'stuck'", hold=True)
    client = NebulaClient(fake_graphd.address, "root", "nebula", close_timeout=0.2,
                          session_pool_config=SessionPoolConfig(size=1, wait_timeout=5.0))  # fmt: skip
    failed: list[BaseException] = []

    def stuck() -> None:
        try:
            client.execute("RETURN 'stuck'")
        except OutcomeUnknown as exc:
            failed.append(exc)

    caller = threading.Thread(target=stuck)
    caller.start()
    try:
        fake_graphd.wait_for(lambda s: s.statements_running == 1)
        monkeypatch.setattr(threading.Thread, "start", start)
        client.close()  # cuts the statement off after close_timeout
        caller.join(10)
        assert failed and not [n for n in started if n.startswith("nebula_sync-signout")]
    finally:
        rule.release()
    fake_graphd.wait_for(lambda s: s.sessions_open == 0, timeout=5.0)


def test_close_signs_a_retired_session_out_again_when_its_first_sign_out_was_lost(
    fake_graphd: FakeGraphd,
) -> None:
    # A sign-out is oneway: one written as a fault cuts its connection is lost without a trace.
    # Statements that time out retire their sessions while faults are about, so close() sends
    # each retired session's sign-out once more.
    with make_client(fake_graphd) as client:
        client.execute("RETURN 0")
        fake_graphd.script("RETURN 'lost'", drop="before_reply", times=1)
        lost = fake_graphd.script(method="signout", drop="before_reply", times=1)
        with pytest.raises(OutcomeUnknown):
            client.execute("RETURN 'lost'")  # its session is retired; the sign-out is lost
        wait_until(lambda: lost.hits == 1)
        assert fake_graphd.stats().sessions_open == 1
        assert client.execute("RETURN 1 AS v").rows() == [(1,)]  # on a new session
    fake_graphd.wait_for(lambda s: s.sessions_open == 0, timeout=5.0)
