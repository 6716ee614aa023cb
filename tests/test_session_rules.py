"""Session rules that the other client tests leave out, each against the fake graphd.

Renewal on ``E_SESSION_TIMEOUT``, server errors never retried, ``init_statements`` and
``SessionPoolConfig.max_lifetime`` taking effect, the guards of a ``client.session()`` block,
TCP keepalive on the socket, and no network I/O from an unclosed client's finaliser.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest
from waiting import wait_until

from nebula_sync import ConnectionConfig, NebulaClient, ResultSet, SessionConfig, SessionPoolConfig
from nebula_sync._connection import Connection
from nebula_sync._thrift import service
from nebula_sync.config import HostAddress
from nebula_sync.errors import (
    AuthenticationError,
    ClientClosed,
    ConnectionFailed,
    ExecutionError,
    NebulaError,
    OutcomeUnknown,
    ProtocolError,
    SemanticError,
    SessionInvalid,
)
from nebula_sync.testing import FakeGraphd

CONN = ConnectionConfig(connect_timeout=2.0, request_timeout=10.0)


def make_client(server: FakeGraphd, **kw: Any) -> NebulaClient:
    return NebulaClient(
        hosts=[server.address],
        username="root",
        password="nebula",
        session_pool_config=kw.pop("pool", SessionPoolConfig(size=1, wait_timeout=5.0)),
        conn_config=kw.pop("conn_config", CONN),
        **kw,
    )


def statements(server: FakeGraphd) -> list[str]:
    return [logged.statement for logged in server.statement_log()]


# ---- renewal and retries -------------------------------------------------------------------


@pytest.mark.parametrize("code", [-1002, -1003], ids=["E_SESSION_INVALID", "E_SESSION_TIMEOUT"])
def test_an_expired_session_is_renewed_and_the_statement_sent_once_more(fake_graphd: FakeGraphd,
                                                                       code: int) -> None:  # fmt: skip
    with make_client(fake_graphd) as client:
        client.execute("RETURN 0")
        fake_graphd.script("RETURN 5 AS v", error=code, message="session gone", times=1)
        assert client.execute("RETURN 5 AS v").rows() == [(5,)]
        assert client.stats().hosts[0].session_renewals == 1
    assert fake_graphd.stats().authentications == 2


def test_a_session_rejected_twice_is_an_error_and_not_pooled(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script("RETURN 5 AS v", error=-1003, message="session gone", times=2)
    with make_client(fake_graphd) as client:
        with pytest.raises(SessionInvalid):
            client.execute("RETURN 5 AS v")
        assert client.execute("RETURN 6 AS v").rows() == [(6,)]
    assert fake_graphd.stats().authentications == 3  # the rejected one was dropped, a third made


@pytest.mark.parametrize("block", [False, True], ids=["pooled", "session-block"])
def test_a_failed_retry_does_not_hide_that_the_first_attempt_may_have_run(
    fake_graphd: FakeGraphd, block: bool
) -> None:
    # An idempotent statement loses its connection after graphd took it (it may have run), and
    # its retry cannot even be sent (the host refuses connections now): the caller must learn that
    # the outcome is unknown, not "connection failed, nothing ran".
    rule = fake_graphd.script("RETURN 'lost'", hold=True, drop="before_reply", times=1)

    def refuse_then_drop() -> None:
        fake_graphd.wait_for(lambda s: s.statements_running == 1)
        fake_graphd.refuse_connections(True)
        rule.release()

    thread = threading.Thread(target=refuse_then_drop)
    thread.start()
    try:
        with make_client(fake_graphd) as client:
            with pytest.raises(OutcomeUnknown) as info:
                if block:
                    with client.session() as session:
                        session.execute("RETURN 'lost'", idempotent=True)
                else:
                    client.execute("RETURN 'lost'", idempotent=True)
            assert not info.value.is_retryable()
            assert isinstance(info.value.__context__, ConnectionFailed)  # the retry's own failure
    finally:
        thread.join(10)
        rule.release()
        fake_graphd.refuse_connections(False)


def test_a_server_error_is_raised_and_never_retried(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script("INSERT EDGE e() VALUES 1->2:()", error=-1005, message="leader changed")
    with make_client(fake_graphd) as client:
        for idempotent in (False, True):
            with pytest.raises(ExecutionError, match="leader changed"):
                client.execute("INSERT EDGE e() VALUES 1->2:()", idempotent=idempotent)
    assert statements(fake_graphd) == ["INSERT EDGE e() VALUES 1->2:()"] * 2  # once per call


@pytest.mark.parametrize("home", ["test", None], ids=["configured-space", "no-space"])
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "general-path"])
def test_a_session_whose_statement_got_no_reply_is_not_reused_in_an_unknown_space(
    fake_graphd: FakeGraphd, home: str | None, fast_path: bool
) -> None:
    # "USE other; <slow>" times out: the session may now be in `other` (it is, here), so it must
    # not serve the next caller before it is back in the configured space (or replaced).
    fake_graphd.script("RETURN 'slow'", delay=2.5, columns=["v"], rows=[["late"]])
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=1.0, ping_before_execute=not fast_path)
    with make_client(fake_graphd, conn_config=cfg, session_config=SessionConfig(space=home)) as client:
        client.execute("RETURN 0")  # the session exists (and kept its connection)
        with pytest.raises(OutcomeUnknown):
            client.execute("USE basketballplayer; RETURN 'slow'")
        assert client.execute("RETURN 2").space_name == (home or "")
        assert client.execute("RETURN 3").space_name == (home or "")


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "general-path"])
def test_a_session_whose_reply_was_refused_is_not_reused_in_an_unknown_space(
    fake_graphd: FakeGraphd, fast_path: bool
) -> None:
    # A reply too big for max_frame_size is a ProtocolError, not OutcomeUnknown, yet graphd ran
    # the statement: the session's space is just as unknown.
    fake_graphd.script("RETURN 'big'", columns=["v"], rows=[["x" * 3000]])
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=5.0, max_frame_size=2048,
                           ping_before_execute=not fast_path)  # fmt: skip
    with make_client(fake_graphd, conn_config=cfg, session_config=SessionConfig(space="test")) as client:
        client.execute("RETURN 0")
        with pytest.raises(ProtocolError):
            client.execute("USE basketballplayer; RETURN 'big'")
        assert client.execute("RETURN 2").space_name == "test"


def test_a_session_block_renewed_after_an_unknown_outcome_does_not_use_a_placeholder_space(
    fake_graphd: FakeGraphd,
) -> None:
    fake_graphd.script("RETURN 'slow'", delay=2.5, columns=["v"], rows=[["late"]])
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=1.0)
    with make_client(fake_graphd, conn_config=cfg, session_config=SessionConfig(space="test")) as client:
        with client.session() as session:
            session.execute("USE basketballplayer")
            with pytest.raises(OutcomeUnknown):
                session.execute("RETURN 'slow'")
            assert session.space == ""  # retired, until the next statement makes a new session
            fake_graphd.forget_sessions()
            rs = session.execute("RETURN 1 AS v")  # a new session, in the block's last known space
            assert rs.rows() == [(1,)] and rs.space_name == "basketballplayer"
    assert all("\x00" not in e.statement for e in fake_graphd.statement_log())


def test_a_session_whose_json_reply_was_unreadable_is_not_reused_in_an_unknown_space(
    fake_graphd: FakeGraphd,
) -> None:
    # An unreadable executeJson reply leaves the connection healthy: the session must still not
    # keep it (the fast path would reuse the session without checking its space).
    unreadable = service.ExecuteJsonResult(success=b'{"results": [\xff')
    fake_graphd.script("RETURN 0 AS blob", raw=lambda ctx: ctx.reply(unreadable))
    with make_client(fake_graphd, session_config=SessionConfig(space="basketballplayer")) as client:
        client.execute("RETURN 0")
        with pytest.raises(ProtocolError, match="malformed JSON"):
            client.execute_json("USE test; RETURN 0 AS blob")
        assert client.execute("RETURN 1 AS a").space_name == "basketballplayer"


def test_a_json_document_with_invalid_utf8_in_a_string_is_still_returned(fake_graphd: FakeGraphd) -> None:
    # graphd copies string bytes into its JSON unchecked: the document must not be lost for one
    # bad string; its bytes read as \xNN, as execute() shows them
    body = (
        b'{"errors":[{"code":0}],"results":[{"spaceName":"","latencyInUs":5,"errors":{"code":0},'
        b'"columns":["name"],"data":[{"row":["caf\xe9 \xff\xfe"],"meta":[null]}]}]}'
    )
    fake_graphd.script("RETURN 0 AS name", raw=lambda ctx: ctx.reply(service.ExecuteJsonResult(success=body)))
    with make_client(fake_graphd) as client:
        doc = client.execute_json("RETURN 0 AS name")
        assert doc["results"][0]["data"][0]["row"] == ["caf\\xe9 \\xff\\xfe"]


def test_a_session_block_never_starts_on_a_session_left_in_an_unknown_space(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script("RETURN 0 AS lost", drop="before_reply", times=1)
    with make_client(fake_graphd, session_config=SessionConfig(space="basketballplayer")) as client:
        with pytest.raises(OutcomeUnknown):
            client.execute("USE test; RETURN 0 AS lost")
        with client.session() as session:  # the same (only) session, its space in doubt
            assert session.execute("RETURN 1 AS a").space_name == "basketballplayer"


@pytest.mark.parametrize("home", ["basketballplayer", None], ids=["configured-space", "no-space"])
def test_a_session_blocks_doubtful_statement_retires_its_session(
    fake_graphd: FakeGraphd, home: str | None
) -> None:
    # The block's statement gets no reply while graphd still runs it: the block goes on with a new
    # session (in the block's last known space), never a second statement on the busy one.
    rule = fake_graphd.script("RETURN 'slow'", hold=True, columns=["v"], rows=[["late"]])
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=0.5)
    try:
        with make_client(fake_graphd, conn_config=cfg, session_config=SessionConfig(space=home)) as client:
            with client.session() as session:
                with pytest.raises(OutcomeUnknown):
                    session.execute("USE test; RETURN 'slow'")
                assert session.space == ""  # retired: no session until the next statement
                rs = session.execute("RETURN 1 AS a")
                assert rs.space_name == (home or "") and session.space == (home or "")
                assert fake_graphd.stats().statements_running == 1  # the held one, on the old session
    finally:
        rule.release()
    stats = fake_graphd.stats()
    assert stats.authentications == 2 and stats.max_concurrent_statements_per_session == 1
    log = fake_graphd.statement_log()
    slow = next(e for e in log if "slow" in e.statement)
    assert all(e.session_id != slow.session_id for e in log if e.statement == "RETURN 1 AS a")


def set_up_use_without_reply(
    fake_graphd: FakeGraphd, then: Callable[[], None], connect_timeout: float
) -> tuple[NebulaClient, threading.Thread]:
    """A client (one session, space ``basketballplayer``) whose first session's set-up ``USE``
    gets no reply (``request_timeout`` 0.5 s); once graphd has read it, ``then()`` runs in the
    returned thread (join it)."""
    fake_graphd.script("USE basketballplayer", delay=10)

    def after_the_use() -> None:
        fake_graphd.wait_for(lambda s: s.statements >= 1, timeout=5.0)
        then()

    helper = threading.Thread(target=after_the_use, daemon=True)
    helper.start()
    cfg = ConnectionConfig(connect_timeout=connect_timeout, request_timeout=0.5)
    client = make_client(fake_graphd, pool=SessionPoolConfig(size=1, wait_timeout=0.5), conn_config=cfg,
                         session_config=SessionConfig(space="basketballplayer"))  # fmt: skip
    return client, helper


def test_a_failed_set_up_does_not_keep_the_caller_past_its_deadline(fake_graphd: FakeGraphd) -> None:
    # The set-up USE gets no reply and graphd then stops answering: signing the half-made session
    # out needs a new connection, which may take connect_timeout. The caller does not wait for it.
    # connect_timeout is far longer than the caller's bound (request_timeout + wait_timeout = 1 s),
    # so a caller kept for the sign-out's connect is told apart from a slow machine.
    connect_timeout = 20.0
    client, helper = set_up_use_without_reply(fake_graphd, lambda: fake_graphd.stall(True), connect_timeout)
    try:
        start = time.monotonic()
        with pytest.raises(NebulaError):
            client.execute("RETURN 1")
        assert time.monotonic() - start < connect_timeout / 2  # not kept for the connect
    finally:
        helper.join(5)
        fake_graphd.stall(False)
        fake_graphd.clear_scripts()
        client.close()


def test_a_sign_out_that_could_not_be_sent_is_tried_again_at_close(fake_graphd: FakeGraphd) -> None:
    # The set-up USE gets no reply, so the half-made session is signed out on another connection;
    # the host refuses connections just then. close() tries it again once the host is back.
    client, helper = set_up_use_without_reply(fake_graphd, fake_graphd.refuse_connections, 2.0)
    try:
        with pytest.raises(NebulaError):
            client.execute("RETURN 1")
        helper.join(5)
        # the background sign-out has given up (its thread is gone)
        wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("nebula_sync-signout")])
        assert fake_graphd.stats().sessions_open == 1
        fake_graphd.refuse_connections(False)
        fake_graphd.clear_scripts()
    finally:
        fake_graphd.refuse_connections(False)
        client.close()
    fake_graphd.wait_for(lambda s: s.sessions_open == 0, timeout=5.0)  # a oneway sign-out: read soon


# ---- SessionConfig and SessionPoolConfig taking effect -----------------------------------------


def test_init_statements_run_after_every_authentication(fake_graphd: FakeGraphd) -> None:
    cfg = SessionConfig(space="test", init_statements=["RETURN 'init' AS i"])
    with make_client(fake_graphd, session_config=cfg) as client:
        client.execute("RETURN 1")
        fake_graphd.forget_sessions()  # graphd restarted: the next statement renews the session
        client.execute("RETURN 2")
    log = fake_graphd.statement_log()
    assert [entry.statement for entry in log] == [
        "USE test", "RETURN 'init' AS i", "RETURN 1",
        "USE test", "RETURN 'init' AS i", "RETURN 2",
    ]  # fmt: skip
    assert len({entry.session_id for entry in log}) == 2


def test_a_failing_init_statement_fails_the_call_and_leaves_no_session(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script("FAIL INIT", error=-1009, message="bad init")
    with make_client(fake_graphd, session_config=SessionConfig(init_statements=["FAIL INIT"])) as client:
        with pytest.raises(SemanticError, match="bad init"):
            client.execute("RETURN 1")
        assert "RETURN 1" not in statements(fake_graphd)
        fake_graphd.wait_for(lambda s: s.sessions_open == 0, timeout=5.0)


def test_sessions_older_than_max_lifetime_are_replaced(fake_graphd: FakeGraphd) -> None:
    pool = SessionPoolConfig(size=1, wait_timeout=5.0, max_lifetime=0.2)
    with make_client(fake_graphd, pool=pool) as client:
        client.execute("RETURN 1")
        made = time.monotonic()  # after the session was made: it is at least this old
        first = {s.session_id for s in fake_graphd.sessions()}
        wait_until(lambda: time.monotonic() - made > 0.25)  # the rule under test is about age
        client.execute("RETURN 2")
        log = fake_graphd.statement_log()
        assert log[0].session_id in first and log[1].session_id not in first
        # the old one was signed out, not left to expire on graphd
        fake_graphd.wait_for(lambda s: s.signouts == 1 and s.sessions_open == 1, timeout=5.0)


def test_min_idle_sessions_are_made_at_start_on_every_host(fake_graphd_factory: Any) -> None:
    a, b = fake_graphd_factory(), fake_graphd_factory()
    pool = SessionPoolConfig(size=3, wait_timeout=5.0, min_idle=2)
    client = NebulaClient(hosts=[a.address, b.address], username="root", password="nebula",
                          session_pool_config=pool, conn_config=CONN,
                          session_config=SessionConfig(space="test"))  # fmt: skip
    with client:
        for server in (a, b):  # before any statement
            assert server.stats().sessions_open == 2
            assert [s.space for s in server.sessions()] == ["test", "test"]
        assert client.stats().hosts[0].sessions_idle == 2
        for _ in range(4):
            client.execute("RETURN 1")
        assert a.stats().authentications == 2 and b.stats().authentications == 2  # used, not remade
    for server in (a, b):
        server.wait_for(lambda s: s.sessions_open == 0 and s.connections_open == 0)


def test_min_idle_with_a_wrong_password_fails_at_start_and_leaves_nothing(fake_graphd_factory: Any) -> None:
    a, b = fake_graphd_factory(users={"root": "nebula"}), fake_graphd_factory(users={"root": "nebula"})
    pool = SessionPoolConfig(size=2, wait_timeout=5.0, min_idle=2)
    with pytest.raises(AuthenticationError, match="root"):
        NebulaClient(hosts=[a.address, b.address], username="root", password="wrong",
                     session_pool_config=pool, conn_config=CONN)  # fmt: skip
    seen = [server.wait_for(lambda s: s.connections_open == 0) for server in (a, b)]
    assert all(stats.sessions_open == 0 for stats in seen)
    # the first rejection backs off the other host's attempt, which then never reaches it
    assert sum(stats.authentication_failures for stats in seen) >= 1


def test_min_idle_skips_a_host_that_is_down(fake_graphd_factory: Any) -> None:
    up, down = fake_graphd_factory(), fake_graphd_factory()
    down_address = down.address
    down.stop()
    pool = SessionPoolConfig(size=2, wait_timeout=5.0, min_idle=1)
    with NebulaClient(hosts=[up.address, down_address], username="root", password="nebula",
                      session_pool_config=pool, conn_config=CONN, min_healthy_hosts=1) as client:  # fmt: skip
        assert up.stats().sessions_open == 1
        assert client.execute("RETURN 1 AS v").rows() == [(1,)]


def test_min_idle_past_graphds_session_limit_starts_with_what_it_could_make(
    fake_graphd_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = fake_graphd_factory(max_sessions_per_ip_per_user=3)
    pool = SessionPoolConfig(size=2, wait_timeout=5.0, min_idle=2)
    first = NebulaClient(hosts=[server.address], username="root", password="nebula",
                         session_pool_config=pool, conn_config=CONN)  # fmt: skip
    try:
        # graphd refuses the 4th session (E_SESSION_INVALID on authenticate): not a reason to fail
        with NebulaClient(hosts=[server.address], username="root", password="nebula",
                          session_pool_config=pool, conn_config=CONN) as second:  # fmt: skip
            assert server.stats().sessions_open == 3
            assert "could not create 2 session(s)" in caplog.text
            assert second.execute("RETURN 1 AS v").rows() == [(1,)]
    finally:
        first.close()


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt, from this test's own SIGINT handler."""


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32", reason="POSIX signals")
def test_an_interrupted_min_idle_start_signs_out_what_it_made(fake_graphd_factory: Any) -> None:
    quick, stuck = fake_graphd_factory(), fake_graphd_factory()
    rule = stuck.script(method="authenticate", hold=True)  # this host's sessions never come

    def interrupt(*_: Any) -> None:
        raise _Interrupt

    def send_sigint_when_quick_is_warm() -> None:
        quick.wait_for(lambda s: s.sessions_open == 2, timeout=5.0)
        os.kill(os.getpid(), signal.SIGINT)

    old = signal.signal(signal.SIGINT, interrupt)
    helper = threading.Thread(target=send_sigint_when_quick_is_warm, daemon=True)
    try:
        helper.start()
        with pytest.raises(_Interrupt):
            NebulaClient(hosts=[quick.address, stuck.address], username="root", password="nebula",
                         session_pool_config=SessionPoolConfig(size=2, wait_timeout=5.0, min_idle=2),
                         conn_config=CONN, close_timeout=0.5)  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, old)
        rule.release()
        helper.join(5)
    quick.wait_for(lambda s: s.sessions_open == 0 and s.signouts == 2, timeout=5.0)


