"""gunicorn settings for the example apps (``gunicorn -c gunicorn.conf.py flask_app:app``).

``preload_app`` imports the app, and so creates its :class:`~nebula_sync.NebulaClient`, once in the
master before the workers are forked: start-up fails fast if graphd is unreachable, and the workers
share the imported code. nebula_sync is fork-safe: each worker drops the connections it inherited
(never signing out the master's sessions) and opens its own. Each worker closes its client at exit
(the apps register ``client.close`` with ``atexit``, which runs when a worker exits after SIGTERM,
SIGQUIT or ``max_requests``), so graphd is left with no session of a stopped worker.

Sync workers run one request at a time, so a worker needs one session; the pool size only matters
for threaded workers (``--threads N``: give the pool at least N sessions per host).
"""

from __future__ import annotations

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = "sync"
preload_app = True
# Longer than the client's request_timeout (30 s) plus wait_timeout (5 s): a worker waiting for
# graphd is not killed as hung while the client would still give it a clean error.
timeout = 40
graceful_timeout = 15
