"""Secrets never leak: the password (and the TLS key password) appear in no ``repr``/``str``, no
exception (chained causes, ``args``, attributes, pickles), no log record of any logger at any level
(formatted, with tracebacks), no warning and no ``stats()`` -- across success, a wrong password,
timeouts of every kind, the session limit and TLS failures.

A :class:`Watch` collects every text the process produced; each scenario asserts the secrets are in
none of it, and that the capture did see the scenario (so an empty capture cannot pass). A control
test shows the watch does find a leak.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import socket
import ssl
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from nebula_sync import ConnectionConfig, NebulaClient, SessionConfig, SessionPoolConfig, TLSConfig
from nebula_sync.errors import NebulaError
from nebula_sync.testing import FakeGraphd

PASSWORD = "S3cr3t-Pa55w0rd-7f1c"
KEY_PASSWORD = "K3y-Pa55phrase-9d2e"
WRONG_KEY_PASSWORD = "Wr0ng-K3y-Pa55-4b8a"
#: full secrets and fragments of them (a truncated leak still starts with the first characters)
NEEDLES = (PASSWORD, PASSWORD[:10], KEY_PASSWORD, KEY_PASSWORD[:10],
           WRONG_KEY_PASSWORD, WRONG_KEY_PASSWORD[:10])  # fmt: skip


class _Capture(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s", None))

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(self.format(record))  # message, exception text and stack info
        self.sink.append(repr(record.msg))
        self.sink.append(repr(record.args))


class Watch:
    """Everything the process said while a scenario ran: log records, warnings, errors, reprs."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.texts: list[str] = []
        self.errors = 0

    def error(self, exc: BaseException) -> None:
        """Record an exception, its whole cause/context chain, args, attributes and pickle."""
        self.errors += 1
        seen: list[BaseException] = []
        todo: list[BaseException | None] = [exc]
        while todo:
            e = todo.pop()
            if e is None or any(e is s for s in seen):
                continue
            seen.append(e)
            self.texts += [str(e), repr(e), repr(e.args), repr(getattr(e, "__notes__", None))]
            self.texts += [repr(v) for v in vars(e).values()]
            try:
                self.texts.append(repr(pickle.dumps(e)))
            except Exception as pickling:  # an unpicklable cause: its text is still recorded
                self.texts.append(repr(pickling))
            todo += [e.__cause__, e.__context__]

    def expect_error(self, exc: type[BaseException] | tuple[type[BaseException], ...],
                     fn: Callable[[], Any]) -> BaseException:  # fmt: skip
        with pytest.raises(exc) as info:
            fn()
        self.error(info.value)
        return info.value

    def look(self, *objects: Any) -> None:
        for obj in objects:
            self.texts += [repr(obj), str(obj)]

    def client(self, client: NebulaClient) -> None:
        stats = client.stats()
        self.look(client, stats, *stats.hosts)

    def assert_clean(self) -> None:
        everything = self.logs + self.texts
        assert everything, "nothing was captured"
        for needle in NEEDLES:
            leaks = [t for t in everything if needle in t or needle.encode() in t.encode("utf-8", "replace")]
            assert not leaks, f"secret fragment {needle[:4]}... leaked in: {leaks[:3]}"


@contextlib.contextmanager
def capture() -> Iterator[Watch]:
    """Capture every record of every logger at DEBUG, and every warning, inside the block."""
    w = Watch()
    handler = _Capture(w.logs)
    root = logging.getLogger()
    old_root = root.level
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    old = {lg.name: (lg.level, lg.disabled) for lg in loggers}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for lg in loggers:
        lg.setLevel(logging.NOTSET)
        lg.disabled = False
    extra: list[logging.Logger] = [lg for lg in loggers if not lg.propagate]
    for lg in extra:
        lg.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield w
        finally:
            w.texts += [f"{c.category.__name__}: {c.message}" for c in caught]
            root.removeHandler(handler)
            root.setLevel(old_root)
            for lg in extra:
                lg.removeHandler(handler)
            for lg in loggers:
                lg.setLevel(old[lg.name][0])
                lg.disabled = old[lg.name][1]