# ---- a client.session() block ------------------------------------------------------------------


def test_a_session_block_refuses_a_second_thread_at_the_same_time(fake_graphd: FakeGraphd) -> None:
    rule = fake_graphd.script("RETURN 'block'", hold=True)
    with make_client(fake_graphd, pool=SessionPoolConfig(size=2, wait_timeout=5.0)) as client:
        with client.session() as session, ThreadPoolExecutor(1) as pool:
            held = pool.submit(session.execute, "RETURN 'block'")
            fake_graphd.wait_for(lambda s: s.statements_running == 1)
            with pytest.raises(RuntimeError, match="one statement at a time"):
                session.execute("RETURN 1")
            rule.release()
            assert held.result(5).rows() == [("block",)]
            assert session.execute("RETURN 2 AS v").rows() == [(2,)]  # usable again once free
    assert fake_graphd.stats().max_concurrent_statements_per_session == 1


def test_a_session_used_after_its_block_is_a_clear_error(fake_graphd: FakeGraphd) -> None:
    with make_client(fake_graphd) as client:
        with client.session() as session:
            session.execute("RETURN 1")
        with pytest.raises(ClientClosed, match="block has ended"):
            session.execute("RETURN 2")
        assert client.execute("RETURN 3 AS v").rows() == [(3,)]  # the session went back to the pool
    assert statements(fake_graphd) == ["RETURN 1", "RETURN 3 AS v"]


