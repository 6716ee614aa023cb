"""Every error nebula_sync raises. One root, :class:`NebulaError`; builtins are never shadowed.

::

    NebulaError
     ├── ServerError                 graphd answered with an error code (.code, .message, .statement)
     │    ├── SessionInvalid          -1002 / -1003: the session is unknown or expired
     │    ├── StatementSyntaxError    -1004
     │    ├── ExecutionError          -1005
     │    ├── StatementEmpty          -1006
     │    ├── PermissionDenied        -1008
     │    ├── SemanticError           -1009
     │    ├── TooManyConnections      -1010
     │    └── PartialSuccess          -1011
     └── DriverError                 something on the client's side of the wire
          ├── ConnectionFailed        could not connect, or the connection broke before the
          │    │                      request was written: nothing ran, retrying is safe
          │    └── NoHostAvailable    no host could be reached
          ├── IncompatibleServer      the version handshake was rejected (-3061)
          ├── AuthenticationError     authenticate failed (wrong credentials, session limit, ...)
          ├── PoolTimeout             no session became free within ``wait_timeout``
          ├── ClientClosed            the client (or pool) was closed
          ├── ProtocolError           the server sent something that is not a valid reply
          │    └── ReplyTooLarge      ... or one beyond the configured size limits
          ├── WebServiceError         graphd's HTTP web service failed or answered an error
          └── OutcomeUnknown          the request was sent but no reply arrived: it may have run
               ├── RequestTimeout     ... because ``request_timeout`` passed
               └── UnreadableReply    ... because its reply could not be read (a ProtocolError too)

Every error is picklable and says whether retrying it is safe (:meth:`NebulaError.is_retryable`).
Server errors are looked up by code with :func:`lookup`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from nebula_sync._thrift.codes import ERROR_CODE_NAMES

__all__ = [
    "redact_statement",
    "AuthenticationError",
    "ClientClosed",
    "ConnectionFailed",
    "DriverError",
    "ExecutionError",
    "IncompatibleServer",
    "NebulaError",
    "NoHostAvailable",
    "OutcomeUnknown",
    "PartialSuccess",
    "PermissionDenied",
    "PoolTimeout",
    "ProtocolError",
    "ReplyTooLarge",
    "RequestTimeout",
    "SemanticError",
    "ServerError",
    "SessionInvalid",
    "StatementEmpty",
    "StatementSyntaxError",
    "TooManyConnections",
    "UnreadableReply",
    "WebServiceError",
    "error_code_name",
    "lookup",
]


def error_code_name(code: int) -> str:
    """The graphd name of an error code (``E_SYNTAX_ERROR``), or ``"UNKNOWN(<code>)"``."""
    return ERROR_CODE_NAMES.get(code, f"UNKNOWN({code})")


def _rebuild(cls: type[NebulaError], message: str, context: dict[str, Any]) -> NebulaError:
    return cls(message, **context)


class NebulaError(Exception):
    """Root of every nebula_sync error.

    :param message: what failed, in words.
    :param host: ``"host:port"`` of the graphd involved, when there is one.
    """

    #: whether the operation may be retried as it is without risk of running a statement twice
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, host: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.host = host

    def _context(self) -> dict[str, Any]:
        return {"host": self.host}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._context()))

    def __str__(self) -> str:
        if self.host and self.host not in self.message:
            return f"{self.message} (host {self.host})"
        return self.message

    def is_retryable(self) -> bool:
        """Whether retrying cannot run the statement twice (nothing reached, or it was rejected)."""
        return self.retryable


# ---- server errors ---------------------------------------------------------------------------


_BY_CODE: dict[int, type[ServerError]] = {}


_PASSWORD = re.compile(r"password", re.IGNORECASE)
# an nGQL string literal: single or double quotes, backslash escapes
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"', re.DOTALL)


def redact_statement(statement: str) -> str:
    """``statement`` fit for logs and error messages: if it mentions ``PASSWORD`` (``CREATE USER``,
    ``ALTER USER``, ``CHANGE PASSWORD``), every string literal in it becomes ``'***'``.

    Used for :attr:`ServerError.statement`, :attr:`ResultSet.statement` and the DEBUG log of
    statements. Statements without the word are returned unchanged. Thread-safe.
    """
    if not _PASSWORD.search(statement):
        return statement
    return _STRING_LITERAL.sub("'***'", statement)


class ServerError(NebulaError):
    """graphd answered with an error code.

    :param code: the graphd ``ErrorCode`` (negative int).
    :param statement: the statement that failed, when there was one (password literals are
        replaced by ``'***'``: see :func:`redact_statement`).
    """

    codes: ClassVar[tuple[int, ...]] = ()

    def __init_subclass__(cls, codes: tuple[int, ...] = (), **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.codes = codes
        for code in codes:
            _BY_CODE[code] = cls

    def __init__(
        self,
        message: str,
        *,
        code: int = -8000,
        statement: str | None = None,
        host: str | None = None,
        space: str | None = None,
    ) -> None:
        super().__init__(message, host=host)
        self.code = code
        self.statement = None if statement is None else redact_statement(statement)
        self.space = space

    @property
    def code_name(self) -> str:
        """The graphd name of :attr:`code`, e.g. ``E_SYNTAX_ERROR``."""
        return error_code_name(self.code)

    def _context(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "code": self.code,
            "statement": self.statement,
            "space": self.space,
        }

    def __str__(self) -> str:
        text = f"{self.code_name} ({self.code}): {self.message}"
        if self.statement is not None:
            stmt = self.statement if len(self.statement) <= 200 else self.statement[:197] + "..."
            text += f" [statement: {stmt!r}]"
        if self.host:
            text += f" (host {self.host})"
        return text


class SessionInvalid(ServerError, codes=(-1002, -1003)):
    """The session is unknown to graphd or expired; the statement did not run."""

    retryable = True


class StatementSyntaxError(ServerError, codes=(-1004,)):
    """graphd could not parse the statement."""


class ExecutionError(ServerError, codes=(-1005,)):
    """The statement failed while running (space or schema missing, leader changed, ...)."""


class StatementEmpty(ServerError, codes=(-1006,)):
    """The statement was empty or only comments."""


class PermissionDenied(ServerError, codes=(-1008,)):
    """The user may not run this statement."""


class SemanticError(ServerError, codes=(-1009,)):
    """The statement parsed but is not valid (unknown variable, type mismatch, ...)."""


class TooManyConnections(ServerError, codes=(-1010,)):
    """graphd's ``max_allowed_connections`` was reached."""


