"""GraphdWebClient against the fake graphd web service, over real loopback sockets."""

from __future__ import annotations

import contextlib
import gc
import gzip
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
import urllib3.util.connection
from forking import in_forked_child
from rawserver import RawServer, endless_body, paced_body, read_http_head, trickling_body
from urllib3.exceptions import InsecureRequestWarning, NewConnectionError, ReadTimeoutError, SSLError

from nebula_sync.errors import ClientClosed, DriverError, WebServiceError
from nebula_sync.testing._http import DEFAULT_GIT_INFO_SHA, FakeWebService, default_flags, default_stats
from nebula_sync.web import DEFAULT_WEB_PORT, MAX_RESPONSE_BYTES, GraphdWebClient, WebStatus

STAT_NAME = re.compile(r"^[a-z_]+\.(sum|count|avg|rate|p\d+)\.(5|60|600|3600)$")


# ---- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeWebService]:
    with FakeWebService() as f:
        yield f


@pytest.fixture
def client(fake: FakeWebService) -> Iterator[GraphdWebClient]:
    with GraphdWebClient(fake.address, timeout=5.0) as c:
        yield c


@pytest.fixture
def refused_addr() -> Iterator[str]:
    """A loopback port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


def raw(fake: FakeWebService, method: str, target: str, body: bytes | None = None) -> tuple[int, bytes]:
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)) as conn:
        conn.request(method, target, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()


def deflate_of_nothing(conn: socket.socket, server: RawServer) -> None:
    """Answer 200, ``Content-Encoding: deflate``, then empty deflate blocks every 50 ms (each
    inflates to nothing) for 5 s, then hang up."""
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nConnection: close\r\n\r\nx\x9c"
    paced_body(conn, server, head, b"\x00\x00\x00\xff\xff", 100)  # an empty stored block, not the last


def encoded_body(encoding: str, body: bytes) -> Callable[[socket.socket, RawServer], None]:
    """Answer 200 with ``body`` as ``Content-Encoding: encoding`` (gzip or deflate)."""
    data = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)

    def handler(conn: socket.socket, server: RawServer) -> None:
        if read_http_head(conn):
            head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: {len(data)}\r\n"
            conn.sendall(head.encode() + b"\r\n" + data)

    return handler


def in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; the dict gets ``result`` or ``error``."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# ---- the fake itself, as graphd answers ------------------------------------------------------------


def test_fake_status_and_root(fake: FakeWebService) -> None:
    for target in ("/status", "/", "/status/"):
        code, body = raw(fake, "GET", target)
        assert code == 200
        assert json.loads(body) == {"status": "running", "git_info_sha": DEFAULT_GIT_INFO_SHA}


def test_fake_stats_text_and_json(fake: FakeWebService) -> None:
    code, body = raw(fake, "GET", "/stats")
    assert code == 200
    lines = body.decode().splitlines()
    parsed = dict(line.split("=", 1) for line in lines)
    assert parsed == {k: str(v) for k, v in default_stats().items()}
    assert all(STAT_NAME.match(name) for name in parsed)
    for name in ("num_queries.sum.60", "num_active_sessions.sum.5", "num_opened_sessions.sum.60",
                 "query_latency_us.avg.60"):
        assert name in parsed

    code, body = raw(fake, "GET", "/stats?format=json")
    doc = json.loads(body)
    assert isinstance(doc, list) and all(isinstance(o, dict) and len(o) == 1 for o in doc)
    assert {k: v for o in doc for k, v in o.items()} == default_stats()
    assert body.startswith(b"[\n")  # pretty-printed, as folly::toPrettyJson


def test_fake_stats_filter_and_graphd_error_strings(fake: FakeWebService) -> None:
    target = ("/stats?format=json&stats=num_queries.sum.60,nope.sum.60,bad,num_queries.sum.7,"
              "num_queries.median.60,num_queries.p1234567.60,num_queries.SUM.60,num_queries.count.600")
    doc = json.loads(raw(fake, "GET", target)[1])
    assert doc == [
        {"num_queries.sum.60": 120},
        {"nope.sum.60": 'Stats not found "nope"'},
        {"bad": '"bad" is not a valid metric name'},
        {"num_queries.sum.7": 'Unsupported time range "7"'},
        {"num_queries.median.60": 'Unsupported statistic method "median"'},
        {"num_queries.p1234567.60": '"p1234567" is not a valid percentile form'},
        {"num_queries.SUM.60": 120},  # graphd lower-cases the method
        {"num_queries.count.600": 0},  # a registered counter reads under any method
    ]
    text = raw(fake, "GET", "/stats?stats=num_active_sessions.sum.5,nope.sum.60")[1].decode()
    assert text == 'num_active_sessions.sum.5=2\nnope.sum.60=Stats not found "nope"\n'
    # an empty filter is no filter (graphd drops empty parts)
    assert len(json.loads(raw(fake, "GET", "/stats?format=json&stats=,")[1])) == len(default_stats())


def test_fake_flags_formats(fake: FakeWebService) -> None:
    names = "port,ws_ip,enable_authorize,system_memory_high_watermark_ratio,zz"
    text = raw(fake, "GET", f"/flags?flags={names}")[1]
    assert text.decode() == (
        'port=9669\nws_ip="0.0.0.0"\nenable_authorize=0\nsystem_memory_high_watermark_ratio=0.8\nzz=nullptr\n'
    )
    everything = raw(fake, "GET", "/flags")[1].decode().splitlines()
    assert len(everything) == len(default_flags())

    doc = json.loads(raw(fake, "GET", "/flags?format=json&flags=port,zz")[1])
    assert doc == {"flags": [{"name": "port", "value": 9669}, {"name": "zz", "value": None}]}
    doc = json.loads(raw(fake, "GET", "/flags?format=json")[1])
    assert {f["name"]: f["value"] for f in doc["flags"]} == default_flags()

    doc = json.loads(raw(fake, "GET", "/flags?format=json&verbose=true&flags=enable_authorize")[1])
    (item,) = doc["flags"]
    assert item["value"] is False and item["default"] is False and item["type"] == "bool"
    assert item["is_default"] is True and item["description"] and item["file"]
    verbose = raw(fake, "GET", "/flags?verbose=true&flags=port")[1].decode()
    assert verbose.startswith("--port: ") and "type: int32, default: 9669, current: 9669(default)" in verbose


def test_fake_flags_override() -> None:
    overrides = {"port": 1234, "custom_flag": "x", "system_memory_high_watermark_ratio": 1}
    with FakeWebService(flags=overrides) as f:
        doc = json.loads(raw(f, "GET", "/flags?format=json&verbose=true&flags=port,custom_flag,"
                                       "system_memory_high_watermark_ratio")[1])
    port, custom, ratio = doc["flags"]
    assert port["value"] == 1234 and port["type"] == "int32" and port["is_default"] is False
    assert custom == {"name": "custom_flag", "value": "x", "default": "x", "type": "string",
                      "description": "", "file": "fake", "is_default": True}
    assert ratio["value"] == 1.0 and isinstance(ratio["value"], float) and ratio["type"] == "double"
    with pytest.raises(TypeError):
        FakeWebService(flags={"bad": [1]})


def test_fake_wrong_method_405_and_unknown_path_404(fake: FakeWebService) -> None:
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)) as conn:
        # one keep-alive connection: a discarded request body must not desync the next request
        for method, target, body, expected in [
            ("PUT", "/flags", b'{"session_idle_timeout_secs": "1"}', 405),
            ("POST", "/status", b"x" * 1000, 405),
            ("DELETE", "/stats", None, 405),
            ("HEAD", "/", None, 405),
            ("GET", "/metrics", None, 404),
            ("GET", "/flags/port", None, 404),
            ("POST", "/nowhere", b"{}", 404),
            ("GET", "/status", None, 200),
        ]:
            conn.request(method, target, body=body)
            resp = conn.getresponse()
            assert (method, target, resp.status) == (method, target, expected)
            data = resp.read()
            if expected != 200:
                assert data == b""
    assert fake.connection_count == 1
    # PUT /flags changed nothing
    assert json.loads(raw(fake, "GET", "/flags?format=json&flags=session_idle_timeout_secs")[1]) == {
        "flags": [{"name": "session_idle_timeout_secs", "value": 28800}]
    }


def test_fake_status_code_and_override_switches(fake: FakeWebService) -> None:
    fake.set_status_code(500)
    assert raw(fake, "GET", "/status")[0] == 500
    assert raw(fake, "GET", "/metrics")[0] == 500
    fake.set_status_code(None)
    fake.set_body_override(b"garbage")
    assert raw(fake, "GET", "/stats") == (200, b"garbage")
    fake.set_body_override(None)
    assert raw(fake, "GET", "/status")[0] == 200
    with pytest.raises(ValueError):
        fake.set_status_code(99)


def test_fake_stop_hangs_up_stalled_requests_and_restarts_on_same_port(fake: FakeWebService) -> None:
    fake.set_stall(True)
    t, out = in_thread(lambda: raw(fake, "GET", "/status"))
    assert fake.wait_stalled(1)
    port = fake.port
    fake.stop()
    t.join(10)
    assert not t.is_alive()
    assert isinstance(out.get("error"), (http.client.RemoteDisconnected, ConnectionError))
    assert fake.open_connections == 0 and not fake.running
    fake.start()
    assert fake.port == port and fake.running
    assert raw(fake, "GET", "/status")[0] == 200  # the stall was cleared by stop()


def test_fake_import_has_no_side_effects() -> None:
    code = (
        "import threading, nebula_sync.testing._http as m\n"
        "assert not [t for t in threading.enumerate() if t.name.startswith('fake-web')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- status ------------------------------------------------------------------------------------------


def test_status(fake: FakeWebService, client: GraphdWebClient) -> None:
    st = client.status()
    assert isinstance(st, WebStatus)
    assert st.status == "running" and st.is_running
    assert st.git_info_sha == DEFAULT_GIT_INFO_SHA
    assert 0 <= st.latency_s < 5
    assert st.host == fake.address
    assert fake.request_log[-1] == ("GET", "/status")
    with pytest.raises(AttributeError):
        st.status = "x"  # type: ignore[misc]


def test_status_shapes(fake: FakeWebService, client: GraphdWebClient) -> None:
    fake.set_body_override(b'{"status":"starting"}')
    st = client.status()
    assert st.status == "starting" and not st.is_running and st.git_info_sha == ""
    for bad in (b"[]", b'{"git_info_sha":"x"}', b'{"status": 1}'):
        fake.set_body_override(bad)
        with pytest.raises(WebServiceError, match="'status'") as ei:
            client.status()
        assert ei.value.status == 200 and ei.value.host == fake.address


def test_custom_git_sha() -> None:
    with FakeWebService(git_info_sha="abc123") as f, GraphdWebClient(f.address) as c:
        assert c.status().git_info_sha == "abc123"


# ---- stats ---------------------------------------------------------------------------------------------


def test_stats_all(client: GraphdWebClient, fake: FakeWebService) -> None:
    stats = client.stats()
    assert stats == default_stats()
    assert all(type(v) is int for v in stats.values())
    assert fake.request_log[-1] == ("GET", "/stats?format=json")


def test_stats_filter(client: GraphdWebClient, fake: FakeWebService) -> None:
    names = ["num_queries.sum.60", "num_active_sessions.sum.5", "query_latency_us.p99.600"]
    assert client.stats(names) == {n: default_stats()[n] for n in names}
    assert fake.request_log[-1] == ("GET", "/stats?format=json&stats=" + ",".join(names))
    # a str is one name; duplicates are asked for once
    assert client.stats("num_queries.sum.60") == {"num_queries.sum.60": 120}
    client.stats(["num_queries.sum.60", "num_queries.sum.60"])
    assert fake.request_log[-1] == ("GET", "/stats?format=json&stats=num_queries.sum.60")


def test_stats_empty_filter_sends_nothing(client: GraphdWebClient, fake: FakeWebService) -> None:
    before = fake.request_count
    assert client.stats([]) == {}
    assert client.flags(()) == {}
    assert fake.request_count == before


def test_stats_unknown_names_raise_naming_them(client: GraphdWebClient, fake: FakeWebService) -> None:
    with pytest.raises(WebServiceError) as ei:
        client.stats(["num_queries.sum.60", "nope.sum.60", "num_queries.sum.7"])
    msg = str(ei.value)
    assert "nope.sum.60" in msg and 'Stats not found "nope"' in msg
    assert "num_queries.sum.7" in msg and 'Unsupported time range "7"' in msg
    assert "num_queries.sum.60:" not in msg
    assert f"http://{fake.address}/stats?" in msg
    assert ei.value.status == 200 and ei.value.host == fake.address
    assert isinstance(ei.value, DriverError)


@pytest.mark.parametrize("bad", ["", "a,b", " padded", "x.sum.60 "])
def test_stats_bad_names(client: GraphdWebClient, bad: str) -> None:
    with pytest.raises(ValueError):
        client.stats([bad])
    with pytest.raises(ValueError):
        client.flags([bad])


def test_stats_non_str_name(client: GraphdWebClient) -> None:
    with pytest.raises(TypeError):
        client.stats([1])  # type: ignore[list-item]


def test_stats_follow_a_live_provider() -> None:
    counters: dict[str, int | float] = {"num_queries.sum.60": 0, "query_latency_us.avg.60": 1.5}
    with FakeWebService(stats_provider=lambda: dict(counters)) as f, GraphdWebClient(f.address) as c:
        assert c.stats() == {"num_queries.sum.60": 0, "query_latency_us.avg.60": 1.5}
        counters["num_queries.sum.60"] = 7
        got = c.stats(["num_queries.sum.60", "query_latency_us.avg.60"])
        assert got == {"num_queries.sum.60": 7, "query_latency_us.avg.60": 1.5}
        assert type(got["query_latency_us.avg.60"]) is float


def test_stats_provider_failure_is_500() -> None:
    def broken() -> dict[str, int | float]:
        raise RuntimeError("boom")

    with FakeWebService(stats_provider=broken) as f, GraphdWebClient(f.address) as c:
        with pytest.raises(WebServiceError, match="HTTP 500.*boom") as ei:
            c.stats()
        assert ei.value.status == 500


def test_stats_value_parsing_and_shapes(fake: FakeWebService, client: GraphdWebClient) -> None:
    fake.set_body_override(b'[{"a.sum.60": "12"}, {"b.avg.60": 1.5}, {"c.sum.5": "2.5"}]')
    assert client.stats() == {"a.sum.60": 12, "b.avg.60": 1.5, "c.sum.5": 2.5}
    fake.set_body_override(b'[{"a.sum.60": true}]')
    with pytest.raises(WebServiceError, match="a.sum.60"):
        client.stats()
    for bad in (b'{"a.sum.60": 1}', b"[1]", b'"x"'):
        fake.set_body_override(bad)
        with pytest.raises(WebServiceError, match="expected a JSON array"):
            client.stats()
    # graphd leaving out a name that was asked for
    fake.set_body_override(b'[{"a.sum.60": 1}]')
    with pytest.raises(WebServiceError, match=r"left out \['b.sum.60'\]"):
        client.stats(["a.sum.60", "b.sum.60"])


# ---- flags ---------------------------------------------------------------------------------------------


def test_flags_all_typed(client: GraphdWebClient, fake: FakeWebService) -> None:
    flags = client.flags()
    assert flags == default_flags()
    assert type(flags["port"]) is int
    assert flags["enable_authorize"] is False and flags["enable_optimizer"] is True
    assert type(flags["system_memory_high_watermark_ratio"]) is float
    assert flags["timezone_name"] == "UTC+00:00:00"
    assert fake.request_log[-1] == ("GET", "/flags?format=json")


def test_flags_filter_and_unknown(client: GraphdWebClient, fake: FakeWebService) -> None:
    assert client.flags(["port", "ws_ip"]) == {"port": 9669, "ws_ip": "0.0.0.0"}
    assert fake.request_log[-1] == ("GET", "/flags?format=json&flags=port,ws_ip")
    assert client.flags("slow_query_threshold_us") == {"slow_query_threshold_us": 200000}
    with pytest.raises(WebServiceError, match=r"no flag \['nope'\]") as ei:
        client.flags(["port", "nope"])
    assert ei.value.status == 200


def test_flags_shapes(fake: FakeWebService, client: GraphdWebClient) -> None:
    fake.set_body_override(b'{"flags": [{"name": "x", "value": null}]}')
    assert client.flags() == {"x": None}  # unconvertible type: graphd says null
    for bad, match in [
        (b"[]", "flags"),
        (b'{"flags": {}}', "flags"),
        (b'{"flags": [{"value": 1}]}', "name"),
        (b'{"flags": [{"name": "x", "value": [1]}]}', "'x' has a list value"),
    ]:
        fake.set_body_override(bad)
        with pytest.raises(WebServiceError, match=match):
            client.flags()


def test_client_is_read_only(client: GraphdWebClient, fake: FakeWebService) -> None:
    client.status()
    client.stats()
    client.flags()
    client.flags(["port"])
    assert {m for m, _ in fake.request_log} == {"GET"}
    assert not [n for n in dir(client) if "set" in n.lower() and not n.startswith("_")]


# ---- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [404, 405, 500, 503])
def test_error_status(fake: FakeWebService, code: int) -> None:
    with GraphdWebClient(fake.address, retries=3) as c:
        fake.set_status_code(code)
        for call in (c.status, c.stats, c.flags):
            with pytest.raises(WebServiceError) as ei:
                call()
            assert ei.value.status == code
            assert ei.value.host == fake.address
            assert f"http://{fake.address}/" in str(ei.value) and f"HTTP {code}" in str(ei.value)
            assert "injected" in str(ei.value)  # the start of the body
        assert fake.request_count == 3  # never retried


def test_bad_json(fake: FakeWebService, client: GraphdWebClient) -> None:
    for body in (b"not json", b"\xff\xfe", b""):
        fake.set_body_override(body)
        for call in (client.status, client.stats, client.flags):
            with pytest.raises(WebServiceError, match="not valid JSON") as ei:
                call()
            assert ei.value.status == 200
            assert isinstance(ei.value.__cause__, ValueError)


def test_deeply_nested_json_is_a_web_service_error(fake: FakeWebService, client: GraphdWebClient) -> None:
    fake.set_body_override(b"[" * 100_000 + b"]" * 100_000)
    for call in (client.status, client.stats, client.flags):
        with pytest.raises(WebServiceError, match="nested too deeply") as ei:
            call()
        assert ei.value.status == 200 and ei.value.host == fake.address
        assert isinstance(ei.value.__cause__, RecursionError)


def test_endless_body_is_cut_at_the_size_cap() -> None:
    with RawServer(endless_body) as server, GraphdWebClient(server.address, timeout=5.0, retries=0,
                                                            maxsize=1) as c:  # fmt: skip
        for _ in range(2):  # the one pooled connection is given back: the second call gets it too
            start = time.monotonic()
            with pytest.raises(WebServiceError, match=f"larger than {MAX_RESPONSE_BYTES} bytes") as ei:
                c.status()
            assert time.monotonic() - start < 2.5
            assert ei.value.status == 200 and ei.value.host == server.address
        # a body read in part is never reused: its connection was closed
        assert server.accepted == 2


def test_body_size_cap_is_an_option(fake: FakeWebService) -> None:
    body = b'{"status":"running"}'
    with GraphdWebClient(fake.address, max_response_bytes=100, maxsize=1) as c:
        fake.set_body_override(body.ljust(100))  # JSON may end with blanks: exactly at the cap
        assert c.status().is_running
        fake.set_body_override(body.ljust(101))
        with pytest.raises(WebServiceError, match="larger than 100 bytes") as ei:
            c.status()
        assert ei.value.status == 200
        fake.set_body_override(None)
        assert c.status().is_running  # the pooled connection was given back
    with GraphdWebClient(fake.address) as c:  # the default cap
        fake.set_body_override(body.ljust(MAX_RESPONSE_BYTES))
        assert c.status().is_running
        fake.set_body_override(body.ljust(MAX_RESPONSE_BYTES + 1))
        for call in (c.status, c.stats, c.flags):
            with pytest.raises(WebServiceError, match="larger than"):
                call()


def test_trickling_body_is_bounded_by_the_timeout() -> None:
    with RawServer(trickling_body) as server, GraphdWebClient(server.address, timeout=0.5, retries=0) as c:
        start = time.monotonic()
        with pytest.raises(WebServiceError, match=r"body did not arrive within 0\.5s") as ei:
            c.status()
        elapsed = time.monotonic() - start
        assert 0.45 <= elapsed < 1.5, elapsed  # each byte came within the read timeout: only the
        assert ei.value.status == 200  # deadline for the whole body stops it


def test_a_compressed_body_that_inflates_to_nothing_is_bounded_by_the_timeout() -> None:
    # decompressing while reading would read on for as long as bytes come that inflate to nothing
    with RawServer(deflate_of_nothing) as server, GraphdWebClient(server.address, timeout=0.5) as c:
        start = time.monotonic()
        with pytest.raises(WebServiceError, match=r"body did not arrive within 0\.5s"):
            c.status()
        assert time.monotonic() - start < 1.5


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_decoded_within_the_cap(encoding: str) -> None:
    status = b'{"git_info_sha": "abc", "status": "running"}'
    with RawServer(encoded_body(encoding, status)) as server, GraphdWebClient(server.address) as c:
        assert c.status().is_running
    bomb = b" " * (5 << 20)  # 5 MiB of blanks in a few KiB: beyond the 4 MiB cap once inflated
    with RawServer(encoded_body(encoding, bomb)) as server, GraphdWebClient(server.address) as c:
        with pytest.raises(WebServiceError, match="larger than 4194304 bytes"):
            c.status()


def test_read_timeout_is_bounded_and_not_retried(fake: FakeWebService) -> None:
    with GraphdWebClient(fake.address, timeout=0.3, retries=3) as c:
        fake.set_stall(True)
        start = time.monotonic()
        with pytest.raises(WebServiceError, match="no response within 0.3s") as ei:
            c.status()
        elapsed = time.monotonic() - start
        assert 0.25 <= elapsed < 3
        assert ei.value.status is None and ei.value.host == fake.address
        assert isinstance(ei.value.__cause__, ReadTimeoutError)
        assert fake.request_count == 1  # a read timeout is never retried
        fake.set_stall(False)
        assert c.status().is_running


def test_connection_refused(refused_addr: str) -> None:
    with GraphdWebClient(refused_addr, retries=0) as c:
        with pytest.raises(WebServiceError, match="could not connect") as ei:
            c.status()
    assert ei.value.status is None and ei.value.host == refused_addr
    assert f"http://{refused_addr}/status" in str(ei.value)
    assert isinstance(ei.value.__cause__, NewConnectionError)


def test_hangup_mid_request(fake: FakeWebService) -> None:
    with GraphdWebClient(fake.address, timeout=10, retries=3) as c:
        fake.set_stall(True)
        t, out = in_thread(c.status)
        assert fake.wait_stalled(1)
        fake.stop()  # hangs up on the stalled request without a reply
        t.join(15)
        assert not t.is_alive()
    err = out.get("error")
    assert isinstance(err, WebServiceError), out
    assert err.status is None and "broke" in str(err)


# ---- retries -------------------------------------------------------------------------------------------


class ConnectSpy:
    """Records every TCP connect urllib3 makes; the first ``fail_first`` are refused."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.fail_first = 0


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> ConnectSpy:
    spy = ConnectSpy()
    real = urllib3.util.connection.create_connection

    def counting(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        spy.calls.append(address)
        if len(spy.calls) <= spy.fail_first:
            raise ConnectionRefusedError(111, "refused (injected)")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)
    return spy


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_connect_errors_are_retried(connects: ConnectSpy, refused_addr: str, retries: int) -> None:
    with GraphdWebClient(refused_addr, retries=retries) as c:
        with pytest.raises(WebServiceError, match="could not connect"):
            c.status()
    assert len(connects.calls) == retries + 1


