"""nebula_sync: a synchronous, thread-safe Python client for NebulaGraph 3.x."""

from __future__ import annotations

from nebula_sync._aio import NebulaAsyncClient
from nebula_sync._client import ClientStats, HostStats, NebulaClient, Session
from nebula_sync.config import (
    ConnectionConfig,
    HostAddress,
    SessionConfig,
    SessionPoolConfig,
    TLSConfig,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ClientStats",
    "ConnectionConfig",
    "HostAddress",
    "HostStats",
    "NebulaAsyncClient",
    "NebulaClient",
    "Session",
    "SessionConfig",
    "SessionPoolConfig",
    "TLSConfig",
    "__version__",
]
