"""Thrift framing and message envelopes, written for graphd (protocol spec §1.2, §1.7, §2).

The client writes THeader frames carrying the binary protocol (id 0), or framed binary as a fallback,
and decodes message bodies with Apache thrift's C extension (``fastbinary``). Frames are built with a
few ``struct`` calls instead of Apache's pure-Python ``THeaderTransport`` (performance notes,
"Per-statement cost"). The functions here are pure (bytes in, bytes or objects out) and
thread-safe; the fake graphd uses them too.
"""

from __future__ import annotations

import enum
import io
import struct
import warnings
import zlib
from typing import Any

import attrs
from thrift.protocol.TProtocol import TProtocolException
from thrift.Thrift import TApplicationException, TType
from thrift.transport.TTransport import TTransportException

from nebula_sync.errors import ProtocolError, ReplyTooLarge

try:
    from thrift.protocol import fastbinary as _fastbinary
except ImportError:  # pragma: no cover - exercised only where the C extension failed to build
    _fastbinary = None
    warnings.warn(
        "thrift's C extension (thrift.protocol.fastbinary) is not available; nebula_sync falls back "
        "to pure-Python decoding, which is many times slower. Reinstall thrift with a C compiler.",
        RuntimeWarning,
        stacklevel=2,
    )

__all__ = [
    "CALL",
    "EXCEPTION",
    "ONEWAY",
    "PROTO_BINARY",
    "PROTO_COMPACT",
    "REPLY",
    "THEADER_MAGIC",
    "FrameInfo",
    "Framing",
    "Limits",
    "binary_message",
    "decode_struct",
    "encode_struct",
    "framed_frame",
    "parse_frame",
    "parse_message_header",
    "theader_frame",
]

CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4
THEADER_MAGIC = 0x0FFF
PROTO_BINARY = 0
PROTO_COMPACT = 2
_VERSION_1 = 0x80010000
_VERSION_MASK = 0xFFFF0000

_pack_header = struct.Struct("!IHHIH").pack  # length, magic, flags, seq id, header words
_unpack_i32 = struct.Struct("!i").unpack_from
_unpack_u32 = struct.Struct("!I").unpack_from
_unpack_header = struct.Struct("!HHIH").unpack_from
_pack_envelope = struct.Struct("!Ii").pack
_pack_i32 = struct.Struct("!i").pack


class Framing(str, enum.Enum):
    """How messages are framed on the socket."""

    #: fbthrift THeader (magic 0x0FFF) carrying the binary protocol: what graphd speaks natively
    THEADER = "theader"
    #: 4-byte length prefix, then a binary message (Apache ``TFramedTransport``)
    FRAMED = "framed"


@attrs.frozen
class Limits:
    """Bounds on what a peer may make us allocate. Thread-safe (immutable)."""

    #: largest frame accepted, bytes (Apache's THeader maximum is 1 GiB)
    max_frame_size: int = 256 * 1024 * 1024
    #: longest string or binary value, bytes
    max_string_length: int = 64 * 1024 * 1024
    #: most elements in one list, set or map
    max_container_length: int = 16 * 1024 * 1024


DEFAULT_LIMITS = Limits()


def binary_message(name: bytes, mtype: int, seqid: int, body: bytes) -> bytes:
    """A strict binary-protocol message: envelope then the already-encoded struct ``body``."""
    return _pack_envelope(_VERSION_1 | mtype, len(name)) + name + _pack_i32(seqid) + body


