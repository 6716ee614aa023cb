"""nebula_sync: a synchronous, thread-safe Python client for NebulaGraph 3.x.

Create one :class:`NebulaClient` per process and share it between threads::

    from nebula_sync import NebulaClient, SessionPoolConfig

    with NebulaClient("127.0.0.1:9669", "root", "nebula",
                      session_pool_config=SessionPoolConfig(size=4)) as client:
        rs = client.execute("RETURN $x + 1 AS y", {"x": 41})
        rs.print()
"""

from __future__ import annotations

from nebula_sync._aio import NebulaAsyncClient
from nebula_sync._client import ClientStats, HostStats, NebulaClient, Session
from nebula_sync._health import HealthReport, HostHealth
from nebula_sync._params import render_literal, render_template
from nebula_sync._result import PlanDescription, PlanNode, Record, ResultSet
from nebula_sync._values import (
    EMPTY,
    DataSetValue,
    Duration,
    Geography,
    LineString,
    Node,
    NullValue,
    Path,
    Point,
    Polygon,
    RawDate,
    RawDateTime,
    RawTime,
    Relationship,
    SetList,
    ValueWrapper,
    format_value,
    to_primitive,
)
from nebula_sync._version import __version__
from nebula_sync.config import (
    ConnectionConfig,
    HostAddress,
    SessionConfig,
    SessionPoolConfig,
    TLSConfig,
)
from nebula_sync.errors import (  # the error tree, also importable from nebula_sync.errors
    AuthenticationError,
    ClientClosed,
    ConnectionFailed,
    DriverError,
    ExecutionError,
    IncompatibleServer,
    NebulaError,
    NoHostAvailable,
    OutcomeUnknown,
    PartialSuccess,
    PermissionDenied,
    PoolTimeout,
    ProtocolError,
    ReplyTooLarge,
    RequestTimeout,
    SemanticError,
    ServerError,
    SessionInvalid,
    StatementEmpty,
    StatementSyntaxError,
    TooManyConnections,
    UnreadableReply,
    WebServiceError,
)

__all__ = [
    "EMPTY",
    "AuthenticationError",
    "ClientClosed",
    "ClientStats",
    "ConnectionConfig",
    "ConnectionFailed",
    "DataSetValue",
    "DriverError",
    "Duration",
    "ExecutionError",
    "Geography",
    "HealthReport",
    "HostAddress",
    "HostHealth",
    "HostStats",
    "IncompatibleServer",
    "LineString",
    "NebulaAsyncClient",
    "NebulaClient",
    "NebulaError",
    "NoHostAvailable",
    "Node",
    "NullValue",
    "OutcomeUnknown",
    "PartialSuccess",
    "Path",
    "PermissionDenied",
    "PlanDescription",
    "PlanNode",
    "Point",
    "Polygon",
    "PoolTimeout",
    "ProtocolError",
    "ReplyTooLarge",
    "RawDate",
    "RawDateTime",
    "RawTime",
    "Record",
    "Relationship",
    "RequestTimeout",
    "ResultSet",
    "SemanticError",
    "ServerError",
    "Session",
    "SessionConfig",
    "SessionInvalid",
    "SessionPoolConfig",
    "SetList",
    "StatementEmpty",
    "StatementSyntaxError",
    "TLSConfig",
    "TooManyConnections",
    "UnreadableReply",
    "ValueWrapper",
    "WebServiceError",
    "__version__",
    "format_value",
    "render_literal",
    "render_template",
    "to_primitive",
]
