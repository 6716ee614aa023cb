"""A tiny scripted raw TCP server for tests: real loopback sockets, bytes under the test's control.

:class:`RawServer` accepts connections and runs, on a thread per connection, either a handler
``fn(conn, server)`` or a *script*: a list of steps (:class:`ReadFrame`, :class:`Send`,
:class:`Reply`, :class:`WaitFor`, :class:`Close`, :class:`Reset`, ...). The reply builders below
make valid graphd replies with :mod:`nebula_sync._thrift.wire` (echoing the request's seqid, method
name and framing), so a :class:`~nebula_sync._connection.Connection` handshake passes and the test
then scripts exactly the bytes of the next reply.

Every frame the server reads is parsed into a :class:`Request` and kept in :attr:`RawServer.requests`
so tests can check the bytes the client wrote.

Bounded and stoppable: at most ``max_connections`` connections, a receive timeout on every socket as
a safety net, :meth:`RawServer.stop` wakes every blocked read (``shutdown``) and every
:class:`WaitFor` (it sets every named event), then joins the threads with a bound.
All public methods are thread-safe.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import attrs
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TApplicationException
from thrift.transport.TTransport import TMemoryBuffer

from nebula_sync._thrift import service, ttypes, wire
from nebula_sync.config import HostAddress
from nebula_sync.errors import ProtocolError

__all__ = [
    "Close",
    "ExpectEof",
    "Handshake",
    "RawServer",
    "ReadFrame",
    "Reply",
    "Request",
    "Reset",
    "Send",
    "Serve",
    "Sleep",
    "WaitFor",
    "auth_reply",
    "default_reply",
    "endless_body",
    "exception_reply",
    "execute_reply",
    "fake_request",
    "json_reply",
    "parse_request",
    "read_http_head",
    "recv_exactly",
    "reply_frame",
    "rst_close",
    "theader",
    "trickling_body",
    "verify_ok",
    "verify_rejected",
]

_LINGER_RST = struct.pack("ii", 1, 0)


# ---- requests --------------------------------------------------------------------------------


@attrs.frozen
class Request:
    """One request frame as the server read it, parsed (immutable)."""

    #: the whole frame, including its 4-byte length
    frame: bytes
    framing: wire.Framing
    #: THeader fields (``None`` / 0 for framed)
    header_seqid: Optional[int]
    flags: int
    header_words: int
    proto_id: int
    transforms: tuple[int, ...]
    #: envelope
    method: str
    mtype: int
    seqid: int
    #: where the args struct starts in :attr:`frame`
    body_offset: int
    #: index of the connection (0-based, in accept order) it came on
    conn_index: int = 0

    def args(self) -> Any:
        """The decoded args struct (``service.*Args``)."""
        cls = service.METHODS[self.method][0]
        return wire.decode_struct(self.frame, self.body_offset, [cls, cls.thrift_spec])


def fake_request(method: str = "executeWithParameter", seqid: int = 2,
                 framing: wire.Framing = wire.Framing.THEADER) -> Request:  # fmt: skip
    """A stand-in request, for building replies ahead of time (the reply builders only use its
    method, seqid and framing)."""
    return Request(
        frame=b"", framing=framing, header_seqid=seqid, flags=0, header_words=1, proto_id=0,
        transforms=(), method=method, mtype=wire.CALL, seqid=seqid, body_offset=0,
    )  # fmt: skip


def parse_request(frame: bytes, conn_index: int = 0) -> Request:
    """Parse a request frame (with its 4-byte length prefix)."""
    info = wire.parse_frame(frame, 4)
    words = 0
    header_seqid: int | None = None
    if info.framing is wire.Framing.THEADER:
        words = struct.unpack_from("!H", frame, 12)[0]
        header_seqid = info.seqid
    method, mtype, seqid, body = wire.parse_message_header(frame, info.offset)
    return Request(
        frame=bytes(frame), framing=info.framing, header_seqid=header_seqid, flags=info.flags,
        header_words=words, proto_id=info.proto_id, transforms=info.transforms, method=method,
        mtype=mtype, seqid=seqid, body_offset=body, conn_index=conn_index,
    )  # fmt: skip


# ---- reply builders --------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def theader(payload: bytes, seqid: int, proto_id: int = wire.PROTO_BINARY, transforms: Sequence[int] = (),
            flags: int = 0, info: bytes = b"") -> bytes:  # fmt: skip
    """A THeader frame with any protocol id, transforms and raw info-header bytes."""
    header = _varint(proto_id) + _varint(len(transforms)) + b"".join(_varint(t) for t in transforms) + info
    header += b"\0" * (-len(header) % 4)
    length = 10 + len(header) + len(payload)
    return struct.pack("!IHHIH", length, wire.THEADER_MAGIC, flags, seqid & 0xFFFFFFFF, len(header) // 4) + (
        header + payload
    )


def _encode(result: Any) -> bytes:
    if isinstance(result, (bytes, bytearray)):
        return bytes(result)
    cls = type(result)
    return wire.encode_struct(result, [cls, cls.thrift_spec])


def reply_frame(
    req: Request,
    result: Any,
    *,
    mtype: int = wire.REPLY,
    method: str | None = None,
    seqid: int | None = None,
    framing: wire.Framing | None = None,
    proto_id: int = wire.PROTO_BINARY,
    transforms: Sequence[int] = (),
    header_seqid: int | None = None,
) -> bytes:
    """A reply to ``req``: ``result`` (a struct, or raw body bytes) in a strict binary envelope that
    echoes the request's method name and seqid, in the request's framing. Every echoed field can be
    overridden to build a wrong reply."""
    name = (req.method if method is None else method).encode()
    sid = req.seqid if seqid is None else seqid
    msg = wire.binary_message(name, mtype, sid, _encode(result))
    if (req.framing if framing is None else framing) is wire.Framing.FRAMED:
        return wire.framed_frame(msg)
    return theader(msg, sid if header_seqid is None else header_seqid, proto_id, transforms)


def verify_ok(req: Request) -> bytes:
    """A successful ``verifyClientVersion`` reply."""
    return reply_frame(
        req, service.VerifyClientVersionResult(success=ttypes.VerifyClientVersionResp(error_code=0))
    )


def verify_rejected(
    req: Request, code: int = -3061, msg: bytes = b"Graph client handshakeKey(x) is not accepted."
) -> bytes:
    """A ``verifyClientVersion`` rejection (default ``E_CLIENT_SERVER_INCOMPATIBLE``)."""
    resp = ttypes.VerifyClientVersionResp(error_code=code, error_msg=msg)
    return reply_frame(req, service.VerifyClientVersionResult(success=resp))


def auth_reply(req: Request, session_id: int = 42, code: int = 0, msg: bytes | None = None) -> bytes:
    """An ``authenticate`` reply."""
    resp = ttypes.AuthResponse(
        error_code=code, error_msg=msg, session_id=session_id if code == 0 else None,
        time_zone_offset_seconds=0, time_zone_name=b"UTC",
    )  # fmt: skip
    return reply_frame(req, service.AuthenticateResult(success=resp))


def execute_reply(req: Request, resp: ttypes.ExecutionResponse | None = None, **kw: Any) -> bytes:
    """An ``execute`` / ``executeWithParameter`` reply (default: success, no data)."""
    if resp is None:
        resp = ttypes.ExecutionResponse(error_code=0, latency_in_us=kw.pop("latency_in_us", 7), **kw)
    return reply_frame(req, service.ExecuteResult(success=resp))


def json_reply(req: Request, body: bytes = b'{"errors":[{"code":0}],"results":[]}') -> bytes:
    """An ``executeJson*`` reply."""
    return reply_frame(req, service.ExecuteJsonResult(success=body))


def exception_reply(
    req: Request, message: str = "boom", kind: int = TApplicationException.UNKNOWN_METHOD
) -> bytes:
    """A ``TApplicationException`` reply (message type EXCEPTION)."""
    buf = TMemoryBuffer()
    TApplicationException(kind, message).write(TBinaryProtocol(buf))
    return reply_frame(req, buf.getvalue(), mtype=wire.EXCEPTION)


def default_reply(req: Request) -> bytes | None:
    """A well-formed success reply for any ``GraphService`` method (``None`` for oneway ``signout``)."""
    if req.method == "verifyClientVersion":
        return verify_ok(req)
    if req.method == "authenticate":
        return auth_reply(req)
    if req.method == "signout":
        return None
    if req.method in ("executeJson", "executeJsonWithParameter"):
        return json_reply(req)
    return execute_reply(req)


# ---- socket helpers --------------------------------------------------------------------------


def recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    """Read exactly ``n`` bytes; ``None`` if the peer closed first (partial bytes are discarded)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(65536, n - len(buf)))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def rst_close(conn: socket.socket) -> None:
    """Close with ``SO_LINGER`` 0: the peer gets an RST."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    finally:
        conn.close()


# ---- HTTP handlers (for the web client's tests) ------------------------------------------------


def read_http_head(conn: socket.socket) -> bool:
    """Read a request's head (a raw server's handler); ``False`` if the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    return True


