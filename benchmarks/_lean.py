"""A reference point for ``bench_e2e.py --lean``: the least a pure-Python client must do per statement.

Per thread, one connection guarded by one lock (standing in for a pool checkout), and per
statement: encode ``executeWithParameter`` from a pre-built prefix (session id, statement, empty
parameter map, sequence ids packed in), one ``sendall``, ``recv`` until the frame is whole (the
socket stays blocking; ``SO_RCVTIMEO`` bounds the wait, set once), check the THeader header,
method name and sequence id with byte comparisons, decode with nebula_sync's own
``fast.read_execute_reply`` (one reader per worker, as nebula_sync keeps one per connection) and
wrap the reply in nebula_sync's ``ResultSet``. No session handling, failover, fork check,
statistics or error recovery: it is not a client, only a measure of how much of nebula_sync's
time is the unavoidable part.

Speaks to the replay server only (its session id is fixed). One worker per thread; not shared.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

from nebula_sync._result import ResultSet
from nebula_sync._thrift.fast import read_execute_reply
from nebula_sync._thrift.wire import Reader
from nebula_sync.config import ConnectionConfig

_NAME = b"executeWithParameter"
_CALL = struct.pack("!Ii", 0x80010001, len(_NAME)) + _NAME
_REPLY = struct.pack("!Ii", 0x80010002, len(_NAME)) + _NAME
_HEADER = struct.Struct("!IHHIH")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_OFFSET = 4 + 10 + 4  # frame length, THeader fixed part, one header word (protocol 0, no transforms)
_LIMITS = ConnectionConfig().limits


class LeanWorker:
    """One connection and the minimal statement path over it."""

    def __init__(self, host: str, port: int, session_id: int) -> None:
        sock = socket.create_connection((host, port), timeout=10.0)
        sock.settimeout(None)  # blocking: no poll() before each send/recv
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 60, 0))
        self.sock = sock
        self.lock = threading.Lock()
        self.seqid = 0
        self.sid = b"\x0a\x00\x01" + struct.pack("!q", session_id)
        self.reader = Reader(_LIMITS)

    def execute(self, stmt: str) -> ResultSet:
        text = stmt.encode()
        with self.lock:
            seqid = self.seqid = self.seqid + 1
            body = (self.sid + b"\x0b\x00\x02" + _U32.pack(len(text)) + text
                    + b"\x0d\x00\x03\x0b\x0c\x00\x00\x00\x00\x00")  # fmt: skip
            msg = _CALL + _I32.pack(seqid) + body
            sock = self.sock
            sock.sendall(_HEADER.pack(14 + len(msg), 0x0FFF, 0, seqid, 1) + b"\x00\x00\x00\x00" + msg)
            data = sock.recv(65536)
            while len(data) < 4 or len(data) < 4 + _U32.unpack_from(data)[0]:
                more = sock.recv(65536)
                if not more:
                    raise ConnectionError("connection closed mid-reply")
                data += more
            end = _OFFSET + len(_REPLY)
            if (data[4:6] != b"\x0f\xff" or data[14] != 0 or data[_OFFSET:end] != _REPLY
                    or _I32.unpack_from(data, end)[0] != seqid):  # fmt: skip
                raise ConnectionError("unexpected reply")
            resp: Any = read_execute_reply(self.reader, data, end + 4).success
        return ResultSet.from_response(resp, statement=stmt, host="replay", elapsed_us=0)

    def close(self) -> None:
        self.sock.close()