def test_retry_recovers_from_a_failed_connect(connects: ConnectSpy, fake: FakeWebService) -> None:
    connects.fail_first = 1
    with GraphdWebClient(fake.address, retries=1) as c:
        assert c.status().is_running
    assert len(connects.calls) == 2 and fake.request_count == 1

    connects.calls.clear()
    with GraphdWebClient(fake.address, retries=0) as c:
        with pytest.raises(WebServiceError, match="could not connect"):
            c.status()
    assert len(connects.calls) == 1 and fake.request_count == 1


def test_keep_alive_reuses_one_connection(fake: FakeWebService, client: GraphdWebClient) -> None:
    for _ in range(10):
        client.status()
        client.stats(["num_queries.sum.60"])
    assert fake.connection_count == 1


def test_server_restart_is_survived(fake: FakeWebService, client: GraphdWebClient) -> None:
    assert client.status().is_running
    fake.stop()  # also closes the pooled keep-alive connection from the server side
    with pytest.raises(WebServiceError, match="could not connect") as ei:
        client.status()
    assert ei.value.status is None
    fake.start()
    assert client.status().is_running


# ---- hosts and arguments ---------------------------------------------------------------------------


def test_host_selection(fake: FakeWebService) -> None:
    with FakeWebService() as other:
        with GraphdWebClient([fake.address, other.address]) as c:
            assert c.hosts == (fake.address, other.address)
            with pytest.raises(ValueError, match="pass host="):
                c.status()
            assert c.status(other.address).host == other.address
            assert c.stats(["num_queries.sum.60"], host=fake.address) == {"num_queries.sum.60": 120}
            assert other.request_count == 1 and fake.request_count == 1
        with GraphdWebClient() as c:
            with pytest.raises(ValueError, match="none"):
                c.flags()
            assert c.status(fake.address).is_running  # any host may be passed
        with GraphdWebClient("127.0.0.1", port=other.port) as c:  # the default port fills in
            assert c.hosts == (other.address,)
            assert c.status().is_running
            assert c.status("127.0.0.1").host == other.address


