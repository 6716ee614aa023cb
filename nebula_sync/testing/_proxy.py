"""A fault-injecting TCP proxy for tests: sits between a client and a server on loopback.

:class:`FaultProxy` accepts connections on ``host:port``, opens one upstream connection for each and
copies bytes both ways, until a test switches it into a fault mode: delayed, trickled, truncated,
corrupted or black-holed replies, resets (real RSTs, ``SO_LINGER`` 0), clean closes after a byte
count, refused connects. Modes are proxy-wide and switchable at any time.

Design: one background thread runs a ``selectors`` event loop over non-blocking sockets. It owns
every socket and all per-connection state, so a reset closes a socket no other thread is blocked
on and the RST goes out at once. Public methods hand their work to the loop as commands and wait
(bounded) until it is applied: when ``proxy.stall()`` returns, no reply byte read afterwards is
forwarded. Timed faults (delays, drips, connect timeouts) are timers of the loop, so ``stop()``
interrupts every one of them; the loop sleeps in ``select`` only, never polls.

Every public method is thread-safe.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Optional, TypeVar

import attrs

__all__ = ["FaultProxy", "ProxyStats"]

log = logging.getLogger("nebula_sync.testing.proxy")

_T = TypeVar("_T")
_RECV_SIZE = 65536
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN
_CONNECTING = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN)

# Mode kinds.
_PASS, _DELAY, _STALL, _DRIP = "pass_through", "delay", "stall", "drip"
#: a reply chunk cut at frame boundaries: (frame index, offset in the frame, bytes, frame size or
#: -1 while unknown, whether the piece ends its frame)
_Piece = tuple[int, int, bytes, int, bool]
_RESET_AFTER, _CLOSE_AFTER, _TRUNCATE, _CORRUPT = "reset_after", "close_after", "truncate_reply", "corrupt"


def _check_loopback(host: str, what: str) -> None:
    if host == "localhost":
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"FaultProxy is for loopback only; {what} {host!r} is not a loopback address")


@attrs.frozen
class ProxyStats:
    """A snapshot of the proxy's counters (immutable)."""

    #: client connections accepted and served (rejected ones not included)
    accepted: int = 0
    #: client connections currently open
    open: int = 0
    #: connections accepted and closed at once because ``max_connections`` were open
    rejected: int = 0
    #: client connections the proxy reset (RST)
    resets: int = 0
    #: upstream connects that failed or timed out
    upstream_failures: int = 0
    #: bytes read from clients (including bytes a stall dropped)
    bytes_from_client: int = 0
    #: bytes written to the upstream server
    bytes_to_upstream: int = 0
    #: bytes read from the upstream server (including bytes a fault dropped)
    bytes_from_upstream: int = 0
    #: bytes written to clients
    bytes_to_client: int = 0


@attrs.frozen
class _Mode:
    kind: str
    gen: int
    seconds: float = 0.0
    n: int = 0
    interval: float = 0.0
    forward_requests: bool = False
    then: str = "hang"
    offset: Optional[int] = None
    xor: int = 0xFF
    fn: Optional[Callable[[bytes], bytes]] = None


class _Command:
    """Work handed to the loop thread; the caller waits on ``done``."""

    __slots__ = ("done", "exc", "fn", "result")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.exc: BaseException | None = None


