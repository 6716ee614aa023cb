"""Bad input from callers: a clear error naming the problem, raised before anything is sent.

Covers statements of the wrong type, parameters that cannot be converted, 64-bit overflow, lone
surrogates, ``{{ }}`` template values without an nGQL literal, malformed host strings and absurd
configuration values. Every execute-time case checks the fake graphd saw no statement from the
bad call: afterwards a sentinel statement runs on the same single session, and it must be the only
statement the server ever logged.

A case where the client raises an unclear or untyped error, or sends first, is a bug: it is pinned
by a strict xfail whose reason names it until the client is fixed.
"""

from __future__ import annotations

import gc
import math
import threading
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from nebula_sync import ConnectionConfig, NebulaClient, SessionConfig, SessionPoolConfig, TLSConfig
from nebula_sync.config import HostAddress, parse_address, parse_hosts
from nebula_sync.testing import FakeGraphd
from nebula_sync.web import DEFAULT_WEB_PORT, GraphdWebClient

SENTINEL = "RETURN 'sentinel'"


@pytest.fixture
def client(fake_graphd: FakeGraphd) -> Iterator[NebulaClient]:
    """One session, one connection: a statement a bad call sent would be logged before the sentinel."""
    c = NebulaClient(
        fake_graphd.address,
        "root",
        "nebula",
        session_pool_config=SessionPoolConfig(size=1, wait_timeout=5.0),
        conn_config=ConnectionConfig(connect_timeout=2.0, request_timeout=5.0),
    )
    yield c
    c.close()


def assert_nothing_sent(server: FakeGraphd, client: NebulaClient) -> None:
    """The bad calls sent no statement: the sentinel is the only statement graphd ever saw."""
    assert client.execute(SENTINEL).rows() == [("sentinel",)]
    assert [e.statement for e in server.statement_log()] == [SENTINEL]
    assert server.stats().statements == 1


def raises(exc: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], Any],
           *fragments: str) -> BaseException:  # fmt: skip
    with pytest.raises(exc) as info:
        fn()
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return info.value


Runner = Callable[[NebulaClient, Any, Any], Any]


def _in_session(method: str) -> Runner:
    def run(client: NebulaClient, statement: Any, params: Any) -> Any:
        with client.session() as session:
            return getattr(session, method)(statement, params)

    return run


RUNNERS: dict[str, Runner] = {
    "execute": lambda c, s, p: c.execute(s, p),
    "execute_py": lambda c, s, p: c.execute_py(s, p),
    "execute_json": lambda c, s, p: c.execute_json(s, p),
    "session.execute": _in_session("execute"),
    "session.execute_py": _in_session("execute_py"),
}


# ---- statements of the wrong type ---------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(RUNNERS))
@pytest.mark.parametrize(
    "statement", [b"RETURN 1", bytearray(b"RETURN 1"), None, 1, 1.5, ["RETURN 1"], object()],
    ids=lambda s: type(s).__name__,
)  # fmt: skip
def test_statement_of_the_wrong_type(fake_graphd: FakeGraphd, client: NebulaClient, method: str,
                                     statement: Any) -> None:  # fmt: skip
    raises(TypeError, lambda: RUNNERS[method](client, statement, None), "statement", type(statement).__name__)
    assert_nothing_sent(fake_graphd, client)


@pytest.mark.parametrize("method", sorted(RUNNERS))
@pytest.mark.parametrize("statement", ["RETURN '\ud800'", "RETURN '\udcff'"], ids=["lone", "escaped-0xff"])
def test_statement_with_a_lone_surrogate_is_refused_before_sending(
    fake_graphd: FakeGraphd, client: NebulaClient, method: str, statement: str
) -> None:
    raises(ValueError, lambda: RUNNERS[method](client, statement, None), "surrogate")
    assert_nothing_sent(fake_graphd, client)


def test_statement_with_a_lone_surrogate_error_names_the_statement(client: NebulaClient) -> None:
    raises(ValueError, lambda: client.execute("RETURN '\ud800'"), "statement")


# ---- parameters that cannot be converted --------------------------------------------------------

