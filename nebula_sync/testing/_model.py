"""Public value types of the fake graphd: scripted-response rules, reply contexts, counters."""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import attrs

from nebula_sync._thrift import ttypes, wire
from nebula_sync._thrift.ttypes import Struct
from nebula_sync.testing._compact import compact_message

if TYPE_CHECKING:
    from thrift.Thrift import TApplicationException

__all__ = [
    "Drop",
    "LoggedStatement",
    "ReplyContext",
    "Rule",
    "ServerStats",
    "SessionInfo",
]

#: the methods that carry a statement
EXECUTE_METHODS = frozenset(
    {"execute", "executeWithParameter", "executeJson", "executeJsonWithParameter"}
)


class Drop(str, enum.Enum):
    """Where a scripted rule drops the connection."""

    #: close the connection after reading the request, without writing anything
    BEFORE_REPLY = "before_reply"
    #: write the first half of the reply frame, then close the connection
    MID_REPLY = "mid_reply"


@attrs.frozen
class ReplyContext:
    """What a raw-reply hook is told about the request it answers. Immutable; thread-safe.

    The helpers build bytes in the request's own framing and protocol, so a hook can tamper with
    exactly one thing, e.g. ``lambda ctx: ctx.reply(seqid=ctx.seqid + 1)`` (wrong seqid),
    ``lambda ctx: ctx.reply(name="bogus")`` (wrong method name), ``lambda ctx:
    ctx.frame(b"\\x80\\x01garbage")`` (malformed message), or ``lambda ctx: b"\\x7f\\xff\\xff\\xff"``
    (an absurd frame length).
    """

    #: wire method name of the request, e.g. ``"executeWithParameter"`` (bytes that are not UTF-8
    #: are kept as lone surrogates, ``surrogateescape``, so a reply can echo them)
    method: str
    #: envelope seqid of the request
    seqid: int
    #: envelope message type of the request (1 CALL, 4 ONEWAY)
    mtype: int
    #: ``wire.Framing.THEADER`` or ``wire.Framing.FRAMED``
    framing: wire.Framing
    #: ``wire.PROTO_BINARY`` (0) or ``wire.PROTO_COMPACT`` (2)
    proto_id: int
    #: THeader sequence id of the request frame (0 for framed)
    header_seqid: int
    #: THeader flags of the request frame
    flags: int
    #: THeader transforms of the request (``(1,)`` = zlib)
    transforms: tuple[int, ...]
    #: the statement, for the execute methods
    statement: Optional[str]
    #: the session id, for the execute methods and ``signout``
    session_id: Optional[int]
    #: the result struct the server would have sent (``None`` for ``signout``)
    result: Any

    def message(self, body: Any = None, *, name: Optional[str] = None, seqid: Optional[int] = None,
                mtype: int = wire.REPLY) -> bytes:  # fmt: skip
        """A message (envelope + ``body``) in the request's protocol, without framing.

        ``body`` is a struct with a ``thrift_spec`` or a ``TApplicationException``; it defaults to
        the normal result struct. ``name``/``seqid`` default to the request's.
        """
        body = self.result if body is None else body
        name = self.method if name is None else name
        seqid = self.seqid if seqid is None else seqid
        if self.proto_id == wire.PROTO_COMPACT:
            return compact_message(name, mtype, seqid, body)
        if body is None:
            encoded = b"\x00"
        elif isinstance(body, Struct):
            encoded = wire.encode_struct(body, [type(body), type(body).thrift_spec])
        else:
            encoded = _encode_exception(body)
        return wire.binary_message(name.encode("utf-8", "surrogateescape"), mtype, seqid, encoded)

    def frame(self, payload: bytes, *, seqid: Optional[int] = None) -> bytes:
        """Wrap ``payload`` in the request's framing (THeader: same protocol id, flags, transforms)."""
        if self.framing is wire.Framing.FRAMED:
            return wire.framed_frame(payload)
        return theader_frame(payload, self.header_seqid if seqid is None else seqid, self.proto_id,
                             self.flags, self.transforms)  # fmt: skip

    def reply(self, body: Any = None, *, name: Optional[str] = None, seqid: Optional[int] = None,
              mtype: int = wire.REPLY) -> bytes:  # fmt: skip
        """A complete reply frame, as the server would send it, with the given overrides."""
        return self.frame(self.message(body, name=name, seqid=seqid, mtype=mtype))


def _encode_exception(exc: TApplicationException) -> bytes:
    from thrift.protocol.TBinaryProtocol import TBinaryProtocol
    from thrift.transport.TTransport import TMemoryBuffer

    buf = TMemoryBuffer()
    exc.write(TBinaryProtocol(buf))
    return bytes(buf.getvalue())


#: THeader frames (with zlib when the client asked for it) are built by the wire layer
theader_frame = wire.theader_frame


RawReply = Union[bytes, Callable[[ReplyContext], bytes]]