@pytest.fixture
def watch() -> Iterator[Watch]:
    """A :func:`capture` around the whole test."""
    with capture() as w:
        yield w


def make_client(server: FakeGraphd | str, *, password: str = PASSWORD, **kw: Any) -> NebulaClient:
    address = server.address if isinstance(server, FakeGraphd) else server
    return NebulaClient(
        address,
        "root",
        password,
        session_pool_config=kw.pop("session_pool_config", SessionPoolConfig(size=2, wait_timeout=2.0)),
        conn_config=kw.pop("conn_config", ConnectionConfig(connect_timeout=1.0, request_timeout=2.0)),
        **kw,
    )


@pytest.fixture
def graphd() -> Iterator[FakeGraphd]:
    with FakeGraphd(users={"root": PASSWORD}) as server:
        yield server


# ---- the control: the watch finds a leak ------------------------------------------------------


def test_the_watch_finds_a_leak_in_logs_errors_and_reprs() -> None:
    for leak in (
        lambda w: logging.getLogger("some.library").debug("connecting with %s", PASSWORD),
        lambda w: logging.getLogger("nebula_sync.x").error("boom", exc_info=ValueError(PASSWORD[:12])),
        lambda w: w.error(_chained(PASSWORD)),
        lambda w: w.look({"key": KEY_PASSWORD}),
        lambda w: warnings.warn(f"pw={WRONG_KEY_PASSWORD}", UserWarning, stacklevel=1),
    ):
        with capture() as w:
            leak(w)
            w.look("something harmless")
        with pytest.raises(AssertionError, match="leaked"):
            w.assert_clean()


def _chained(secret: str) -> NebulaError:
    try:
        try:
            raise OSError(f"low level detail {secret}")
        except OSError as inner:
            raise NebulaError("outer failure") from inner
    except NebulaError as outer:
        return outer


# ---- success ----------------------------------------------------------------------------------


def test_no_leak_on_success(graphd: FakeGraphd, watch: Watch) -> None:
    with make_client(graphd, session_config=SessionConfig(space="test")) as client:
        watch.look(client)
        rs = client.execute("RETURN $x AS x", {"x": 1})
        watch.look(rs, rs.rows())
        assert client.execute_json("RETURN 1")["errors"][0]["code"] == 0
        with client.session() as session:
            watch.look(session, session.execute("RETURN 2"))
        assert client.ping()
        watch.client(client)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: client.execute("RETURN $i", {"i": i}), range(40)))
        watch.client(client)
    watch.look(client, client.stats())
    watch.look(ConnectionConfig(), SessionPoolConfig(), SessionConfig(space="test"))
    assert any("session" in t for t in watch.logs), "DEBUG records were not captured"
    watch.assert_clean()