class _Link:
    """One proxied connection: the client socket, its upstream socket and the bytes in between.

    Only the loop thread touches a link.
    """

    __slots__ = (
        "after_flush", "client", "client_eof", "client_events", "client_shut", "connect_deadline",
        "count", "draining", "drip", "fn_buf", "fn_first", "fn_skip", "frame_hdr", "frame_index",
        "frame_pos", "frame_total", "gen", "held", "hung", "id", "next_drip", "to_client",
        "to_upstream", "trunc_frame", "upstream", "upstream_connected", "upstream_eof",
        "upstream_events", "upstream_shut",
    )  # fmt: skip

    def __init__(self, link_id: int, client: socket.socket) -> None:
        self.id = link_id
        self.client = client
        self.upstream: socket.socket | None = None
        self.upstream_connected = False
        self.connect_deadline = 0.0
        self.client_events = 0
        self.upstream_events = 0
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        #: reply bytes held back by ``delay``: (release time, bytes), in order
        self.held: collections.deque[tuple[float, bytes]] = collections.deque()
        #: reply bytes waiting to trickle out (``drip``)
        self.drip = bytearray()
        self.next_drip = 0.0
        self.client_eof = False  # the client sent FIN (or failed)
        self.client_shut = False  # we sent FIN to the client
        self.upstream_eof = False  # upstream sent FIN, failed, or was never reached
        self.upstream_shut = False  # we sent FIN upstream
        self.draining = False  # cleanly closed: discard client bytes until the client closes
        self.after_flush: str | None = None  # "reset" / "close" once every pending byte is out
        self.hung = False  # forward nothing more to the client, ever (truncate "hang")
        # Per-mode state, reset when the link first sees a new mode generation.
        self.gen = -1
        self.count = 0
        self.trunc_frame = 0
        self.fn_first = 0
        self.fn_skip = -1
        self.fn_buf = bytearray()
        # Reply frame tracking (4-byte big-endian length prefix, as THeader and framed both use).
        self.frame_index = 0
        self.frame_pos = 0
        self.frame_total = -1
        self.frame_hdr = bytearray()

    def pending_to_client(self) -> int:
        return len(self.to_client) + sum(len(b) for _, b in self.held) + len(self.drip) + len(self.fn_buf)

    def split(self, chunk: bytes) -> list[_Piece]:
        """Cut ``chunk`` at reply frame boundaries.

        Returns ``(frame index, offset of the piece in its frame, piece, frame size or -1 while
        unknown, whether the piece ends its frame)`` for each piece.
        """
        pieces = []
        i, end = 0, len(chunk)
        while i < end:
            index, start, j = self.frame_index, self.frame_pos, i
            if self.frame_pos < 4:
                take = min(4 - self.frame_pos, end - j)
                self.frame_hdr += chunk[j : j + take]
                self.frame_pos += take
                j += take
                if self.frame_pos == 4:
                    self.frame_total = 4 + int.from_bytes(self.frame_hdr, "big")
            if self.frame_pos >= 4:
                take = min(self.frame_total - self.frame_pos, end - j)
                self.frame_pos += take
                j += take
            done = self.frame_pos >= 4 and self.frame_pos == self.frame_total
            pieces.append((index, start, chunk[i:j], self.frame_total, done))
            if done:
                self.frame_index += 1
                self.frame_pos = 0
                self.frame_total = -1
                self.frame_hdr.clear()
            i = j
        return pieces


