"""Shared pytest fixtures: fake graphd servers and a raw Thrift client to poke at them.

* ``fake_graphd`` — a started :class:`~nebula_sync.testing.FakeGraphd` on 127.0.0.1 (free port),
  stopped after the test.
* ``fake_graphd_factory`` — ``factory(**kwargs)`` starts another server (same keyword arguments as
  ``FakeGraphd``); every server it made is stopped after the test. Several calls give several
  "hosts" on 127.0.0.1 with different ports.
* ``fake_graphd_cluster`` — three started servers (a list), for multi-host tests.
* ``raw_client`` — ``raw_client(server, framing="theader", protocol="binary")`` opens a
  :class:`RawClient`: hand-built frames over a real socket, closed after the test.
* ``serve`` — ``serve(handler=None, **kw)`` starts a scripted :class:`rawserver.RawServer`; all
  are stopped after the test, which fails if a handler raised.
* ``conns`` — a list to put :class:`~nebula_sync._connection.Connection` objects in; each is
  closed after the test.
"""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Iterator
from typing import Any, Callable, Optional

import attrs
import pytest
from rawserver import RawServer
from thrift.Thrift import TApplicationException

from nebula_sync._connection import Connection
from nebula_sync._thrift import service, ttypes, wire
from nebula_sync.testing import FakeGraphd, compact_message, parse_compact_message
from nebula_sync.testing._model import theader_frame


@attrs.frozen
class RawReply:
    """One decoded reply frame."""

    framing: wire.Framing
    proto_id: int
    header_seqid: int
    flags: int
    transforms: tuple[int, ...]
    name: str
    mtype: int
    seqid: int
    body: Any  # the result struct, or a TApplicationException for mtype EXCEPTION

    @property
    def success(self) -> Any:
        """The result's ``success`` field (raises the exception of an EXCEPTION reply)."""
        if isinstance(self.body, TApplicationException):
            raise self.body
        return self.body.success