def test_a_session_block_renewed_after_a_restart_stays_in_the_space_it_chose(fake_graphd: FakeGraphd) -> None:
    with make_client(fake_graphd, session_config=SessionConfig(space="test")) as client:
        with client.session() as session:
            session.execute("USE basketballplayer")
            fake_graphd.forget_sessions()  # graphd restarted: the block's session is gone
            rs = session.execute("RETURN 1 AS v")
            assert rs.rows() == [(1,)] and rs.space_name == "basketballplayer"
            assert session.space == "basketballplayer"
        assert client.stats().hosts[0].session_renewals == 1
        # back in the pool in the configured space
        assert client.execute("RETURN 2").space_name == "test"


def test_the_statement_path_logs_nothing_above_debug(fake_graphd: FakeGraphd,
                                                     caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="nebula_sync")
    with make_client(fake_graphd, pool=SessionPoolConfig(size=2, wait_timeout=5.0)) as client:
        for i in range(20):
            client.execute("RETURN $i", {"i": i})
        with client.session() as session:
            session.execute("RETURN 1")
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # it does log, at DEBUG
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG] == []


def test_a_session_block_whose_renewal_lost_its_reply_runs_in_the_space_it_chose(
    fake_graphd: FakeGraphd,
) -> None:
    # graphd forgot the block's session and the reply to the renewing authenticate is lost: the
    # retry makes a new session, which must be put in the block's space before the statement runs
    with make_client(fake_graphd, session_config=SessionConfig(space="test")) as client:
        with client.session() as session:
            session.execute("USE basketballplayer")
            fake_graphd.forget_sessions()
            fake_graphd.script(method="authenticate", drop="before_reply", times=1)
            rs = session.execute("RETURN 1 AS v")
            assert rs.rows() == [(1,)] and rs.space_name == "basketballplayer"
    ran = [e for e in fake_graphd.statement_log() if e.statement == "RETURN 1 AS v"]
    assert len(ran) == 1