def test_no_leak_from_an_unclosed_client_warning(graphd: FakeGraphd, watch: Watch) -> None:
    client = make_client(graphd)
    client.execute("RETURN 1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.__del__()
    assert caught and "unclosed" in str(caught[0].message)
    watch.texts += [str(c.message) for c in caught]
    client.close()
    watch.assert_clean()


# ---- wrong password -----------------------------------------------------------------------------


def test_no_leak_on_wrong_password(graphd: FakeGraphd, watch: Watch) -> None:
    # The right password must not leak either when the server is told a wrong one: both are secrets.
    # Both wrong passwords contain the right one, so showing either counts as a leak too.
    for password in (PASSWORD + "-typo", "typo-" + PASSWORD):
        with make_client(graphd, password=password) as client:
            for _ in range(5):
                watch.expect_error(NebulaError, lambda: client.execute("RETURN 1"))
            watch.client(client)
    watch.assert_clean()
    assert watch.errors == 10


# ---- timeouts -----------------------------------------------------------------------------------


def test_no_leak_on_request_pool_and_connect_timeouts(graphd: FakeGraphd, watch: Watch) -> None:
    graphd.script("RETURN 'slow'", delay=1.0)
    rule = graphd.script("RETURN 'held'", hold=True)
    cfg = ConnectionConfig(connect_timeout=1.0, request_timeout=0.2)
    pool_cfg = SessionPoolConfig(size=1, wait_timeout=0.2)
    with make_client(graphd, conn_config=cfg, session_pool_config=pool_cfg) as c:
        watch.expect_error(NebulaError, lambda: c.execute("RETURN 'slow'"))  # RequestTimeout
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(c.execute, "RETURN 'held'", timeout=5.0)
            graphd.wait_for(lambda s: s.statements_running == 1)
            watch.expect_error(NebulaError, lambda: c.execute("RETURN 1"))  # PoolTimeout
            rule.release()
            held.result(5)
        watch.client(c)
    # A listener that never answers: the version handshake times out (connect_timeout).
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        quick = ConnectionConfig(connect_timeout=0.3)
        watch.expect_error(NebulaError, lambda: make_client(address, conn_config=quick))
    finally:
        silent.close()
    assert watch.errors == 3
    watch.assert_clean()


def test_no_leak_when_graphd_dies_mid_statement_or_refuses(graphd: FakeGraphd, watch: Watch) -> None:
    graphd.script("RETURN 'drop'", drop="mid_reply")
    with make_client(graphd) as client:
        watch.expect_error(NebulaError, lambda: client.execute("RETURN 'drop'"))
        graphd.forget_sessions()
        client.execute("RETURN 1")  # renewed: authenticates again
        graphd.stop()
        watch.expect_error(NebulaError, lambda: client.execute("RETURN 1"))
        watch.expect_error(NebulaError, lambda: client.execute("RETURN 1"))
        watch.client(client)
        graphd.start()
    watch.assert_clean()


def test_no_leak_at_the_session_limit() -> None:
    with FakeGraphd(users={"root": PASSWORD}, max_sessions_per_ip_per_user=1) as server:
        with capture() as w:
            rule = server.script("RETURN 'held'", hold=True)
            with make_client(server) as a, make_client(server) as b, ThreadPoolExecutor(1) as pool:
                held = pool.submit(a.execute, "RETURN 'held'")
                server.wait_for(lambda s: s.statements_running == 1)
                exc = w.expect_error(NebulaError, lambda: b.execute("RETURN 1"))
                assert "threshold is 1" in str(exc)
                rule.release()
                held.result(5)
                w.client(b)
        w.assert_clean()


# ---- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d: Path = tmp_path_factory.mktemp("secrets-pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client.example")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    for i, blob in enumerate(client.cert_chain_pems):
        blob.write_to_path(str(d / "client.pem"), append=i > 0)
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    (d / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
    ))  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.configure_cert(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(ctx)
    return {"ca": str(d / "ca.pem"), "cert": str(d / "client.pem"), "key": str(d / "client.key"),
            "server_ctx": ctx, "other_ca": trustme.CA()}  # fmt: skip


def test_no_leak_over_tls(tls_files: dict[str, Any], watch: Watch, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    tls_files["other_ca"].cert_pem.write_to_path(str(other_ca))
    good = TLSConfig(ca_file=tls_files["ca"], cert_file=tls_files["cert"], key_file=tls_files["key"],
                     key_password=KEY_PASSWORD)  # fmt: skip
    # A wrong key password is refused when the TLSConfig is made (it loads the key there), and an
    # encrypted key without a password likewise (OpenSSL must not prompt for it).
    watch.expect_error(ValueError, lambda: TLSConfig(
        ca_file=tls_files["ca"], cert_file=tls_files["cert"], key_file=tls_files["key"],
        key_password=WRONG_KEY_PASSWORD,
    ))  # fmt: skip
    watch.expect_error(ValueError, lambda: TLSConfig(
        ca_file=tls_files["ca"], cert_file=tls_files["cert"], key_file=tls_files["key"],
    ))  # fmt: skip
    untrusted = TLSConfig(ca_file=str(other_ca), cert_file=tls_files["cert"], key_file=tls_files["key"],
                          key_password=KEY_PASSWORD)  # fmt: skip
    no_client_cert = TLSConfig(ca_file=tls_files["ca"])
    watch.look(good, untrusted, ConnectionConfig(tls=good))
    with FakeGraphd(users={"root": PASSWORD}, ssl_context=tls_files["server_ctx"]) as server:
        with make_client(server, conn_config=ConnectionConfig(connect_timeout=2.0, tls=good)) as client:
            assert client.execute("RETURN 'tls'").rows() == [("tls",)]
            watch.client(client)
        with make_client(server, password="wrong", conn_config=ConnectionConfig(tls=good)) as client:
            watch.expect_error(NebulaError, lambda: client.execute("RETURN 1"))
        for tls in (untrusted, no_client_cert):
            cfg = ConnectionConfig(connect_timeout=2.0, tls=tls)
            watch.expect_error(NebulaError, functools.partial(make_client, server, conn_config=cfg))
    assert watch.errors == 5
    assert any("is down" in t for t in watch.logs), "the WARNING records were not captured"
    watch.assert_clean()


# ---- passwords inside statements --------------------------------------------------------------

USER_PASSWORD = "Us3r-Pa55w0rd-2c9a"


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (f"CREATE USER bob WITH PASSWORD '{USER_PASSWORD}'", "CREATE USER bob WITH PASSWORD '***'"),
        (f'create user if not exists bob with password "{USER_PASSWORD}"',
         "create user if not exists bob with password '***'"),
        (f"ALTER USER bob WITH PASSWORD 'a\\'b{USER_PASSWORD}'", "ALTER USER bob WITH PASSWORD '***'"),
        (f'CHANGE PASSWORD bob FROM "old\\"{USER_PASSWORD}" TO "{USER_PASSWORD}"',
         "CHANGE PASSWORD bob FROM '***' TO '***'"),
        ("MATCH (v:player) RETURN v.name, 'x'", "MATCH (v:player) RETURN v.name, 'x'"),
    ],
)  # fmt: skip
def test_redact_statement(statement: str, expected: str) -> None:
    from nebula_sync.errors import redact_statement

    assert redact_statement(statement) == expected
    assert redact_statement(expected) == expected  # idempotent


def test_password_literals_in_statements_are_redacted(graphd: FakeGraphd, watch: Watch) -> None:
    create = f"CREATE USER bob WITH PASSWORD '{USER_PASSWORD}'"
    change = f'CHANGE PASSWORD bob FROM "{USER_PASSWORD}" TO "{USER_PASSWORD}x"'
    # exact-match rules: they fire only if graphd receives the statements with the real password
    created = graphd.script(create, columns=[], rows=[])
    changed = graphd.script(change, error=-1008, message="no permission")  # PermissionDenied
    with make_client(graphd) as client:
        rs = client.execute(create)
        assert rs.statement == "CREATE USER bob WITH PASSWORD '***'"
        watch.look(rs, rs.statement)
        err = watch.expect_error(NebulaError, lambda: client.execute(change))
        assert getattr(err, "statement", None) == "CHANGE PASSWORD bob FROM '***' TO '***'"
        assert "'***'" in str(err)
    assert created.hits == 1 and changed.hits == 1
    assert any("session" in t and "'***'" in t for t in watch.logs), "the DEBUG statement log was not seen"
    everything = watch.logs + watch.texts
    assert not [t for t in everything if USER_PASSWORD in t]
    watch.assert_clean()