class FaultProxy:
    """A fault-injecting TCP proxy on loopback, for tests.

    ::

        with FaultProxy(upstream=("127.0.0.1", graphd_port)) as proxy:
            conn = Connection(HostAddress("127.0.0.1", proxy.port), config)
            proxy.reset_after(10)       # the next reply is cut after 10 bytes by an RST

    Modes (one at a time, proxy-wide; each applies to open *and* new connections from the moment
    the call returns, to reply bytes read from the upstream from then on):

    - :meth:`pass_through`: forward both ways (the initial mode); also resumes accepting.
    - :meth:`delay`: hold every chunk from the upstream for ``seconds`` before forwarding it.
    - :meth:`stall`: black hole. Client bytes are read and dropped (or forwarded, with
      ``forward_requests=True``), nothing goes back, not even the upstream's FIN.
    - :meth:`drip`: forward reply bytes ``bytes_per_chunk`` at a time, one piece per ``interval``.
    - :meth:`reset_after`: forward ``n`` more reply bytes per connection, then reset it (RST).
    - :meth:`close_after`: forward ``n`` more reply bytes per connection, then close it cleanly.
    - :meth:`truncate_reply`: forward the first ``n`` bytes of the next reply frame, then hang,
      close or reset.
    - :meth:`corrupt`: flip a byte of every reply frame, or rewrite whole frames with a function.

    Actions: :meth:`reset` (RST every open connection now), :meth:`refuse` (close the listening
    socket: connects are refused) and :meth:`resume_accepting`.

    Switching modes releases at once the bytes that ``delay`` or ``drip`` were holding. Byte counts
    (``reset_after``, ``close_after``) start at zero on each connection when the mode is set.
    "Reply frames" are found by their 4-byte length prefix (THeader and framed binary both have
    one). A connection cut by a fault stays cut when the mode changes.

    :param upstream: ``(host, port)`` of the server to forward to (loopback).
    :param host: address to listen on (loopback).
    :param port: port to listen on; 0 picks a free one (see :attr:`port`).
    :param max_connections: connections served at once; more are accepted and closed at once.
    :param buffer_limit: bytes buffered per direction and connection before reading pauses.
    :param connect_timeout: how long an upstream connect may take.
    :param max_buffered_frame: largest reply frame :meth:`corrupt` with a function buffers whole;
        larger frames pass unmodified.
    :param join_timeout: bound on waiting for the loop thread (commands and :meth:`stop`).

    Thread-safety: every public method may be called from any thread.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_connections: int = 64,
        buffer_limit: int = 1 << 20,
        connect_timeout: float = 5.0,
        max_buffered_frame: int = 16 << 20,
        join_timeout: float = 5.0,
    ) -> None:
        _check_loopback(host, "listen address")
        _check_loopback(upstream[0], "upstream")
        if max_connections < 1 or buffer_limit < 1:
            raise ValueError("max_connections and buffer_limit must be >= 1")
        self.upstream = (upstream[0], int(upstream[1]))
        self.host = host
        self._port = port
        self.max_connections = max_connections
        self.buffer_limit = buffer_limit
        self.connect_timeout = connect_timeout
        self.max_buffered_frame = max_buffered_frame
        self.join_timeout = join_timeout
        #: exceptions the loop hit (a corrupt() function raising, internal errors); tests may assert
        #: it stays empty. Appended by the loop thread only.
        self.errors: list[BaseException] = []

        # Lock order: _control, then _lock. _control serialises start/stop and commands (so a
        # command runs inline when the loop is not running without racing start()); _lock (with
        # _cond) guards the counters, the command queue and the running flag. The loop thread
        # never takes _control, so a caller holding _control while it waits for a command is safe.
        self._control = threading.Lock()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._commands: list[_Command] = []
        self._running = False
        self._stopped = False
        self._stats: dict[str, int] = dict.fromkeys(attrs.fields_dict(ProxyStats), 0)

        # Loop-thread state (touched by other threads only while the loop is not running).
        self._mode = _Mode(_PASS, 0)
        self._gen = 0
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._links: dict[int, _Link] = {}
        self._next_link = 0
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (known after :meth:`start`)."""
        return self._port

    @property
    def address(self) -> str:
        """``"host:port"`` of the listening socket (``"[::1]:port"`` for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.address} -> {self.upstream[0]}:{self.upstream[1]} {self._mode.kind}>"

    def start(self) -> FaultProxy:
        """Bind, listen and start the loop thread. Raises ``OSError`` if the port is taken."""
        with self._control:
            if self._thread is not None or self._stopped:
                raise RuntimeError("a FaultProxy can be started only once")
            self._sel = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._sel.register(self._wake_r, selectors.EVENT_READ, None)
            try:
                self._open_listener()
            except OSError:
                self._close_loop_resources()
                raise
            self._thread = threading.Thread(target=self._run, name=f"FaultProxy-{self._port}", daemon=True)
            with self._lock:
                self._running = True
            self._thread.start()
        return self

    def stop(self) -> None:
        """Close every connection and the listener and join the loop thread (bounded by
        ``join_timeout``; ``RuntimeError`` if it does not end). Idempotent."""
        with self._control:
            with self._lock:
                already = self._stopped
                self._stopped = True
                self._cond.notify_all()
            thread = self._thread
            if thread is None:
                if not already:
                    self._close_loop_resources()
                return
            self._wake()
            thread.join(self.join_timeout)
            if thread.is_alive():
                raise RuntimeError(f"FaultProxy loop did not stop within {self.join_timeout} s")

    # ---- modes -------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The current mode's name (``"pass_through"``, ``"delay"``, ...)."""
        return self._mode.kind

    def pass_through(self) -> None:
        """Forward both ways, release held bytes, and accept connections again if refused."""
        self._set_mode(_PASS)
        self._call(self._ensure_listening)

    def delay(self, seconds: float) -> None:
        """Hold each chunk read from the upstream for ``seconds`` before forwarding it (in order)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._set_mode(_DELAY, seconds=float(seconds))

    def stall(self, *, forward_requests: bool = False) -> None:
        """Black hole: forward nothing to clients (not even EOF); drop client bytes unless
        ``forward_requests``, in which case requests still reach the upstream (and may run)."""
        self._set_mode(_STALL, forward_requests=forward_requests)

    def drip(self, bytes_per_chunk: int, interval: float) -> None:
        """Trickle replies: ``bytes_per_chunk`` bytes at once, then one piece per ``interval``."""
        if bytes_per_chunk < 1 or interval < 0:
            raise ValueError("bytes_per_chunk must be >= 1 and interval >= 0")
        self._set_mode(_DRIP, n=bytes_per_chunk, interval=float(interval))

    def reset_after(self, n_bytes: int) -> None:
        """On each connection, forward ``n_bytes`` more reply bytes, then reset it (RST).

        With 0 the reset comes when the next reply byte arrives (the request reached the server).
        Bytes past the count are dropped.
        """
        if n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")
        self._set_mode(_RESET_AFTER, n=n_bytes)

    def close_after(self, n_bytes: int) -> None:
        """Like :meth:`reset_after`, but close cleanly (FIN; later client bytes are discarded)."""
        if n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")
        self._set_mode(_CLOSE_AFTER, n=n_bytes)

    def truncate_reply(self, n: int, then: str = "hang") -> None:
        """Forward only the first ``n`` bytes of each connection's next reply frame (counting its
        4-byte length), then ``then``: ``"hang"`` (forward nothing more, keep the connection
        open), ``"close"`` (clean close) or ``"reset"`` (RST). A frame shorter than ``n`` passes
        whole and the action follows it."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if then not in ("hang", "close", "reset"):
            raise ValueError("then must be 'hang', 'close' or 'reset'")
        self._set_mode(_TRUNCATE, n=n, then=then)

    def corrupt(
        self,
        fn: Callable[[bytes], bytes] | None = None,
        *,
        offset: int | None = None,
        xor: int = 0xFF,
    ) -> None:
        """Corrupt every reply frame (offsets count from the first byte of its 4-byte length).

        :param fn: called with each whole reply frame, returns the bytes to send instead; frames
            that started before the call pass unmodified. If it raises, the error goes to
            :attr:`errors` and the connection is reset.
        :param offset: XOR the byte at this offset of each frame with ``xor``; negative offsets
            count from the frame's end.
        """
        if (fn is None) == (offset is None):
            raise ValueError("pass exactly one of fn and offset")
        if not 1 <= xor <= 255:
            raise ValueError("xor must be in 1..255")
        self._set_mode(_CORRUPT, fn=fn, offset=offset, xor=xor)

    # ---- actions -----------------------------------------------------------------------------

    def reset(self) -> int:
        """Reset (RST) every open client connection now; returns how many. The mode is unchanged."""
        result: int = self._call(self._reset_all)
        return result

    def refuse(self) -> None:
        """Stop accepting: close the listening socket so connects are refused. Open connections
        are unaffected. :meth:`resume_accepting` (or :meth:`pass_through`) listens again."""
        self._call(self._close_listener)

    def resume_accepting(self) -> None:
        """Listen again on the same port after :meth:`refuse`."""
        self._call(self._ensure_listening)

    @property
    def accepting(self) -> bool:
        """Whether the listening socket is open."""
        return self._listener is not None

    # ---- counters ----------------------------------------------------------------------------

    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        with self._lock:
            return ProxyStats(**self._stats)

    def wait_until(self, predicate: Callable[[ProxyStats], bool], timeout: float = 5.0) -> ProxyStats:
        """Block until ``predicate(stats)`` holds; raises ``TimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snap = ProxyStats(**self._stats)
                if predicate(snap):
                    return snap
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped:
                    raise TimeoutError(f"proxy counters never matched: {snap}")
                self._cond.wait(left)

    # ---- command plumbing --------------------------------------------------------------------

    def _set_mode(self, kind: str, **params: Any) -> None:
        def apply() -> None:
            self._gen += 1
            self._mode = _Mode(kind, self._gen, **params)
            for link in list(self._links.values()):
                self._leave_mode(link)
                self._update(link)

        self._call(apply)

    def _call(self, fn: Callable[[], _T]) -> _T:
        if threading.current_thread() is self._thread:
            return fn()  # from inside the loop (a corrupt() function): run now
        with self._control:
            with self._lock:
                running = self._running
                if running:
                    cmd = _Command(fn)
                    self._commands.append(cmd)
            if not running:
                # Not started or stopped: no loop, no links; _control keeps start() out.
                return fn()
            self._wake()
            if not cmd.done.wait(self.join_timeout):
                raise RuntimeError("FaultProxy loop did not answer")
            if cmd.exc is not None:
                raise cmd.exc
            result: _T = cmd.result
            return result

    def _wake(self) -> None:
        w = self._wake_w
        if w is None:
            return
        try:
            w.send(b"\0")
        except OSError:  # full (the loop will wake anyway) or closed (the loop is gone)
            pass

    def _count(self, **deltas: int) -> None:
        with self._cond:
            for key, value in deltas.items():
                self._stats[key] += value
            self._cond.notify_all()

    # ---- the loop (everything below runs on the loop thread) ---------------------------------

    def _run(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while True:
                with self._lock:
                    if self._stopped:
                        break
                    commands, self._commands = self._commands, []
                for cmd in commands:
                    try:
                        cmd.result = cmd.fn()
                    except BaseException as exc:  # handed back to the caller
                        cmd.exc = exc
                    cmd.done.set()
                now = time.monotonic()
                self._run_timers(now)
                for link in list(self._links.values()):
                    self._update(link)
                for key, mask in sel.select(self._next_timeout(now)):
                    self._dispatch(key, mask)
        except BaseException as exc:  # pragma: no cover - a bug in the loop; keep it visible
            log.exception("FaultProxy loop failed")
            self.errors.append(exc)
        finally:
            with self._lock:
                self._running = False
                pending, self._commands = self._commands, []
                self._cond.notify_all()
            for cmd in pending:
                cmd.exc = RuntimeError("FaultProxy stopped")
                cmd.done.set()
            for link in list(self._links.values()):
                self._drop(link)
            self._close_loop_resources()

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data is None:
            if key.fileobj is self._wake_r:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
            else:
                self._accept()
            return
        link, side = key.data
        if link.id not in self._links:
            return
        try:
            if side == "c":
                if mask & selectors.EVENT_READ:
                    self._read_client(link)
                if mask & selectors.EVENT_WRITE and link.id in self._links:
                    self._write_client(link)
            else:
                if not link.upstream_connected:
                    self._finish_connect(link)
                    return
                if mask & selectors.EVENT_READ:
                    self._read_upstream(link)
                if mask & selectors.EVENT_WRITE and link.id in self._links:
                    self._write_upstream(link)
        except Exception as exc:  # never let one connection kill the loop
            log.exception("FaultProxy: error on connection %d", link.id)
            self.errors.append(exc)
            self._drop(link)
            return
        if link.id in self._links:
            self._update(link)

    def _next_timeout(self, now: float) -> float | None:
        best: float | None = None
        for link in self._links.values():
            for when in (
                link.held[0][0] if link.held else None,
                link.next_drip if link.drip else None,
                link.connect_deadline if not link.upstream_connected and link.upstream is not None else None,
            ):
                if when is not None and (best is None or when < best):
                    best = when
        return None if best is None else max(0.0, best - now)

    def _run_timers(self, now: float) -> None:
        for link in list(self._links.values()):
            if not link.upstream_connected and link.upstream is not None and now >= link.connect_deadline:
                self._upstream_failed(link, "connect timed out")
                continue
            while link.held and link.held[0][0] <= now:
                link.to_client += link.held.popleft()[1]
            if link.drip and now >= link.next_drip:
                mode = self._mode
                size = mode.n if mode.kind == _DRIP else len(link.drip)
                link.to_client += link.drip[:size]
                del link.drip[:size]
                link.next_drip = now + (mode.interval if mode.kind == _DRIP else 0.0)

    # ---- listener ----------------------------------------------------------------------------

    def _open_listener(self) -> None:
        lst = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lst.bind((self.host, self._port))
            lst.listen(64)
            lst.setblocking(False)
        except OSError:
            lst.close()
            raise
        self._port = lst.getsockname()[1]
        self._listener = lst
        assert self._sel is not None
        self._sel.register(lst, selectors.EVENT_READ, None)

    def _ensure_listening(self) -> None:
        if self._listener is None and self._sel is not None:
            self._open_listener()

    def _close_listener(self) -> None:
        lst, self._listener = self._listener, None
        if lst is not None:
            if self._sel is not None:
                self._sel.unregister(lst)
            lst.close()

    def _close_loop_resources(self) -> None:
        self._close_listener()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None
        if self._sel is not None:
            self._sel.close()
            self._sel = None

    def _accept(self) -> None:
        lst = self._listener
        while lst is not None:
            try:
                client, _addr = lst.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE; try again on the next readiness
                log.warning("FaultProxy accept failed: %s", exc)
                return
            if len(self._links) >= self.max_connections:
                _rst_close(client)
                self._count(rejected=1)
                continue
            self._next_link += 1
            link = _Link(self._next_link, client)
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._links[link.id] = link
            self._count(accepted=1, open=1)
            self._connect_upstream(link)
            if link.id in self._links:
                self._update(link)

    # ---- upstream connect --------------------------------------------------------------------

    def _connect_upstream(self, link: _Link) -> None:
        family = socket.AF_INET6 if ":" in self.upstream[0] else socket.AF_INET
        up = socket.socket(family, socket.SOCK_STREAM)
        up.setblocking(False)
        link.upstream = up
        link.connect_deadline = time.monotonic() + self.connect_timeout
        err = up.connect_ex(self.upstream)
        if err == 0:
            self._connected(link)
        elif err not in _CONNECTING:
            self._upstream_failed(link, errno.errorcode.get(err, str(err)))

    def _finish_connect(self, link: _Link) -> None:
        assert link.upstream is not None
        err = link.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._upstream_failed(link, errno.errorcode.get(err, str(err)))
        else:
            self._connected(link)
            self._update(link)

    def _connected(self, link: _Link) -> None:
        assert link.upstream is not None
        link.upstream_connected = True
        link.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _upstream_failed(self, link: _Link, why: str) -> None:
        log.debug("FaultProxy connection %d: upstream connect failed: %s", link.id, why)
        self._count(upstream_failures=1)
        self._close_upstream(link)
        link.upstream_eof = True
        if self._mode.kind == _STALL:
            link.hung = True  # a black hole needs no upstream: keep the client waiting
        else:
            self._drop(link)

    # ---- client side -------------------------------------------------------------------------

    def _read_client(self, link: _Link) -> None:
        try:
            data = link.client.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(link)
            return
        if not data:
            link.client_eof = True
            if link.draining:
                self._drop(link)
            return
        self._count(bytes_from_client=len(data))
        if link.draining or link.upstream is None:
            return
        mode = self._mode
        if mode.kind == _STALL and not mode.forward_requests:
            return  # black hole
        link.to_upstream += data

    def _write_client(self, link: _Link) -> None:
        if not link.to_client:
            return
        try:
            sent = link.client.send(link.to_client)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(link)
            return
        del link.to_client[:sent]
        self._count(bytes_to_client=sent)

    # ---- upstream side -----------------------------------------------------------------------

    def _write_upstream(self, link: _Link) -> None:
        if not link.to_upstream or link.upstream is None:
            return
        try:
            sent = link.upstream.send(link.to_upstream)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            link.to_upstream.clear()
            self._upstream_gone(link, reset=True)
            return
        del link.to_upstream[:sent]
        self._count(bytes_to_upstream=sent)

    def _read_upstream(self, link: _Link) -> None:
        assert link.upstream is not None
        try:
            data = link.upstream.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._upstream_gone(link, reset=True)
            return
        if not data:
            self._upstream_gone(link, reset=False)
            return
        self._count(bytes_from_upstream=len(data))
        self._reply_bytes(link, data)

    def _upstream_gone(self, link: _Link, reset: bool) -> None:
        link.upstream_eof = True
        self._close_upstream(link)
        if reset and not link.hung and self._mode.kind != _STALL and link.after_flush is None:
            link.after_flush = "reset"  # pass the upstream's reset on, after what it did send

    def _close_upstream(self, link: _Link) -> None:
        up, link.upstream = link.upstream, None
        if up is not None:
            if link.upstream_events and self._sel is not None:
                self._sel.unregister(up)
            link.upstream_events = 0
            up.close()

    # ---- reply transformation ----------------------------------------------------------------

    def _leave_mode(self, link: _Link) -> None:
        """Release what the previous mode held back, in order."""
        while link.held:
            link.to_client += link.held.popleft()[1]
        if link.drip:
            link.to_client += link.drip
            link.drip.clear()
        if link.fn_buf:
            link.to_client += link.fn_buf
            link.fn_buf.clear()

    def _observe(self, link: _Link, mode: _Mode) -> None:
        if link.gen == mode.gen:
            return
        link.gen = mode.gen
        link.count = 0
        # The next frame to start: this one if we are between frames, else the following one.
        nxt = link.frame_index if link.frame_pos == 0 else link.frame_index + 1
        link.trunc_frame = link.fn_first = nxt
        link.fn_skip = -1

    def _emit(self, link: _Link, data: bytes | bytearray) -> None:
        if not data:
            return
        mode = self._mode
        if mode.kind == _DELAY:
            now = time.monotonic()
            due = now + mode.seconds
            if link.held and link.held[-1][0] > due:
                due = link.held[-1][0]
            link.held.append((due, bytes(data)))
        elif mode.kind == _DRIP:
            if not link.drip:
                link.next_drip = max(link.next_drip, time.monotonic())
            link.drip += data
        else:
            link.to_client += data

    def _reply_bytes(self, link: _Link, chunk: bytes) -> None:
        mode = self._mode
        self._observe(link, mode)
        pieces = link.split(chunk)  # always, so frame boundaries stay known in every mode
        if link.hung or link.draining or link.after_flush is not None:
            return
        kind = mode.kind
        if kind == _STALL:
            return
        if kind in (_PASS, _DELAY, _DRIP):
            self._emit(link, chunk)
        elif kind in (_RESET_AFTER, _CLOSE_AFTER):
            part = chunk[: max(0, mode.n - link.count)]
            self._emit(link, part)
            link.count += len(part)
            if link.count >= mode.n:
                link.after_flush = "reset" if kind == _RESET_AFTER else "close"
        elif kind == _TRUNCATE:
            for index, off, data, _total, done in pieces:
                if index < link.trunc_frame:
                    self._emit(link, data)
                    continue
                keep = max(0, min(len(data), mode.n - off))
                self._emit(link, data[:keep])
                if off + keep >= mode.n or done:
                    if mode.then == "hang":
                        link.hung = True
                    else:
                        link.after_flush = mode.then
                    return
        elif kind == _CORRUPT:
            if mode.fn is None:
                self._corrupt_offset(link, mode, pieces)
            else:
                self._corrupt_fn(link, mode, pieces)

    def _corrupt_offset(self, link: _Link, mode: _Mode, pieces: list[_Piece]) -> None:
        assert mode.offset is not None
        for _index, off, data, total, _done in pieces:
            target = mode.offset if mode.offset >= 0 else (total + mode.offset if total >= 0 else -1)
            if off <= target < off + len(data):
                buf = bytearray(data)
                buf[target - off] ^= mode.xor
                self._emit(link, buf)
            else:
                self._emit(link, data)

    def _corrupt_fn(self, link: _Link, mode: _Mode, pieces: list[_Piece]) -> None:
        assert mode.fn is not None
        for index, _off, data, total, done in pieces:
            if index < link.fn_first or index == link.fn_skip:
                self._emit(link, data)
                continue
            if total > self.max_buffered_frame:
                link.fn_skip = index  # too big to buffer: pass this frame through
                self._emit(link, bytes(link.fn_buf) + data)
                link.fn_buf.clear()
                continue
            link.fn_buf += data
            if done:
                frame = bytes(link.fn_buf)
                link.fn_buf.clear()
                try:
                    out = mode.fn(frame)
                except Exception as exc:
                    log.warning("FaultProxy corrupt() function failed: %r", exc)
                    self.errors.append(exc)
                    link.after_flush = "reset"
                    return
                self._emit(link, out)

    # ---- interest, teardown ------------------------------------------------------------------

    def _update(self, link: _Link) -> None:
        """Register exactly the events this link can act on now (so select never spins), and
        carry out pending closes."""
        if link.id not in self._links:
            return
        mode = self._mode
        nothing_pending = not link.to_client and not link.held and not link.drip and not link.fn_buf
        if nothing_pending and link.after_flush is not None and not link.draining:
            action, link.after_flush = link.after_flush, None
            if action == "reset":
                self._rst(link)
            else:
                self._clean_close(link)
            return
        blocked = link.hung or mode.kind == _STALL
        if link.upstream_eof and nothing_pending and not blocked and not link.client_shut:
            _shutdown(link.client, socket.SHUT_WR)  # pass the upstream's FIN on
            link.client_shut = True
        if link.client_eof and not link.to_upstream and not link.upstream_shut and link.upstream_connected:
            if link.upstream is not None:
                _shutdown(link.upstream, socket.SHUT_WR)  # pass the client's FIN on
            link.upstream_shut = True
        if link.client_eof and (link.client_shut or (link.upstream_eof and (nothing_pending or blocked))):
            self._drop(link)
            return
        # Interest.
        c_ev = 0
        if not link.client_eof:
            dropping = (
                link.draining or link.upstream is None or (mode.kind == _STALL and not mode.forward_requests)
            )
            if dropping or len(link.to_upstream) < self.buffer_limit:
                c_ev |= selectors.EVENT_READ
        if link.to_client and not link.draining:
            c_ev |= selectors.EVENT_WRITE
        u_ev = 0
        if link.upstream is not None:
            if not link.upstream_connected:
                u_ev = selectors.EVENT_WRITE
            else:
                if not link.upstream_eof and link.pending_to_client() < self.buffer_limit:
                    u_ev |= selectors.EVENT_READ
                if link.to_upstream:
                    u_ev |= selectors.EVENT_WRITE
        self._register(link, link.client, "c", c_ev)
        if link.upstream is not None:
            self._register(link, link.upstream, "u", u_ev)

    def _register(self, link: _Link, sock: socket.socket, side: str, events: int) -> None:
        sel = self._sel
        assert sel is not None
        current = link.client_events if side == "c" else link.upstream_events
        if events == current:
            return
        if current == 0:
            sel.register(sock, events, (link, side))
        elif events == 0:
            sel.unregister(sock)
        else:
            sel.modify(sock, events, (link, side))
        if side == "c":
            link.client_events = events
        else:
            link.upstream_events = events

    def _unregister_client(self, link: _Link) -> None:
        if link.client_events and self._sel is not None:
            self._sel.unregister(link.client)
        link.client_events = 0

    def _rst(self, link: _Link) -> None:
        self._close_upstream(link)
        self._unregister_client(link)
        _rst_close(link.client)
        self._forget(link, resets=1)

    def _clean_close(self, link: _Link) -> None:
        """FIN to the client, drop the upstream, then read and discard until the client closes
        (closing with unread bytes would turn the FIN into an RST)."""
        self._close_upstream(link)
        link.upstream_eof = True
        link.to_upstream.clear()
        _shutdown(link.client, socket.SHUT_WR)
        link.client_shut = True
        link.draining = True
        if link.client_eof:
            self._drop(link)
        else:
            self._update(link)

    def _reset_all(self) -> int:
        links = list(self._links.values())
        for link in links:
            self._rst(link)
        return len(links)

    def _drop(self, link: _Link) -> None:
        """Close both sockets normally and forget the link."""
        if link.id not in self._links:
            return
        self._close_upstream(link)
        self._unregister_client(link)
        try:
            link.client.close()
        except OSError:
            pass
        self._forget(link)

    def _forget(self, link: _Link, resets: int = 0) -> None:
        if self._links.pop(link.id, None) is not None:
            self._count(open=-1, resets=resets)


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


def _rst_close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
