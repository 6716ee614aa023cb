"""The official nebula3-python client (THeader + fbthrift compact v2) against the fake graphd."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from nebula3.common import ttypes as nt
from nebula3.Config import Config, SessionPoolConfig
from nebula3.Exception import AuthFailedException, ClientServerIncompatibleException
from nebula3.gclient.net import ConnectionPool
from nebula3.gclient.net.SessionPool import SessionPool

from nebula_sync._thrift import ttypes
from nebula_sync._thrift.ttypes import Value
from nebula_sync.testing import FakeGraphd

Factory = Callable[..., FakeGraphd]
PoolFor = Callable[..., ConnectionPool]


def _config(**kwargs: Any) -> Config:
    config = Config()
    config.timeout = 10_000  # ms: no test may hang on a socket read
    config.max_connection_pool_size = 4
    for key, value in kwargs.items():
        setattr(config, key, value)
    return config


@pytest.fixture
def pool_for() -> Iterator[Callable[..., ConnectionPool]]:
    """``pool_for(*servers, **config)`` -> an initialised nebula3 ConnectionPool, closed afterwards."""
    pools: list[ConnectionPool] = []

    def make(*servers: FakeGraphd, **config: Any) -> ConnectionPool:
        pool = ConnectionPool()
        pools.append(pool)
        assert pool.init([(s.host, s.port) for s in servers], _config(**config))
        return pool

    yield make
    for pool in pools:
        pool.close()


def nval(**kwargs: Any) -> nt.Value:
    value = nt.Value()
    for key, val in kwargs.items():
        getattr(value, f"set_{key}")(val)
    return value


def test_connection_pool_session_and_execute(fake_graphd: FakeGraphd, pool_for: PoolFor) -> None:
    pool = pool_for(fake_graphd)
    session = pool.get_session("root", "nebula")
    try:
        rs = session.execute("USE basketballplayer; RETURN 1 + 2 AS x, 'hi' AS s, [1, 2.5] AS l, "
                             "{k: null} AS m, 7 / 2 AS q")  # fmt: skip
        assert rs.is_succeeded(), rs.error_msg()
        assert rs.space_name() == "basketballplayer"
        assert rs.keys() == ["x", "s", "l", "m", "q"]
        row = rs.row_values(0)
        assert row[0].as_int() == 3
        assert row[1].as_string() == "hi"
        assert [v.as_int() if v.is_int() else v.as_double() for v in row[2].as_list()] == [1, 2.5]
        assert row[3].as_map()["k"].is_null()
        assert row[4].as_int() == 3
        assert rs.latency() >= 0
        assert session.ping() is True
        assert session.ping_session() is True
    finally:
        session.release()
    stats = fake_graphd.wait_for(lambda s: s.signouts == 1)
    assert stats.sessions_open == 0
    assert stats.pings >= 1
    assert stats.handshakes >= 2  # pool.init probes the address, then opens its connection


def test_session_context_and_errors(fake_graphd: FakeGraphd, pool_for: PoolFor) -> None:
    pool = pool_for(fake_graphd)
    with pool.session_context("root", "nebula") as session:
        bad = session.execute("RETURN 1 +")
        assert not bad.is_succeeded()
        assert bad.error_code() == -1004
        assert bad.error_msg() == "SyntaxError: syntax error near `+'"
        missing = session.execute("USE nowhere")
        assert missing.error_code() == -1005
        empty = session.execute("")
        assert empty.error_code() == -1006
        sid = session._session_id
    fake_graphd.wait_for(lambda s: s.signouts == 1)
    assert [e.statement for e in fake_graphd.statement_log() if e.session_id == sid] == [
        "RETURN 1 +", "USE nowhere", ""]  # fmt: skip


def test_execute_parameter(fake_graphd: FakeGraphd, pool_for: PoolFor) -> None:
    pool = pool_for(fake_graphd)
    date = nt.Date(2024, 2, 29)
    dt = nt.DateTime(2024, 1, 2, 3, 4, 5, 6)
    params = {
        "i": nval(iVal=41),
        "f": nval(fVal=-2.5),
        "s": nval(sVal=b"Tim"),
        "b": nval(bVal=True),
        "n": nval(nVal=nt.NullType.__NULL__),
        "l": nval(lVal=nt.NList([nval(iVal=1), nval(sVal=b"two")])),
        "m": nval(mVal=nt.NMap({b"k": nval(fVal=0.5)})),
        "d": nval(dVal=date),
        "dt": nval(dtVal=dt),
    }
    with pool.session_context("root", "nebula") as session:
        rs = session.execute_parameter(
            "RETURN $i + 1 AS i, $f * 2 AS f, $s + '!' AS s, $b AS b, $n AS n, $l AS l, $m AS m, "
            "$d AS d, $dt AS dt", params)  # fmt: skip
        assert rs.is_succeeded(), rs.error_msg()
        row = rs.row_values(0)
        assert row[0].as_int() == 42
        assert row[1].as_double() == -5.0
        assert row[2].as_string() == "Tim!"
        assert row[3].as_bool() is True
        assert row[4].is_null()
        assert [row[5].as_list()[0].as_int(), row[5].as_list()[1].as_string()] == [1, "two"]
        assert row[6].as_map()["k"].as_double() == 0.5
        assert row[7].as_date().get_date() == date
        assert row[8].as_datetime().get_datetime() == dt
        missing = session.execute_parameter("RETURN $nope", {})
        assert missing.error_code() == -1009
    log = fake_graphd.statement_log()
    assert log[0].parameters["i"] == Value(iVal=41)
    assert log[0].parameters["dt"] == Value(dtVal=ttypes.DateTime(
        year=2024, month=1, day=2, hour=3, minute=4, sec=5, microsec=6))  # fmt: skip


def test_execute_json(fake_graphd: FakeGraphd, pool_for: PoolFor) -> None:
    pool = pool_for(fake_graphd)
    with pool.session_context("root", "nebula") as session:
        doc = json.loads(session.execute_json("USE test; RETURN 1 AS a, 'x' AS b"))
        assert doc["errors"] == [{"code": 0}]
        assert doc["results"][0]["columns"] == ["a", "b"]
        assert doc["results"][0]["data"] == [{"row": [1, "x"], "meta": [None, None]}]
        assert doc["results"][0]["spaceName"] == "test"
        with_params = json.loads(session.execute_json_with_parameter("RETURN $p AS p", {"p": nval(iVal=5)}))
        assert with_params["results"][0]["data"][0]["row"] == [5]
        failed = json.loads(session.execute_json("RETURN $nope"))
        assert failed["errors"][0]["code"] == -1009


def test_decoding_every_value_kind(fake_graphd: FakeGraphd, pool_for: PoolFor) -> None:
    player = ttypes.Vertex(vid=Value(sVal=b"player100"), tags=[
        ttypes.Tag(name=b"player", props={b"name": Value(sVal=b"Tim"), b"age": Value(iVal=42)})])
    follow = ttypes.Edge(src=Value(sVal=b"player100"), dst=Value(sVal=b"player101"), type=1,
                         name=b"follow", ranking=0, props={b"degree": Value(iVal=95)})
    path = ttypes.Path(src=player, steps=[ttypes.Step(
        dst=ttypes.Vertex(vid=Value(sVal=b"player101"), tags=[]), type=1, name=b"follow", ranking=0,
        props={b"degree": Value(iVal=95)})])  # fmt: skip
    point = ttypes.Geography(ptVal=ttypes.Point(coord=ttypes.Coordinate(x=1.5, y=-2.25)))
    fake_graphd.script(
        "MATCH p=(v)-[e]->() RETURN *",
        columns=["v", "e", "p", "g", "du", "set", "t", "date", "when", "float"],
        rows=[[
            Value(vVal=player), Value(eVal=follow), Value(pVal=path), Value(ggVal=point),
            Value(duVal=ttypes.Duration(seconds=90, microseconds=5, months=1)),
            {1, 2, 3},
            datetime.time(13, 30, 15, tzinfo=datetime.timezone.utc),
            datetime.date(2021, 12, 21),
            datetime.datetime(2021, 12, 21, 13, 30, 15, 250, tzinfo=datetime.timezone.utc),
            3.141592653589793,
        ]],
    )  # fmt: skip
    pool = pool_for(fake_graphd)
    with pool.session_context("root", "nebula") as session:
        rs = session.execute("MATCH p=(v)-[e]->() RETURN *")
        assert rs.is_succeeded(), rs.error_msg()
        row = rs.row_values(0)
        node = row[0].as_node()
        assert node.get_id().as_string() == "player100"
        assert node.tags() == ["player"]
        assert node.properties("player")["age"].as_int() == 42
        rel = row[1].as_relationship()
        assert (rel.start_vertex_id().as_string(), rel.end_vertex_id().as_string()) == (
            "player100", "player101")  # fmt: skip
        assert (rel.edge_name(), rel.ranking(), rel.properties()["degree"].as_int()) == ("follow", 0, 95)
        walk = row[2].as_path()
        assert walk.length() == 1
        assert [n.get_id().as_string() for n in walk.nodes()] == ["player100", "player101"]
        assert row[3].is_geography()
        coord = row[3].get_value().get_ggVal().get_ptVal().coord
        assert (coord.x, coord.y) == (1.5, -2.25)
        duration = row[4].as_duration()
        assert (duration.get_seconds(), duration.get_microseconds(), duration.get_months()) == (90, 5, 1)
        assert {v.as_int() for v in row[5].as_set()} == {1, 2, 3}
        assert row[6].as_time().get_time() == nt.Time(13, 30, 15, 0)
        assert row[7].as_date().get_date() == nt.Date(2021, 12, 21)
        assert row[8].as_datetime().get_datetime() == nt.DateTime(2021, 12, 21, 13, 30, 15, 250)
        assert row[9].as_double() == 3.141592653589793  # big-endian doubles decode exactly


def test_time_zone_reaches_the_client(fake_graphd_factory: Factory, pool_for: PoolFor) -> None:
    server = fake_graphd_factory(time_zone_offset_seconds=3600, time_zone_name="CET")
    server.script("RETURN now", columns=["t"], rows=[[datetime.datetime(2024, 1, 1, 12, 0,
                                                                         tzinfo=datetime.timezone.utc)]])
    pool = pool_for(server)
    with pool.session_context("root", "nebula") as session:
        rs = session.execute("RETURN now")
        local = rs.row_values(0)[0].as_datetime().get_local_datetime()
        assert (local.hour, local.minute) == (13, 0)


def test_scripted_error_and_delay(fake_graphd: FakeGraphd, pool_for: PoolFor) -> None:
    fake_graphd.script("GO FROM 1 OVER e", error=-1005, message="Storage Error: part not found")
    fake_graphd.script("SLOW", delay=0.05, columns=["a"], rows=[[1]])
    pool = pool_for(fake_graphd)
    with pool.session_context("root", "nebula") as session:
        rs = session.execute("GO FROM 1 OVER e")
        assert (rs.error_code(), rs.error_msg()) == (-1005, "Storage Error: part not found")
        assert session.execute("SLOW").row_values(0)[0].as_int() == 1


def test_authentication_failure(fake_graphd_factory: Factory, pool_for: PoolFor) -> None:
    server = fake_graphd_factory(users={"root": "nebula"})
    pool = pool_for(server)
    with pytest.raises(AuthFailedException, match="Invalid password"):
        pool.get_session("root", "wrong")
    session = pool.get_session("root", "nebula")
    session.release()
    stats = server.wait_for(lambda s: s.signouts == 1)
    assert (stats.authentications, stats.authentication_failures) == (1, 1)


def test_handshake_rejection(fake_graphd_factory: Factory) -> None:
    from nebula3.gclient.net.Connection import Connection

    server = fake_graphd_factory(client_versions=["9.9.9"])
    conn = Connection()
    with pytest.raises(ClientServerIncompatibleException, match=r"handshakeKey\(3.0.0\) is not accepted"):
        conn.open(server.host, server.port, 10_000)
    pool = ConnectionPool()
    try:
        with pytest.raises(RuntimeError, match="status: BAD"):  # the pool only logs the reason
            pool.init([(server.host, server.port)], _config())
    finally:
        pool.close()
    stats = server.wait_for(lambda s: s.connections_open == 0)
    assert stats.handshakes_rejected == 2


def test_several_hosts(fake_graphd_cluster: list[FakeGraphd], pool_for: PoolFor) -> None:
    pool = pool_for(*fake_graphd_cluster)
    sessions = [pool.get_session("root", "nebula") for _ in range(3)]
    try:
        for session in sessions:
            assert session.execute("RETURN 1").is_succeeded()
    finally:
        for session in sessions:
            session.release()
    for server in fake_graphd_cluster:
        stats = server.wait_for(lambda s: s.signouts == s.authentications)
        assert stats.authentications >= 1  # round-robin reached every host


def test_pool_ping_and_unreachable_host(fake_graphd: FakeGraphd) -> None:
    pool = ConnectionPool()
    try:
        assert pool.init([(fake_graphd.host, fake_graphd.port)], _config())
        assert pool.ping((fake_graphd.host, fake_graphd.port)) is True
        fake_graphd.refuse_connections(True)
        assert pool.ping((fake_graphd.host, fake_graphd.port)) is False
    finally:
        pool.close()


def test_session_pool(fake_graphd: FakeGraphd) -> None:
    config = SessionPoolConfig()
    config.min_size = 2
    config.max_size = 4
    config.timeout = 10_000
    pool = SessionPool("root", "nebula", "basketballplayer", [(fake_graphd.host, fake_graphd.port)])
    try:
        assert pool.init(config)
        stats = fake_graphd.stats()
        assert stats.sessions_open == 2
        assert {s.space for s in fake_graphd.sessions()} == {"basketballplayer"}
        rs = pool.execute("RETURN 40 + 2 AS answer")
        assert rs.is_succeeded() and rs.space_name() == "basketballplayer"
        assert rs.column_values("answer")[0].as_int() == 42
        rs = pool.execute_parameter("RETURN $who AS who", {"who": nval(sVal=b"Tim")})
        assert rs.row_values(0)[0].as_string() == "Tim"
        doc = json.loads(pool.execute_json("RETURN 1 AS one"))
        assert doc["results"][0]["spaceName"] == "basketballplayer"
        # a statement that switches space is switched back by the pool
        rs = pool.execute("USE test; RETURN 1")
        assert rs.space_name() == "test"
        assert {s.space for s in fake_graphd.sessions()} == {"basketballplayer"}
    finally:
        pool.close()
    stats = fake_graphd.wait_for(lambda s: s.sessions_open == 0)
    assert stats.signouts == 2


def test_session_pool_with_unknown_space(fake_graphd: FakeGraphd) -> None:
    config = SessionPoolConfig()
    config.min_size = 1
    config.timeout = 10_000
    pool = SessionPool("root", "nebula", "nowhere", [(fake_graphd.host, fake_graphd.port)])
    try:
        with pytest.raises(RuntimeError, match="nowhere"):
            pool.init(config)
    finally:
        pool.close()
    fake_graphd.wait_for(lambda s: s.sessions_open == 0)


def test_dropped_connection_surfaces_as_an_error(fake_graphd: FakeGraphd, pool_for: PoolFor) -> None:
    from nebula3.Exception import IOErrorException

    fake_graphd.script("BOOM", drop="before_reply")
    pool = pool_for(fake_graphd)
    session = pool.get_session("root", "nebula", retry_connect=False)
    try:
        with pytest.raises(IOErrorException):
            session.execute("BOOM")
    finally:
        session.release()
