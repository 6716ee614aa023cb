"""A fake NebulaGraph graphd for tests and demos: :class:`FakeGraphd`.

:class:`FakeGraphd` is a real threaded TCP server, started in-process, that speaks graphd's Thrift
protocol (THeader with binary or fbthrift compact v2, and framed binary), so this project's client
and the official ``nebula3-python`` client can both talk to it. It keeps users, sessions and
spaces, runs a small statement engine, replays scripted responses, injects faults and counts what
happened::

    from nebula_sync.testing import FakeGraphd

    with FakeGraphd() as server:              # 127.0.0.1, a free port
        server.script("MATCH (v) RETURN v", columns=["v"], rows=[["a"], ["b"]])
        ...                                   # point a client at server.address
        assert server.stats().sessions_open == 0

From a shell: ``python -m nebula_sync.testing --host 127.0.0.1 --port 9669``.

:class:`FakeWebService` fakes graphd's HTTP web service (``/status``, ``/stats``, ``/flags``).
"""

from __future__ import annotations

from nebula_sync.testing._compact import CompactV2Protocol, compact_message, parse_compact_message
from nebula_sync.testing._http import FakeWebService
from nebula_sync.testing._model import (
    Drop,
    LoggedStatement,
    ReplyContext,
    Rule,
    ServerStats,
    SessionInfo,
)
from nebula_sync.testing._proxy import FaultProxy, ProxyStats
from nebula_sync.testing._server import FakeGraphd

__all__ = [
    "CompactV2Protocol",
    "Drop",
    "FakeGraphd",
    "FaultProxy",
    "FakeWebService",
    "LoggedStatement",
    "ProxyStats",
    "ReplyContext",
    "Rule",
    "ServerStats",
    "SessionInfo",
    "compact_message",
    "parse_compact_message",
]