def run_after_the_blocks_session_grew_too_old(server: FakeGraphd, meanwhile: Any = None) -> ResultSet:
    """In a ``session()`` block (configured space ``test``, ``max_lifetime=0.2``) that switched to
    ``basketballplayer``: run ``meanwhile()`` (if given), let the session grow too old, then run
    ``RETURN 1 AS v`` and return its result."""
    pool = SessionPoolConfig(size=1, wait_timeout=5.0, max_lifetime=0.2)
    with make_client(server, pool=pool, session_config=SessionConfig(space="test")) as client:
        with client.session() as session:
            session.execute("USE basketballplayer")
            made = time.monotonic()
            if meanwhile is not None:
                meanwhile()
            wait_until(lambda: time.monotonic() - made > 0.25)  # the rule under test is about age
            return session.execute("RETURN 1 AS v")


def test_a_session_block_whose_session_grew_too_old_goes_on_in_its_space(fake_graphd: FakeGraphd) -> None:
    rs = run_after_the_blocks_session_grew_too_old(fake_graphd)
    assert rs.space_name == "basketballplayer"
    ran = [(e.statement, e.session_id) for e in fake_graphd.statement_log()]
    old, new = ran[1][1], ran[-1][1]  # ran[0]: the set-up's "USE test"
    assert ran[1] == ("USE basketballplayer", old) and old != new  # replaced...
    # ...and moved; the block's end then puts it back in the configured space for the pool
    assert ran[-3:] == [("USE basketballplayer", new), ("RETURN 1 AS v", new), ("USE test", new)]


