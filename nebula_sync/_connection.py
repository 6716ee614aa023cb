"""One socket to one graphd (timed out by Python, see Connection.open), one request in flight.

A :class:`Connection` is used by one thread at a time (the pool hands it to one borrower); it is not
thread-safe, except that :meth:`Connection.close` may be called from any thread to abort a blocked
call. It never retries. Any failure after a request was written — read timeout, reset, short read,
wrong sequence id or method name, undecodable reply — marks it broken and closes it, so a late reply
can never be read as the answer to a later request.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
from typing import Any, Callable, Union

from nebula_sync import _fork
from nebula_sync._thrift import service, ttypes, wire
from nebula_sync._thrift.codes import ERROR_CODES
from nebula_sync._thrift.fast import DecodedResponse, read_execute_reply
from nebula_sync.config import ConnectionConfig, HostAddress
from nebula_sync.errors import (
    ConnectionFailed,
    IncompatibleServer,
    OutcomeUnknown,
    ProtocolError,
    ReplyTooLarge,
    RequestTimeout,
)

__all__ = ["Connection"]

log = logging.getLogger("nebula_sync.connection")

_E_CLIENT_SERVER_INCOMPATIBLE = ERROR_CODES["E_CLIENT_SERVER_INCOMPATIBLE"]
_unpack_len = struct.Struct("!I").unpack_from
_pack_i32 = struct.Struct("!i").pack
_pack_i64 = struct.Struct("!q").pack
_pack_u32 = struct.Struct("!I").pack
_pack_theader = struct.Struct("!IHHIH").pack
_pack_theader_reply = struct.Struct("!HHIHI").pack  # magic, flags, seq id, words, header bytes
_UNSET: Any = object()
_RECV_SIZE = 65536
_CHUNK_SIZE = 1 << 20
_poll = getattr(select, "poll", None)
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_TCP_ESTABLISHED = 1  # Linux's tcp_states.h
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP if _poll is not None else 0

Decoder = Callable[[wire.Reader, Union[bytes, bytearray], int], Any]


def _struct_decoder(cls: Any) -> Decoder:
    spec = [cls, cls.thrift_spec]

    def decode(reader: wire.Reader, buf: bytes | bytearray, pos: int) -> Any:
        return reader.decode(buf, pos, spec)

    return decode


_AUTH_RESULT = _struct_decoder(service.AuthenticateResult)
_VERIFY_RESULT = _struct_decoder(service.VerifyClientVersionResult)
_JSON_RESULT = _struct_decoder(service.ExecuteJsonResult)
_PING_RESULT = _struct_decoder(service.ExecuteResult)
#: what each method's ``success`` field must hold
_RESULT_TYPES: dict[str, Any] = {
    "verifyClientVersion": ttypes.VerifyClientVersionResp,
    "authenticate": ttypes.AuthResponse,
    "execute": (ttypes.ExecutionResponse,),  # the ping: decoded with the plain structs
    "executeWithParameter": DecodedResponse,
    "executeJsonWithParameter": bytes,
}
#: the statement path: values decoded straight to Python objects (see _thrift/fast.py)
_EXECUTE_RESULT: Decoder = read_execute_reply

# executeWithParameter without parameters, as one struct.pack: THeader (length, magic, flags,
# seq id, one header word: protocol 0, no transforms), the CALL envelope and its seq id, field 1
# (session id, i64) and the head of field 2 (statement, binary); then the statement and _EXEC_TAIL
# (field 3: an empty parameter map, then the struct's end). Byte-identical to _send()'s frame.
# The constant runs are packed as byte strings: struct.pack costs per argument (9 here, not 14).
_EXEC_NAME = b"executeWithParameter"
_EXEC_MAGIC = struct.pack("!HH", 0x0FFF, 0)  # THeader magic, flags
_EXEC_CALL = struct.pack("!HIIi", 1, 0, 0x80010001, len(_EXEC_NAME)) + _EXEC_NAME  # header, envelope
_pack_exec_head = struct.Struct(f"!I4sI{len(_EXEC_CALL)}sI3sq3si").pack
_EXEC_FIXED = 14 + 32 + 28  # THeader after the length word; envelope + seq id; fixed body bytes
_EXEC_TAIL = b"\x0d\x00\x03\x0b\x0c\x00\x00\x00\x00\x00"
# The start of the reply expected after the length word: THeader (magic, flags, seq id, one
# header word: protocol 0, no transforms, padding), then the REPLY envelope and its seq id.
_EXEC_REPLY = struct.pack("!HIIi", 1, 0, 0x80010002, len(_EXEC_NAME)) + _EXEC_NAME
_pack_exec_reply = struct.Struct(f"!4sI{len(_EXEC_REPLY)}sI").pack
_EXEC_REPLY_AT = 4 + 14 + 8 + len(_EXEC_NAME) + 4  # where the result struct starts


_ARGS_SPECS: dict[type[Any], list[Any]] = {
    cls: [cls, cls.thrift_spec]
    for cls in (
        service.AuthenticateArgs,
        service.SignoutArgs,
        service.ExecuteArgs,
        service.ExecuteWithParameterArgs,
        service.VerifyClientVersionArgs,
    )
}


def _hung_up_pipe() -> tuple[int, int, int]:
    read_end, write_end = os.pipe()
    os.close(write_end)
    info = os.fstat(read_end)
    return read_end, info.st_dev, info.st_ino


#: The read end of a pipe whose write end is closed: it always polls as hung up (see close()).
#: Made at import, so that no test or caller sees a descriptor appear later; made again if
#: something closed it behind our back (its number could then be somebody else's).
_hung_up = [_hung_up_pipe()]
_hung_up_lock = threading.Lock()


def _hung_up_fd() -> int:
    """The hung-up pipe's descriptor, checked to be still ours. Thread-safe."""
    with _hung_up_lock:
        fd, dev, ino = _hung_up[0]
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) == (dev, ino):
                return fd
        except OSError:
            pass
        _hung_up[0] = _hung_up_pipe()
        return _hung_up[0][0]


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return deadline - time.monotonic()


