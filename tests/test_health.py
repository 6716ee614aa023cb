"""``check_health``: graphd's web ``/status`` and a Thrift ping per host, over real loopback sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import attrs
import pytest
from rawserver import RawServer, endless_body, trickling_body

from nebula_sync import ConnectionConfig, NebulaClient, SessionPoolConfig
from nebula_sync._health import HealthReport, HostHealth, check_health
from nebula_sync.config import HostAddress
from nebula_sync.errors import ClientClosed
from nebula_sync.testing import FakeGraphd, FakeWebService

Factory = Callable[..., FakeGraphd]

#: the client's request_timeout: far longer than any check_health timeout below, so a probe that
#: waited for it instead of the check's own timeout is told apart from a slow machine
REQUEST_TIMEOUT = 10.0


def web(server: FakeGraphd) -> FakeWebService:
    assert server.web is not None
    return server.web


def web_map(*servers: FakeGraphd) -> dict[str, str]:
    return {s.address: web(s).address for s in servers}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def probe_threads(thrift_address: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"nebula-health-web-{thrift_address}"]


@pytest.fixture
def servers(fake_graphd_factory: Factory) -> list[FakeGraphd]:
    return [fake_graphd_factory(web_port=0) for _ in range(3)]


@pytest.fixture
def client(servers: list[FakeGraphd]) -> Iterator[NebulaClient]:
    c = NebulaClient([s.address for s in servers], "root", "nebula",
                     session_pool_config=SessionPoolConfig(size=2, wait_timeout=5.0),
                     conn_config=ConnectionConfig(connect_timeout=2.0,
                                                  request_timeout=REQUEST_TIMEOUT))  # fmt: skip
    yield c
    c.close()


def test_all_hosts_healthy(servers: list[FakeGraphd], client: NebulaClient) -> None:
    report = check_health(client, web_port=web_map(*servers), timeout=5.0)
    assert isinstance(report, HealthReport)
    assert report.healthy and report.any_healthy
    assert [h.host for h in report] == [s.address for s in servers]
    assert report.healthy_hosts == tuple(s.address for s in servers) and report.unhealthy_hosts == ()
    for s in servers:
        h = report.host(s.address)
        assert h.web_address == web(s).address
        assert h.http_status == 200 and h.running and h.web_error is None
        assert h.thrift_error is None
        assert h.web_latency_s is not None and 0 <= h.web_latency_s < 5.0
        assert h.thrift_connect_s is not None and h.thrift_latency_s is not None
        assert 0 <= h.thrift_latency_s < 5.0
        assert h.healthy and h.web_healthy and h.thrift_healthy and h.errors == ()
        assert web(s).request_log[-1] == ("GET", "/status")
    assert 0 <= report.elapsed_s < 5.0 and report.timeout == 5.0
    doc = report.as_dict()
    assert doc["healthy"] is True and [d["host"] for d in doc["hosts"]] == [s.address for s in servers]


def test_one_port_for_every_host(fake_graphd_factory: Factory) -> None:
    server = fake_graphd_factory(web_port=0)
    with NebulaClient(server.address, "root", "x") as client:
        report = check_health(client, web_port=web(server).port, timeout=5.0)
    assert report.healthy
    assert report.hosts[0].web_address == f"127.0.0.1:{web(server).port}"


def test_the_probe_opens_its_own_connection_and_no_session(servers: list[FakeGraphd],
                                                           client: NebulaClient) -> None:  # fmt: skip
    client.execute("RETURN 1")
    before = [s.stats() for s in servers]
    pooled = client.stats().connections_open
    report = check_health(client, web_port=web_map(*servers), timeout=5.0)
    assert report.healthy
    for s, b in zip(servers, before):
        # one connection, one handshake, one ping (session 0) each; no authentication, no statement
        after = s.wait_for(lambda st, b=b: st.connections_open == b.connections_open)
        assert after.connections_accepted == b.connections_accepted + 1
        assert after.handshakes == b.handshakes + 1
        assert after.pings == b.pings + 1
        assert after.authentications == b.authentications and after.statements == b.statements
    assert client.stats().connections_open == pooled


def test_healthy_while_every_session_is_busy(fake_graphd_factory: Factory) -> None:
    server = fake_graphd_factory(web_port=0)
    rule = server.script("RETURN 42", columns=["x"], rows=[[42]], hold=True)
    with NebulaClient(server.address, "root", "x",
                      session_pool_config=SessionPoolConfig(size=1, wait_timeout=5.0)) as client:  # fmt: skip
        worker = threading.Thread(target=client.execute, args=("RETURN 42",))
        worker.start()
        try:
            assert rule.wait_hits(1, timeout=5.0)
            report = check_health(client, web_port=web(server).port, timeout=5.0)
            assert report.healthy
        finally:
            rule.release()
            worker.join(10.0)
        assert not worker.is_alive()


def test_web_service_down(servers: list[FakeGraphd], client: NebulaClient) -> None:
    down = servers[1]
    web(down).stop()
    report = check_health(client, web_port=web_map(*servers), timeout=5.0)
    assert not report.healthy and report.any_healthy
    assert report.unhealthy_hosts == (down.address,)
    h = report.host(down.address)
    assert h.http_status is None and not h.running and h.web_latency_s is None
    assert h.web_error is not None and "connect" in h.web_error
    assert h.thrift_healthy and not h.web_healthy and not h.healthy
    assert len(h.errors) == 1 and h.errors[0].startswith("web: ")


def test_nothing_listening_on_the_web_port(fake_graphd_factory: Factory) -> None:
    server = fake_graphd_factory(web_port=0)
    with NebulaClient(server.address, "root", "x") as client:
        report = check_health(client, web_port=free_port(), timeout=5.0)
    h = report.hosts[0]
    assert not h.healthy and h.thrift_healthy and h.http_status is None and h.web_error


def test_thrift_port_refusing_while_the_web_service_runs(servers: list[FakeGraphd],
                                                         client: NebulaClient) -> None:  # fmt: skip
    down = servers[0]
    down.refuse_connections(True)
    report = check_health(client, web_port=web_map(*servers), timeout=5.0)
    h = report.host(down.address)
    assert h.web_healthy and h.http_status == 200 and h.running
    assert not h.thrift_healthy and h.thrift_latency_s is None and h.thrift_connect_s is None
    assert h.thrift_error is not None and "ConnectionFailed" in h.thrift_error
    assert report.unhealthy_hosts == (down.address,)
    down.refuse_connections(False)
    assert check_health(client, web_port=web_map(*servers), timeout=5.0).healthy


def test_thrift_server_stopped_but_web_service_up(servers: list[FakeGraphd], client: NebulaClient) -> None:
    down = servers[2]
    down.stop()  # stops both
    web(down).start()  # the web service alone comes back, on its port
    report = check_health(client, web_port=web_map(*servers), timeout=5.0)
    h = report.host(down.address)
    assert h.web_healthy and not h.thrift_healthy and h.thrift_error
    assert report.healthy_hosts == (servers[0].address, servers[1].address)


def test_whole_server_down(servers: list[FakeGraphd], client: NebulaClient) -> None:
    servers[0].stop()
    report = check_health(client, web_port=web_map(*servers), timeout=5.0)
    h = report.host(servers[0].address)
    assert not h.web_healthy and not h.thrift_healthy and len(h.errors) == 2


@pytest.mark.parametrize("code", [500, 503, 404])
def test_error_status(fake_graphd_factory: Factory, code: int) -> None:
    server = fake_graphd_factory(web_port=0)
    web(server).set_status_code(code)
    with NebulaClient(server.address, "root", "x") as client:
        report = check_health(client, web_port=web(server).port, timeout=5.0)
    h = report.hosts[0]
    assert h.http_status == code and not h.running and h.web_latency_s is not None
    assert h.web_error is not None and f"HTTP {code}" in h.web_error
    assert not h.healthy and h.thrift_healthy


@pytest.mark.parametrize(
    ("body", "detail"),
    [(b'{"status":"starting","git_info_sha":"x"}', "'starting'"), (b"<html>", "not valid JSON")],
)
def test_status_other_than_running(fake_graphd_factory: Factory, body: bytes, detail: str) -> None:
    server = fake_graphd_factory(web_port=0)
    web(server).set_body_override(body)
    with NebulaClient(server.address, "root", "x") as client:
        h = check_health(client, web_port=web(server).port, timeout=5.0).hosts[0]
    assert h.http_status == 200 and not h.running and not h.web_healthy
    assert h.web_error is not None and detail in h.web_error


def test_stalled_web_service_is_bounded_by_the_timeout(servers: list[FakeGraphd],
                                                       client: NebulaClient) -> None:  # fmt: skip
    for s in servers:
        web(s).set_stall(True)
    timeout = 2.0
    start = time.monotonic()
    report = check_health(client, web_port=web_map(*servers), timeout=timeout)
    elapsed = time.monotonic() - start
    # three hosts probed at once: about one timeout (probed one after another: three or more);
    # the bound leaves half a timeout of slack for a loaded machine
    assert 0.95 * timeout <= elapsed < 2.5 * timeout, elapsed
    assert report.elapsed_s < 2.5 * timeout
    for h in report:
        assert h.http_status is None and not h.web_healthy and h.thrift_healthy
        assert h.web_error is not None and "within 2" in h.web_error
    assert all(web(s).wait_stalled(1, timeout=5.0) for s in servers)


def test_endless_web_body_is_cut_at_the_size_cap(fake_graphd_factory: Factory) -> None:
    server = fake_graphd_factory()
    with RawServer(endless_body) as web_server, NebulaClient(server.address, "root", "x") as client:
        timeout = 10.0
        report = check_health(client, web_port={server.address: web_server.address}, timeout=timeout)
        assert report.elapsed_s < timeout / 2  # the probe stopped at the cap, not at the timeout
        h = report.hosts[0]
        assert h.http_status == 200 and not h.web_healthy and h.thrift_healthy
        assert h.web_error is not None and "larger than" in h.web_error
        assert probe_threads(server.address) == []


def test_trickling_web_body_stops_the_probe_by_its_timeout(fake_graphd_factory: Factory) -> None:
    server = fake_graphd_factory()
    with RawServer(trickling_body) as web_server, NebulaClient(server.address, "root", "x") as client:
        report = check_health(client, web_port={server.address: web_server.address}, timeout=1.0)
        assert report.elapsed_s < 6.0 / 2  # the body takes 6 s: its end did not stop the probe
        assert not report.hosts[0].web_healthy and report.hosts[0].thrift_healthy
        # a probe still reading goes on in the background only until its own timeout hits
        for t in probe_threads(server.address):
            t.join(3.0)
            assert not t.is_alive(), "the web probe is still reading the body"


def test_stalled_thrift_server_is_bounded_by_the_timeout(servers: list[FakeGraphd],
                                                         client: NebulaClient) -> None:  # fmt: skip
    stalled = servers[0]
    stalled.stall(True)
    start = time.monotonic()
    report = check_health(client, web_port=web_map(*servers), timeout=1.0)
    assert time.monotonic() - start < REQUEST_TIMEOUT / 2  # the check's timeout, not the client's
    h = report.host(stalled.address)
    assert h.web_healthy and not h.thrift_healthy and h.thrift_latency_s is None and h.thrift_error
    assert report.host(servers[1].address).healthy and report.host(servers[2].address).healthy
    stalled.stall(False)
    # the probe's connection is closed (by its own deadline), none is left behind
    pooled = client.stats().host(stalled.address).connections_idle
    stalled.wait_for(lambda st: st.connections_open == pooled)


def test_everything_stalled_at_once_is_still_one_timeout(servers: list[FakeGraphd],
                                                         client: NebulaClient) -> None:  # fmt: skip
    for s in servers:
        s.stall(True)
        web(s).set_stall(True)
    timeout = 2.0
    start = time.monotonic()
    report = check_health(client, web_port=web_map(*servers), timeout=timeout)
    # six probes, each stalled: still about one timeout (three or more if hosts went one by one)
    assert time.monotonic() - start < 2.5 * timeout
    assert not report.any_healthy and len(report) == 3
    assert all(len(h.errors) == 2 for h in report)


def test_web_probe_can_be_skipped(fake_graphd_factory: Factory) -> None:
    server = fake_graphd_factory()
    with NebulaClient(server.address, "root", "x") as client:
        report = check_health(client, web_port=None, timeout=5.0)
    h = report.hosts[0]
    assert h.web_address is None and not h.web_checked and h.http_status is None
    assert h.web_healthy and h.healthy


def test_concurrent_checks_from_many_threads(servers: list[FakeGraphd], client: NebulaClient) -> None:
    ports = web_map(*servers)
    reports: list[HealthReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(5):
                reports.append(check_health(client, web_port=ports, timeout=5.0))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30.0)
    assert errors == [] and len(reports) == 40
    assert all(r.healthy for r in reports)
    for s in servers:
        pooled = client.stats().host(s.address).connections_idle
        s.wait_for(lambda st, n=pooled: st.connections_open == n)


def test_report_is_immutable(fake_graphd_factory: Factory) -> None:
    server = fake_graphd_factory(web_port=0)
    with NebulaClient(server.address, "root", "x") as client:
        report = check_health(client, web_port=web(server).port)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        report.hosts[0].running = False  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        report.elapsed_s = 0.0  # type: ignore[misc]
    with pytest.raises(KeyError):
        report.host("127.0.0.1:1")
    assert isinstance(report.hosts[0], HostHealth)


def test_arguments_are_checked(fake_graphd_factory: Factory) -> None:
    server = fake_graphd_factory(web_port=0)
    client = NebulaClient(server.address, "root", "x")
    try:
        bad: list[tuple[dict[str, Any], type[Exception]]] = [
            ({"timeout": 0}, ValueError),
            ({"timeout": -1.0}, ValueError),
            ({"timeout": float("inf")}, ValueError),
            ({"timeout": True}, ValueError),
            ({"web_port": 0}, ValueError),
            ({"web_port": 70000}, ValueError),
            ({"web_port": "19669"}, TypeError),
            ({"web_port": {"127.0.0.1:1": "127.0.0.1:2"}}, ValueError),  # no entry for the host
            ({"web_port": {server.address: "127.0.0.1:notaport"}}, ValueError),  # a typo, not an outage
            ({"web_port": {server.address: "http://127.0.0.1:19669"}}, ValueError),  # a URL
            ({"web_port": {server.address: "graphd1:19669:1"}}, ValueError),  # not an IPv6 address
        ]
        for kwargs, exc in bad:
            with pytest.raises(exc):
                check_health(client, **kwargs)
    finally:
        client.close()
    with pytest.raises(ClientClosed):
        check_health(client)


def test_web_addresses_in_a_mapping_are_read_as_the_web_client_reads_them() -> None:
    from nebula_sync._health import _web_addresses

    thrift = (HostAddress("g1", 9669), HostAddress("g2", 9669))
    webs = _web_addresses(thrift, {"g1:9669": "g1-web", "g2:9669": "[::1]:8080"})
    assert webs == {"g1:9669": "g1-web:19669", "g2:9669": "[::1]:8080"}  # no port: the web default