def test_a_block_whose_new_session_got_no_reply_to_its_use_retries_it(fake_graphd: FakeGraphd) -> None:
    # The replacement session's USE of the block's space gets no reply: the statement was not
    # sent, so it is tried once more (on another new session), not reported as "may have run".
    rs = run_after_the_blocks_session_grew_too_old(
        fake_graphd, lambda: fake_graphd.script("USE basketballplayer", drop="before_reply", times=1)
    )
    assert rs.rows() == [(1,)] and rs.space_name == "basketballplayer"
    assert [e.statement for e in fake_graphd.statement_log()].count("RETURN 1 AS v") == 1


# ---- sockets and finalisers ----------------------------------------------------------------


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="TCP_KEEPIDLE is Linux-only")
def test_tcp_keepalive_settings_reach_the_socket(fake_graphd: FakeGraphd) -> None:
    host = HostAddress("127.0.0.1", fake_graphd.port)
    on = ConnectionConfig(connect_timeout=2.0, keepalive_idle=42, keepalive_interval=7, keepalive_count=3)
    conn = Connection(host, on)
    conn.open()
    try:
        sock = conn._sock
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 42
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    finally:
        conn.close()
    off = Connection(host, ConnectionConfig(connect_timeout=2.0, tcp_keepalive=False))
    off.open()
    try:
        assert off._sock is not None and off._sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        off.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the sockets' own, from their finalisers
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_unclosed_client_does_no_network_io_when_collected(fake_graphd: FakeGraphd) -> None:
    client = make_client(fake_graphd)
    client.execute("RETURN 1")
    before = fake_graphd.stats()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    warned = any(issubclass(w.category, ResourceWarning) and "unclosed" in str(w.message) for w in caught)
    del caught  # a warning holds its source, the client
    gc.collect()
    assert warned
    # the sockets close with their finalisers; nothing is sent on them (no sign-out)
    after = fake_graphd.wait_for(lambda s: s.connections_open == 0, timeout=5.0)
    assert after.requests == before.requests and after.signouts == 0
    assert after.sessions_open == 1  # left to graphd's idle timeout, as the warning says
