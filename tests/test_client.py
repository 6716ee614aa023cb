"""NebulaClient over real sockets against the fake graphd: the pooled-client acceptance tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest
from forking import in_forked_child
from thrift.Thrift import TApplicationException
from waiting import wait_until

from nebula_sync import (
    ConnectionConfig,
    NebulaClient,
    SessionConfig,
    SessionPoolConfig,
)
from nebula_sync._thrift import service, wire
from nebula_sync.errors import (
    AuthenticationError,
    ClientClosed,
    ConnectionFailed,
    ExecutionError,
    IncompatibleServer,
    NoHostAvailable,
    OutcomeUnknown,
    PoolTimeout,
    ProtocolError,
    ReplyTooLarge,
    RequestTimeout,
    SemanticError,
    StatementSyntaxError,
    UnreadableReply,
)
from nebula_sync.testing import FakeGraphd, ReplyContext

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds" / "000_c77fbd4991a44660.txt"

Factory = Callable[..., FakeGraphd]


def make_client(*servers: FakeGraphd, size: int = 3, wait: float | None = 5.0, **kw: Any) -> NebulaClient:
    conn = kw.pop("conn_config", ConnectionConfig(connect_timeout=2.0, request_timeout=10.0))
    return NebulaClient(
        hosts=[s.address for s in servers],
        username=kw.pop("username", "root"),
        password=kw.pop("password", "nebula"),
        session_pool_config=SessionPoolConfig(size=size, wait_timeout=wait),
        conn_config=conn,
        **kw,
    )


def settled(server: FakeGraphd, timeout: float = 5.0) -> Any:
    """Wait until the server saw every session signed out and every connection closed."""
    return server.wait_for(lambda s: s.sessions_open == 0 and s.connections_open == 0, timeout)


# ---- 1. the seed examples ------------------------------------------------------------------


def _seed_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", SEEDS.read_text(), re.S)


@pytest.mark.skipif(not SEEDS.exists(), reason="shared/ seeds are not beside the checkout")
def test_examples_are_the_seed_code_with_only_the_import_changed() -> None:
    blocks = _seed_blocks()
    ours = [(ROOT / "examples" / n).read_text() for n in ("seed_async_gather.py", "seed_thread_pool.py")]
    assert len(blocks) == 2
    for seed, mine in zip(blocks, ours):
        assert mine == seed.replace("from nebulagraph_python import", "from nebula_sync import")


#: the ports the seed examples name
SEED_PORTS = (9669, 9670)


@pytest.fixture
def seed_hosts() -> Iterator[list[FakeGraphd]]:
    """Fake graphds standing in for the seed examples' hosts, on free ports (see _run_example)."""
    servers = [FakeGraphd().start() for _ in SEED_PORTS]
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