class Connection:
    """A socket to one graphd, speaking THeader + binary (or framed binary).

    :param address: the graphd to connect to; its name is resolved at each :meth:`open`.
    :param config: timeouts, TLS, framing and decode limits.
    """

    __slots__ = (
        "_broken",
        "_framing_theader",
        "_limits",
        "_reader",
        "_seqid",
        "_poller",
        "_sock",
        "_nonblocking",
        "_timeout",
        "address",
        "config",
        "created_at",
        "host",
        "id",
        "last_used",
        "pid",
    )

    _next_id = 0

    def __init__(self, address: HostAddress, config: ConnectionConfig) -> None:
        Connection._next_id += 1
        self.id = Connection._next_id
        self.address = address
        self.host = str(address)
        self.config = config
        self._limits = config.limits
        self._reader = wire.Reader(config.limits)  # used by the thread holding the connection
        self._framing_theader = config.framing is wire.Framing.THEADER
        self._sock: socket.socket | None = None
        self._poller: Any = None
        self._timeout: Any = _UNSET  # the timeout the socket has now (setting it is a syscall)
        self._nonblocking = False  # see open()
        self._broken = False
        self._seqid = 0
        self.pid = _fork.pid()
        self.created_at = time.monotonic()
        self.last_used = self.created_at

    def __repr__(self) -> str:
        state = "broken" if self._broken else ("open" if self._sock is not None else "closed")
        return f"<Connection #{self.id} to {self.host} {state}>"

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def is_usable(self) -> bool:
        """Open, not broken, and created by this process."""
        return self._sock is not None and not self._broken and self.pid == _fork._pid

    def open(self, deadline: float | None = None) -> None:
        """Connect, set socket options, wrap TLS and run the version handshake.

        :param deadline: ``time.monotonic()`` value the whole open must finish by; the connect
            timeout applies too, whichever is sooner.
        :raises ConnectionFailed: the host could not be reached (nothing was sent).
        :raises IncompatibleServer: graphd rejected :attr:`ConnectionConfig.handshake_key`.
        """
        cfg = self.config
        timeout = cfg.connect_timeout
        left = _remaining(deadline)
        if left is not None:
            if left <= 0:
                raise ConnectionFailed("no time left to connect", host=self.host)
            timeout = left if timeout is None else min(timeout, left)
        connect_deadline = None if timeout is None else time.monotonic() + timeout
        sock = self._connect(connect_deadline)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if cfg.tcp_keepalive:
                _set_keepalive(sock, cfg)
            if cfg.tls is not None:
                ctx = cfg.tls.create_context()
                name = cfg.tls.server_hostname or self.address.host
                left = _remaining(connect_deadline)
                if left is not None and left <= 0:
                    raise socket.timeout("no time left for the TLS handshake")
                sock.settimeout(left)
                sock = ctx.wrap_socket(sock, server_hostname=name)
        except (ssl.SSLError, OSError, ValueError) as exc:  # ValueError: a name ssl cannot check
            sock.close()
            if cfg.tls is not None:
                hint = "certificate verification failed" if isinstance(
                    exc, ssl.SSLCertVerificationError) else "is TLS enabled on graphd?"  # fmt: skip
                raise ConnectionFailed(
                    f"TLS handshake with {self.host} failed ({hint}): {exc}", host=self.host
                ) from exc
            raise ConnectionFailed(f"could not set up {self.host}: {exc}", host=self.host) from exc
        except BaseException:  # Ctrl-C during the TLS handshake: the socket is not left to the GC
            sock.close()
            raise
        self._sock = sock
        # Deadlines are kept by polling, which recomputes the time left after a signal, not by the
        # kernel's SO_RCVTIMEO / SO_SNDTIMEO on a blocking socket: the kernel restarts its timer
        # each time CPython retries a call a signal interrupted (a wait could last for ever under
        # a periodic signal), and it limits each send() of a sendall(), not the whole of it. Plain
        # TCP: a non-blocking socket that sends at once (a request fits the socket buffer) and
        # polls once, before the receive (_recv, _sendall). TLS, or without poll(): Python's
        # socket timeouts (a poll before every send and receive).
        self._timeout = _UNSET
        self._broken = False
        self._nonblocking = False
        if _poll is not None:
            self._poller = _poll()
            self._poller.register(sock, _READABLE)
            if cfg.tls is None:
                sock.settimeout(0.0)
                self._nonblocking = True
        try:
            self._handshake(connect_deadline)
        except (OutcomeUnknown, ConnectionFailed, ProtocolError) as exc:
            # Nothing but the handshake was sent: treat a silent (or garbling) server as unreachable.
            self.close()
            hint = ""
            if cfg.tls is not None and not isinstance(exc, ProtocolError):
                # With TLS 1.3 a server that rejects the client certificate says so only after
                # the handshake "succeeded", so the first request is what fails (a reply that came
                # but cannot be read is something else).
                hint = " (TLS: did graphd reject the connection, e.g. require a client certificate?)"
            raise ConnectionFailed(
                f"version handshake with {self.host} failed{hint}: {exc.message}", host=self.host
            ) from exc
        except BaseException:  # IncompatibleServer, Ctrl-C, ...: the socket is not left open
            self.close()
            raise
        log.debug("[#%04d] connected to %s", self.id, self.host)

    def _connect(self, deadline: float | None) -> socket.socket:
        """A connected TCP socket to :attr:`address`, trying each address its name resolves to,
        all by ``deadline`` (``socket.create_connection`` would give each one the whole timeout).
        Each address gets an equal share of the time left, the last one all of it.
        :raises ConnectionFailed: none could be reached in time (or the name does not resolve)."""
        host, port = self.address.host, self.address.port
        try:
            # not bounded by the deadline: the resolver has no timeout of its own to set
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
            raise ConnectionFailed(f"could not resolve {self.host}: {exc}", host=self.host) from exc
        error: Exception = socket.timeout("no time left to connect after resolving the name")
        for i, (family, kind, proto, _, addr) in enumerate(infos):
            left = _remaining(deadline)
            if left is not None:
                if left <= 0:
                    break
                left /= len(infos) - i
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:  # e.g. an IPv6 address on a kernel without IPv6: the next one
                error = exc
                continue
            try:
                sock.settimeout(left)
                sock.connect(addr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
            except BaseException:
                sock.close()
                raise
        raise ConnectionFailed(f"could not connect to {self.host}: {error}", host=self.host) from error

    def _handshake(self, deadline: float | None) -> None:
        req = ttypes.VerifyClientVersionReq(version=self.config.handshake_key.encode())
        resp = self._call(
            "verifyClientVersion", service.VerifyClientVersionArgs(req=req), _VERIFY_RESULT, deadline
        )
        if resp.error_code != 0:
            msg = (resp.error_msg or b"").decode("utf-8", "replace")
            if resp.error_code == _E_CLIENT_SERVER_INCOMPATIBLE:
                raise IncompatibleServer(
                    f"graphd at {self.host} rejected client version "
                    f"{self.config.handshake_key!r}: {msg or 'incompatible'}",
                    host=self.host,
                )
            raise ProtocolError(
                f"verifyClientVersion failed with code {resp.error_code}: {msg}", host=self.host
            )

    def close(self) -> None:
        """Close the socket. Safe from any thread and more than once.

        In a forked child (the socket was inherited), only the file descriptor is released: no
        ``shutdown``, which would cut the parent's connection too.
        """
        sock, self._sock = self._sock, None
        self._broken = True
        if sock is None:
            return
        poller = self._poller
        if poller is not None:
            # Another thread may be about to poll for this socket's reply. The poller knows it by
            # its file descriptor number, which the close() below frees for the next socket this
            # process opens: that thread would then wait on somebody else's socket until its
            # deadline. Watching a descriptor that always reads as closed instead, it wakes at once
            # and its recv() on the closed socket fails.
            try:
                poller.unregister(sock)
                poller.register(_hung_up_fd(), select.POLLIN)
            except (OSError, KeyError, ValueError):
                pass
        if self.pid == _fork.pid():
            try:
                # Wakes a thread blocked in recv() on this socket (close() alone may not).
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            sock.close()
        except OSError:
            pass

    def is_dropped(self) -> bool:
        """Whether an idle connection was closed or reset by the peer.

        A cheap non-blocking check made before reuse. On Linux it reads the TCP state (anything
        but ESTABLISHED: the peer's FIN or RST has arrived); elsewhere it polls, which also sees
        stray bytes. A correct graphd never sends bytes between requests; on Linux such bytes
        would make the next statement fail (a ``ProtocolError``, or a ``RequestTimeout`` if they
        read as the start of a longer frame) instead of moving it to a fresh connection.
        """
        sock = self._sock
        if sock is None or self._broken:
            return True
        try:
            if _TCP_INFO is not None:
                # getsockopt() keeps the GIL where poll(0) would hand it over: measured +7 % at
                # 8 threads (docs/benchmarks.md); the first byte of struct tcp_info is the state
                return sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0] != _TCP_ESTABLISHED
            if self._poller is not None:
                # b"" (EOF) or a byte nobody asked for: either way the stream is unusable.
                return bool(self._poller.poll(0))
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable)
        except (OSError, ValueError):
            return True

    # ---- calls -------------------------------------------------------------------------------

    def authenticate(self, username: str, password: str, deadline: float | None) -> ttypes.AuthResponse:
        """Call ``authenticate``; the caller inspects the response's error code."""
        args = service.AuthenticateArgs(username=username.encode(), password=password.encode())
        resp: ttypes.AuthResponse = self._call("authenticate", args, _AUTH_RESULT, deadline)
        return resp

    def signout(self, session_id: int) -> None:
        """Send ``signout`` (oneway: no reply is read). Raises ``ConnectionFailed`` if it can't."""
        self._send("signout", service.SignoutArgs(sessionId=session_id), wire.ONEWAY)
        self.last_used = time.monotonic()

    def execute(
        self,
        session_id: int,
        stmt: bytes,
        params: dict[bytes, ttypes.Value] | None,
        deadline: float | None,
        now: float | None = None,
    ) -> Any:
        """Run a statement (``executeWithParameter``); returns the decoded ``ExecutionResponse``.
        ``now``: the caller's ``time.monotonic()`` of moments ago, if it has one (saves a clock
        read). On return, :attr:`last_used` is the ``time.monotonic()`` at which the reply was in.

        The statement path: for the common case (THeader, no parameters, a deadline, a reply
        that arrives in one ``recv`` with the expected header) this is one function, with the
        same checks and errors as :meth:`_call`, which handles everything else.
        """
        sock = self._sock
        if (params or deadline is None or sock is None or self._broken or not self._framing_theader
                or self.pid != _fork._pid):  # fmt: skip
            return self._call("executeWithParameter", _execute_args(session_id, stmt, params),
                              _EXECUTE_RESULT, deadline)  # fmt: skip
        seqid = self._seqid = (self._seqid + 1) & 0x7FFFFFFF
        frame = _pack_exec_head(
            _EXEC_FIXED + len(stmt), _EXEC_MAGIC, seqid, _EXEC_CALL, seqid, b"\x0a\x00\x01", session_id,
            b"\x0b\x00\x02", len(stmt),
        ) + stmt + _EXEC_TAIL
        timeout = deadline - (time.monotonic() if now is None else now)
        if timeout <= 0:
            raise self._no_time_to_send("executeWithParameter")
        if self._nonblocking:
            try:
                try:
                    sent = sock.send(frame)
                except BlockingIOError:
                    sent = 0
                if sent != len(frame):  # the socket buffer was full: the rest as it drains
                    self._sendall(sock, frame, deadline, sent)
            except OSError as exc:
                raise self._send_failed("executeWithParameter", exc) from exc
            except BaseException:  # Ctrl-C mid-send: part of the frame may be out; never reuse
                self.close()
                raise
        else:
            current = self._timeout
            # _settimeout()'s test, inlined (with no max() call: within 5 ms, or else within 2 %):
            # the socket nearly always has the wanted timeout already. When it is set, 1 ms more
            # (within the tolerance): the next statement's wait then needs no system call.
            if (current is None or current is _UNSET
                    or not 0 <= current - timeout <= 0.005
                    and not 0 <= current - timeout <= 0.02 * timeout):  # fmt: skip
                self._settimeout(sock, timeout + 0.001)
            try:
                sock.sendall(frame)
            except OSError as exc:
                raise self._send_failed("executeWithParameter", exc) from exc
            except BaseException:  # Ctrl-C mid-send: part of the frame may be out; never reuse
                self.close()
                raise
        # _receive() and _decode() inlined for the common case: the socket's timeout covers the
        # deadline (set above), so the first recv goes straight out, and a reply that is one whole
        # frame within the limits, starting with exactly the header and envelope expected, is
        # decoded here. Anything else goes on in _receive() from what arrived; a failure closes
        # the connection, as there.
        # Packed while the server works on the request, not after the reply is in.
        expected = _pack_exec_reply(_EXEC_MAGIC, seqid, _EXEC_REPLY, seqid)
        try:
            if self._nonblocking:
                # _recv() inlined: one poll until the deadline (never a negative wait: for ever)
                left = deadline - time.monotonic()
                if left <= 0 or not self._poller.poll(left * 1000.0):
                    raise socket.timeout("timed out")
                try:
                    data = sock.recv(_RECV_SIZE)
                except BlockingIOError:  # woken, but nothing to read after all
                    data = self._recv(sock, _RECV_SIZE, deadline)
            else:
                # the send may have taken part of the time: the receive gets only what is left
                # (setting it is nearly always a no-op: the timeout set above, within 5 ms)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                data = self._recv(sock, _RECV_SIZE, deadline, left)
            size = len(data)
            if (size >= _EXEC_REPLY_AT and size - 4 == _unpack_len(data, 0)[0] <= self._limits.max_frame_size
                    and data[4:_EXEC_REPLY_AT] == expected):  # fmt: skip
                result = read_execute_reply(self._reader, data, _EXEC_REPLY_AT).success
                if type(result) is DecodedResponse:
                    self.last_used = time.monotonic()
                    return result
        except OSError as exc:
            error = self._read_failed("executeWithParameter", exc)  # before close(): it reads _sock
            self.close()
            raise error from exc
        except ProtocolError as exc:
            self.close()
            exc.host = exc.host or self.host
            raise
        except BaseException:
            self.close()
            raise
        return self._receive("executeWithParameter", seqid, _EXECUTE_RESULT, deadline, data)

    def execute_json(
        self,
        session_id: int,
        stmt: bytes,
        params: dict[bytes, ttypes.Value] | None,
        deadline: float | None,
    ) -> bytes:
        """Run a statement with ``executeJsonWithParameter``; returns the JSON bytes."""
        args = _execute_args(session_id, stmt, params)
        resp: bytes = self._call("executeJsonWithParameter", args, _JSON_RESULT, deadline)
        return resp

    def ping(self, timeout: float | None = None) -> None:
        """Liveness check: ``execute(0, "YIELD 1")``; any decoded reply means alive.

        :raises NebulaError: the connection is dead (and now closed).
        """
        limit = self.config.ping_timeout if timeout is None else timeout
        args = service.ExecuteArgs(sessionId=0, stmt=b"YIELD 1")
        self._call("execute", args, _PING_RESULT, time.monotonic() + limit)

    # ---- the wire ----------------------------------------------------------------------------

    def _settimeout(self, sock: socket.socket, timeout: float | None) -> None:
        """Give the socket ``timeout`` unless it already has it, or a little more (<= 2 % / 5 ms).

        Setting a timeout is a system call; on the statement path the wanted timeout is nearly
        always the one the socket already has, so the call is skipped.
        """
        current = self._timeout
        if current is not _UNSET:
            if current is None and timeout is None:
                return
            if current is not None and timeout is not None and 0 <= current - timeout <= max(
                0.005, 0.02 * timeout
            ):
                return
        sock.settimeout(timeout)
        self._timeout = timeout

    def _recv(self, sock: socket.socket, size: int, deadline: float | None,
              timeout: float | None = None) -> bytes:  # fmt: skip
        """Up to ``size`` bytes (``b""`` at EOF), waiting until ``deadline`` at most; ``timeout``:
        the time left, if the caller has just computed it. ``socket.timeout`` past the deadline."""
        if not self._nonblocking:
            self._settimeout(sock, _remaining(deadline) if timeout is None else timeout)
            return sock.recv(size)
        while True:
            if deadline is None:
                ready = self._poller.poll()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                ready = self._poller.poll(left * 1000.0)  # poll() recomputes it after a signal
            if not ready:
                raise socket.timeout("timed out")
            try:
                return sock.recv(size)
            except BlockingIOError:  # woken, but nothing to read after all
                continue

    def _sendall(self, sock: socket.socket, data: bytes, deadline: float | None, sent: int = 0) -> None:
        """Send the rest of ``data`` (``sent`` bytes went already) on the non-blocking socket by
        ``deadline`` (``socket.timeout``)."""
        view = memoryview(data)[sent:]
        # The connection's own poller, watching for room to write meanwhile: close() from another
        # thread re-points it (see there), so this wait never outlives a closed socket either.
        poller = self._poller
        try:
            poller.modify(sock, select.POLLOUT)
        except (KeyError, ValueError):  # closed meanwhile (unregistered, or no descriptor left)
            raise OSError(errno.EBADF, "the connection was closed") from None
        try:
            while view:
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    sent = 0
                view = view[sent:]
                if not view:
                    return
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise socket.timeout("timed out")
                if not poller.poll(None if left is None else left * 1000.0):
                    raise socket.timeout("timed out")
        finally:
            try:
                poller.modify(sock, _READABLE)
            except (OSError, KeyError, ValueError):  # closed meanwhile: nothing to restore
                pass

    def _send(self, method: str, args: Any, mtype: int = wire.CALL, deadline: float | None = None) -> int:
        """Write one request, by ``deadline`` (``time.monotonic()``; ``None``: within the request
        timeout); ``args`` is a struct or its already-encoded body (bytes)."""
        sock = self._sock
        if sock is None or self._broken:
            raise ConnectionFailed(f"connection #{self.id} to {self.host} is closed", host=self.host)
        if self.pid != _fork._pid:
            raise ConnectionFailed("connection was inherited from another process", host=self.host)
        seqid = self._seqid = (self._seqid + 1) & 0x7FFFFFFF
        body = args if type(args) is bytes else wire.encode_struct(args, _ARGS_SPECS[type(args)])
        envelope = _CALL_ENVELOPES[method] if mtype == wire.CALL else _envelope(method, mtype)
        msg = envelope + _pack_i32(seqid) + body
        if self._framing_theader:
            # THeader: length, magic, flags 0, seq id, 1 header word (protocol 0, no transforms)
            frame = _pack_theader(14 + len(msg), 0x0FFF, 0, seqid, 1) + b"\0\0\0\0" + msg
        else:
            frame = _pack_u32(len(msg)) + msg
        timeout = self.config.request_timeout if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise self._no_time_to_send(method)
        try:
            if self._nonblocking:
                self._sendall(sock, frame, None if timeout is None else time.monotonic() + timeout)
            else:
                self._settimeout(sock, timeout)
                sock.sendall(frame)  # the socket's timeout bounds the whole of it
        except OSError as exc:
            raise self._send_failed(method, exc) from exc
        except BaseException:  # Ctrl-C mid-send: part of the frame may be out; never reuse
            self.close()
            raise
        return seqid

    def _call(self, method: str, args: Any, decoder: Decoder, deadline: float | None) -> Any:
        """Send one request and return its reply's ``success`` field (see :meth:`_receive`)."""
        return self._receive(method, self._send(method, args, wire.CALL, deadline), decoder, deadline)

    def _receive(self, method: str, seqid: int, decoder: Decoder, deadline: float | None,
                 data: bytes | None = None) -> Any:  # fmt: skip
        """Read, check and decode the reply to request ``seqid``; return its ``success`` field.

        ``data``: what the caller already received of the reply (the statement path). Any
        failure, including a reply without a result of the expected type, closes the connection.
        """
        try:
            frame: bytes | bytearray
            if data is not None and len(data) >= 4 and (
                len(data) - 4 == _unpack_len(data, 0)[0] <= self._limits.max_frame_size
            ):
                frame = data  # one whole frame already
            else:
                frame = self._read_frame(deadline, method, data)
            result = self._decode(frame, method, seqid, decoder).success
            if not isinstance(result, _RESULT_TYPES[method]):
                raise ProtocolError(
                    f"{method} reply has no result of the expected type (got {type(result).__name__})",
                    host=self.host,
                )
            return result
        except BaseException:
            # KeyboardInterrupt or similar mid-read too: the reply may still come; never reuse.
            self.close()
            raise
        finally:
            self.last_used = time.monotonic()

    def _read_frame(
        self, deadline: float | None, method: str, data: bytes | None = None
    ) -> bytes | bytearray:
        """Read one reply frame; ``data`` is what a caller already received of it (may be whole)."""
        sock = self._sock
        if sock is None:
            raise self._closed_while_waiting(method)
        try:
            if data is None:
                timeout = None if deadline is None else deadline - time.monotonic()  # _remaining()
                if timeout is not None and timeout <= 0:
                    raise socket.timeout("deadline passed")
                data = self._recv(sock, _RECV_SIZE, deadline, timeout)
            while len(data) < 4:
                if not data:
                    raise _Eof()
                timeout = _remaining(deadline)
                if timeout is not None and timeout <= 0:
                    raise socket.timeout("deadline passed")
                more = self._recv(sock, _RECV_SIZE, deadline, timeout)
                if not more:
                    raise _Eof()
                data += more
            (length,) = _unpack_len(data, 0)
            if length > self._limits.max_frame_size:
                raise ReplyTooLarge(
                    f"reply frame of {length} bytes from {self.host} exceeds max_frame_size "
                    f"({self._limits.max_frame_size})",
                    host=self.host,
                )
            total = 4 + length
            if len(data) == total:
                return data
            if len(data) > total:
                raise ProtocolError(
                    f"{self.host} sent {len(data) - total} bytes beyond the reply", host=self.host
                )
            # Grow with what actually arrives: a peer claiming a large frame must send it to make
            # us hold it (no allocation of the claimed size up front).
            buf = bytearray(data)
            while len(buf) < total:
                timeout = _remaining(deadline)
                if timeout is not None and timeout <= 0:
                    raise socket.timeout("deadline passed")
                chunk = self._recv(sock, min(total - len(buf), _CHUNK_SIZE), deadline, timeout)
                if not chunk:
                    raise _Eof()
                buf += chunk
            return buf
        except (OSError, _Eof) as exc:
            raise self._read_failed(method, exc) from exc

    def _no_time_to_send(self, method: str) -> ConnectionFailed:
        """The error when the deadline passed before anything was written (the connection is fine)."""
        return ConnectionFailed(f"no time left to send {method} to {self.host}; it was not sent",
                                host=self.host)

    def _send_failed(self, method: str, exc: OSError) -> ConnectionFailed:
        """Close after a failed write and say so: a frame graphd did not receive whole never ran."""
        self.close()
        if isinstance(exc, (socket.timeout, BlockingIOError)):
            return ConnectionFailed(
                f"sending {method} to {self.host} did not finish within the request timeout (is "
                "graphd reading?); it was not run",
                host=self.host,
            )
        what = "TLS connection" if isinstance(exc, ssl.SSLError) else "connection"
        return ConnectionFailed(
            f"sending {method} to {self.host} failed ({what} closed by the server?): {exc}",
            host=self.host,
        )

    def _closed_while_waiting(self, method: str) -> OutcomeUnknown:
        """The error when ``close()`` ran in another thread after the request was written."""
        return OutcomeUnknown(
            f"connection #{self.id} to {self.host} was closed while waiting for {method}", host=self.host
        )

    def _read_failed(self, method: str, exc: BaseException) -> OutcomeUnknown:
        """The error for a failed read after the request was sent (the outcome is unknown)."""
        if self._sock is None:
            return self._closed_while_waiting(method)
        if isinstance(exc, (socket.timeout, BlockingIOError)):
            return RequestTimeout(
                f"no reply to {method} from {self.host} within the request timeout; "
                "the statement may still run on graphd",
                host=self.host,
            )
        if isinstance(exc, _Eof):
            return OutcomeUnknown(
                f"{self.host} closed the connection before replying to {method}", host=self.host
            )
        if isinstance(exc, ssl.SSLError):
            return OutcomeUnknown(f"TLS error reading from {self.host}: {exc}", host=self.host)
        return OutcomeUnknown(
            f"connection to {self.host} failed while waiting for {method}: {exc}", host=self.host
        )

    def _decode(self, frame: bytes | bytearray, method: str, seqid: int, decoder: Decoder) -> Any:
        # Fast path: the reply starts with exactly the bytes we expect (THeader with binary, no
        # transforms, our seq id; then a REPLY envelope for this method and seq id).
        expected = _REPLY_ENVELOPES[method] + _pack_i32(seqid)
        start = 4
        if self._framing_theader:
            start = 18
            if frame[4:18] != _pack_theader_reply(0x0FFF, 0, seqid, 1, 0):
                start = -1
        if start > 0 and frame[start : start + len(expected)] == expected:
            try:
                return decoder(self._reader, frame, start + len(expected))
            except ProtocolError as exc:
                exc.host = exc.host or self.host
                raise
        return self._decode_slow(frame, method, seqid, decoder)

    def _decode_slow(self, frame: bytes | bytearray, method: str, seqid: int, decoder: Decoder) -> Any:
        """Parse the frame and envelope in full: anything unexpected is a precise ProtocolError."""
        try:
            info = wire.parse_frame(frame, 4)
            if info.proto_id != wire.PROTO_BINARY or info.transforms:
                raise ProtocolError(
                    f"reply uses protocol {info.proto_id} / transforms {list(info.transforms)}; "
                    "expected binary without transforms"
                )
            name, mtype, rseq, body = wire.parse_message_header(frame, info.offset)
            if name != method:
                raise ProtocolError(f"reply is for method {name!r}, expected {method!r}")
            if rseq != seqid:
                raise ProtocolError(f"reply has sequence id {rseq}, expected {seqid}")
            if mtype == wire.EXCEPTION:
                exc = wire.decode_application_exception(frame, body)
                raise ProtocolError(f"graphd answered {method} with an exception: {exc.message}")
            if mtype != wire.REPLY:
                raise ProtocolError(f"reply has message type {mtype}, expected REPLY")
            return decoder(self._reader, frame, body)
        except ProtocolError as exc:
            if exc.host is None:
                exc.host = self.host
            raise