BAD_PARAMS: list[Any] = [
    pytest.param({"x": object()}, TypeError, ("x", "object"), id="object"),
    pytest.param({"x": [1, object()]}, TypeError, ("x[1]", "object"), id="object-in-list"),
    pytest.param({"x": {"k": {1, object()}}}, TypeError, ("x", "object"), id="object-in-set-in-map"),
    pytest.param({"x": {1: 2}}, TypeError, ("x", "map keys must be str"), id="map-with-int-key"),
    pytest.param({"x": 2**63}, ValueError, ("x", "64-bit"), id="int-2**63"),
    pytest.param({"x": -(2**63) - 1}, ValueError, ("x", "64-bit"), id="int-below-min"),
    pytest.param({"x": [2**64]}, ValueError, ("x[0]", "64-bit"), id="int-overflow-in-list"),
    pytest.param({"x": "\ud800"}, ValueError, ("x", "surrogate"), id="lone-surrogate"),
    pytest.param({"x": {"k": "a\udcffb"}}, ValueError, ("x", "surrogate"), id="surrogate-in-map"),
    pytest.param({"\ud800": 1}, ValueError, ("parameter name",), id="surrogate-name"),
    pytest.param({"": 1}, ValueError, ("parameter name",), id="empty-name"),
    pytest.param({"x y": 1}, ValueError, ("parameter name", "x y"), id="spaced-name"),
    pytest.param([("x", 1)], TypeError, ("params", "mapping", "list"), id="list-of-pairs"),
    pytest.param("x", TypeError, ("params", "mapping", "str"), id="str"),
]


@pytest.mark.parametrize("method", ["execute", "execute_json", "session.execute"])
@pytest.mark.parametrize(("params", "exc", "fragments"), BAD_PARAMS)
def test_unconvertible_parameters(fake_graphd: FakeGraphd, client: NebulaClient, method: str, params: Any,
                                  exc: type[Exception], fragments: tuple[str, ...]) -> None:  # fmt: skip
    raises(exc, lambda: RUNNERS[method](client, "RETURN $x", params), *fragments)
    assert_nothing_sent(fake_graphd, client)


# execute_py sends only the parameters the statement names with $name: bad *names* are not sent
# (and then graphd reports $x undefined), so they are left out here.
@pytest.mark.parametrize(("params", "exc", "fragments"), [p for p in BAD_PARAMS if not p.id.endswith("name")])
def test_unconvertible_parameters_in_execute_py(fake_graphd: FakeGraphd, client: NebulaClient,
                                                params: Any, exc: type[Exception],
                                                fragments: tuple[str, ...]) -> None:  # fmt: skip
    raises(exc, lambda: client.execute_py("RETURN $x", params), *fragments)
    assert_nothing_sent(fake_graphd, client)


@pytest.mark.parametrize("key", [1, None, b"x", ("x",)], ids=lambda k: type(k).__name__)
def test_non_str_parameter_names_in_execute(fake_graphd: FakeGraphd, client: NebulaClient, key: Any) -> None:
    raises(TypeError, lambda: client.execute("RETURN 1", {key: 1}), "parameter names must be str")
    assert_nothing_sent(fake_graphd, client)


@pytest.mark.parametrize("key", [1, None], ids=lambda k: type(k).__name__)
def test_non_str_parameter_names_in_execute_py(client: NebulaClient, key: Any) -> None:
    raises(TypeError, lambda: client.execute_py("RETURN $x", {key: 1}), "parameter names must be str")


def test_bytes_parameter_with_invalid_utf8_is_sent_raw_and_read_back_safely(
    fake_graphd: FakeGraphd, client: NebulaClient
) -> None:
    # Graph strings are bytes on the wire: bytes parameters are legal and sent as they are. The
    # reply holds invalid UTF-8, which is decoded with backslashreplace, never an exception.
    assert client.execute("RETURN $x", {"x": b"\xff\xfeok"}).rows() == [("\\xff\\xfeok",)]


def test_nan_parameter_is_a_legal_double(client: NebulaClient) -> None:
    (value,) = client.execute("RETURN $x", {"x": float("nan")}).rows()[0]
    assert math.isnan(value)