def endless_body(conn: socket.socket, server: RawServer) -> None:
    """Answer 200 with a chunked body sent as fast as the client reads it: 64 MiB, then hang up."""
    if not read_http_head(conn):
        return
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * (64 << 10)
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    for _ in range(1024):
        if server.stopping.is_set():
            return
        conn.sendall(chunk)


def paced_body(conn: socket.socket, server: RawServer, head: bytes, piece: bytes, count: int) -> None:
    """After the request's head, send ``head``, then ``piece`` every 50 ms, ``count`` times (or
    until the server stops), then hang up."""
    if not read_http_head(conn):
        return
    conn.sendall(head)
    for _ in range(count):
        if server.stopping.wait(0.05):  # the server's pace, not a synchronisation
            return
        conn.sendall(piece)


def trickling_body(conn: socket.socket, server: RawServer) -> None:
    """Answer 200 with a 100,000-byte body sent a byte every 50 ms: for 6 s, then hang up."""
    paced_body(conn, server, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b" ", 120)


# ---- script steps ----------------------------------------------------------------------------


class _Ctx:
    """Per-connection script state."""

    __slots__ = ("index", "last")

    def __init__(self, index: int) -> None:
        self.index = index
        self.last: Request | None = None


class _EndScript(Exception):
    """The script cannot go on (the peer closed)."""