def theader_frame(
    payload: bytes,
    seqid: int,
    proto_id: int = PROTO_BINARY,
    flags: int = 0,
    transforms: tuple[int, ...] = (),
) -> bytes:
    """Wrap ``payload`` in a THeader frame (no info headers).

    ``transforms`` are applied to the payload and listed in the header; only zlib (id 1) is
    supported (the client never sends any; the fake graphd mirrors a client's).
    """
    header = bytearray((proto_id, len(transforms)))  # varint protocol id and count (< 128)
    for tid in transforms:
        if tid != 1:
            raise ValueError(f"unsupported THeader transform {tid}")
        header.append(tid)
        payload = zlib.compress(payload)
    header.extend(b"\x00" * (-len(header) % 4))  # zero padding to whole 4-byte words
    length = 10 + len(header) + len(payload)
    prefix = _pack_header(length, THEADER_MAGIC, flags, seqid & 0xFFFFFFFF, len(header) // 4)
    return prefix + bytes(header) + payload


def framed_frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its 4-byte length (framed transport)."""
    return struct.pack("!I", len(payload)) + payload


@attrs.frozen
class FrameInfo:
    """What a frame's header said. ``offset`` is where the message starts inside the frame."""

    framing: Framing
    proto_id: int
    offset: int
    seqid: int = 0
    flags: int = 0
    transforms: tuple[int, ...] = ()


def _varint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ProtocolError("THeader header ends inside a varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtocolError("THeader varint is too long")


def parse_frame(frame: bytes | bytearray, pos: int = 0) -> FrameInfo:
    """Read the header of the frame starting at ``pos`` (just after its 4-byte length prefix).

    Recognises THeader (magic ``0x0FFF``) and framed messages (binary ``0x8001``, compact
    ``0x82``). ``FrameInfo.offset`` is the absolute position of the message in ``frame``.
    Raises :class:`ProtocolError` for anything else.
    """
    size = len(frame) - pos
    if size >= 10 and frame[pos] == 0x0F and frame[pos + 1] == 0xFF:
        _magic, flags, seqid, words = _unpack_header(frame, pos)
        end = pos + 10 + words * 4
        if words * 4 > size - 10:
            raise ProtocolError(f"THeader header length {words * 4} exceeds the frame ({size} bytes)")
        proto_id, at = _varint(frame, pos + 10, end)
        count, at = _varint(frame, at, end)
        transforms = []
        for _ in range(count):
            tid, at = _varint(frame, at, end)
            transforms.append(tid)
        # Info headers (if any) sit between here and ``end``; nothing we need is in them.
        return FrameInfo(Framing.THEADER, proto_id, end, seqid, flags, tuple(transforms))
    if size >= 2 and frame[pos] == 0x80 and frame[pos + 1] == 0x01:
        return FrameInfo(Framing.FRAMED, PROTO_BINARY, pos)
    if size >= 2 and frame[pos] == 0x82:
        return FrameInfo(Framing.FRAMED, PROTO_COMPACT, pos)
    head = bytes(frame[pos : pos + 4]).hex()
    raise ProtocolError(f"unrecognised frame (first bytes {head!r}): not THeader or framed thrift")


def parse_message_header(buf: bytes | bytearray, pos: int) -> tuple[str, int, int, int]:
    """Parse a strict binary envelope at ``pos``: ``(name, message type, seqid, body offset)``."""
    try:
        (version,) = _unpack_u32(buf, pos)
        if version & _VERSION_MASK != _VERSION_1:
            raise ProtocolError(f"bad binary protocol version 0x{version:08x}")
        (name_len,) = _unpack_i32(buf, pos + 4)
        if name_len < 0 or name_len > 256:
            raise ProtocolError(f"bad method name length {name_len}")
        start = pos + 8
        name = bytes(buf[start : start + name_len]).decode("ascii", "replace")
        if len(name) != name_len:
            raise ProtocolError("message ends inside the method name")
        (seqid,) = _unpack_i32(buf, start + name_len)
    except struct.error:
        raise ProtocolError("message ends inside its envelope") from None
    return name, version & 0xFF, seqid, start + name_len + 4


class _Transport:
    """The transport thrift's C decoder reads from: a ``BytesIO`` it is never asked to refill."""

    __slots__ = ("cstringio_buf",)

    def __init__(self) -> None:
        self.cstringio_buf = io.BytesIO()

    def cstringio_refill(self, partial: bytes, reqlen: int) -> io.BytesIO:
        raise EOFError("message ends inside a struct")


_reinit = io.BytesIO.__init__


class Reader:
    """Decodes binary-protocol structs with thrift's C decoder, within ``limits``.

    ``fastbinary.decode_binary`` looks up ``trans``, ``string_length_limit`` and
    ``container_length_limit`` on this object by name. The ``BytesIO`` it reads is re-initialised
    for each call, not made anew: a connection keeps one reader, which saves ~1,700 instructions
    per statement (allocating and finalising a ``BytesIO`` and a source object). Not thread-safe:
    one user at a time (a connection is used by one thread at a time).
    """

    __slots__ = ("container_length_limit", "limits", "string_length_limit", "trans")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.trans = _Transport()
        self.string_length_limit = limits.max_string_length
        self.container_length_limit = limits.max_container_length

    def decode(self, buf: bytes | bytearray, pos: int, spec: list[Any]) -> Any:
        """Decode one struct at ``pos``; ``spec`` is ``[cls, spec]``. Any failure (truncation,
        limits, a malformed value) raises :class:`ProtocolError`."""
        stream = self.trans.cstringio_buf
        _reinit(stream, buf)  # shares a bytes object; copies a bytearray (as BytesIO(buf) does)
        try:
            stream.seek(pos)
            if _fastbinary is None:
                return _slow_decode(stream, spec, self.limits)
            return _fastbinary.decode_binary(None, self, spec)
        except ProtocolError:
            raise
        except (EOFError, TProtocolException, TTransportException, OverflowError, ValueError,
                TypeError, KeyError, UnicodeDecodeError, MemoryError, RecursionError) as exc:  # fmt: skip
            if self._over_limit(exc, buf, pos, spec):
                raise ReplyTooLarge(
                    f"the reply holds a string or container beyond max_string_length "
                    f"({self.limits.max_string_length}) or max_container_length "
                    f"({self.limits.max_container_length}): {exc}"
                ) from exc
            raise ProtocolError(f"could not decode the reply: {type(exc).__name__}: {exc}") from exc
        finally:
            _reinit(stream, b"")  # drop the reply

    def _over_limit(self, exc: BaseException, buf: bytes | bytearray, pos: int, spec: list[Any]) -> bool:
        """Whether a decode failed on a string or container beyond the limits (not on garbage)."""
        if isinstance(exc, OverflowError):  # the C decoder, on strings, lists and sets
            hit = "exceeded specified limit" in str(exc)
        elif isinstance(exc, (TProtocolException, TTransportException)):  # the pure-Python one
            hit = exc.type == type(exc).SIZE_LIMIT
        elif isinstance(exc, TypeError) and "wrong ttype" in str(exc) and _fastbinary is not None:
            # the C decoder reports a map beyond the limit as a type error, as it does a map that is
            # malformed: the pure-Python decoder tells the two apart (only ever on a failed decode)
            stream = io.BytesIO(buf)
            stream.seek(pos)
            try:
                _slow_decode(stream, spec, self.limits)
            except (TProtocolException, TTransportException) as slow:
                return self._over_limit(slow, buf, pos, spec)
            except Exception:  # malformed after all: garbage, not a limit
                pass
            return False
        else:
            return False
        # A corrupted length field reads as "too large" too; a string or container really beyond a
        # limit is in the reply (each element takes a byte at least), so the reply is longer.
        return hit and len(buf) - pos > min(self.limits.max_string_length, self.limits.max_container_length)


def decode_struct(buf: bytes | bytearray, pos: int, spec: list[Any], limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one binary-protocol struct at ``pos`` with a one-off :class:`Reader`."""
    return Reader(limits).decode(buf, pos, spec)


def _slow_decode(stream: io.BytesIO, spec: list[Any], limits: Limits) -> Any:
    """Decode like the C extension does, in pure Python (used only when it is missing).

    It follows the C decoder's rules so the same specs work: a struct whose class subclasses
    ``TFrozenBase`` (or has its own ``__setattr__``) is built as ``cls(**fields)``, any other as
    ``cls()`` plus attributes; fields are looked up in the spec by id, a field of the wrong type is
    skipped. Limits and nesting depth are enforced.
    """
    from thrift.protocol.TBinaryProtocol import TBinaryProtocol
    from thrift.transport.TTransport import TMemoryBuffer

    proto = TBinaryProtocol(
        TMemoryBuffer(stream.read()),
        string_length_limit=limits.max_string_length,
        container_length_limit=limits.max_container_length,
    )
    return _read_struct(proto, spec[0], spec[1], 0)


_MAX_DEPTH = 64  # the C decoder's recursion limit


def _read_struct(proto: Any, cls: Any, spec: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise ProtocolError("the reply nests structs too deeply")
    from thrift.protocol.TBase import TFrozenBase

    immutable = issubclass(cls, TFrozenBase) or cls.__setattr__ is not object.__setattr__
    fields: dict[str, Any] = {}
    proto.readStructBegin()
    while True:
        _name, ftype, fid = proto.readFieldBegin()
        if ftype == TType.STOP:
            break
        entry = spec[fid] if 0 <= fid < len(spec) else None
        if entry is None or entry[1] != ftype:
            proto.skip(ftype)
        else:
            fields[entry[2]] = _read_value(proto, ftype, entry[3], depth)
        proto.readFieldEnd()
    proto.readStructEnd()
    if immutable:
        return cls(**fields)
    obj = cls()
    for name, value in fields.items():
        setattr(obj, name, value)
    return obj


def _read_value(proto: Any, ttype: int, args: Any, depth: int) -> Any:
    if ttype == TType.STRUCT:
        return _read_struct(proto, args[0], args[1], depth + 1)
    if ttype == TType.STRING:
        raw = proto.readBinary()
        return raw.decode("utf-8", "replace") if args == "UTF8" else raw
    if ttype in (TType.LIST, TType.SET):
        etype, eargs, frozen = args
        wire_type, size = proto.readListBegin() if ttype == TType.LIST else proto.readSetBegin()
        if size and wire_type != etype:
            raise ProtocolError(f"container element type {wire_type}, expected {etype}")
        items = [_read_value(proto, etype, eargs, depth) for _ in range(size)]
        if ttype == TType.SET:
            return frozenset(items) if frozen else set(items)
        return tuple(items) if frozen else items
    if ttype == TType.MAP:
        ktype, kargs, vtype, vargs, _frozen = args
        wk, wv, size = proto.readMapBegin()
        if size and (wk != ktype or wv != vtype):
            raise ProtocolError(f"map entry types {wk}/{wv}, expected {ktype}/{vtype}")
        result = {}
        for _ in range(size):
            key = _read_value(proto, ktype, kargs, depth)
            result[key] = _read_value(proto, vtype, vargs, depth)
        return result
    readers = {
        TType.BOOL: proto.readBool, TType.BYTE: proto.readByte, TType.I16: proto.readI16,
        TType.I32: proto.readI32, TType.I64: proto.readI64, TType.DOUBLE: proto.readDouble,
    }  # fmt: skip
    if ttype not in readers:
        raise ProtocolError(f"unexpected wire type {ttype}")
    return readers[ttype]()


def encode_struct(obj: Any, spec: list[Any]) -> bytes:
    """Encode a struct with the binary protocol (C encoder when available)."""
    if _fastbinary is not None:
        result: bytes = _fastbinary.encode_binary(obj, spec)
        return result
    from thrift.protocol.TBinaryProtocol import TBinaryProtocol  # pragma: no cover
    from thrift.transport.TTransport import TMemoryBuffer  # pragma: no cover

    trans = TMemoryBuffer()  # pragma: no cover
    TBinaryProtocol(trans).writeStruct(obj, spec[1])  # pragma: no cover
    return bytes(trans.getvalue())  # pragma: no cover


def decode_application_exception(buf: bytes | bytearray, pos: int) -> TApplicationException:
    """Decode a ``TApplicationException`` body (field 1 message, field 2 type)."""
    from thrift.protocol.TBinaryProtocol import TBinaryProtocol
    from thrift.transport.TTransport import TMemoryBuffer

    exc = TApplicationException()
    try:
        exc.read(TBinaryProtocol(TMemoryBuffer(bytes(buf[pos:]))))
    except Exception as err:  # any malformed body is a protocol error
        raise ProtocolError(f"could not decode an exception reply: {err}") from err
    return exc