def _envelope(method: str, mtype: int) -> bytes:
    name = method.encode()
    return struct.pack("!Ii", 0x80010000 | mtype, len(name)) + name


_CALL_ENVELOPES = {m: _envelope(m, wire.CALL) for m in service.METHODS}
_REPLY_ENVELOPES = {m: _envelope(m, wire.REPLY) for m in service.METHODS}
_VALUE_SPEC = [ttypes.Value, ttypes.Value.thrift_spec]
_EMPTY_PARAMS = b"\x0d\x00\x03\x0b\x0c\x00\x00\x00\x00"  # field 3: map<binary, Value>, 0 entries


def _execute_args(session_id: int, stmt: bytes, params: dict[bytes, ttypes.Value] | None) -> bytes:
    """``ExecuteWithParameterArgs`` encoded by hand (binary protocol): the statement path's request.

    Byte-identical to encoding the struct with thrift (tests compare them).
    """
    parts = [b"\x0a\x00\x01", _pack_i64(session_id), b"\x0b\x00\x02", _pack_i32(len(stmt)), stmt]
    if params:
        parts.append(b"\x0d\x00\x03\x0b\x0c" + _pack_i32(len(params)))
        for key, value in params.items():
            parts += (_pack_i32(len(key)), key, wire.encode_struct(value, _VALUE_SPEC))
    else:
        parts.append(_EMPTY_PARAMS)
    parts.append(b"\x00")
    return b"".join(parts)


class _Eof(Exception):
    """The peer closed the connection."""


def _set_keepalive(sock: socket.socket, cfg: ConnectionConfig) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", cfg.keepalive_idle),
        ("TCP_KEEPINTVL", cfg.keepalive_interval),
        ("TCP_KEEPCNT", cfg.keepalive_count),
    ):
        opt = getattr(socket, name, None)
        if opt is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
            except OSError:  # not supported on this platform
                pass
