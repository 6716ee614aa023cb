"""The fake graphd's handshake, authentication and sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pytest

from nebula_sync.testing import FakeGraphd, SessionInfo

if TYPE_CHECKING:
    from conftest import RawClient

RawFactory = Callable[..., "RawClient"]
Factory = Callable[..., FakeGraphd]


class FakeClock:
    """A settable clock for session expiry."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- handshake -------------------------------------------------------------------------------


def test_handshake_accepts_the_default_version(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    resp = raw_client(fake_graphd).verify(b"3.0.0")
    assert resp.error_code == 0
    assert resp.error_msg is None
    assert fake_graphd.stats().handshakes == 1


@pytest.mark.parametrize("protocol", ["binary", "compact"])
def test_handshake_rejects_unknown_versions(
    fake_graphd: FakeGraphd, raw_client: RawFactory, protocol: str
) -> None:
    client = raw_client(fake_graphd, protocol=protocol)
    resp = client.verify(b"9.9.9")
    assert resp.error_code == -3061
    assert resp.error_msg == b"Graph client handshakeKey(9.9.9) is not accepted."
    # the connection stays open: the client decides what to do
    assert client.verify(b"3.0.0").error_code == 0
    stats = fake_graphd.stats()
    assert (stats.handshakes, stats.handshakes_rejected) == (2, 1)


def test_handshake_whitelist_is_configurable(fake_graphd_factory: Factory, raw_client: RawFactory) -> None:
    server = fake_graphd_factory(client_versions=["3.8.0", "my-key"])
    client = raw_client(server)
    assert client.verify(b"my-key").error_code == 0
    assert client.verify(b"3.8.0").error_code == 0
    assert client.verify(b"3.0.0").error_code == -3061


def test_handshake_check_can_be_disabled(fake_graphd_factory: Factory, raw_client: RawFactory) -> None:
    server = fake_graphd_factory(check_client_version=False)
    assert raw_client(server).verify(b"anything").error_code == 0


def test_handshake_is_not_enforced(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    sid = client.session()  # no verifyClientVersion first
    assert client.execute(sid, "RETURN 1").error_code == 0
    assert fake_graphd.stats().handshakes == 0


# ---- authentication --------------------------------------------------------------------------


def test_anyone_may_authenticate_by_default(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    resp = raw_client(fake_graphd).authenticate("whoever", "whatever")
    assert resp.error_code == 0
    assert resp.session_id is not None and resp.session_id > 0
    assert resp.time_zone_offset_seconds == 0
    assert resp.time_zone_name == b"UTC"


def test_configured_users_are_checked(fake_graphd_factory: Factory, raw_client: RawFactory) -> None:
    server = fake_graphd_factory(users={"root": "nebula", "ann": "secret"})
    client = raw_client(server)
    assert client.authenticate("root", "nebula").error_code == 0
    assert client.authenticate("ann", "secret").error_code == 0
    bad = client.authenticate("root", "wrong")
    assert (bad.error_code, bad.error_msg, bad.session_id) == (-1001, b"Invalid password", None)
    unknown = client.authenticate("bob", "nebula")
    assert (unknown.error_code, unknown.error_msg) == (-1001, b"User not exist")
    stats = server.stats()
    assert (stats.authentications, stats.authentication_failures) == (2, 2)
    assert stats.sessions_by_user == {"root": 1, "ann": 1}


def test_time_zone_is_configurable(fake_graphd_factory: Factory, raw_client: RawFactory) -> None:
    server = fake_graphd_factory(time_zone_offset_seconds=28800, time_zone_name="CST")
    resp = raw_client(server).authenticate()
    assert (resp.time_zone_offset_seconds, resp.time_zone_name) == (28800, b"CST")


def test_session_ids_are_positive_and_distinct(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    ids = [client.session() for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(0 < sid < 2**63 for sid in ids)


def test_session_limit_per_ip_and_user(fake_graphd_factory: Factory, raw_client: RawFactory) -> None:
    server = fake_graphd_factory(max_sessions_per_ip_per_user=2)
    client = raw_client(server)
    first = client.session("root")
    client.session("root")
    refused = client.authenticate("root")
    assert refused.error_code == -1002
    assert refused.error_msg == (
        b"Create Session failed: Too many sessions created from 127.0.0.1 by user root. the "
        b"threshold is 2. You can change it by modifying 'max_sessions_per_ip_per_user' in "
        b"nebula-graphd.conf"
    )
    assert client.authenticate("ann").error_code == 0  # another user
    other_ip = raw_client(server, source_ip="127.0.0.2")
    assert other_ip.authenticate("root").error_code == 0  # another client address
    client.signout(first)
    server.wait_for(lambda s: s.signouts == 1)
    assert client.authenticate("root").error_code == 0  # room again
    assert server.stats().authentication_failures == 1


def test_session_limit_zero_means_unlimited(fake_graphd_factory: Factory, raw_client: RawFactory) -> None:
    server = fake_graphd_factory(max_sessions_per_ip_per_user=0)
    client = raw_client(server)
    for _ in range(400):
        client.session()
    assert server.stats().sessions_open == 400


def test_default_session_limit_is_300(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    for _ in range(300):
        client.session()
    assert client.authenticate().error_code == -1002


# ---- session use -----------------------------------------------------------------------------


def test_ping_with_session_zero(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    for method in ("execute", "executeWithParameter"):
        resp = client.execute(0, "this is not even nGQL", method=method)
        assert resp.error_code == -1002
        assert resp.error_msg == b"Invalid session id"
        assert resp.space_name is None
        assert resp.data is None
    as_json = client.execute(0, "YIELD 1", method="executeJson")
    assert b'"code": -1002' in as_json and b"Invalid session id" in as_json
    stats = fake_graphd.stats()
    assert (stats.pings, stats.statements) == (3, 0)


def test_unknown_session(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    resp = raw_client(fake_graphd).execute(12345, "RETURN 1")
    assert resp.error_code == -1002
    assert resp.error_msg == b"SessionId[12345] does not exist"
    assert fake_graphd.stats().invalid_session_requests == 1


def test_signout_removes_the_session(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    sid = client.session()
    keep = client.session()
    client.signout(sid)
    fake_graphd.wait_for(lambda s: s.signouts == 1)
    assert client.execute(sid, "RETURN 1").error_code == -1002
    assert client.execute(keep, "RETURN 1").error_code == 0
    client.signout(424242)  # unknown ids are ignored
    stats = fake_graphd.wait_for(lambda s: s.signouts == 2)
    assert stats.sessions_open == 1


def test_sessions_are_not_bound_to_connections(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    first = raw_client(fake_graphd)
    sid = first.session()
    assert first.execute(sid, "USE test").error_code == 0
    first.close()
    other = raw_client(fake_graphd, framing="framed", protocol="compact")
    resp = other.execute(sid, "RETURN 1")
    assert resp.error_code == 0
    assert resp.space_name == b"test"  # session state lives on the server


def test_session_expiry(fake_graphd_factory: Factory, raw_client: RawFactory) -> None:
    clock = FakeClock()
    server = fake_graphd_factory(session_idle_timeout=60, clock=clock)
    client = raw_client(server)
    sid = client.session()
    idle = client.session()
    clock.now += 59
    assert client.execute(sid, "RETURN 1").error_code == 0  # use refreshes it
    clock.now += 59
    assert client.execute(sid, "RETURN 1").error_code == 0
    assert server.stats().sessions_open == 1  # ``idle`` has been unused for 118 s
    resp = client.execute(idle, "RETURN 1")
    assert resp.error_code == -1002
    clock.now += 60
    assert client.execute(sid, "RETURN 1").error_code == -1002
    stats = server.stats()
    assert (stats.sessions_open, stats.sessions_expired) == (0, 2)


def test_expired_sessions_do_not_count_against_the_limit(
    fake_graphd_factory: Factory, raw_client: RawFactory
) -> None:
    clock = FakeClock()
    server = fake_graphd_factory(session_idle_timeout=10, max_sessions_per_ip_per_user=1, clock=clock)
    client = raw_client(server)
    client.session()
    assert client.authenticate().error_code == -1002
    clock.now += 10
    assert client.authenticate().error_code == 0


def test_kill_and_forget_sessions(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    a, b, c = client.session("a"), client.session("b"), client.session("c")
    assert fake_graphd.kill_session(a) is True
    assert fake_graphd.kill_session(a) is False
    assert client.execute(a, "RETURN 1").error_code == -1002
    assert {s.session_id for s in fake_graphd.sessions()} == {b, c}
    assert fake_graphd.forget_sessions() == 2
    assert client.execute(b, "RETURN 1").error_code == -1002
    assert fake_graphd.stats().sessions_open == 0


def test_sessions_report(fake_graphd: FakeGraphd, raw_client: RawFactory) -> None:
    client = raw_client(fake_graphd)
    sid = client.session("ann")
    client.execute(sid, "USE basketballplayer")
    assert fake_graphd.sessions() == [SessionInfo(sid, "ann", "127.0.0.1", "basketballplayer")]