# ---- {{ }} templates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "exc", "fragments"),
    [
        pytest.param({"x": float("nan")}, ValueError, ("x", "nan", "literal"), id="nan"),
        pytest.param({"x": float("inf")}, ValueError, ("x", "inf", "literal"), id="inf"),
        pytest.param({"x": float("-inf")}, ValueError, ("x", "-inf"), id="-inf"),
        pytest.param({"x": [1.0, float("nan")]}, ValueError, ("x[1]", "nan"), id="nan-in-list"),
        pytest.param({"x": {"a": float("inf")}}, ValueError, ("x['a']", "inf"), id="inf-in-map"),
        pytest.param({"x": 2**63}, ValueError, ("x", "64-bit"), id="int-overflow"),
        pytest.param({"x": object()}, TypeError, ("x", "object", "literal"), id="object"),
        pytest.param({"x": {1: 2}}, TypeError, ("x", "map keys"), id="map-int-key"),
        pytest.param({"x": b"\xff"}, ValueError, ("x", "bytes"), id="non-utf8-bytes"),
        pytest.param({"y": 1}, KeyError, ("{{x}}", "without a value"), id="missing"),
        pytest.param({}, KeyError, ("{{x}}",), id="no-params"),
        pytest.param(None, KeyError, ("{{x}}",), id="params-none"),
    ],
)
def test_template_value_without_a_literal(fake_graphd: FakeGraphd, client: NebulaClient, params: Any,
                                         exc: type[Exception],
                                         fragments: tuple[str, ...]) -> None:  # fmt: skip
    raises(exc, lambda: client.execute_py("RETURN {{x}} AS v", params), *fragments)
    assert_nothing_sent(fake_graphd, client)


def test_template_with_a_lone_surrogate_is_refused_before_sending(
    fake_graphd: FakeGraphd, client: NebulaClient
) -> None:
    raises(ValueError, lambda: client.execute_py("RETURN {{x}}", {"x": "a\ud800"}), "surrogate")
    assert_nothing_sent(fake_graphd, client)


def test_template_with_a_lone_surrogate_names_the_placeholder(client: NebulaClient) -> None:
    raises(ValueError, lambda: client.execute_py("RETURN {{x}}", {"x": "a\ud800"}), "x:")


# ---- per-call options ---------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [-1, 0, -0.5, False, True], ids=repr)
def test_bad_per_call_timeout(fake_graphd: FakeGraphd, client: NebulaClient, timeout: Any) -> None:
    # a bool is refused as a type (TypeError), like the config fields; numbers <= 0 as values
    raises((ValueError, TypeError), lambda: client.execute("RETURN 1", timeout=timeout), "timeout")
    assert_nothing_sent(fake_graphd, client)




@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 1e300, "1"], ids=repr)
def test_absurd_per_call_timeout_is_refused_before_sending(
    fake_graphd: FakeGraphd, client: NebulaClient, timeout: Any
) -> None:
    raises((ValueError, TypeError), lambda: client.execute("RETURN 1", timeout=timeout), "timeout")
    assert_nothing_sent(fake_graphd, client)


# ---- host strings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "exc", "fragments"),
    [
        ("", ValueError, ("empty host",)),
        (",", ValueError, ("empty host",)),
        ("h:1,", ValueError, ("empty host",)),
        ([], ValueError, ("empty",)),
        ("h:", ValueError, ("'h:'", "missing port")),
        (":9669", ValueError, ("':9669'", "missing host name")),
        ("h:0", ValueError, ("port", "1..65535", "0")),
        ("h:65536", ValueError, ("port", "65536")),
        ("h:-1", ValueError, ("'-1'", "not a number")),
        ("h:+1", ValueError, ("'+1'", "not a number")),
        ("h: 1", ValueError, ("not a number",)),
        ("h:http", ValueError, ("'http'", "not a number")),
        ("h:9669:1", ValueError, ("h:9669:1", "IPv6")),
        ("[::1", ValueError, ("'[::1'", "]")),
        ("[::1]x", ValueError, ("':port'",)),
        ("[zz]:1", ValueError, ("'zz'", "IPv6")),
        ("a b:1", ValueError, ("'a b'", "space")),
        ("h/x:1", ValueError, ("'h/x'",)),
        ("http://h:1", ValueError, ("http",)),
        (None, TypeError, ("hosts", "NoneType")),
        (9669, TypeError, ("hosts", "int")),
        (b"h:1", TypeError, ("hosts must be a str, not bytes",)),
        ("[::1]:", ValueError, ("'[::1]:'", "missing port")),
        ([("graphd1:9669", 9669)], ValueError, ("'graphd1:9669' is not an IPv6 address",)),
        ([("[::1]", 9669)], ValueError, ("'[::1]' is not an IPv6 address",)),
        ([("h", "9669")], TypeError, ("port", "str")),
        ([("h",)], TypeError, ("bad host entry",)),
        (["h:1", 5], TypeError, ("bad host entry 5",)),
        ([("h", True)], TypeError, ("port", "bool")),
    ],
    ids=repr,
)
def test_bad_host_strings(hosts: Any, exc: type[Exception], fragments: tuple[str, ...]) -> None:
    raises(exc, lambda: parse_hosts(hosts), *fragments)
    raises(exc, lambda: NebulaClient(hosts, "root", "x").close(), *fragments)


