"""TLS against the fake graphd: verification on by default, CA files, host names, the explicit
opt-out, client certificates (mutual TLS), and plaintext/TLS mismatches failing fast.

Every certificate is made at test time with ``trustme``; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from nebula_sync import ConnectionConfig, NebulaClient, SessionPoolConfig, TLSConfig
from nebula_sync._connection import Connection
from nebula_sync.config import HostAddress
from nebula_sync.errors import ConnectionFailed, NebulaError
from nebula_sync.testing import FakeGraphd

CONNECT_TIMEOUT = 2.0
#: how much later than ``connect_timeout`` a failed connect may report (scheduling on a busy CI box)
MARGIN = 1.0


@attrs.frozen
class Pki:
    """Files of one test PKI: a CA, a server certificate, a client certificate, a foreign CA."""

    ca: trustme.CA
    ca_file: str
    server_cert: trustme.LeafCert
    client_cert_file: str  # certificate chain + key, one PEM
    client_key_file: str
    client_cert_only_file: str
    encrypted_client_key_file: str
    key_password: str
    other_ca_file: str  # a CA that signed nothing we serve
    other_client_file: str  # a client certificate from the foreign CA (cert + key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client.example")
    other = trustme.CA()
    other_client = other.issue_cert("client.example")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    other.cert_pem.write_to_path(str(d / "other-ca.pem"))
    client.private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    for i, blob in enumerate(client.cert_chain_pems):
        blob.write_to_path(str(d / "client-cert.pem"), append=i > 0)
    other_client.private_key_and_cert_chain_pem.write_to_path(str(d / "other-client.pem"))
    password = "k3y-pa55word-xyzzy"
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    )
    (d / "client-encrypted.key").write_bytes(encrypted)
    return Pki(
        ca=ca,
        ca_file=str(d / "ca.pem"),
        server_cert=server,
        client_cert_file=str(d / "client.pem"),
        client_key_file=str(d / "client.key"),
        client_cert_only_file=str(d / "client-cert.pem"),
        encrypted_client_key_file=str(d / "client-encrypted.key"),
        key_password=password,
        other_ca_file=str(d / "other-ca.pem"),
        other_client_file=str(d / "other-client.pem"),
    )


def server_context(cert: trustme.LeafCert, *, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def tls_graphd(pki: Pki) -> Iterator[FakeGraphd]:
    """A fake graphd serving TLS with a certificate for localhost and 127.0.0.1."""
    with FakeGraphd(ssl_context=server_context(pki.server_cert)) as server:
        yield server


@pytest.fixture
def mtls_graphd(pki: Pki) -> Iterator[FakeGraphd]:
    """A fake graphd that requires client certificates signed by the test CA."""
    with FakeGraphd(ssl_context=server_context(pki.server_cert, client_ca=pki.ca)) as server:
        yield server


def conn_config(tls: TLSConfig | None) -> ConnectionConfig:
    return ConnectionConfig(connect_timeout=CONNECT_TIMEOUT, request_timeout=5.0, tls=tls)


def client_for(server: FakeGraphd, tls: TLSConfig | None, host: str | None = None) -> NebulaClient:
    return NebulaClient(
        f"{host}:{server.port}" if host else server.address,
        "root",
        "nebula",
        session_pool_config=SessionPoolConfig(size=2, wait_timeout=5.0),
        conn_config=conn_config(tls),
    )


def open_connection(port: int, tls: TLSConfig | None, host: str = "127.0.0.1") -> Connection:
    conn = Connection(HostAddress(host, port), conn_config(tls))
    conn.open()
    return conn


def settled(server: FakeGraphd) -> Any:
    return server.wait_for(lambda s: s.sessions_open == 0 and s.connections_open == 0, 5.0)


def failure(fn: Callable[[], Any]) -> tuple[ConnectionFailed, float]:
    """Run ``fn``, expecting ``ConnectionFailed``; returns it and how long it took."""
    start = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        fn()
    return info.value, time.monotonic() - start


def chain(exc: BaseException) -> list[BaseException]:
    out = []
    seen: BaseException | None = exc
    while seen is not None and seen not in out:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


# ---- verified connections ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_verified_connection_works(tls_graphd: FakeGraphd, pki: Pki, host: str) -> None:
    with client_for(tls_graphd, TLSConfig(ca_file=pki.ca_file), host=host) as client:
        assert client.execute("RETURN $x * 2 AS y", {"x": 21}).rows() == [(42,)]
        assert client.ping()
    settled(tls_graphd)


def test_the_connection_really_is_tls_with_a_verified_peer(tls_graphd: FakeGraphd, pki: Pki) -> None:
    conn = open_connection(tls_graphd.port, TLSConfig(ca_file=pki.ca_file))
    try:
        sock = conn._sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        peer = sock.getpeercert()
        assert peer and ("DNS", "localhost") in peer["subjectAltName"]
        assert sock.context.verify_mode == ssl.CERT_REQUIRED and sock.context.check_hostname
    finally:
        conn.close()


def test_ssl_context_given_directly_is_used(tls_graphd: FakeGraphd, pki: Pki) -> None:
    ctx = ssl.create_default_context()
    pki.ca.configure_trust(ctx)
    with client_for(tls_graphd, TLSConfig(ssl_context=ctx)) as client:
        assert client.execute("RETURN 1").rows() == [(1,)]


def test_many_threads_over_tls_get_their_own_results(tls_graphd: FakeGraphd, pki: Pki) -> None:
    errors: list[str] = []
    with client_for(tls_graphd, TLSConfig(ca_file=pki.ca_file)) as client:

        def work(t: int) -> None:
            for i in range(50):
                row = client.execute("RETURN $t * 1000 + $i", {"t": t, "i": i}).rows()[0][0]
                if row != t * 1000 + i:
                    errors.append(f"{t}/{i}: {row}")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert not any(th.is_alive() for th in threads)
    assert errors == []
    assert tls_graphd.stats().statements == 300
    settled(tls_graphd)


# ---- verification failures ---------------------------------------------------------------------


def assert_clear_verify_error(exc: NebulaError, host: str, *fragments: str) -> None:
    text = str(exc)
    assert "TLS" in text, text
    assert "certificate verify failed" in text.lower() or "certificate_verify_failed" in text.lower(), text
    assert host in text, text
    for fragment in fragments:
        assert fragment in text, text


def test_untrusted_ca_is_rejected_with_a_clear_error(tls_graphd: FakeGraphd, pki: Pki) -> None:
    tls = TLSConfig(ca_file=pki.other_ca_file)
    exc, took = failure(lambda: open_connection(tls_graphd.port, tls))
    assert_clear_verify_error(exc, tls_graphd.address)
    assert any(isinstance(e, ssl.SSLCertVerificationError) for e in chain(exc))
    assert exc.host == tls_graphd.address
    assert took < CONNECT_TIMEOUT
    # Through the client: construction fails, naming the host and the reason.
    exc2, _ = failure(lambda: client_for(tls_graphd, tls))
    assert_clear_verify_error(exc2, tls_graphd.address)
    assert tls_graphd.stats().handshakes == 0  # nothing was sent over an unverified channel
    settled(tls_graphd)


def test_verification_is_on_by_default(tls_graphd: FakeGraphd) -> None:
    # TLSConfig() trusts only the system store, which does not know the test CA.
    exc, _ = failure(lambda: open_connection(tls_graphd.port, TLSConfig()))
    assert_clear_verify_error(exc, tls_graphd.address)
    assert tls_graphd.stats().handshakes == 0


def test_wrong_host_name_is_rejected(pki: Pki) -> None:
    other_name = pki.ca.issue_cert("graphd.example")
    with FakeGraphd(ssl_context=server_context(other_name)) as server:
        tls = TLSConfig(ca_file=pki.ca_file)
        exc, _ = failure(lambda: open_connection(server.port, tls))
        assert_clear_verify_error(exc, server.address, "127.0.0.1")
        assert "mismatch" in str(exc).lower() or "not valid for" in str(exc).lower(), str(exc)
        exc2, _ = failure(lambda: open_connection(server.port, tls, host="localhost"))
        assert_clear_verify_error(exc2, f"localhost:{server.port}", "localhost")
        # The name the certificate carries, given explicitly, is accepted.
        named = TLSConfig(ca_file=pki.ca_file, server_hostname="graphd.example")
        with client_for(server, named) as client:
            assert client.execute("RETURN 'named'").rows() == [("named",)]
        assert server.stats().handshakes == 1


def test_explicit_opt_out_accepts_any_certificate(pki: Pki) -> None:
    stranger = trustme.CA().issue_cert("graphd.example")  # untrusted CA *and* wrong name
    with FakeGraphd(ssl_context=server_context(stranger)) as server:
        with client_for(server, TLSConfig(verify=False)) as client:
            assert client.execute("RETURN 'unverified'").rows() == [("unverified",)]
        settled(server)
        # check_hostname=False alone still checks the chain.
        exc, _ = failure(lambda: open_connection(server.port, TLSConfig(check_hostname=False)))
        assert_clear_verify_error(exc, server.address)


# ---- mutual TLS --------------------------------------------------------------------------------


def test_client_certificate_is_accepted(mtls_graphd: FakeGraphd, pki: Pki) -> None:
    for tls in (
        TLSConfig(ca_file=pki.ca_file, cert_file=pki.client_cert_file),
        TLSConfig(ca_file=pki.ca_file, cert_file=pki.client_cert_only_file, key_file=pki.client_key_file),
        TLSConfig(ca_file=pki.ca_file, cert_file=pki.client_cert_only_file,
                  key_file=pki.encrypted_client_key_file, key_password=pki.key_password),
    ):  # fmt: skip
        with client_for(mtls_graphd, tls) as client:
            assert client.execute("RETURN 'mutual'").rows() == [("mutual",)]
    settled(mtls_graphd)


def test_missing_client_certificate_is_rejected(mtls_graphd: FakeGraphd, pki: Pki) -> None:
    tls = TLSConfig(ca_file=pki.ca_file)
    exc, took = failure(lambda: open_connection(mtls_graphd.port, tls))
    assert mtls_graphd.address in str(exc), str(exc)
    assert took < CONNECT_TIMEOUT + MARGIN
    exc2, _ = failure(lambda: client_for(mtls_graphd, tls))
    assert mtls_graphd.address in str(exc2)
    assert mtls_graphd.stats().authentications == 0
    settled(mtls_graphd)


def test_missing_client_certificate_error_says_tls_and_certificate(
    mtls_graphd: FakeGraphd, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The two outcomes race (about 50/50 on loopback). Make the losing ordering deterministic: the
    # client sends its first request only after the server has hung up on the handshake.
    original = Connection._handshake

    def after_server_hung_up(self: Connection, deadline: float | None) -> None:
        mtls_graphd.wait_for(lambda s: s.connections_open == 0, 5.0)
        original(self, deadline)

    monkeypatch.setattr(Connection, "_handshake", after_server_hung_up)
    exc, _ = failure(lambda: open_connection(mtls_graphd.port, TLSConfig(ca_file=pki.ca_file)))
    text = str(exc)
    assert mtls_graphd.address in text
    assert "TLS" in text and "certificate" in text.lower(), text


def test_client_certificate_from_a_foreign_ca_is_rejected(mtls_graphd: FakeGraphd, pki: Pki) -> None:
    tls = TLSConfig(ca_file=pki.ca_file, cert_file=pki.other_client_file)
    exc, took = failure(lambda: open_connection(mtls_graphd.port, tls))
    assert mtls_graphd.address in str(exc) and "TLS" in str(exc), str(exc)
    assert took < CONNECT_TIMEOUT + MARGIN
    assert mtls_graphd.stats().authentications == 0


def test_wrong_key_password_fails_without_showing_either_password(mtls_graphd: FakeGraphd, pki: Pki) -> None:
    with pytest.raises((NebulaError, ValueError)) as info:
        tls = TLSConfig(ca_file=pki.ca_file, cert_file=pki.client_cert_only_file,
                        key_file=pki.encrypted_client_key_file, key_password="not-the-password")  # fmt: skip
        assert "not-the-password" not in repr(tls)
        client_for(mtls_graphd, tls)
    texts = [str(e) for e in chain(info.value)] + [repr(e.args) for e in chain(info.value)]
    assert not any("not-the-password" in t or pki.key_password in t for t in texts)
    assert mtls_graphd.stats().authentications == 0


def test_wrong_key_password_is_a_clear_local_error_before_connecting(
    mtls_graphd: FakeGraphd, pki: Pki
) -> None:
    with pytest.raises((NebulaError, ValueError)) as info:
        tls = TLSConfig(ca_file=pki.ca_file, cert_file=pki.client_cert_only_file,
                        key_file=pki.encrypted_client_key_file, key_password="not-the-password")  # fmt: skip
        client_for(mtls_graphd, tls)
    text = str(info.value)
    assert pki.encrypted_client_key_file in text and "password" in text, text
    assert mtls_graphd.stats().connections_accepted == 0


def test_missing_ca_file_is_named(tls_graphd: FakeGraphd, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-ca.pem")
    with pytest.raises((NebulaError, ValueError, OSError)) as info:
        client_for(tls_graphd, TLSConfig(ca_file=missing))
    assert missing in str(info.value), str(info.value)


# Run in a child that has a terminal (a pty as its controlling tty), like a script run by hand.
_PROMPT_CHILD = """
import fcntl, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
from nebula_sync import ConnectionConfig, NebulaClient, TLSConfig
from nebula_sync.errors import NebulaError
try:
    tls = TLSConfig(ca_file=sys.argv[2], cert_file=sys.argv[3], key_file=sys.argv[4])
    NebulaClient("127.0.0.1:" + sys.argv[1], "root", "x",
                 conn_config=ConnectionConfig(connect_timeout=1.0, tls=tls))