@attrs.frozen
class ReadFrame:
    """Read one request frame (it becomes "the request" for :class:`Reply`). Ends the script at EOF."""

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        req = server.read_request(conn, ctx.index)
        if req is None:
            raise _EndScript()
        ctx.last = req


@attrs.frozen
class Send:
    """Send these bytes."""

    data: bytes

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        conn.sendall(self.data)


@attrs.frozen
class Reply:
    """Send ``build(last request)`` (e.g. :func:`verify_ok`, or a lambda making a wrong reply)."""

    build: Callable[[Request], bytes]

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        if ctx.last is None:
            raise AssertionError("Reply step before any ReadFrame")
        conn.sendall(self.build(ctx.last))


@attrs.frozen
class Handshake:
    """Read the ``verifyClientVersion`` request and answer it (default: success)."""

    build: Callable[[Request], bytes] = verify_ok

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        ReadFrame().run(conn, server, ctx)
        assert ctx.last is not None
        if ctx.last.method != "verifyClientVersion":
            raise AssertionError(f"expected verifyClientVersion first, got {ctx.last.method!r}")
        conn.sendall(self.build(ctx.last))


@attrs.frozen
class WaitFor:
    """Block until the server's named event is set (or the server stops, which ends the script)."""

    name: str
    timeout: float = 10.0

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        if not server.wait(self.name, self.timeout):
            raise _EndScript()