def test_host_parsing() -> None:
    with GraphdWebClient(" a:1 , b ,a:1,[::1]:2,::1") as c:
        assert c.hosts == ("a:1", f"b:{DEFAULT_WEB_PORT}", "[::1]:2", f"[::1]:{DEFAULT_WEB_PORT}")
    with GraphdWebClient("fe80::1%eth0, [fe80::2%lo]:3, ::ffff:127.0.0.1") as c:  # zone ids, v4-mapped
        assert c.hosts == (f"[fe80::1%eth0]:{DEFAULT_WEB_PORT}", "[fe80::2%lo]:3",
                           f"[::ffff:127.0.0.1]:{DEFAULT_WEB_PORT}")  # fmt: skip
    for bad in ("a:b", "a:0", "a:70000", ":80", "[::1", "[::1]x", "[]:1"):
        with pytest.raises(ValueError):
            GraphdWebClient(bad)
    # more than one ':' is an IPv6 address or an error, never a host name that fails to resolve later
    for bad in ("graphd1:19669:1", "a:b:c", "[graphd:1]:2", "::1::2", "fe80::1%"):
        with pytest.raises(ValueError, match=f"invalid host '{re.escape(bad)}'.*not an IPv6 address"):
            GraphdWebClient(bad)
    for url in ("http://127.0.0.1:19669", "http://graphd", "https://[::1]:1/", "[http://x]:1"):
        with pytest.raises(ValueError, match=f"invalid host '{re.escape(url)}'.*"):
            GraphdWebClient(url)
    with pytest.raises(ValueError, match="without a scheme like 'http://'"):
        GraphdWebClient("http://graphd1:19669")
    with GraphdWebClient() as c:
        with pytest.raises(ValueError, match="without a scheme"):
            c.status("http://127.0.0.1:19669")
    with pytest.raises(TypeError):
        GraphdWebClient([1])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"connect_timeout": 0},
        {"retries": -1},
        {"maxsize": 0},
        {"max_response_bytes": 0},
        {"port": 0},
        {"scheme": "ftp"},
        {"ca_file": "ca.pem"},  # needs https
        {"verify": False},  # needs https
        {"scheme": "https", "ssl_context": ssl.create_default_context(), "verify": False},
        {"scheme": "https", "key_file": "k.pem"},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GraphdWebClient("h", **kwargs)


