"""Against a real NebulaGraph 3.x cluster: run only when ``NEBULA_TEST_HOSTS`` is set.

``NEBULA_TEST_HOSTS=h1:9669,h2:9669`` (plus ``NEBULA_TEST_USER`` / ``NEBULA_TEST_PASSWORD``,
default root / nebula) enables them. They repeat, against graphd itself, the scenarios the protocol
spec could only check against a stand-in (graphd-protocol.md §7.4): THeader + binary (B1), framed
binary (B3), decoding of rich values (C) and a late reply after a timeout (F).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

import pytest

from nebula_sync import ConnectionConfig, NebulaClient, SessionPoolConfig
from nebula_sync.errors import RequestTimeout, StatementSyntaxError

HOSTS = os.environ.get("NEBULA_TEST_HOSTS", "")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HOSTS, reason="set NEBULA_TEST_HOSTS=host:port[,host:port] to run"),
]


def _client(**conn: object) -> NebulaClient:
    settings: dict[str, object] = {"connect_timeout": 5.0, "request_timeout": 30.0, **conn}
    return NebulaClient(
        HOSTS,
        os.environ.get("NEBULA_TEST_USER", "root"),
        os.environ.get("NEBULA_TEST_PASSWORD", "nebula"),
        session_pool_config=SessionPoolConfig(size=2, wait_timeout=10.0),
        conn_config=ConnectionConfig(**settings),  # type: ignore[arg-type]
    )


@pytest.fixture(params=["theader", "framed"])
def client(request: pytest.FixtureRequest) -> Iterator[NebulaClient]:
    with _client(framing=request.param) as c:
        yield c


def test_statements_and_parameters(client: NebulaClient) -> None:
    rs = client.execute("RETURN $a + 1 AS b, $s AS s, $l AS l", {"a": 41, "s": "naïve", "l": [1, 2.5]})
    assert rs.rows() == [(42, "naïve", [1, 2.5])]
    with pytest.raises(StatementSyntaxError):
        client.execute("RETURN (1")


def test_rich_values_round_trip(client: NebulaClient) -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=dt.timezone.utc)
    rs = client.execute(
        "RETURN $d AS d, $t AS t, {k: [1, null, true]} AS m, -9223372036854775807 - 1 AS lo",
        {"d": dt.date(2024, 2, 29), "t": when},
    )
    row = rs.one()
    assert row["d"].as_date() == dt.date(2024, 2, 29)
    assert row["t"].as_datetime() == when
    assert row["m"].cast_primitive() == {"k": [1, None, True]}
    assert row["lo"].as_int() == -(2**63)


def test_temporal_literals_round_trip(client: NebulaClient) -> None:
    # rendered with an explicit +00:00: equal whatever timezone_name graphd runs with
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    at = dt.time(23, 30, 1, 250000, tzinfo=dt.timezone.utc)
    row = client.execute_py("RETURN {{w}} AS w, {{t}} AS t, {{d}} AS d",
                            {"w": when, "t": at, "d": dt.date(2024, 2, 29)}).one()  # fmt: skip
    assert row["w"].as_datetime() == when
    assert row["t"].as_time() == at
    assert row["d"].as_date() == dt.date(2024, 2, 29)


def test_json_interface(client: NebulaClient) -> None:
    doc = client.execute_json("RETURN 1 AS one")
    assert doc["errors"][0]["code"] == 0


#: 200,000 steps of graphd's expression evaluator: many milliseconds on any machine, so a 1 ms
#: reply timeout always fires (a cheap statement such as SHOW HOSTS may well answer within 1 ms)
SLOW = "RETURN reduce(total = 0, n IN range(1, 200000) | total + n) AS r"


def test_timeout_closes_the_connection_and_the_next_statement_is_its_own() -> None:
    with _client() as client:
        client.execute("RETURN 1")  # a session is ready: the 1 ms below is the statement's alone
        with pytest.raises(RequestTimeout):
            client.execute(SLOW, timeout=0.001)
        assert client.execute("RETURN 'own' AS v").rows() == [("own",)]
        # the statement is valid: what timed out above was its reply, not a quick error
        assert client.execute(SLOW).rows() == [(200000 * 200001 // 2,)]
