"""fbthrift compact protocol version 2, on top of Apache thrift's pure-Python compact protocol.

graphd and the official clients speak fbthrift's compact protocol *version 2* (protocol spec §1.3):
the same encoding as Apache's compact protocol (version 1) except that the version nibble of the
message header is ``2`` (first two bytes ``0x82 0x22`` for a CALL) and doubles are written
**big-endian**. Apache's :class:`~thrift.protocol.TCompactProtocol.TCompactProtocol` only speaks
version 1, so :class:`CompactV2Protocol` changes exactly those two things. Structs are read and
written with Apache's generic ``readStruct`` / ``writeStruct`` driven by our ``thrift_spec`` tables.

Everything here works on in-memory buffers; the functions are pure and thread-safe.
"""

from __future__ import annotations

import struct
from typing import Any

from thrift.protocol.TCompactProtocol import CLEAR, VALUE_WRITE, TCompactProtocol, readVarint, writeVarint
from thrift.protocol.TProtocol import TProtocolException
from thrift.Thrift import TApplicationException
from thrift.transport.TTransport import TMemoryBuffer

from nebula_sync._thrift.ttypes import Struct
from nebula_sync.errors import ProtocolError

__all__ = ["COMPACT_PROTOCOL_ID", "CompactV2Protocol", "compact_message", "parse_compact_message"]

#: first byte of every compact message
COMPACT_PROTOCOL_ID = 0x82

_double = struct.Struct("!d")


class CompactV2Protocol(TCompactProtocol):  # type: ignore[misc]
    """Apache's compact protocol switched to fbthrift's version 2 (big-endian doubles).

    Reading accepts only version 2, as graphd's C++ reader does; version 1 (Apache's own compact)
    is rejected with ``Bad version: 1 (expect 2)``. The method name in the envelope is kept as sent:
    bytes that are not UTF-8 read as lone surrogates (``surrogateescape``) and are written back as
    the same bytes, so that a server can answer an unknown name by echoing it (Apache's envelope
    reader raises on such a name). One instance per buffer; not thread-safe.
    """

    VERSION = 2

    def writeMessageBegin(self, name: str, mtype: int, seqid: int) -> None:
        assert self.state == CLEAR  # type: ignore[has-type]
        # protocol id, then version and type in one byte, the sequence id as an unsigned varint
        self.trans.write(bytes((self.PROTOCOL_ID, self.VERSION | (mtype << self.TYPE_SHIFT_AMOUNT))))
        writeVarint(self.trans, seqid & 0xFFFFFFFF)
        raw = name.encode("utf-8", "surrogateescape")
        writeVarint(self.trans, len(raw))
        self.trans.write(raw)
        self.state = VALUE_WRITE

    def readMessageBegin(self) -> tuple[str, int, int]:
        assert self.state == CLEAR
        proto_id, ver_type = self.trans.readAll(2)
        if proto_id != self.PROTOCOL_ID:
            raise TProtocolException(TProtocolException.BAD_VERSION, f"Bad protocol id: {proto_id}")
        version = ver_type & self.VERSION_MASK
        if version != self.VERSION:
            message = f"Bad version: {version} (expect {self.VERSION})"
            raise TProtocolException(TProtocolException.BAD_VERSION, message)
        mtype = (ver_type >> self.TYPE_SHIFT_AMOUNT) & self.TYPE_BITS
        seqid = readVarint(self.trans) & 0xFFFFFFFF
        if seqid > 0x7FFFFFFF:  # written unsigned; the sequence id is a signed 32-bit int
            seqid -= 1 << 32
        size = readVarint(self.trans)
        self._check_string_length(size)
        return self.trans.readAll(size).decode("utf-8", "surrogateescape"), mtype, seqid

    def writeDouble(self, dub: float) -> None:
        self.trans.write(_double.pack(dub))

    def readDouble(self) -> float:
        (value,) = _double.unpack(self.trans.readAll(8))
        return float(value)


def compact_message(name: str, mtype: int, seqid: int, body: Any) -> bytes:
    """Encode one compact-v2 message: the envelope, then ``body``.

    ``body`` is a struct with a ``thrift_spec`` (an args or result struct, or a
    ``TApplicationException``), or ``None`` for an empty struct.
    """
    buf = TMemoryBuffer()
    proto = CompactV2Protocol(buf)
    proto.writeMessageBegin(name, mtype, seqid)
    if body is None:
        proto.writeStructBegin("empty")
        proto.writeFieldStop()
        proto.writeStructEnd()
    elif isinstance(body, TApplicationException):
        body.write(proto)
    else:
        proto.writeStruct(body, body.thrift_spec)
    proto.writeMessageEnd()
    return bytes(buf.getvalue())


def parse_compact_message(payload: bytes, body_cls: type[Struct] | None) -> tuple[str, int, int, Any]:
    """Decode one compact-v2 message: ``(name, message type, seqid, body)``.

    ``body_cls`` is the struct to decode the body into; ``None`` decodes only the envelope and returns
    ``None`` as the body. A message of type EXCEPTION (3) always decodes into a
    ``TApplicationException``. Any malformed input raises :class:`ProtocolError`.
    """
    proto = CompactV2Protocol(TMemoryBuffer(bytes(payload)))
    try:
        name, mtype, seqid = proto.readMessageBegin()
        if mtype == 3:
            exc = TApplicationException()
            exc.read(proto)
            return name, mtype, seqid, exc
        if body_cls is None:
            return name, mtype, seqid, None
        body = body_cls()
        proto.readStruct(body, body_cls.thrift_spec)
    except ProtocolError:
        raise
    except (EOFError, TProtocolException, struct.error, UnicodeDecodeError, ValueError, TypeError,
            KeyError, IndexError, AssertionError, RecursionError) as exc:  # fmt: skip
        raise ProtocolError(f"malformed compact message: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # TTransportException on truncation, and anything else odd
        raise ProtocolError(f"malformed compact message: {type(exc).__name__}: {exc}") from exc
    return name, mtype, seqid, body