@attrs.frozen
class Sleep:
    """A server-side delay (an injected fault); interrupted by :meth:`RawServer.stop`."""

    seconds: float

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        if server.stopping.wait(self.seconds):
            raise _EndScript()


@attrs.frozen
class Close:
    """Close the connection cleanly (FIN)."""

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        raise _EndScript()


@attrs.frozen
class Reset:
    """Reset the connection (RST)."""

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        raise _EndScript()


@attrs.frozen
class ExpectEof:
    """Read until the client closes; counts in :attr:`RawServer.eofs` (bytes read are kept as
    requests when they form frames)."""

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        while True:
            try:
                req = server.read_request(conn, ctx.index)
            except (OSError, ProtocolError):
                req = None
            if req is None:
                server._note(eofs=1)
                raise _EndScript()


@attrs.frozen
class Serve:
    """Answer every request with :func:`default_reply` (or ``build``) until the client closes."""

    build: Callable[[Request], Optional[bytes]] = default_reply

    def run(self, conn: socket.socket, server: RawServer, ctx: _Ctx) -> None:
        while True:
            req = server.read_request(conn, ctx.index)
            if req is None:
                server._note(eofs=1)
                raise _EndScript()
            ctx.last = req
            out = self.build(req)
            if out is not None:
                conn.sendall(out)


Step = Union[ReadFrame, Send, Reply, Handshake, WaitFor, Sleep, Close, Reset, ExpectEof, Serve]
Handler = Union[Callable[[socket.socket, "RawServer"], None], Sequence[Step]]


# ---- the server ------------------------------------------------------------------------------