@pytest.mark.parametrize("kwargs", [{"timeout": "1"}, {"timeout": True}, {"verify": 1}])
def test_bad_argument_types(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        GraphdWebClient("h", scheme="https", **kwargs)


def test_no_timeout_is_allowed(fake: FakeWebService) -> None:
    with GraphdWebClient(fake.address, timeout=None, connect_timeout=1.0) as c:
        assert c.status().is_running


# ---- thread-safety --------------------------------------------------------------------------------------


def test_threads_share_one_client(fake: FakeWebService) -> None:
    n_threads, rounds, maxsize = 8, 25, 3
    with FakeWebService(git_info_sha="other") as other, GraphdWebClient(
        [fake.address, other.address], maxsize=maxsize
    ) as c:
        barrier = threading.Barrier(n_threads, timeout=10)
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                barrier.wait()
                for r in range(rounds):
                    target = fake if (i + r) % 2 else other
                    kind = (i + r) % 3
                    if kind == 0:
                        st = c.status(target.address)
                        assert st.git_info_sha == ("other" if target is other else DEFAULT_GIT_INFO_SHA)
                    elif kind == 1:
                        assert c.stats(["num_queries.sum.60"], target.address) == {"num_queries.sum.60": 120}
                    else:
                        assert c.flags(["port"], target.address) == {"port": 9669}
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n_threads)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert fake.request_count + other.request_count == n_threads * rounds
        # at most maxsize connections per host, however many threads
        assert fake.connection_count <= maxsize and other.connection_count <= maxsize


