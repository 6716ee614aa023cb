"""A replay graphd for benchmarks: pre-encoded replies, served from one process, as fast as Python can.

It answers ``verifyClientVersion``, ``authenticate``, ``execute``, ``executeWithParameter`` (and the
JSON variants' names with the same ``ExecutionResponse``) with replies encoded once at start-up,
in the framing and protocol the request came in: THeader + binary (protocol id 0, what nebula_sync
speaks), THeader + fbthrift compact v2 (protocol id 2, what nebula3-python speaks) or framed binary.
Per request it only parses the frame header, the method name and the sequence ids, then copies the
two sequence ids (THeader's and the message's) into the pre-encoded reply. ``signout`` gets no reply
(it is oneway). Every statement gets the reply of ``RETURN 1`` (one column ``1``, one row ``1``,
space ``bench``), whatever it says: it is a load generator's server, not a graphd.

It runs as its own process (``python benchmarks/_replay.py``), single-threaded over ``selectors``,
prints ``PORT <n>`` on stdout once listening, and exits when its stdin is closed, so it never
outlives the benchmark that started it. Loopback only.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import sys
from typing import Any, Callable, Optional

from nebula_sync._thrift import service, ttypes, wire
from nebula_sync.testing import compact_message

SPACE = b"bench"
SESSION_ID = 424242

_u32 = struct.Struct("!I")
_u16 = struct.Struct("!H")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def _results() -> dict[bytes, Any]:
    one = ttypes.DataSet(column_names=[b"1"], rows=[ttypes.Row(values=[ttypes.Value(iVal=1)])])
    execute = service.ExecuteResult(
        success=ttypes.ExecutionResponse(error_code=0, latency_in_us=120, space_name=SPACE, data=one)
    )
    auth = ttypes.AuthResponse(error_code=0, session_id=SESSION_ID, time_zone_offset_seconds=0,
                               time_zone_name=b"UTC")  # fmt: skip
    return {
        b"verifyClientVersion": service.VerifyClientVersionResult(
            success=ttypes.VerifyClientVersionResp(error_code=0)
        ),
        b"authenticate": service.AuthenticateResult(success=auth),
        b"execute": execute,
        b"executeWithParameter": execute,
    }


class Templates:
    """Per method and protocol, the reply split around its sequence id(s)."""

    def __init__(self) -> None:
        self.binary: dict[bytes, tuple[bytes, bytes]] = {}  # message: (before seqid, after seqid)
        self.compact: dict[bytes, tuple[bytes, bytes]] = {}
        for name, result in _results().items():
            body = wire.encode_struct(result, [type(result), type(result).thrift_spec])
            head = wire.binary_message(name, wire.REPLY, 0, b"")[:-4]
            self.binary[name] = (head, body)
            msg = compact_message(name.decode(), wire.REPLY, 0, result)
            # compact envelope: 0x82, (type << 5) | 2, varint seqid (0 here: one byte),
            # varint name length, name
            self.compact[name] = (msg[:2], msg[3:])
        self.header_pad = {0: bytes((0, 0, 0, 0)), 2: bytes((2, 0, 0, 0))}  # proto id, 0 transforms, padding

    def reply(self, frame: bytes | bytearray) -> Optional[bytes]:
        """The reply frame to one request frame (without its length prefix), or None (oneway)."""
        if frame[0] == 0x0F and frame[1] == 0xFF:  # THeader
            hseq = bytes(frame[4:8])
            off = 10 + _u16.unpack_from(frame, 8)[0] * 4
            proto = frame[10]
        else:  # framed binary
            hseq = None
            off = 0
            proto = 0
        if proto == 0:
            (nlen,) = _u32.unpack_from(frame, off + 4)
            name = bytes(frame[off + 8 : off + 8 + nlen])
            seq = bytes(frame[off + 8 + nlen : off + 12 + nlen])
            if name not in self.binary:
                return None  # signout (oneway) or anything else: no reply
            head, body = self.binary[name]
            payload = head + seq + body
        else:
            pos = off + 2
            seqid = 0
            shift = 0
            while True:
                b = frame[pos]
                pos += 1
                seqid |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            nlen = 0
            shift = 0
            while True:
                b = frame[pos]
                pos += 1
                nlen |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            name = bytes(frame[pos : pos + nlen])
            if name not in self.compact:
                return None
            head, tail = self.compact[name]
            payload = head + _varint(seqid) + tail
        if hseq is None:
            return _u32.pack(len(payload)) + payload
        pad = self.header_pad[proto]
        return _u32.pack(14 + len(payload)) + b"\x0f\xff\x00\x00" + hseq + b"\x00\x01" + pad + payload


def serve(host: str = "127.0.0.1", port: int = 0, on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until stdin is closed (or forever if it is a terminal)."""
    templates = Templates()
    listener = socket.create_server((host, port), backlog=128)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    watch_stdin = not sys.stdin.isatty()
    if watch_stdin:
        sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    if on_ready is not None:
        on_ready(listener.getsockname()[1])
    reply = templates.reply
    unpack_len = _u32.unpack_from
    while True:
        for key, _ in sel.select():
            data = key.data
            if data is None:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, bytearray())
                continue
            if data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    return
                continue
            conn = key.fileobj  # type: ignore[assignment]
            try:
                chunk = conn.recv(262144)
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(conn)
                conn.close()
                continue
            buf: bytearray = data
            if not buf and len(chunk) >= 4 and unpack_len(chunk, 0)[0] + 4 == len(chunk):
                out = reply(memoryview(chunk)[4:])  # the common case: exactly one whole request
                if out is not None:
                    conn.sendall(out)
                continue
            buf += chunk
            outs = []
            while len(buf) >= 4:
                (n,) = unpack_len(buf, 0)
                if len(buf) < 4 + n:
                    break
                frame = bytes(buf[4 : 4 + n])
                del buf[: 4 + n]
                out = reply(frame)
                if out is not None:
                    outs.append(out)
            if outs:
                conn.sendall(b"".join(outs))


def main() -> None:
    def ready(port: int) -> None:
        sys.stdout.write(f"PORT {port}\n")
        sys.stdout.flush()

    serve(on_ready=ready)


if __name__ == "__main__":
    main()