class Rule:
    """A scripted response, returned by :meth:`FakeGraphd.script`. Thread-safe.

    A rule matches requests of its method (any execute method by default) and, for statements, an
    exact statement text or a compiled regular expression (``pattern.search``). Use it to find out
    whether and how often it fired (:attr:`hits`, :meth:`wait_hits`), to release requests it holds
    (:meth:`release`), and to take it out again (:meth:`remove`).
    """

    def __init__(self, *, server: Any, statement: Union[str, re.Pattern[str], None],
                 method: Optional[str], session: Optional[int], data: Optional[ttypes.DataSet],
                 error: Optional[int],
                 message: str, delay: float, hold: bool, drop: Optional[Drop], reset: bool,
                 raw: Optional[RawReply], plan_desc: Optional[ttypes.PlanDescription],
                 comment: Optional[str], times: Optional[int]) -> None:  # fmt: skip
        self.statement = statement
        self.method = method
        self.session = session
        self.data = data
        self.error = error
        self.message = message
        self.delay = delay
        self.hold = hold
        self.drop = drop
        self.reset = reset
        self.raw = raw
        self.plan_desc = plan_desc
        self.comment = comment
        self.times = times
        self._server = server
        # Guarded by the server's lock: the rule's counters are read and written together with the
        # server state that decides whether the rule applies, and the server's condition variable
        # is what waiters sleep on.
        self._cond: threading.Condition = server._cond
        self._hits = 0
        self._released = False

    def __repr__(self) -> str:
        what = self.statement.pattern if isinstance(self.statement, re.Pattern) else self.statement
        return f"Rule(method={self.method!r}, statement={what!r}, hits={self.hits})"

    @property
    def hits(self) -> int:
        """How many requests (or statements) this rule has matched so far."""
        with self._cond:
            return self._hits

    def wait_hits(self, count: int = 1, timeout: Optional[float] = 10.0) -> bool:
        """Block until the rule matched at least ``count`` times; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._hits >= count, timeout)

    def release(self) -> None:
        """Let every request held by this rule (``hold=True``), now and later, go on."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def remove(self) -> None:
        """Stop applying this rule (requests it holds are released)."""
        self._server._remove_rule(self)

    # -- used by the server, under its lock --------------------------------------------------

    def _matches(self, method: str, statement: Optional[str], session_id: Optional[int],
                 whole: bool) -> bool:  # fmt: skip
        if self.times is not None and self._hits >= self.times:
            return False
        # session id 0 (a connection ping) is only matched by rules that ask for it
        if session_id == 0 and self.session != 0:
            return False
        if self.session is not None and self.session != session_id:
            return False
        if not whole and self.statement is None:
            return False  # statement-less rules apply to whole requests only
        if self.method is None:
            if method not in EXECUTE_METHODS:
                return False
        elif self.method != method:
            return False
        if self.statement is None:
            return True
        if statement is None:
            return False
        if isinstance(self.statement, re.Pattern):
            return self.statement.search(statement) is not None
        return _normalise(self.statement) == _normalise(statement)

    @property
    def _answers(self) -> bool:
        """Whether the rule supplies the statement's result (rows or an error)."""
        return self.data is not None or self.error is not None


def _normalise(stmt: str) -> str:
    return stmt.strip().rstrip(";").strip()


@attrs.frozen
class SessionInfo:
    """One open session, as :meth:`FakeGraphd.sessions` reports it."""

    session_id: int
    user: str
    client_ip: str
    space: str


@attrs.frozen
class LoggedStatement:
    """One executed request: session, statement text, wire method and the parameters sent."""

    session_id: int
    statement: str
    method: str
    parameters: Mapping[str, ttypes.Value] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ServerStats:
    """A consistent snapshot of the fake graphd's counters (:meth:`FakeGraphd.stats`). Immutable.

    Counters accumulate from construction (or :meth:`FakeGraphd.reset_stats`) across
    ``stop()``/``start()``.
    """

    #: TCP connections open right now
    connections_open: int = 0
    #: TCP connections accepted in total
    connections_accepted: int = 0
    #: requests (RPCs) received in total, including oneway ones
    requests: int = 0
    #: ``verifyClientVersion`` calls
    handshakes: int = 0
    #: ``verifyClientVersion`` calls answered with ``E_CLIENT_SERVER_INCOMPATIBLE``
    handshakes_rejected: int = 0
    #: successful ``authenticate`` calls (sessions created)
    authentications: int = 0
    #: failed ``authenticate`` calls (bad credentials, session limit)
    authentication_failures: int = 0
    #: ``signout`` calls
    signouts: int = 0
    #: sessions open right now (expired sessions are not counted)
    sessions_open: int = 0
    #: sessions open right now, by user name
    sessions_by_user: Mapping[str, int] = attrs.field(factory=dict)
    #: sessions removed because they were idle longer than the session timeout
    sessions_expired: int = 0
    #: execute requests with session id 0 (connection pings)
    pings: int = 0
    #: execute requests naming an unknown or expired session
    invalid_session_requests: int = 0
    #: execute requests run on a valid session
    statements: int = 0
    #: execute requests run, by session id
    statements_by_session: Mapping[int, int] = attrs.field(factory=dict)
    #: execute requests running right now
    statements_running: int = 0
    #: the most execute requests ever running at the same time
    max_concurrent_statements: int = 0
    #: the most execute requests ever running at the same time on one session
    max_concurrent_statements_per_session: int = 0
    #: the most execute requests ever running at the same time, by session id
    max_concurrent_by_session: Mapping[int, int] = attrs.field(factory=dict)


def monotonic() -> float:
    """The clock every timeout in the fake graphd uses (patchable in one place)."""
    return time.monotonic()