class PartialSuccess(ServerError, codes=(-1011,)):
    """Some storage parts failed; the result may be incomplete."""


def lookup(code: int) -> type[ServerError]:
    """The :class:`ServerError` subclass for a graphd error code (``ServerError`` if none)."""
    return _BY_CODE.get(code, ServerError)


# ---- driver errors ---------------------------------------------------------------------------


class DriverError(NebulaError):
    """Something failed on the client's side of the wire."""


class ConnectionFailed(DriverError):
    """Could not connect, the connection broke before the request was written, or the session for
    the statement could not be set up (no reply to ``authenticate`` or to a ``SessionConfig``
    statement).

    The statement did not reach graphd, so retrying (on this or another host) is safe.
    """

    retryable = True


class NoHostAvailable(ConnectionFailed):
    """No configured host could be reached (each is down or backing off)."""


class IncompatibleServer(DriverError):
    """graphd rejected the client version handshake (``E_CLIENT_SERVER_INCOMPATIBLE``)."""


class AuthenticationError(DriverError):
    """``authenticate`` failed: wrong credentials, the per-user session limit, ...

    :param code: the graphd error code of the rejection.
    """

    def __init__(self, message: str, *, code: int = -1001, host: str | None = None) -> None:
        super().__init__(message, host=host)
        self.code = code

    def _context(self) -> dict[str, Any]:
        return {"host": self.host, "code": self.code}


class PoolTimeout(DriverError):
    """No session became free within ``wait_timeout``; nothing was sent."""

    retryable = True


class ClientClosed(DriverError):
    """The client or pool was closed; it cannot be used any more."""


class ProtocolError(DriverError):
    """The server sent bytes that are not a valid reply; the connection was discarded."""


class ReplyTooLarge(ProtocolError):
    """A reply went beyond one of :class:`~nebula_sync.ConnectionConfig`'s limits
    (``max_frame_size``, ``max_string_length``, ``max_container_length``). graphd ran the statement
    and answered; the answer would be as large again, so the client never retries it. The
    connection was discarded."""


class OutcomeUnknown(DriverError):
    """The request was written but no complete reply came back: the statement may have run.

    The connection was closed. Retry only a statement that is safe to run twice, or pass
    ``idempotent=True`` to let the client do so.
    """


class RequestTimeout(OutcomeUnknown):
    """No reply within ``request_timeout``; the statement may still be running on graphd."""


class UnreadableReply(ProtocolError, OutcomeUnknown):
    """graphd's reply to a statement that was sent could not be read (malformed bytes, or a Thrift
    exception instead of a result): the statement may have run. Both a :class:`ProtocolError` and
    an :class:`OutcomeUnknown`, so ``idempotent=True`` lets the client retry it. The session was
    retired; the connection was discarded unless the reply itself arrived whole (an
    ``execute_json`` document that is not valid JSON)."""


class WebServiceError(DriverError):
    """graphd's HTTP web service (``/status``, ``/stats``, ``/flags``) failed or answered an error.

    :param status: the HTTP status, or ``None`` when no response arrived.
    """

    def __init__(self, message: str, *, status: int | None = None, host: str | None = None) -> None:
        super().__init__(message, host=host)
        self.status = status

    def _context(self) -> dict[str, Any]:
        return {"host": self.host, "status": self.status}