# ---- lifecycle -----------------------------------------------------------------------------------------


def test_close_is_idempotent_and_final(fake: FakeWebService) -> None:
    c = GraphdWebClient(fake.address)
    assert c.status().is_running
    assert fake.wait_open_connections(1)
    assert not c.closed
    c.close()
    c.close()
    assert c.closed
    assert fake.wait_open_connections(0)  # the pooled socket was really closed
    for call in (c.status, c.stats, c.flags):
        with pytest.raises(ClientClosed):
            call()
    assert fake.request_count == 1


def test_context_manager_closes(fake: FakeWebService) -> None:
    with GraphdWebClient(fake.address) as c:
        c.status()
    assert c.closed
    assert fake.wait_open_connections(0)


def test_close_during_a_request(fake: FakeWebService) -> None:
    c = GraphdWebClient(fake.address, timeout=10)
    fake.set_stall(True)
    t, out = in_thread(c.status)
    assert fake.wait_stalled(1)
    c.close()
    fake.set_stall(False)
    t.join(15)
    assert not t.is_alive()
    # the request in flight finishes; its connection is then discarded, not pooled
    assert "result" in out and out["result"].is_running
    assert fake.wait_open_connections(0)
    with pytest.raises(ClientClosed):
        c.status()


def test_unclosed_client_warns_and_cleans_up(fake: FakeWebService) -> None:
    c = GraphdWebClient(fake.address)
    c.status()
    assert fake.wait_open_connections(1)
    with pytest.warns(ResourceWarning, match="unclosed GraphdWebClient"):
        del c
        gc.collect()
    assert fake.wait_open_connections(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads on 3.12+
def test_fork_child_uses_its_own_connections(fake: FakeWebService, client: GraphdWebClient) -> None:
    assert client.status().is_running
    assert fake.connection_count == 1
    assert in_forked_child(lambda: "K" if client.status().is_running else "N") == "K"
    assert fake.connection_count == 2  # the child connected on its own
    assert client.status().is_running  # the parent's pooled connection is intact
    assert fake.connection_count == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads on 3.12+
@pytest.mark.parametrize("how", ["close", "garbage"])
def test_fork_child_drops_the_client_while_a_parent_thread_held_its_locks(fake: FakeWebService,
                                                                          how: str) -> None:  # fmt: skip
    c = GraphdWebClient(fake.address, timeout=5.0)
    assert c.status().is_running
    # A parent thread holds the client's lock and its pool manager's lock at the moment of the fork:
    # in the child nobody ever releases them.
    locks = [c._lock, c._state.pm.pools.lock]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)

    def child() -> str:
        nonlocal c
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            if how == "close":
                c.close()
                c.close()
                code = "K" if c.closed else "N"
            else:
                finalizer = c._finalizer
                del c  # the finalizer of an unclosed client runs now
                gc.collect()
                code = "A" if finalizer.alive else "K"
            if any("unclosed GraphdWebClient" in str(w.message) for w in caught):
                code = "W"  # the parent's client is the parent's to warn about
        return code

    try:
        assert in_forked_child(child, timeout=10) == "K"  # a child that hangs fails the test
    finally:
        release.set()
        holder.join(5)
    assert c.status().is_running  # the parent's pooled connection is intact
    assert fake.connection_count == 1
    c.close()


