"""The fake graphd's HTTP web service reports the Thrift server's live counters."""

from __future__ import annotations

from nebula_sync import NebulaClient
from nebula_sync.testing import FakeGraphd
from nebula_sync.web import GraphdWebClient


def test_web_service_follows_the_server_lifecycle_and_counters() -> None:
    server = FakeGraphd(web_port=0).start()
    try:
        assert server.web is not None
        with GraphdWebClient(server.web.address) as web:
            assert web.status().is_running
            assert web.stats(["num_queries.sum.60"]) == {"num_queries.sum.60": 0}
            with NebulaClient(server.address, "root", "x") as client:
                client.execute("RETURN 1")
                client.execute("RETURN 2")
                stats = web.stats(["num_queries.sum.60", "num_active_sessions.sum.5"])
                assert stats == {"num_queries.sum.60": 2, "num_active_sessions.sum.5": 1}
            server.wait_for(lambda s: s.sessions_open == 0)
            assert web.stats(["num_active_sessions.sum.600"]) == {"num_active_sessions.sum.600": 0}
            server.stop()
            server.start()
            assert web.status().is_running
    finally:
        server.stop()


def test_no_web_service_unless_asked() -> None:
    with FakeGraphd() as server:
        assert server.web is None