except (NebulaError, ValueError) as exc:
    print("ERROR:", type(exc).__name__, flush=True)
print("DONE", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux pty")
def test_encrypted_key_without_password_never_prompts(tls_graphd: FakeGraphd, pki: Pki) -> None:
    import os
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", _PROMPT_CHILD, str(tls_graphd.port), pki.ca_file,
         pki.client_cert_only_file, pki.encrypted_client_key_file],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and b"DONE" not in out and b"pass phrase" not in out:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.kill()
        proc.wait(10)
        os.close(master)
    assert b"pass phrase" not in out, out
    assert b"DONE" in out, out


# ---- plaintext / TLS mismatches ----------------------------------------------------------------


def test_plaintext_client_against_tls_server_fails_fast(tls_graphd: FakeGraphd) -> None:
    exc, took = failure(lambda: open_connection(tls_graphd.port, None))
    assert tls_graphd.address in str(exc)
    assert took < CONNECT_TIMEOUT + MARGIN
    exc2, took2 = failure(lambda: client_for(tls_graphd, None))
    assert took2 < CONNECT_TIMEOUT + MARGIN
    assert tls_graphd.address in str(exc2)
    assert tls_graphd.stats().handshakes == 0
    settled(tls_graphd)


def test_tls_client_against_plaintext_server_fails_fast(fake_graphd: FakeGraphd, pki: Pki) -> None:
    tls = TLSConfig(ca_file=pki.ca_file)
    exc, took = failure(lambda: open_connection(fake_graphd.port, tls))
    assert fake_graphd.address in str(exc), str(exc)
    assert took < CONNECT_TIMEOUT + MARGIN
    exc2, took2 = failure(lambda: client_for(fake_graphd, tls))
    assert took2 < CONNECT_TIMEOUT + MARGIN
    assert fake_graphd.stats().handshakes == 0
    settled(fake_graphd)


