"""Where the Django project's :class:`~nebula_sync.NebulaClient` lives: one per process.

:func:`get_client` creates it on first use from ``settings.NEBULA`` and registers its ``close`` with
``atexit``. ``wsgi.py`` calls it at start-up, so under ``gunicorn --preload`` the client is created
in the master before the fork (start-up fails fast if graphd is unreachable), and each worker opens
its own connections after the fork. Management commands, which never import ``wsgi.py``, do not
connect to graphd unless they use the client.

Thread-safe: the first calls from several threads create one client.
"""

from __future__ import annotations

import atexit
import threading
from typing import Optional

from django.conf import settings

from nebula_sync import ConnectionConfig, NebulaClient, SessionPoolConfig

_lock = threading.Lock()
_client: Optional[NebulaClient] = None


def get_client() -> NebulaClient:
    """The process's client (created on the first call)."""
    global _client
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            cfg = settings.NEBULA
            _client = NebulaClient(
                cfg["HOSTS"],
                cfg["USER"],
                cfg["PASSWORD"],
                session_pool_config=SessionPoolConfig(size=cfg["POOL_SIZE"], wait_timeout=5.0),
                conn_config=ConnectionConfig(connect_timeout=5.0, request_timeout=30.0),
            )
            atexit.register(close_client)
        return _client


def close_client() -> None:
    """Close the process's client (idempotent); the next :func:`get_client` makes a new one."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()