# ---- TLS ----------------------------------------------------------------------------------------------


@pytest.fixture
def tls_fake(tmp_path: Any) -> Iterator[tuple[FakeWebService, str, Any]]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with FakeWebService(ssl_context=ctx) as f:
        yield f, str(ca_file), ca


def test_https_with_ca_file(tls_fake: tuple[FakeWebService, str, Any]) -> None:
    fake, ca_file, _ = tls_fake
    with GraphdWebClient(fake.address, scheme="https", ca_file=ca_file) as c:
        assert c.status().is_running
        assert c.stats(["num_queries.sum.60"]) == {"num_queries.sum.60": 120}


def test_https_with_ssl_context(tls_fake: tuple[FakeWebService, str, Any]) -> None:
    fake, _, ca = tls_fake
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with GraphdWebClient(fake.address, scheme="https", ssl_context=ctx) as c:
        assert c.status().is_running


def test_https_untrusted_certificate_fails(tls_fake: tuple[FakeWebService, str, Any]) -> None:
    fake, _, _ = tls_fake
    with GraphdWebClient(fake.address, scheme="https", retries=3) as c:
        with pytest.raises(WebServiceError, match="TLS failed") as ei:
            c.status()
    assert ei.value.status is None
    assert isinstance(ei.value.__cause__, SSLError)
    assert fake.request_count == 0


def test_https_verify_off_is_explicit_and_warns(tls_fake: tuple[FakeWebService, str, Any]) -> None:
    fake, _, _ = tls_fake
    with GraphdWebClient(fake.address, scheme="https", verify=False) as c:
        with pytest.warns(InsecureRequestWarning):
            assert c.status().is_running