# Runs an example unchanged, with the client's host parsing mapped onto the fake graphds' ports
# (a local graphd, or another run, may hold 9669 and 9670).
_RUN_WITH_PORTS = """
import runpy, sys
from nebula_sync import _client, config
ports = dict(zip(map(int, sys.argv[2].split(",")), map(int, sys.argv[3].split(","))))
real = _client.parse_hosts
_client.parse_hosts = lambda hosts: tuple(
    config.HostAddress(a.host, ports.get(a.port, a.port)) for a in real(hosts))
sys.argv = sys.argv[1:2]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run_example(name: str, servers: list[FakeGraphd]) -> str:
    ports = ",".join(str(s.port) for s in servers)
    seed_ports = ",".join(map(str, SEED_PORTS[: len(servers)]))
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_WITH_PORTS, str(ROOT / "examples" / name), seed_ports, ports],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_seed_async_example_runs_and_respects_per_session_concurrency(seed_hosts: list[FakeGraphd]) -> None:
    # Slow each statement down so the six run at the same time; the servers count the overlap.
    for server in seed_hosts:
        server.script(re.compile(r"^RETURN \d+$"), delay=0.3)
    out = _run_example("seed_async_gather.py", seed_hosts)
    # Each of the six results is printed as a table holding its own value.
    for i in range(6):
        assert re.search(rf"\|\s*{i}\s*\|", out), out
    assert out.count("Got 1 row") == 6
    total = 0
    for server in seed_hosts:
        stats = settled(server)
        assert stats.max_concurrent_statements_per_session <= 1
        assert stats.max_concurrent_statements <= 3  # size=3 sessions on this host
        total += stats.statements
    assert total >= 6


def test_seed_thread_pool_example_runs(seed_hosts: list[FakeGraphd]) -> None:
    out = _run_example("seed_thread_pool.py", seed_hosts[:1])
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines == [f"{{'idx': [{x}]}}" for x in range(8)]
    stats = settled(seed_hosts[0])
    assert stats.max_concurrent_statements_per_session == 1
    assert stats.max_concurrent_statements <= 4  # default SessionPoolConfig size


# ---- 2. many threads, three hosts ----------------------------------------------------------


def test_32_threads_each_get_their_own_results(fake_graphd_factory: Factory) -> None:
    servers = [fake_graphd_factory() for _ in range(3)]
    client = make_client(*servers, size=4, wait=30.0)
    errors: list[str] = []

    def worker(t: int) -> int:
        done = 0
        for i in range(300):
            rs = client.execute("RETURN $t AS t, $i AS i, $t * 1000 + $i AS k", {"t": t, "i": i})
            row = rs.rows()[0]
            if row != (t, i, t * 1000 + i):
                errors.append(f"thread {t} statement {i} got {row}")
            done += 1
        return done

    for server in servers:  # long enough that statements overlap: the servers see the pool's limits
        server.script(re.compile(r"^RETURN \$t AS t"), delay=0.002)
    with ThreadPoolExecutor(32) as pool:
        counts = list(pool.map(worker, range(32)))
    assert errors == []
    assert sum(counts) == 32 * 300
    stats = client.stats()
    assert sum(h.statements for h in stats.hosts) == 32 * 300
    client.close()
    seen = 0
    for server in servers:
        s = settled(server)
        assert s.max_concurrent_statements_per_session == 1
        assert s.max_concurrent_statements == 4  # size=4 per host, all of them busy at once
        assert s.authentications == 4  # never more than size sessions per host (none timed out)
        seen += s.statements
    assert seen == 32 * 300
    # round-robin: every host served a fair share
    for server in servers:
        assert server.stats().statements > 32 * 300 // 6


# ---- 3. pool exhaustion --------------------------------------------------------------------


def test_borrow_fails_after_wait_timeout(fake_graphd: FakeGraphd) -> None:
    rule = fake_graphd.script("RETURN 'block'", hold=True)
    client = make_client(fake_graphd, size=1, wait=0.5)
    try:
        with ThreadPoolExecutor(1) as pool:
            blocked = pool.submit(client.execute, "RETURN 'block'")
            fake_graphd.wait_for(lambda s: s.statements_running == 1)
            start = time.monotonic()
            with pytest.raises(PoolTimeout) as info:
                client.execute("RETURN 1")
            waited = time.monotonic() - start
            assert 0.5 <= waited < 1.5  # wait_timeout=0.5; the margin is scheduling slack
            text = str(info.value)
            assert "1 host(s)" in text and "size=1" in text and "0.5" in text
            with pytest.raises(PoolTimeout) as info:  # the call's own limit, not the pool's
                with client.session(wait_timeout=0):
                    pass
            assert "waited 0.000s" in str(info.value) and "0.5" not in str(info.value)
            rule.release()
            assert blocked.result(5).rows() == [("block",)]
    finally:
        client.close()


def test_fewer_connections_than_sessions_are_shared_not_kept(fake_graphd: FakeGraphd) -> None:
    # max_connections_per_host < size: an idle session must not keep the only connection while
    # another session waits for one (that wait ended in a PoolTimeout with a connection idle).
    rule = fake_graphd.script("RETURN 'block'", hold=True)
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=10.0, max_connections_per_host=1)
    with make_client(fake_graphd, size=2, wait=3.0, conn_config=cfg) as client, ThreadPoolExecutor(2) as pool:
        blocked = pool.submit(client.execute, "RETURN 'block'")
        fake_graphd.wait_for(lambda s: s.statements_running == 1)
        second = pool.submit(client.execute, "RETURN 2 AS v")
        wait_until(lambda: client.stats().hosts[0].connection_waiters == 1)  # waits for the connection
        rule.release()
        assert blocked.result(5).rows() == [("block",)]
        assert second.result(5).rows() == [(2,)]
        assert client.execute("RETURN 3 AS v").rows() == [(3,)]
        stats = fake_graphd.stats()
        assert stats.connections_accepted == 1  # the cap held
        assert stats.sessions_open == 2 and stats.max_concurrent_statements_per_session == 1


def test_wait_timeout_zero_fails_at_once(fake_graphd: FakeGraphd) -> None:
    rule = fake_graphd.script("RETURN 'block'", hold=True)
    with make_client(fake_graphd, size=1, wait=0) as client, ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(client.execute, "RETURN 'block'")
        fake_graphd.wait_for(lambda s: s.statements_running == 1)
        start = time.monotonic()
        with pytest.raises(PoolTimeout):
            client.execute("RETURN 1")
        assert time.monotonic() - start < 1.0  # the held statement never ends: any wait would show
        rule.release()
        blocked.result(5)


def test_wait_timeout_none_waits_until_a_session_is_free(fake_graphd: FakeGraphd) -> None:
    rule = fake_graphd.script("RETURN 'block'", hold=True)
    with make_client(fake_graphd, size=1, wait=None) as client, ThreadPoolExecutor(2) as pool:
        blocked = pool.submit(client.execute, "RETURN 'block'")
        fake_graphd.wait_for(lambda s: s.statements_running == 1)
        waiting = pool.submit(client.execute, "RETURN 2 AS two")
        # The second caller is queued on the pool, not on the server.
        deadline = time.monotonic() + 5
        while client.stats().hosts[0].session_waiters != 1:
            assert time.monotonic() < deadline, "the second caller never queued"
            threading.Event().wait(0.01)
        assert not waiting.done()
        rule.release()
        assert blocked.result(5).rows() == [("block",)]
        assert waiting.result(5).rows() == [(2,)]


# ---- 4. one host down at construction, then back -------------------------------------------


def test_host_down_at_construction_comes_back(fake_graphd_factory: Factory) -> None:
    servers = [fake_graphd_factory() for _ in range(3)]
    down = servers[2]
    down.stop()
    client = make_client(*servers, size=2)
    try:
        for i in range(30):
            assert client.execute("RETURN $i", {"i": i}).rows() == [(i,)]
        assert client.stats().host(down.address).state == "down"
        assert servers[0].stats().statements > 0 and servers[1].stats().statements > 0
        down.start()
        deadline = time.monotonic() + 20
        while down.stats().statements == 0:
            assert time.monotonic() < deadline, "the restarted host never received a statement"
            client.execute("RETURN 1")
        assert client.stats().host(down.address).state == "up"
    finally:
        client.close()


def test_construction_fails_when_too_few_hosts_answer(fake_graphd_factory: Factory) -> None:
    a, b = fake_graphd_factory(), fake_graphd_factory()
    b.stop()
    with pytest.raises(NoHostAvailable) as info:
        make_client(a, b, min_healthy_hosts=2)
    assert b.address in str(info.value)
    settled(a)


def test_all_hosts_down_gives_no_host_available(fake_graphd: FakeGraphd) -> None:
    # wait_timeout shorter than the first backoff (~0.2 s): no host can be retried in time.
    client = make_client(fake_graphd, wait=0.05)
    try:
        fake_graphd.stop()
        with pytest.raises((ConnectionFailed, OutcomeUnknown)):
            client.execute("RETURN 1")
        with pytest.raises(NoHostAvailable) as info:
            client.execute("RETURN 1")
        assert fake_graphd.address in str(info.value)
    finally:
        client.close()


def test_caller_waits_for_a_backing_off_host_within_wait_timeout(fake_graphd: FakeGraphd) -> None:
    client = make_client(fake_graphd, wait=5.0)
    try:
        fake_graphd.stop()
        with pytest.raises((ConnectionFailed, OutcomeUnknown)):
            client.execute("RETURN 1")
        assert client.stats().hosts[0].state == "down"
        fake_graphd.start()
        # The host is backing off; the caller waits for its retry time instead of failing.
        assert client.execute("RETURN 7").rows() == [(7,)]
        assert client.stats().hosts[0].state == "up"
    finally:
        client.close()


# ---- 5. graphd forgets every session -------------------------------------------------------


def test_forgotten_sessions_are_renewed_transparently_in_the_space(fake_graphd: FakeGraphd) -> None:
    client = make_client(fake_graphd, size=2, session_config=SessionConfig(space="test"))
    try:
        for _ in range(4):
            client.execute("RETURN 1")
        assert fake_graphd.forget_sessions() >= 1
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda i: client.execute("RETURN $i", {"i": i}), range(10)))
        assert [r.rows() for r in results] == [[(i,)] for i in range(10)]
        assert all(r.space_name == "test" for r in results)
        sessions = fake_graphd.sessions()
        assert sessions and all(s.space == "test" for s in sessions)
        assert client.stats().hosts[0].session_renewals >= 1
    finally:
        client.close()
    settled(fake_graphd)


def test_space_changed_by_a_statement_is_restored(fake_graphd: FakeGraphd) -> None:
    with make_client(fake_graphd, size=1, session_config=SessionConfig(space="test")) as client:
        rs = client.execute("USE basketballplayer; RETURN 1")
        assert rs.space_name == "basketballplayer"
        assert client.execute("RETURN 2").space_name == "test"
        assert [s.space for s in fake_graphd.sessions()] == ["test"]


@pytest.mark.parametrize(
    ("space", "statement"),
    [("test", "USE test"), ("my_space2", "USE my_space2"), ("match", "USE `match`"), ("Users", "USE `Users`"),
     ("Data", "USE `Data`"), ("left", "USE `left`"), ("a b", "USE `a b`"), ("日本", "USE `日本`")],
)
def test_use_statement_backquotes_what_graphd_would_not_read_as_given(space: str, statement: str) -> None:
    # a reserved word would be a keyword; an unreserved keyword in any case is lowercased by
    # graphd's parser ("USE Users" names the space "users"): only lowercase plain names go bare
    assert SessionConfig(space=space).use_statement() == statement


def test_a_space_named_like_a_reserved_word_is_backquoted(fake_graphd: FakeGraphd) -> None:
    # graphd reads an unquoted reserved word as a keyword ("USE match" is a syntax error), so the
    # set-up USE and the restore after a statement moved the session both need the backquotes
    fake_graphd.add_space("Match")
    with make_client(fake_graphd, size=1, session_config=SessionConfig(space="Match")) as client:
        assert client.execute("RETURN 1").space_name == "Match"
        assert client.execute("USE basketballplayer; RETURN 2").space_name == "basketballplayer"
        assert client.execute("RETURN 3").space_name == "Match"
    uses = [s.statement for s in fake_graphd.statement_log() if s.statement.startswith("USE")]
    assert uses == ["USE `Match`", "USE basketballplayer; RETURN 2", "USE `Match`"]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "general-path"])
def test_space_changed_by_a_failed_statement_is_restored(fake_graphd: FakeGraphd, fast_path: bool) -> None:
    # The statement switches space and then fails: the session must not go back to the pool in
    # the space the failed statement left it in (the next caller's statement would run there).
    fake_graphd.script("FAIL AT RUNTIME", error=-1005, message="boom")
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=10.0, ping_before_execute=not fast_path)
    space = SessionConfig(space="test")
    with make_client(fake_graphd, size=1, conn_config=cfg, session_config=space) as client:
        client.execute("RETURN 0")  # the session exists and kept its connection: the fast path applies
        with pytest.raises(ExecutionError):
            client.execute("USE basketballplayer; FAIL AT RUNTIME")
        assert [s.space for s in fake_graphd.sessions()] == ["test"]
        assert client.execute("RETURN 2").space_name == "test"


def test_unconfigured_space_session_is_not_shared_after_a_failed_use(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script("FAIL AT RUNTIME", error=-1005, message="boom")
    with make_client(fake_graphd, size=1) as client:
        with pytest.raises(ExecutionError):
            client.execute("USE test; FAIL AT RUNTIME")
        s = fake_graphd.wait_for(lambda s: s.signouts == 1)
        assert s.sessions_open == 0
        assert client.execute("RETURN 1").space_name == ""


def test_unconfigured_space_session_is_not_shared_after_use(fake_graphd: FakeGraphd) -> None:
    with make_client(fake_graphd, size=1) as client:
        client.execute("USE test")
        assert client.execute("RETURN 1").space_name == ""
        s = fake_graphd.wait_for(lambda s: s.signouts == 1)
        assert s.sessions_open == 1


# ---- session set-up: authenticate and SessionConfig statements --------------------------------


def test_a_lost_authenticate_reply_is_retried_the_statement_was_never_sent(fake_graphd: FakeGraphd) -> None:
    # The reply to authenticate is lost: only the session is in doubt, not the statement, so the
    # client gets another session and runs it (not idempotent, yet nothing ran twice).
    fake_graphd.script(method="authenticate", drop="before_reply", times=1)
    with make_client(fake_graphd, size=1) as client:
        assert client.execute("RETURN 1 AS v").rows() == [(1,)]
    assert [logged.statement for logged in fake_graphd.statement_log()] == ["RETURN 1 AS v"]
    assert fake_graphd.stats().connections_accepted == 2  # the first one was dropped


def test_a_lost_authenticate_reply_in_a_session_block_is_retried(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script(method="authenticate", drop="before_reply", times=1)
    with make_client(fake_graphd, size=1) as client, client.session() as session:
        assert session.execute("RETURN 1 AS v").rows() == [(1,)]
    assert [logged.statement for logged in fake_graphd.statement_log()] == ["RETURN 1 AS v"]


@pytest.mark.parametrize("what", ["authenticate", "USE"])
def test_session_set_up_is_bounded_by_request_timeout_without_wait_timeout(
    fake_graphd: FakeGraphd, what: str
) -> None:
    # wait_timeout=None leaves the call without an overall deadline: each request of the session
    # set-up must still be bounded by request_timeout, not wait for ever.
    if what == "USE":
        rule = fake_graphd.script("USE test", hold=True)
    else:
        rule = fake_graphd.script(method="authenticate", hold=True)
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=0.3)
    try:
        with make_client(fake_graphd, size=1, wait=None, conn_config=cfg,
                         session_config=SessionConfig(space="test")) as client:  # fmt: skip
            start = time.monotonic()
            with pytest.raises(ConnectionFailed) as info:
                client.execute("RETURN 1")
            # two set-ups of 0.3 s each (held for ever otherwise), and no wait for a connection to
            # sign the half-made session out on (connect_timeout=2 s each, if the broken one still
            # held the host's only slot)
            assert time.monotonic() - start < 2.5
            assert "not sent" in str(info.value)
            assert isinstance(info.value.__cause__, RequestTimeout)
            if what == "USE":  # both sessions were made, then signed out
                fake_graphd.wait_for(lambda s: s.authentications == 2 and s.signouts == 2, timeout=5.0)
    finally:
        rule.release()
    assert "RETURN 1" not in [logged.statement for logged in fake_graphd.statement_log()]


# ---- 6. request timeout --------------------------------------------------------------------


def test_slow_statement_times_out_and_the_next_gets_its_own_result(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script("RETURN 'slow'", delay=2.0, columns=["v"], rows=[["late reply"]])
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=0.5)
    with make_client(fake_graphd, size=1, conn_config=cfg) as client:
        start = time.monotonic()
        with pytest.raises(RequestTimeout) as info:
            client.execute("RETURN 'slow'")
        elapsed = time.monotonic() - start
        assert 0.5 <= elapsed < 1.5  # the reply comes at 2.0 s; the margin is scheduling slack
        assert isinstance(info.value, OutcomeUnknown) and not info.value.is_retryable()
        assert client.stats().hosts[0].connections_discarded >= 1
        assert client.execute("RETURN 'fresh' AS v").rows() == [("fresh",)]
        # sent once: a statement whose outcome is unknown is not retried unless idempotent
        assert [e.statement for e in fake_graphd.statement_log()].count("RETURN 'slow'") == 1
        # graphd was still running the slow statement: its session was retired (signed out), and
        # the next statement ran on a new one, never two at once on one session
        log = [e for e in fake_graphd.statement_log() if "RETURN" in e.statement]
        assert log[0].session_id != log[-1].session_id
        assert fake_graphd.stats().max_concurrent_statements_per_session == 1
        fake_graphd.wait_for(lambda s: s.authentications == 2 and s.signouts == 1, timeout=5.0)


def test_idempotent_statement_is_retried_after_a_drop(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script("RETURN 'flaky'", drop="mid_reply", times=1)
    with make_client(fake_graphd, size=1) as client:
        with pytest.raises(OutcomeUnknown):
            client.execute("RETURN 'flaky'")
        fake_graphd.script("RETURN 'flaky'", drop="mid_reply", times=1)
        assert client.execute("RETURN 'flaky'", idempotent=True).rows() == [("flaky",)]
        # once for the first call, twice for the idempotent one (dropped, then retried)
        assert [e.statement for e in fake_graphd.statement_log()].count("RETURN 'flaky'") == 3
        # always dropped: retried a bounded number of times (one host: two attempts), then raised
        fake_graphd.script("RETURN 'always'", drop="mid_reply")
        with pytest.raises(OutcomeUnknown):
            client.execute("RETURN 'always'", idempotent=True)
        assert [e.statement for e in fake_graphd.statement_log()].count("RETURN 'always'") == 2


def _malformed(ctx: ReplyContext) -> bytes:
    return ctx.frame(ctx.message()[:-5])  # the reply struct cut short


def _exception(ctx: ReplyContext) -> bytes:
    kaput = TApplicationException(TApplicationException.INTERNAL_ERROR, "kaput")
    return ctx.reply(kaput, mtype=wire.EXCEPTION)  # a Thrift exception instead of a result


@pytest.mark.parametrize("garble", [_malformed, _exception], ids=["malformed", "exception"])
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "general-path"])
def test_an_unreadable_reply_leaves_the_outcome_unknown_and_is_retried_only_when_idempotent(
    fake_graphd: FakeGraphd, garble: Callable[[ReplyContext], bytes], fast_path: bool
) -> None:
    # graphd ran the statement, and its reply cannot be read: as with a lost reply, the statement
    # may have run (design.md §3), so only an idempotent one is sent again, also in a session block
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=10.0, ping_before_execute=not fast_path)
    with make_client(fake_graphd, size=1, conn_config=cfg) as client:
        client.execute("RETURN 0")  # the session exists and kept its connection: the fast path applies
        fake_graphd.script("RETURN 'x' AS v", raw=garble, times=1)
        with pytest.raises(UnreadableReply) as info:
            client.execute("RETURN 'x' AS v")
        assert isinstance(info.value, ProtocolError) and isinstance(info.value, OutcomeUnknown)
        assert not info.value.is_retryable() and "may have run" in str(info.value)
        fake_graphd.script("RETURN 'y' AS v", raw=garble, times=1)
        assert client.execute("RETURN 'y' AS v", idempotent=True).rows() == [("y",)]
        with client.session() as session:
            fake_graphd.script("RETURN 'z' AS v", raw=garble, times=1)
            assert session.execute("RETURN 'z' AS v", idempotent=True).rows() == [("z",)]
    ran = [e.statement for e in fake_graphd.statement_log()]
    assert [ran.count(f"RETURN '{v}' AS v") for v in "xyz"] == [1, 2, 2]
    assert fake_graphd.stats().max_concurrent_statements_per_session == 1


@pytest.mark.parametrize("limit", ["max_frame_size", "max_string_length"])
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "general-path"])
def test_a_reply_beyond_the_limits_is_never_retried(
    fake_graphd_factory: Callable[..., FakeGraphd], limit: str, fast_path: bool
) -> None:
    # graphd ran it and answered; the answer would be as large on every host: ReplyTooLarge, a
    # ProtocolError but not an unknown outcome, so even an idempotent statement runs once
    servers = [fake_graphd_factory() for _ in range(3)]
    for server in servers:
        server.script("FETCH big", columns=["v"], rows=[["x" * 5000]])
    cfg = ConnectionConfig(connect_timeout=2.0, request_timeout=10.0, ping_before_execute=not fast_path,
                           **{limit: 2048})  # fmt: skip
    with make_client(*servers, size=1, conn_config=cfg) as client:
        client.execute("RETURN 0")
        with pytest.raises(ReplyTooLarge, match=limit) as info:
            client.execute("FETCH big", idempotent=True)
        assert not isinstance(info.value, OutcomeUnknown)
        with client.session() as session, pytest.raises(ReplyTooLarge):
            session.execute("FETCH big", idempotent=True)
    ran = [e.statement for s in servers for e in s.statement_log()]
    assert ran.count("FETCH big") == 2


@pytest.mark.parametrize(
    "doc", [b"{oops", b"[1]", b'{"errors": [{"code": 1e999}]}', b'{"errors": [{"code": 0}], "results": [1]}',
            b"[" * 100_000],
    ids=["not-json", "a-list", "infinite-code", "results-of-numbers", "too-deep"],
)
def test_an_unreadable_json_document_is_an_unreadable_reply(fake_graphd: FakeGraphd, doc: bytes) -> None:
    # never AttributeError, OverflowError or RecursionError out of execute_json()
    def reply(ctx: ReplyContext) -> bytes:
        return ctx.reply(service.ExecuteJsonResult(success=doc))

    with make_client(fake_graphd, size=1) as client:
        fake_graphd.script("RETURN 8", method="executeJsonWithParameter", raw=reply, times=1)
        with pytest.raises(UnreadableReply, match="malformed JSON"):
            client.execute_json("RETURN 8")
        assert client.execute_json("RETURN 9")["errors"][0]["code"] == 0  # and the client goes on


@pytest.mark.parametrize("step", ["authenticate", "USE test"])
def test_an_unreadable_reply_while_setting_up_a_session_is_retried_the_statement_was_not_sent(
    fake_graphd: FakeGraphd, step: str
) -> None:
    # the statement itself was never sent: as after a lost set-up reply, the call goes on with
    # another session (not idempotent, and still run exactly once)
    if step == "authenticate":
        fake_graphd.script(method="authenticate", raw=_malformed, times=1)
    else:
        fake_graphd.script(step, raw=_exception, times=1)
    with make_client(fake_graphd, size=1, session_config=SessionConfig(space="test")) as client:
        assert client.execute("RETURN 'once' AS v").rows() == [("once",)]
    assert [e.statement for e in fake_graphd.statement_log()].count("RETURN 'once' AS v") == 1


def test_an_unreadable_version_handshake_is_a_connect_failure_nothing_was_sent(
    fake_graphd_factory: Callable[..., FakeGraphd],
) -> None:
    # a new connection's handshake reply is garbled (a broken middlebox, say): as with a silent
    # graphd, the host is backed off and the call goes to another one; alone, it says "not sent"
    first, second = fake_graphd_factory(), fake_graphd_factory()
    with make_client(first, size=1) as client:
        client.execute("RETURN 1")
        first.drop_connections()
        first.script(method="verifyClientVersion", raw=_malformed, times=1)
        with pytest.raises(ConnectionFailed, match="version handshake") as info:
            client.execute("RETURN 'alone' AS v")
        assert info.value.is_retryable()
    with make_client(first, second, size=1) as client:
        client.execute("RETURN 1")
        client.execute("RETURN 1")  # a session on each host
        first.drop_connections()
        rule = first.script(method="verifyClientVersion", raw=_malformed, times=1)
        # round robin: within two statements one goes to `first`, fails to connect, goes on elsewhere
        assert [client.execute(f"RETURN {i} AS v").rows() for i in (2, 3)] == [[(2,)], [(3,)]]
        assert rule.hits == 1
    ran = [e.statement for s in (first, second) for e in s.statement_log()]
    assert ran.count("RETURN 'alone' AS v") == 0
    assert (ran.count("RETURN 2 AS v"), ran.count("RETURN 3 AS v")) == (1, 1)


def test_elapsed_time_and_last_use_come_from_the_reply(
    fake_graphd: FakeGraphd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The short path reads the clock once after the reply (Connection.execute's last_used) and uses
    # it for the result's elapsed time and the session's last use.
    fake_graphd.script("RETURN 'slow'", delay=0.2, columns=["v"], rows=[["late"]])
    with make_client(fake_graphd, size=1) as client:
        client.execute("RETURN 1")  # the session and its connection now exist
        broker = client._broker
        returned: list[float] = []
        give_back_ready = broker.give_back_ready

        def spy(host: Any, session: Any, conn: Any, now: float) -> bool:
            returned.append(now)
            return give_back_ready(host, session, conn, now)

        monkeypatch.setattr(broker, "give_back_ready", spy)
        before = time.monotonic()
        rs = client.execute("RETURN 'slow'")
        after = time.monotonic()
        assert len(returned) == 1  # it took the short path
        assert 200_000 <= rs.elapsed_us <= (after - before) * 1_000_000
        (session,) = broker.hosts[0].idle
        assert before + 0.2 <= session.last_used == returned[0] <= after
        # the general path (a per-call timeout) measures the same way
        rs = client.execute("RETURN 'slow'", timeout=5.0)
        assert rs.elapsed_us >= 200_000 and len(returned) == 1


def test_per_call_timeout_overrides_request_timeout(fake_graphd: FakeGraphd) -> None:
    fake_graphd.script("RETURN 'slow'", delay=1.0)
    with make_client(fake_graphd, size=1) as client:
        with pytest.raises(RequestTimeout):
            client.execute("RETURN 'slow'", timeout=0.2)
        assert client.execute("RETURN 'slow'", timeout=5.0).rows() == [("slow",)]


# ---- 7. wrong password ---------------------------------------------------------------------


def test_wrong_password_leaks_nothing_and_backs_off() -> None:
    with FakeGraphd(users={"root": "nebula"}) as server:
        client = make_client(server, size=2, password="wrong")
        try:
            for _ in range(100):
                with pytest.raises(AuthenticationError) as info:
                    client.execute("RETURN 1")
            assert "root" in str(info.value) and "wrong" not in str(info.value)
            stats = client.stats()
            assert stats.sessions_busy == 0 and stats.sessions_idle == 0
            attempts = server.stats().authentication_failures
            assert 1 <= attempts < 30, attempts  # backed off: it did not try 100 times
        finally:
            client.close()
        with make_client(server, size=2, password="nebula") as good:
            assert good.execute("RETURN 1").rows() == [(1,)]
        s = settled(server)
        assert s.sessions_open == 0


def test_incompatible_server_is_a_clear_error() -> None:
    with FakeGraphd(client_versions=["9.9.9"]) as server:
        with pytest.raises(IncompatibleServer) as info:
            make_client(server)
        assert "3.0.0" in str(info.value)
        settled(server)


# ---- 8. fork safety ------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_client_works_in_forked_child_and_parent(fake_graphd: FakeGraphd) -> None:
    client = make_client(fake_graphd, size=2)
    try:
        assert client.execute("RETURN 'parent before'").rows() == [("parent before",)]
        parent_sessions = {s.session_id for s in fake_graphd.sessions()}

        def child() -> str:
            rows = client.execute("RETURN 'child'").rows()
            client.close()
            return repr(rows)

        assert in_forked_child(child) == "[('child',)]"
        # The child signed out only its own session; the parent's still exist and still work.
        alive = {s.session_id for s in fake_graphd.sessions()}
        assert parent_sessions <= alive
        assert client.execute("RETURN 'parent after'").rows() == [("parent after",)]
        assert client.stats().hosts[0].session_renewals == 0
    finally:
        client.close()
    settled(fake_graphd)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_inside_a_session_block_leaves_the_parents_session_alone(
    fake_graphd: FakeGraphd,
) -> None:
    client = make_client(fake_graphd, size=1)
    try:
        with client.session() as block:
            block.execute("USE basketballplayer")
            parent_session = {s.session_id for s in fake_graphd.sessions()}

            def child() -> str:
                try:
                    block.execute("USE test")
                    out = "ran"
                except ClientClosed as exc:
                    out = "refused" if "before fork()" in str(exc) else repr(exc)
                block._finish()  # the child leaves the block too (as a with statement would)
                out += " " + repr(client.execute("RETURN 'child'").rows())
                client.close()
                return out

            assert in_forked_child(child) == "refused [('child',)]"
            # the parent's block session is alive, in the parent's space, and still works
            assert parent_session <= {s.session_id for s in fake_graphd.sessions()}
            assert block.execute("RETURN 1 AS a").space_name == "basketballplayer"
        assert fake_graphd.stats().invalid_session_requests == 0
        assert [e.statement for e in fake_graphd.statement_log() if e.session_id in parent_session] == [
            "USE basketballplayer", "RETURN 1 AS a",
        ]  # fmt: skip
    finally:
        client.close()
    settled(fake_graphd)


_WORKER_CLIENT: NebulaClient | None = None  # inherited by the multiprocessing workers below


def _worker_task(n: int) -> tuple[int, int]:
    assert _WORKER_CLIENT is not None
    return _WORKER_CLIENT.execute("RETURN $n AS n", {"n": n}).scalar(), os.getpid()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_multiprocessing_workers_sign_out_their_sessions_as_they_end(fake_graphd: FakeGraphd) -> None:
    # multiprocessing's workers end with os._exit(), so no atexit handler closes the client there
    import multiprocessing

    global _WORKER_CLIENT
    _WORKER_CLIENT = client = make_client(fake_graphd, size=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pool = multiprocessing.get_context("fork").Pool(2, maxtasksperchild=2)
        try:
            results = pool.map(_worker_task, range(8), chunksize=1)
        finally:
            pool.close()
            pool.join()
        assert [n for n, _ in results] == list(range(8))
        workers = {pid for _, pid in results}
        assert len(workers) >= 4  # each worker ran at most two tasks, on its own session
        # a sign-out is oneway: the workers have exited, the server may still be reading them
        wait_until(lambda: fake_graphd.stats().sessions_open == 0, timeout=10)
        stats = fake_graphd.stats()
        assert stats.signouts == stats.authentications >= len(workers)
    finally:
        _WORKER_CLIENT = None
        client.close()
    settled(fake_graphd)


# ---- errors, lifecycle, config -------------------------------------------------------------


def test_server_errors_carry_code_message_and_statement(fake_graphd: FakeGraphd) -> None:
    with make_client(fake_graphd) as client:
        with pytest.raises(StatementSyntaxError) as info:
            client.execute("RETURN (1")
        err = info.value
        assert err.code == -1004 and err.statement == "RETURN (1" and err.host == fake_graphd.address
        assert "E_SYNTAX_ERROR" in str(err) and "RETURN (1" in str(err)
        with pytest.raises(SemanticError):
            client.execute("RETURN $missing")
        fake_graphd.script("RETURN 'boom'", error=-1005, message="leader changed")
        with pytest.raises(ExecutionError) as info2:
            client.execute("RETURN 'boom'")
        assert info2.value.code == -1005 and "leader changed" in str(info2.value)
        assert client.execute("RETURN 3").rows() == [(3,)]


@pytest.mark.parametrize("flag", ["false", "no", 0, None, 1.0])
def test_idempotent_must_be_a_bool(fake_graphd: FakeGraphd, flag: Any) -> None:
    # "false" is true: taken as given it would let a write be retried after an unknown outcome
    with make_client(fake_graphd) as client:
        calls: list[Callable[[], Any]] = [
            lambda: client.execute("RETURN 1", idempotent=flag),
            lambda: client.execute_py("RETURN 1", idempotent=flag),
            lambda: client.execute_json("RETURN 1", idempotent=flag),
        ]
        with client.session() as session:
            calls += [lambda: session.execute("RETURN 1", idempotent=flag)]
            for call in calls:
                with pytest.raises(TypeError, match=r"^idempotent must be True or False, not "):
                    call()
        assert fake_graphd.stats().statements == 0


def test_close_is_idempotent_and_use_after_close_raises(fake_graphd: FakeGraphd) -> None:
    client = make_client(fake_graphd)
    client.execute("RETURN 1")
    client.close()
    client.close()
    assert client.closed
    with pytest.raises(ClientClosed):
        client.execute("RETURN 1")
    settled(fake_graphd)


def test_close_waits_for_statements_in_flight(fake_graphd: FakeGraphd) -> None:
    rule = fake_graphd.script("RETURN 'slowish'", hold=True)
    client = make_client(fake_graphd, size=2)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.execute, "RETURN 'slowish'")
        fake_graphd.wait_for(lambda s: s.statements_running == 1)
        closing = pool.submit(client.close)
        wait_until(lambda: client.closed)  # close() has begun...
        # ...and waits: the statement still runs, nothing is signed out, close() has not returned
        # (it returns only after the release below, so checking it now cannot race)
        assert fake_graphd.stats().statements_running == 1 and fake_graphd.stats().signouts == 0
        assert not closing.done()
        rule.release()
        assert running.result(5).rows() == [("slowish",)]
        closing.result(5)
    settled(fake_graphd)


def test_unclosed_client_warns() -> None:
    with FakeGraphd() as server:
        client = make_client(server)
        with pytest.warns(ResourceWarning, match="unclosed"):
            client.__del__()
        client.close()


def test_session_block_keeps_one_session(fake_graphd: FakeGraphd) -> None:
    with make_client(fake_graphd, size=2, session_config=SessionConfig(space="test")) as client:
        with client.session() as session:
            session.execute("USE basketballplayer")
            assert session.space == "basketballplayer"
            rs = session.execute("RETURN $x", {"x": 5})
            assert rs.rows() == [(5,)] and rs.space_name == "basketballplayer"
        log = fake_graphd.statement_log()
        ids = {e.session_id for e in log if e.statement.startswith(("USE b", "RETURN"))}
        assert len(ids) == 1
        assert {s.space for s in fake_graphd.sessions()} == {"test"}


def test_bad_configuration_is_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="size"):
        SessionPoolConfig(size=0)
    with pytest.raises(ValueError, match="connect_timeout"):
        ConnectionConfig(connect_timeout=-1)
    with pytest.raises(TypeError):
        SessionPoolConfig(sise=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="port"):
        NebulaClient("127.0.0.1:99999")
    with pytest.raises(ValueError, match="not a number"):
        NebulaClient("127.0.0.1:abc")


def test_password_never_shown(fake_graphd: FakeGraphd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="nebula_sync")
    with make_client(fake_graphd, password="s3cr3t-pw") as client:
        client.execute("RETURN 1")
        text = repr(client) + str(client) + repr(client.stats())
    assert "s3cr3t-pw" not in text
    assert all("s3cr3t-pw" not in r.getMessage() for r in caplog.records)


def test_hosts_are_resolved_by_name(fake_graphd: FakeGraphd) -> None:
    with NebulaClient(f"localhost:{fake_graphd.port}", "root", "x") as client:
        assert client.execute("RETURN 1").rows() == [(1,)]


def test_health_reports_each_host_without_borrowing_a_session() -> None:
    with FakeGraphd(web_port=0) as up, FakeGraphd(web_port=0) as down:
        assert up.web is not None and down.web is not None
        ports = {up.address: up.web.address, down.address: down.web.address}
        with make_client(up, down, size=1) as client:
            down.stop()
            report = client.health(web_port=ports, timeout=1.0)
            by_host = {h.host: h for h in report.hosts}
            assert by_host[up.address].healthy and not by_host[down.address].healthy
            assert not report.healthy
            assert client.stats().sessions_busy == 0 and up.stats().authentications == 0