def test_host_address_validates_directly() -> None:
    raises(ValueError, lambda: HostAddress("", 1), "host name")
    raises(TypeError, lambda: HostAddress("h", "1"), "port must be an int")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "hosts",
    [" 127.0.0.1:9669 , h2:9670,[::1]:9671 ", ["127.0.0.1:9669", ("h2", 9670), "[::1]:9671"]],
    ids=["string-with-blanks", "list-of-forms"],
)
def test_good_host_forms(hosts: Any) -> None:
    assert parse_hosts(hosts) == (
        HostAddress("127.0.0.1", 9669), HostAddress("h2", 9670), HostAddress("::1", 9671),
    )  # fmt: skip


@pytest.mark.parametrize("hosts", ["h:\u0663", "h:\u00b2"], ids=["arabic-indic-3", "superscript-2"])
def test_non_ascii_digits_in_a_port_are_refused(hosts: str) -> None:
    raises(ValueError, lambda: parse_hosts(hosts), "not a number")


@pytest.mark.parametrize(
    "text",
    ["h", " h:1 ", "[::1]:2", "::1", "fe80::1%eth0", "[fe80::2%lo]:3", "h:", ":1", "h:0", "h:x", "h:1:2",
     "[::1", "[::1]x", "[zz]:1", "a b", "http://h:1", "h:\u0663", "[]:1"],
    ids=repr,
)  # fmt: skip
def test_thrift_and_web_hosts_are_read_by_one_parser(text: str) -> None:
    """graphd's Thrift host list and the web client take the same forms, with their own default
    ports, and refuse the same ones with the same message."""
    def outcome(parse: Callable[[], Any]) -> Any:
        try:
            return parse()
        except ValueError as exc:
            return ValueError, str(exc)
    thrift = outcome(lambda: str(parse_hosts(text)[0]))
    if not isinstance(thrift, tuple):
        assert thrift == str(parse_address(text))
        assert thrift.endswith(":9669") == (text.strip() in ("h", "::1", "fe80::1%eth0"))
    def web_host() -> str:
        with GraphdWebClient(text, port=1234) as web:
            return web.hosts[0]
    assert outcome(web_host) == (
        thrift.replace(":9669", ":1234") if isinstance(thrift, str) else thrift
    )


def test_a_url_for_a_host_is_refused_by_name() -> None:
    raises(ValueError, lambda: parse_hosts("http://graphd1:9669"), "without a scheme like 'http://'")
    assert str(parse_address("graphd1", DEFAULT_WEB_PORT)) == "graphd1:19669"