class RawClient:
    """A minimal graphd client that builds every frame by hand. For tests only; one thread.

    ``framing`` is ``"theader"`` or ``"framed"``; ``protocol`` is ``"binary"`` or ``"compact"``
    (fbthrift compact v2, encoded by :func:`nebula_sync.testing.compact_message`).
    """

    def __init__(self, host: str, port: int, *, framing: str = "theader", protocol: str = "binary",
                 timeout: float = 10.0, source_ip: Optional[str] = None,
                 transforms: tuple[int, ...] = ()) -> None:  # fmt: skip
        assert framing in ("theader", "framed") and protocol in ("binary", "compact")
        self.framing = framing
        self.protocol = protocol
        self.transforms = transforms
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.settimeout(timeout)
        if source_ip is not None:
            self.sock.bind((source_ip, 0))
        try:
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self.seqid = 0

    def close(self) -> None:
        self.sock.close()

    # -- encoding ------------------------------------------------------------------------

    def message(self, name: str, args: Any, *, seqid: int, mtype: int = wire.CALL) -> bytes:
        if self.protocol == "compact":
            return compact_message(name, mtype, seqid, args)
        body = wire.encode_struct(args, [type(args), type(args).thrift_spec])
        return wire.binary_message(name.encode(), mtype, seqid, body)

    def frame(self, payload: bytes, *, header_seqid: int = 0) -> bytes:
        if self.framing == "framed":
            return wire.framed_frame(payload)
        proto = wire.PROTO_COMPACT if self.protocol == "compact" else wire.PROTO_BINARY
        return theader_frame(payload, header_seqid, proto, 0, self.transforms)

    def send(self, name: str, args: Any, *, seqid: Optional[int] = None, mtype: int = wire.CALL,
             header_seqid: Optional[int] = None) -> int:  # fmt: skip
        """Send one request; returns the seqid used."""
        if seqid is None:
            self.seqid += 1
            seqid = self.seqid
        payload = self.message(name, args, seqid=seqid, mtype=mtype)
        self.sock.sendall(self.frame(payload, header_seqid=seqid if header_seqid is None else header_seqid))
        return seqid

    # -- decoding ------------------------------------------------------------------------

    def read_exact(self, size: int) -> bytes:
        buf = b""
        while len(buf) < size:
            chunk = self.sock.recv(size - len(buf))
            if not chunk:
                raise EOFError(f"connection closed after {len(buf)} of {size} bytes")
            buf += chunk
        return buf

    def recv_frame(self) -> bytes:
        (length,) = struct.unpack("!I", self.read_exact(4))
        return self.read_exact(length)

    def recv(self, method: str) -> RawReply:
        """Read and decode the reply to ``method``."""
        frame = self.recv_frame()
        info = wire.parse_frame(frame)
        payload = frame[info.offset :]
        for tid in info.transforms:
            assert tid == 1
            payload = zlib.decompress(payload)
        result_cls = service.METHODS[method][1]
        if info.proto_id == wire.PROTO_COMPACT:
            name, mtype, seqid, body = parse_compact_message(payload, result_cls)
        else:
            name, mtype, seqid, pos = wire.parse_message_header(payload, 0)
            if mtype == wire.EXCEPTION:
                body = wire.decode_application_exception(payload, pos)
            else:
                body = wire.decode_struct(payload, pos, [result_cls, result_cls.thrift_spec])
        return RawReply(info.framing, info.proto_id, info.seqid, info.flags, info.transforms,
                        name, mtype, seqid, body)  # fmt: skip

    def call(self, name: str, args: Any, **kwargs: Any) -> RawReply:
        self.send(name, args, **kwargs)
        return self.recv(name)

    # -- the GraphService calls ----------------------------------------------------------

    def verify(self, version: bytes = b"3.0.0") -> ttypes.VerifyClientVersionResp:
        req = ttypes.VerifyClientVersionReq(version=version)
        reply = self.call("verifyClientVersion", service.VerifyClientVersionArgs(req=req))
        resp: ttypes.VerifyClientVersionResp = reply.success
        return resp

    def authenticate(self, user: str = "root", password: str = "nebula") -> ttypes.AuthResponse:
        args = service.AuthenticateArgs(username=user.encode(), password=password.encode())
        resp: ttypes.AuthResponse = self.call("authenticate", args).success
        return resp

    def session(self, user: str = "root", password: str = "nebula") -> int:
        """Authenticate and return the new session id (asserting success)."""
        resp = self.authenticate(user, password)
        assert resp.error_code == 0, resp
        assert resp.session_id is not None
        return resp.session_id

    def execute(self, session_id: int, stmt: str, params: Optional[dict[str, ttypes.Value]] = None,
                *, method: str = "executeWithParameter") -> Any:  # fmt: skip
        """Run ``stmt``; returns the ``ExecutionResponse`` (or JSON bytes for the JSON methods)."""
        if method in ("execute", "executeJson"):
            args: Any = service.ExecuteArgs(sessionId=session_id, stmt=stmt.encode())
        else:
            pmap = {k.encode(): v for k, v in (params or {}).items()}
            args = service.ExecuteWithParameterArgs(sessionId=session_id, stmt=stmt.encode(),
                                                    parameterMap=pmap)  # fmt: skip
        return self.call(method, args).success

    def signout(self, session_id: int, *, mtype: int = wire.ONEWAY) -> None:
        self.send("signout", service.SignoutArgs(sessionId=session_id), mtype=mtype)


@pytest.fixture
def fake_graphd_factory() -> Iterator[Callable[..., FakeGraphd]]:
    """``factory(**kwargs)`` -> a started FakeGraphd on 127.0.0.1; all are stopped afterwards."""
    servers: list[FakeGraphd] = []

    def make(**kwargs: Any) -> FakeGraphd:
        kwargs.setdefault("host", "127.0.0.1")
        server = FakeGraphd(**kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fake_graphd(fake_graphd_factory: Callable[..., FakeGraphd]) -> FakeGraphd:
    """A started FakeGraphd on 127.0.0.1 with default settings (no authentication)."""
    return fake_graphd_factory()


@pytest.fixture
def fake_graphd_cluster(fake_graphd_factory: Callable[..., FakeGraphd]) -> list[FakeGraphd]:
    """Three started FakeGraphd servers on 127.0.0.1 (different ports)."""
    return [fake_graphd_factory() for _ in range(3)]


@pytest.fixture
def raw_client() -> Iterator[Callable[..., RawClient]]:
    """``raw_client(server_or_(host, port), framing="theader", protocol="binary", **kw)`` -> a
    connected RawClient, closed after the test."""
    clients: list[RawClient] = []

    def make(server: FakeGraphd | tuple[str, int], **kwargs: Any) -> RawClient:
        host, port = (server.host, server.port) if isinstance(server, FakeGraphd) else server
        client = RawClient(host, port, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    """Start raw servers; stop them and check their handlers raised nothing unexpected."""
    servers: list[RawServer] = []

    def start(handler: Any = None, **kw: Any) -> RawServer:
        server = RawServer(handler, **kw).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        assert not server.errors, server.errors


@pytest.fixture
def conns() -> Iterator[list[Connection]]:
    """Connections to close at the end (a test that fails half-way must not leak sockets)."""
    made: list[Connection] = []
    yield made
    for conn in made:
        conn.close()