class RawServer:
    """A scripted TCP server on loopback.

    :param handler: for every connection, a callable ``fn(conn, server)`` or a list of steps.
    :param handlers: per connection instead (connection *i* gets ``handlers[i]``, the last one
        serves the rest).
    :param max_connections: connections served at once; more are closed at once.
    :param recv_timeout: safety net on every server socket read, seconds.
    :param max_frame: largest request frame read.
    :param join_timeout: bound on joining threads in :meth:`stop`.

    Counters (:attr:`accepted`, :attr:`eofs`, :attr:`requests`) change under a condition that
    :meth:`wait_until` waits on. Exceptions from handlers go to :attr:`errors` (``OSError`` from a
    peer that went away goes to :attr:`io_errors`). Thread-safe.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        handlers: Sequence[Handler] | None = None,
        host: str = "127.0.0.1",
        max_connections: int = 32,
        recv_timeout: float = 10.0,
        max_frame: int = 16 << 20,
        join_timeout: float = 5.0,
    ) -> None:
        if (handler is None) == (handlers is None):
            raise ValueError("pass handler or handlers")
        self._handlers: list[Handler] = [handler] if handler is not None else list(handlers or ())
        self.host = host
        self.max_connections = max_connections
        self.recv_timeout = recv_timeout
        self.max_frame = max_frame
        self.join_timeout = join_timeout
        #: set by :meth:`stop`; handlers may wait on it
        self.stopping = threading.Event()
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.io_errors: list[OSError] = []
        self.accepted = 0
        self.eofs = 0
        # _lock/_cond guard the counters, lists, events and the live-connection set. Reentrant so
        # that wait_until() predicates (run with the lock held) may use the locked properties.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._events: dict[str, threading.Event] = {}
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``"host:port"``."""
        return f"{self.host}:{self.port}"

    @property
    def host_address(self) -> HostAddress:
        """The address as a :class:`HostAddress` for ``Connection``."""
        return HostAddress(self.host, self.port)

    def __enter__(self) -> RawServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RawServer:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((self.host, 0))
        lst.listen(16)
        self.port = lst.getsockname()[1]
        self._listener = lst
        self._wake_r, self._wake_w = socket.socketpair()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"RawServer-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake every handler (reads, :class:`WaitFor`), join threads (bounded)."""
        with self._cond:
            if self.stopping.is_set():
                return
            self.stopping.set()
            events = list(self._events.values())
            conns = list(self._conns)
            self._cond.notify_all()
        for ev in events:  # WaitFor steps check `stopping` after waking
            ev.set()
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked in recv
            except OSError:
                pass
        deadline = time.monotonic() + self.join_timeout
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        alive = [t.name for t in threads if t.is_alive()]
        if alive or (self._accept_thread is not None and self._accept_thread.is_alive()):
            raise RuntimeError(f"RawServer threads did not stop: {alive}")

    # ---- helpers for handlers and tests ------------------------------------------------------

    @property
    def active(self) -> int:
        """Connections whose handler is still running."""
        with self._lock:
            return len(self._conns)

    def event(self, name: str) -> threading.Event:
        """The named event (created on first use); :meth:`stop` sets all of them."""
        with self._lock:
            ev = self._events.get(name)
            if ev is None:
                ev = self._events[name] = threading.Event()
                if self.stopping.is_set():
                    ev.set()
            return ev

    def wait(self, name: str, timeout: float | None = 10.0) -> bool:
        """Wait for the named event; ``False`` on timeout or when the server stops."""
        ok = self.event(name).wait(timeout)
        return ok and not self.stopping.is_set()

    def wait_until(self, predicate: Callable[[RawServer], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate(server)`` holds (checked on every counter change)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("RawServer condition not met in time")
                self._cond.wait(left)

    def read_frame(self, conn: socket.socket) -> bytes | None:
        """Read one length-prefixed frame (returned with its prefix); ``None`` at EOF."""
        head = recv_exactly(conn, 4)
        if head is None:
            return None
        (length,) = struct.unpack("!I", head)
        if length > self.max_frame:
            raise AssertionError(f"request frame of {length} bytes is too large")
        body = recv_exactly(conn, length)
        return None if body is None else head + body

    def read_request(self, conn: socket.socket, conn_index: int = 0) -> Request | None:
        """Read and parse one request frame, recording it in :attr:`requests`; ``None`` at EOF."""
        frame = self.read_frame(conn)
        if frame is None:
            return None
        req = parse_request(frame, conn_index)
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()
        return req

    def _note(self, **deltas: int) -> None:
        with self._cond:
            for key, value in deltas.items():
                setattr(self, key, getattr(self, key) + value)
            self._cond.notify_all()

    # ---- threads -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        lst, wake = self._listener, self._wake_r
        assert lst is not None and wake is not None
        with selectors.DefaultSelector() as sel:
            sel.register(lst, selectors.EVENT_READ)
            sel.register(wake, selectors.EVENT_READ)
            while not self.stopping.is_set():
                ready = [key.fileobj for key, _ in sel.select()]
                if self.stopping.is_set() or lst not in ready:
                    continue
                try:
                    conn, _ = lst.accept()
                except OSError:
                    continue
                with self._cond:
                    index = self.accepted
                    too_many = len(self._conns) >= self.max_connections or self.stopping.is_set()
                    if not too_many:
                        self.accepted += 1
                        self._conns.add(conn)
                        self._cond.notify_all()
                if too_many:
                    rst_close(conn)
                    continue
                conn.settimeout(self.recv_timeout)
                handler = self._handlers[min(index, len(self._handlers) - 1)]
                t = threading.Thread(
                    target=self._serve,
                    args=(conn, handler, index),
                    name=f"RawServer-{self.port}-{index}",
                    daemon=True,
                )
                with self._lock:
                    self._threads.append(t)
                t.start()

    def _serve(self, conn: socket.socket, handler: Handler, index: int) -> None:
        try:
            if callable(handler):
                handler(conn, self)
            else:
                ctx = _Ctx(index)
                for step in handler:
                    step.run(conn, self, ctx)
        except _EndScript:
            pass
        except OSError as exc:
            with self._lock:
                self.io_errors.append(exc)
        except BaseException as exc:
            with self._lock:
                self.errors.append(exc)
        finally:
            with self._cond:
                self._conns.discard(conn)
                self._cond.notify_all()
            try:
                conn.close()
            except OSError:
                pass