# ---- absurd configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "exc", "fragments"),
    [
        (ConnectionConfig, {"connect_timeout": -1}, ValueError, ("connect_timeout", "-1")),
        (ConnectionConfig, {"connect_timeout": 0}, ValueError, ("connect_timeout",)),
        (ConnectionConfig, {"connect_timeout": float("nan")}, ValueError, ("connect_timeout", "nan")),
        (ConnectionConfig, {"request_timeout": -0.001}, ValueError, ("request_timeout",)),
        (ConnectionConfig, {"request_timeout": float("nan")}, ValueError, ("request_timeout",)),
        (ConnectionConfig, {"request_timeout": "5"}, TypeError, ("request_timeout", "str")),
        (ConnectionConfig, {"request_timeout": True}, TypeError, ("request_timeout", "bool")),
        (ConnectionConfig, {"ping_timeout": None}, ValueError, ("ping_timeout",)),
        (ConnectionConfig, {"ping_after_idle": -1}, ValueError, ("ping_after_idle",)),
        (ConnectionConfig, {"max_idle_time": float("nan")}, ValueError, ("max_idle_time",)),
        (ConnectionConfig, {"ping_before_execute": 1}, TypeError, ("ping_before_execute",)),
        (ConnectionConfig, {"tcp_keepalive": "yes"}, TypeError, ("tcp_keepalive",)),
        (ConnectionConfig, {"keepalive_idle": 0}, ValueError, ("keepalive_idle",)),
        (ConnectionConfig, {"keepalive_count": 1.5}, TypeError, ("keepalive_count",)),
        (ConnectionConfig, {"framing": "nope"}, ValueError, ("nope",)),
        (ConnectionConfig, {"framing": "FRAMED"}, ValueError, ("framing must be one of", "'FRAMED'")),
        (ConnectionConfig, {"handshake_key": ""}, ValueError, ("handshake_key",)),
        (ConnectionConfig, {"handshake_key": 3}, TypeError, ("handshake_key",)),
        (ConnectionConfig, {"max_frame_size": 10}, ValueError, ("max_frame_size",)),
        (ConnectionConfig, {"max_connections_per_host": 0}, ValueError, ("max_connections_per_host",)),
        (ConnectionConfig, {"tls": "yes"}, TypeError, ("tls",)),
        (ConnectionConfig, {"connect_timout": 1}, TypeError, ("connect_timout",)),
        (SessionPoolConfig, {"size": 0}, ValueError, ("size", "0")),
        (SessionPoolConfig, {"size": -3}, ValueError, ("size",)),
        (SessionPoolConfig, {"size": 2.0}, TypeError, ("size", "float")),
        (SessionPoolConfig, {"size": "4"}, TypeError, ("size", "str")),
        (SessionPoolConfig, {"size": None}, TypeError, ("size",)),
        (SessionPoolConfig, {"wait_timeout": -1}, ValueError, ("wait_timeout",)),
        (SessionPoolConfig, {"wait_timeout": float("nan")}, ValueError, ("wait_timeout",)),
        (SessionPoolConfig, {"sise": 3}, TypeError, ("sise",)),
        (SessionPoolConfig, {"min_idle": -1}, ValueError, ("min_idle",)),
        (SessionPoolConfig, {"min_idle": 1.0}, TypeError, ("min_idle", "float")),
        (SessionPoolConfig, {"size": 2, "min_idle": 3}, ValueError, ("min_idle=3", "size=2")),
        (SessionConfig, {"space": ""}, ValueError, ("space",)),
        (SessionConfig, {"space": "a`b"}, ValueError, ("backquote",)),
        (SessionConfig, {"init_statements": [1]}, TypeError, ("init_statements",)),
        (SessionConfig, {"init_statements": ["  "]}, TypeError, ("init_statements",)),
        (SessionConfig, {"init_statements": None}, TypeError, ("init_statements", "NoneType")),
        (SessionConfig, {"init_statements": b"RETURN 1"}, TypeError, ("init_statements", "bytes")),
        (SessionConfig, {"spaces": "x"}, TypeError, ("spaces",)),
        (TLSConfig, {"verify": "no"}, TypeError, ("verify",)),
        (TLSConfig, {"key_file": "k.pem"}, ValueError, ("key_file", "cert_file")),
        (TLSConfig, {"insecure": True}, TypeError, ("insecure",)),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v),
)
def test_absurd_config_values(cls: type, kwargs: dict[str, Any], exc: type[Exception],
                              fragments: tuple[str, ...]) -> None:  # fmt: skip
    raises(exc, lambda: cls(**kwargs), *fragments)


