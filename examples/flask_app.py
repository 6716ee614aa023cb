"""A Flask app sharing one :class:`~nebula_sync.NebulaClient` per process.

The client is created when this module is imported (``app = create_app()`` at the bottom) and closed
when the process exits (``atexit``). Every request handler, on every thread of the server, uses that
one client: it is thread-safe, and each call borrows a session and gives it back.

Run it (``NEBULA_HOSTS`` is a comma-separated list of graphd addresses)::

    cd examples
    NEBULA_HOSTS=127.0.0.1:9669 flask --app flask_app run --with-threads
    NEBULA_HOSTS=127.0.0.1:9669 gunicorn -c gunicorn.conf.py flask_app:app    # --preload, 3 workers

With gunicorn ``--preload`` the module is imported once in the master process, before it forks the
workers: each worker then notices the fork on its first call, drops the sockets it inherited
(without closing the master's sessions) and opens its own connections and sessions.

Endpoints:

* ``GET /player/<n>`` runs ``RETURN $n AS n, ...`` and returns the row as JSON, with the process id
  that served it;
* ``GET /health`` probes every graphd (web ``/status`` + a Thrift ping); 200 if all are healthy,
  else 503.

Environment: ``NEBULA_HOSTS`` (default ``127.0.0.1:9669``), ``NEBULA_USER`` (``root``),
``NEBULA_PASSWORD`` (``nebula``), ``NEBULA_POOL_SIZE`` (sessions per host, default 4),
``NEBULA_WEB_PORT`` (graphd's ``--ws_http_port``, default 19669).
"""

from __future__ import annotations

import atexit
import os
from typing import Optional

from flask import Flask, Response, jsonify

from nebula_sync import ConnectionConfig, NebulaClient, SessionPoolConfig
from nebula_sync.errors import NebulaError, PoolTimeout


def client_from_env() -> NebulaClient:
    """The process's client, configured from the environment."""
    return NebulaClient(
        os.environ.get("NEBULA_HOSTS", "127.0.0.1:9669"),
        os.environ.get("NEBULA_USER", "root"),
        os.environ.get("NEBULA_PASSWORD", "nebula"),
        session_pool_config=SessionPoolConfig(size=int(os.environ.get("NEBULA_POOL_SIZE", "4")),
                                              wait_timeout=5.0),  # fmt: skip
        conn_config=ConnectionConfig(connect_timeout=5.0, request_timeout=30.0),
    )


def create_app(client: Optional[NebulaClient] = None) -> Flask:
    """Build the app around ``client`` (default: a new client from the environment, closed at exit).

    A client passed in belongs to the caller, who closes it.
    """
    if client is None:
        client = client_from_env()
        atexit.register(client.close)
    nebula = client
    web_port = int(os.environ.get("NEBULA_WEB_PORT", "19669"))
    app = Flask(__name__)
    app.extensions["nebula_sync"] = nebula

    @app.get("/player/<int:n>")
    def player(n: int) -> Response:
        rs = nebula.execute('RETURN $n AS n, "player" + $n AS name, $pid AS pid',
                            {"n": n, "pid": os.getpid()})  # fmt: skip
        row = rs.one().as_dict()
        row["host"] = rs.host
        return jsonify(row)

    @app.get("/health")
    def health() -> tuple[Response, int]:
        report = nebula.health(web_port=web_port, timeout=2.0)
        return jsonify(report.as_dict()), 200 if report.healthy else 503

    @app.errorhandler(NebulaError)
    def nebula_error(exc: NebulaError) -> tuple[Response, int]:
        # Busy (no session free in time) is 503; anything else from graphd or the network is 502.
        status = 503 if isinstance(exc, PoolTimeout) else 502
        return jsonify(error=type(exc).__name__, message=str(exc)), status

    return app


app = create_app()
