"""Scripted responses of the fake graphd: rows, errors, delays, holds, drops, raw replies."""

from __future__ import annotations

import datetime
import re
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

import pytest
from thrift.Thrift import TApplicationException

from nebula_sync._params import from_value
from nebula_sync._thrift import service, ttypes, wire
from nebula_sync._thrift.ttypes import Value
from nebula_sync.errors import ProtocolError
from nebula_sync.testing import Drop, FakeGraphd, ReplyContext

if TYPE_CHECKING:
    from conftest import RawClient

RawFactory = Callable[..., "RawClient"]


def rows_of(resp: ttypes.ExecutionResponse) -> list[list[Any]]:
    return [[from_value(v) for v in row.values] for row in resp.data.rows]


# ---- answers ---------------------------------------------------------------------------------


def test_rows_from_python_values(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    rule = fake_graphd.script("MATCH (v) RETURN v", columns=["name", "age", "tags", "at"],
                              rows=[["Tim", 42, ["a", "b"], when], ["Tony", None, [], when]])  # fmt: skip
    client = raw_client(fake_graphd, protocol="compact")
    sid = client.session()
    resp = client.execute(sid, "MATCH (v) RETURN v")
    assert resp.error_code == 0
    assert resp.data.column_names == [b"name", b"age", b"tags", b"at"]
    assert rows_of(resp) == [["Tim", 42, ["a", "b"], when], ["Tony", None, [], when]]
    assert resp.space_name == b""
    assert rule.hits == 1


def test_rows_from_raw_values_of_every_kind(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    vertex = ttypes.Vertex(vid=Value(sVal=b"v1"), tags=[
        ttypes.Tag(name=b"player", props={b"name": Value(sVal=b"Tim")})])  # fmt: skip
    edge = ttypes.Edge(src=Value(sVal=b"v1"), dst=Value(sVal=b"v2"), type=1, name=b"follow",
                       ranking=0, props={b"degree": Value(iVal=90)})  # fmt: skip
    path = ttypes.Path(src=vertex, steps=[ttypes.Step(dst=ttypes.Vertex(vid=Value(sVal=b"v2"), tags=[]),
                                                      type=1, name=b"follow", ranking=0, props={})])
    values = [
        Value(nVal=ttypes.NullType.NaN),
        Value(vVal=vertex),
        Value(eVal=edge),
        Value(pVal=path),
        Value(ggVal=ttypes.Geography(ptVal=ttypes.Point(coord=ttypes.Coordinate(x=1.0, y=2.0)))),
        Value(duVal=ttypes.Duration(seconds=1, microseconds=2, months=3)),
        Value(gVal=ttypes.DataSet(column_names=[b"x"], rows=[ttypes.Row(values=[Value(iVal=1)])])),
        Value(),  # graphd's "empty" value
    ]
    fake_graphd.script("GO FROM 'v1' OVER follow", columns=[f"c{i}" for i in range(len(values))],
                       rows=[values])  # fmt: skip
    for protocol in ("binary", "compact"):
        client = raw_client(fake_graphd, protocol=protocol)
        resp = client.execute(client.session(), "GO FROM 'v1' OVER follow")
        assert resp.data.rows[0].values == values


def test_empty_result_with_columns(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("LOOKUP ON player", columns=["id"], rows=[])
    client = raw_client(fake_graphd)
    resp = client.execute(client.session(), "LOOKUP ON player")
    assert (resp.error_code, resp.data.column_names, resp.data.rows) == (0, [b"id"], [])


def test_scripted_error(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("DROP SPACE test", error=-1008, message="PermissionError: No permission")
    client = raw_client(fake_graphd)
    sid = client.session()
    client.execute(sid, "USE test")
    resp = client.execute(sid, "DROP SPACE test")
    assert (resp.error_code, resp.error_msg, resp.space_name) == (
        -1008, b"PermissionError: No permission", b"test")  # fmt: skip
    assert resp.data is None


def test_plan_and_comment(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    plan = ttypes.PlanDescription(
        plan_node_descs=[ttypes.PlanNodeDescription(name=b"Project", id=1, output_var=b"__Project_1")],
        node_index_map={1: 0}, format=b"row", optimize_time_in_us=5)  # fmt: skip
    fake_graphd.script(re.compile(r"^PROFILE"), columns=["a"], rows=[[1]], plan_desc=plan,
                       comment="a comment")  # fmt: skip
    client = raw_client(fake_graphd)
    resp = client.execute(client.session(), "PROFILE RETURN 1")
    assert resp.plan_desc == plan
    assert resp.comment == b"a comment"


def test_matching_rules(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script(re.compile(r"(?i)^match"), columns=["src"], rows=[["regex"]])
    fake_graphd.script("MATCH (v) RETURN v LIMIT 1", columns=["src"], rows=[["exact"]])
    client = raw_client(fake_graphd)
    sid = client.session()
    assert rows_of(client.execute(sid, "  MATCH (v) RETURN v LIMIT 1 ; ")) == [["exact"]]
    assert rows_of(client.execute(sid, "match (n) return n")) == [["regex"]]
    assert client.execute(sid, "RETURN 1").data.column_names == [b"1"]  # the engine still runs


def test_newest_rule_wins_and_remove(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    old = fake_graphd.script("Q", columns=["v"], rows=[["old"]])
    new = fake_graphd.script("Q", columns=["v"], rows=[["new"]])
    client = raw_client(fake_graphd)
    sid = client.session()
    assert rows_of(client.execute(sid, "Q")) == [["new"]]
    new.remove()
    assert rows_of(client.execute(sid, "Q")) == [["old"]]
    fake_graphd.clear_scripts()
    assert client.execute(sid, "Q").error_code == -1004
    assert (old.hits, new.hits) == (1, 1)


def test_times_limits_a_rule(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("RETURN 1", error=-1005, message="flaky", times=2)
    client = raw_client(fake_graphd)
    sid = client.session()
    codes = [client.execute(sid, "RETURN 1").error_code for _ in range(4)]
    assert codes == [-1005, -1005, 0, 0]


def test_rule_for_one_statement_of_several(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("MATCH (v) RETURN v", columns=["v"], rows=[[1]])
    client = raw_client(fake_graphd)
    sid = client.session()
    resp = client.execute(sid, "USE test; MATCH (v) RETURN v")
    assert (resp.error_code, resp.space_name, rows_of(resp)) == (0, b"test", [[1]])
    resp = client.execute(sid, "MATCH (v) RETURN v; RETURN 2 AS two")
    assert rows_of(resp) == [[2]]


def test_scripted_error_in_the_middle_stops_the_request(
    fake_graphd: FakeGraphd, raw_client: RawFactory
) -> None:
    fake_graphd.script("INSERT VERTEX x", error=-1005, message="boom")
    client = raw_client(fake_graphd)
    sid = client.session()
    resp = client.execute(sid, "USE test; INSERT VERTEX x; USE basketballplayer")
    assert (resp.error_code, resp.error_msg) == (-1005, b"boom")
    assert resp.space_name == b"test"  # statements before the failing one ran


def test_rule_restricted_to_a_session(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    a, b = client.session(), client.session()
    fake_graphd.script(None, session=b, error=-1005, message="only b")
    assert client.execute(a, "RETURN 1").error_code == 0
    assert client.execute(b, "RETURN 1").error_msg == b"only b"


def test_pings_are_only_scripted_on_request(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    everything = fake_graphd.script(None, error=-1005, message="all statements")
    client = raw_client(fake_graphd)
    assert client.execute(0, "YIELD 1").error_msg == b"Invalid session id"
    assert everything.hits == 0
    fake_graphd.script(None, session=0, error=-1005, message="ping scripted")
    assert client.execute(0, "YIELD 1").error_msg == b"ping scripted"


def test_statement_rule_per_method(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("RETURN 1", method="executeJson", error=-1005, message="json only")
    client = raw_client(fake_graphd)
    sid = client.session()
    assert client.execute(sid, "RETURN 1").error_code == 0
    assert b"json only" in client.execute(sid, "RETURN 1", method="executeJson")


def test_script_validation(fake_graphd: FakeGraphd) -> None:
    with pytest.raises(ValueError, match="column names"):
        fake_graphd.script("x", rows=[[1]])
    with pytest.raises(ValueError, match="2 values for 1 columns"):
        fake_graphd.script("x", columns=["a"], rows=[[1, 2]])
    with pytest.raises(ValueError, match="unknown method"):
        fake_graphd.script(method="health")
    with pytest.raises(ValueError, match="carries no statement"):
        fake_graphd.script("x", method="authenticate")
    with pytest.raises(ValueError, match="not both"):
        fake_graphd.script("x", error=-1005, columns=["a"], rows=[])
    with pytest.raises(TypeError, match="column 'a'"):
        fake_graphd.script("x", columns=["a"], rows=[[object()]])
    with pytest.raises(ValueError):
        fake_graphd.script("x", drop="sideways")


# ---- other methods ---------------------------------------------------------------------------


def test_scripted_authentication_failure(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script(method="authenticate", error=-1010, message="Too many connections", times=1)
    client = raw_client(fake_graphd)
    resp = client.authenticate()
    assert (resp.error_code, resp.error_msg, resp.session_id) == (-1010, b"Too many connections", None)
    assert client.authenticate().error_code == 0
    stats = fake_graphd.stats()
    assert (stats.authentications, stats.authentication_failures) == (1, 1)


def test_scripted_handshake(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script(method="verifyClientVersion", error=-3061, message="go away")
    resp = raw_client(fake_graphd).verify()
    assert (resp.error_code, resp.error_msg) == (-3061, b"go away")


def test_scripted_signout_drop(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script(method="signout", drop=Drop.BEFORE_REPLY)
    client = raw_client(fake_graphd)
    client.signout(client.session())
    with pytest.raises(EOFError):
        client.recv_frame()


# ---- timing: delays and holds ----------------------------------------------------------------


def test_delay(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    rule = fake_graphd.script("SLOW", delay=0.3, columns=["a"], rows=[[1]])
    client = raw_client(fake_graphd)
    sid = client.session()
    started = time.monotonic()
    assert rows_of(client.execute(sid, "SLOW")) == [[1]]
    assert time.monotonic() - started >= 0.3
    assert rule.hits == 1
    assert rows_of(client.execute(sid, "RETURN 1")) == [[1]]
    # Only the rule delays: it did not match the unscripted statement (no clock on a busy box).
    assert rule.hits == 1
    assert [e.statement for e in fake_graphd.statement_log()] == ["SLOW", "RETURN 1"]


def test_delay_without_answer_runs_the_engine(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    rule = fake_graphd.script("RETURN 7 AS x", delay=0.05)
    client = raw_client(fake_graphd)
    assert rows_of(client.execute(client.session(), "RETURN 7 AS x")) == [[7]]
    assert rule.hits == 1


def test_hold_and_release_counts_concurrency(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    rule = fake_graphd.script("BLOCK", hold=True, columns=["a"], rows=[[1]])
    clients = [raw_client(fake_graphd) for _ in range(4)]
    shared = clients[0].session()
    other = clients[0].session()
    sids = [shared, shared, shared, other]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(c.execute, sid, "BLOCK") for c, sid in zip(clients, sids)]
        stats = fake_graphd.wait_for(lambda s: s.statements_running == 4)
        assert rule.wait_hits(4)
        assert not any(f.done() for f in futures)
        assert stats.max_concurrent_by_session == {shared: 3, other: 1}
        rule.release()
        results = [f.result(timeout=10) for f in futures]
    assert all(rows_of(r) == [[1]] for r in results)
    stats = fake_graphd.stats()
    assert stats.statements_running == 0
    assert stats.max_concurrent_statements == 4
    assert stats.max_concurrent_statements_per_session == 3
    assert stats.statements_by_session == {shared: 3, other: 1}


def test_hold_released_by_remove(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    rule = fake_graphd.script("BLOCK", hold=True, columns=["a"], rows=[[1]])
    client = raw_client(fake_graphd)
    sid = client.session()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.execute, sid, "BLOCK")
        assert rule.wait_hits(1)
        rule.remove()
        assert rows_of(future.result(timeout=10)) == [[1]]


def test_wait_hits_times_out(fake_graphd: FakeGraphd) -> None:
    rule = fake_graphd.script("never sent")
    assert rule.wait_hits(1, timeout=0.01) is False
    assert "never sent" in repr(rule)


# ---- dropped connections ---------------------------------------------------------------------


@pytest.mark.parametrize(("framing", "protocol"), [("theader", "binary"), ("framed", "compact")])
def test_drop_before_reply(fake_graphd: FakeGraphd, raw_client: RawFactory, framing: str,
                           protocol: str) -> None:  # fmt: skip
    fake_graphd.script("DROP ME", drop=Drop.BEFORE_REPLY)
    client = raw_client(fake_graphd, framing=framing, protocol=protocol)
    sid = client.session()
    client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=b"DROP ME", parameterMap={}))  # fmt: skip
    with pytest.raises(EOFError, match="after 0 of 4 bytes"):
        client.recv_frame()
    stats = fake_graphd.wait_for(lambda s: s.connections_open == 0)
    assert stats.statements == 1 and stats.statements_running == 0
    assert fake_graphd.stats().sessions_open == 1  # the session survives its connection


def test_drop_mid_reply(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("HALF", drop="mid_reply", columns=["a"], rows=[["x" * 100]])
    client = raw_client(fake_graphd)
    sid = client.session()
    client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=b"HALF", parameterMap={}))  # fmt: skip
    (length,) = struct.unpack("!I", client.read_exact(4))
    assert length > 100
    with pytest.raises(EOFError, match=f"of {length} bytes"):
        client.read_exact(length)


def test_drop_with_reset(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("RESET", drop=Drop.BEFORE_REPLY, reset=True)
    client = raw_client(fake_graphd)
    sid = client.session()
    client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=b"RESET", parameterMap={}))  # fmt: skip
    with pytest.raises(ConnectionResetError):
        client.recv_frame()


def test_drop_in_a_multi_statement_request(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("CRASH", drop=Drop.BEFORE_REPLY)
    client = raw_client(fake_graphd)
    sid = client.session()
    client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=b"USE test; CRASH; RETURN 1", parameterMap={}))  # fmt: skip
    with pytest.raises(EOFError):
        client.recv_frame()
    other = raw_client(fake_graphd)
    assert other.execute(sid, "RETURN 1").space_name == b"test"


# ---- raw replies (hostile servers) -----------------------------------------------------------


def _ask(client: RawClient, sid: int, stmt: bytes) -> int:
    return client.send("executeWithParameter", service.ExecuteWithParameterArgs(
        sessionId=sid, stmt=stmt, parameterMap={}))  # fmt: skip


def test_raw_bytes(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("HUGE", raw=b"\x7f\xff\xff\xff")
    client = raw_client(fake_graphd)
    sid = client.session()
    _ask(client, sid, b"HUGE")
    assert client.read_exact(4) == b"\x7f\xff\xff\xff"
    assert client.execute(sid, "RETURN 1").error_code == 0  # the server keeps the connection


@pytest.mark.parametrize(("framing", "protocol"), [("theader", "binary"), ("theader", "compact"),
                                                   ("framed", "binary")])  # fmt: skip
def test_raw_wrong_seqid_and_name(fake_graphd: FakeGraphd, raw_client: RawFactory, framing: str,
                                  protocol: str) -> None:  # fmt: skip
    seen: list[ReplyContext] = []

    def wrong_seqid(ctx: ReplyContext) -> bytes:
        seen.append(ctx)
        return ctx.reply(seqid=ctx.seqid + 1)

    fake_graphd.script("SEQ", raw=wrong_seqid, columns=["a"], rows=[[1]])
    fake_graphd.script("NAME", raw=lambda ctx: ctx.reply(name="executeJson"))
    client = raw_client(fake_graphd, framing=framing, protocol=protocol)
    sid = client.session()
    seqid = _ask(client, sid, b"SEQ")
    reply = client.recv("executeWithParameter")
    assert reply.seqid == seqid + 1
    assert rows_of(reply.success) == [[1]]  # otherwise the normal reply
    ctx = seen[0]
    assert (ctx.method, ctx.statement, ctx.session_id, ctx.seqid) == (
        "executeWithParameter", "SEQ", sid, seqid)  # fmt: skip
    assert ctx.framing is (wire.Framing.THEADER if framing == "theader" else wire.Framing.FRAMED)
    _ask(client, sid, b"NAME")
    assert client.recv("executeWithParameter").name == "executeJson"


def test_raw_malformed_struct(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script("BAD", raw=lambda ctx: ctx.frame(ctx.message()[:-5]))
    client = raw_client(fake_graphd)
    sid = client.session()
    _ask(client, sid, b"BAD")
    with pytest.raises(ProtocolError):
        client.recv("executeWithParameter")


def test_raw_exception_reply(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    exc = TApplicationException(TApplicationException.INTERNAL_ERROR, "kaput")
    fake_graphd.script("EXC", raw=lambda ctx: ctx.reply(exc, mtype=wire.EXCEPTION))
    for protocol in ("binary", "compact"):
        client = raw_client(fake_graphd, protocol=protocol)
        _ask(client, client.session(), b"EXC")
        reply = client.recv("executeWithParameter")
        assert reply.mtype == wire.EXCEPTION
        assert (reply.body.type, reply.body.message) == (TApplicationException.INTERNAL_ERROR, "kaput")


def test_raw_reply_to_the_handshake(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    fake_graphd.script(method="verifyClientVersion", raw=lambda ctx: ctx.reply(seqid=999))
    client = raw_client(fake_graphd)
    client.send("verifyClientVersion", service.VerifyClientVersionArgs(
        req=ttypes.VerifyClientVersionReq()), seqid=1)  # fmt: skip
    reply = client.recv("verifyClientVersion")
    assert (reply.seqid, reply.success.error_code) == (999, 0)


def test_socket_level_shutdown_by_client_during_hold(
    fake_graphd: FakeGraphd, raw_client: RawFactory
) -> None:
    rule = fake_graphd.script("BLOCK", hold=True)
    client = raw_client(fake_graphd)
    sid = client.session()
    _ask(client, sid, b"BLOCK")
    assert rule.wait_hits(1)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    rule.release()
    fake_graphd.wait_for(lambda s: s.connections_open == 0 and s.statements_running == 0)


def test_a_rule_applies_once_per_request(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    rule = fake_graphd.script(re.compile(r"RETURN 5"), delay=0.01)  # matches whole and part
    client = raw_client(fake_graphd)
    resp = client.execute(client.session(), "USE test; RETURN 5 AS five")
    assert rows_of(resp) == [[5]]
    assert rule.hits == 1