def test_tls_client_against_plaintext_server_error_says_tls(fake_graphd: FakeGraphd, pki: Pki) -> None:
    exc, _ = failure(lambda: open_connection(fake_graphd.port, TLSConfig(ca_file=pki.ca_file)))
    assert "TLS" in str(exc), str(exc)


def test_tls_handshake_with_a_silent_server_is_bounded_by_connect_timeout(pki: Pki) -> None:
    # A listener that completes TCP connects (the kernel does) but never says a word.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        tls = TLSConfig(ca_file=pki.ca_file)
        cfg = ConnectionConfig(connect_timeout=0.5, request_timeout=5.0, tls=tls)
        start = time.monotonic()
        with pytest.raises(ConnectionFailed) as info:
            Connection(HostAddress("127.0.0.1", port), cfg).open()
        took = time.monotonic() - start
        assert 0.4 <= took < 0.5 + MARGIN, took
        assert f"127.0.0.1:{port}" in str(info.value)
    finally:
        listener.close()


# ---- the CLI -----------------------------------------------------------------------------------


def test_cli_serves_tls(pki: Pki, tmp_path: Path) -> None:
    cert = tmp_path / "server.pem"
    pki.server_cert.private_key_and_cert_chain_pem.write_to_path(str(cert))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nebula_sync.testing", "--port", "0", "--tls-cert", str(cert),
         "--tls-client-ca", pki.ca_file],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake graphd listening on "), (line, proc.stderr and proc.stderr.read())
        address = line.split()[-1]
        tls = TLSConfig(ca_file=pki.ca_file, cert_file=pki.client_cert_file)
        with NebulaClient(address, "root", "x", conn_config=conn_config(tls)) as client:
            assert client.execute("RETURN 'cli'").rows() == [("cli",)]
        port = int(address.rsplit(":", 1)[1])
        failure(lambda: open_connection(port, TLSConfig(ca_file=pki.ca_file)))  # no client cert
    finally:
        proc.terminate()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_rejects_tls_flags_without_a_certificate(pki: Pki) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nebula_sync.testing", "--port", "0", "--tls-client-ca", pki.ca_file],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--tls-cert" in proc.stderr


def test_ctrl_c_during_the_tls_handshake_closes_the_socket(
    tls_graphd: FakeGraphd, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped: list[socket.socket] = []

    def interrupted(self: ssl.SSLContext, sock: socket.socket, **kw: Any) -> ssl.SSLSocket:
        wrapped.append(sock)
        raise KeyboardInterrupt

    monkeypatch.setattr(ssl.SSLContext, "wrap_socket", interrupted)
    conn = Connection(HostAddress("127.0.0.1", tls_graphd.port), conn_config(TLSConfig(ca_file=pki.ca_file)))
    with pytest.raises(KeyboardInterrupt):
        conn.open()
    assert len(wrapped) == 1 and wrapped[0].fileno() == -1  # closed, not left to the GC