def test_configs_are_frozen() -> None:
    cfg = ConnectionConfig()
    with pytest.raises(AttributeError):
        cfg.request_timeout = -1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragments"),
    [
        ({"username": ""}, ValueError, ("username",)),
        ({"username": None}, ValueError, ("username",)),
        ({"password": b"nebula"}, TypeError, ("password", "bytes")),
        ({"password": 123}, TypeError, ("password", "int")),
        ({"min_healthy_hosts": 0}, ValueError, ("min_healthy_hosts",)),
        ({"min_healthy_hosts": 2}, ValueError, ("min_healthy_hosts", "(1)")),
        ({"min_healthy_hosts": 1.0}, TypeError, ("min_healthy_hosts",)),
        ({"close_timeout": -1}, ValueError, ("close_timeout",)),
        ({"session_pool_config": {"size": 1}}, TypeError, ("session_pool_config", "dict")),
        ({"conn_config": 3}, TypeError, ("conn_config", "int")),
        ({"session_config": "test"}, TypeError, ("session_config", "str")),
        ({"passwd": "x"}, TypeError, ("passwd",)),
    ],
    ids=repr,
)
def test_absurd_client_arguments(fake_graphd: FakeGraphd, kwargs: dict[str, Any], exc: type[Exception],
                                 fragments: tuple[str, ...]) -> None:  # fmt: skip
    args: dict[str, Any] = {"username": "root", "password": "nebula", **kwargs}
    raises(exc, lambda: NebulaClient(fake_graphd.address, **args).close(), *fragments)
    assert fake_graphd.stats().connections_accepted == 0  # refused before connecting


@pytest.mark.parametrize("value", [float("nan"), "1"], ids=repr)
def test_close_timeout_is_validated(fake_graphd: FakeGraphd, value: Any) -> None:
    raises((ValueError, TypeError), lambda: NebulaClient(fake_graphd.address, close_timeout=value).close(),
           "close_timeout")  # fmt: skip


@pytest.mark.parametrize("field", ["username", "password"])
def test_surrogates_in_credentials_are_refused_at_construction(fake_graphd: FakeGraphd, field: str) -> None:
    args: dict[str, Any] = {"username": "root", "password": "nebula"}
    args[field] = args[field] + "\ud800"
    raises(ValueError, lambda: NebulaClient(fake_graphd.address, **args).close(), field)


@pytest.mark.parametrize("field", ["ca_file", "cert_file", "server_hostname"])
def test_tls_config_field_types(field: str) -> None:
    kwargs: dict[str, Any] = {field: 1}
    raises(TypeError, lambda: TLSConfig(**kwargs), field)


# Huge or infinite durations: either refused by the config (naming the field) or working.


class ThreadDeaths:
    """Records exceptions that kill threads (threading.excepthook) while active."""

    def __init__(self) -> None:
        self.deaths: list[str] = []
        self._old = threading.excepthook

    def __enter__(self) -> ThreadDeaths:
        def hook(args: threading.ExceptHookArgs) -> None:
            self.deaths.append(f"{args.thread.name if args.thread else '?'}: {args.exc_value!r}")

        threading.excepthook = hook
        return self

    def __exit__(self, *exc: object) -> None:
        threading.excepthook = self._old




@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (ConnectionConfig, "connect_timeout", float("inf")),
        (ConnectionConfig, "request_timeout", float("inf")),
        (ConnectionConfig, "request_timeout", 1e300),
        (SessionPoolConfig, "wait_timeout", float("inf")),
        (SessionPoolConfig, "wait_timeout", 1e300),
        (ConnectionConfig, "keepalive_idle", 10**12),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v),
)
def test_huge_durations_are_refused_or_work(fake_graphd: FakeGraphd, cls: type, field: str,
                                            value: Any) -> None:  # fmt: skip
    try:
        cfg = cls(**{field: value})
    except ValueError as exc:
        assert field in str(exc)
        return
    kw: dict[str, Any] = {"conn_config" if cls is ConnectionConfig else "session_pool_config": cfg}
    error = None
    with ThreadDeaths() as deaths:
        try:
            with NebulaClient(fake_graphd.address, "root", "nebula", **kw) as c:
                assert c.execute("RETURN 1").rows() == [(1,)]
        except Exception as exc:  # kept as text: a live traceback would keep a leaked socket alive
            error = repr(exc)
    # Today a failed open leaks its socket inside an exception cycle: collect it here, so its
    # ResourceWarning is not blamed on whichever later test the garbage collector runs in.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert error is None
    assert deaths.deaths == []
