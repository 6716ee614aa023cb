"""The example Flask and Django apps (``examples/``) with the real frameworks against the fake graphd.

* Flask and Django under werkzeug's threaded server: 16 threads x 25 requests, each response is the
  caller's own, and the fake servers never see more than ``size`` statements at once per host, nor
  two at once on one session.
* Django's test client: the views, the error mapping and ``/health``.
* gunicorn ``--preload`` with 3 sync workers, started as a subprocess: the client is created in the
  master before the fork; every request succeeds; each worker opens its own connections and
  sessions (no session id is used by two processes); after SIGTERM the workers sign out and the
  fake graphd is left with no session and no connection.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
import urllib3

from nebula_sync.testing import FakeGraphd

flask = pytest.importorskip("flask")
django = pytest.importorskip("django")
werkzeug_serving = pytest.importorskip("werkzeug.serving")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
Factory = Callable[..., FakeGraphd]
PLAYER = re.compile(r"^RETURN \$n AS n")
SIZE = 3  # sessions per host in the threaded tests


def _hold_statements(*servers: FakeGraphd, delay: float = 0.003) -> None:
    """Keep each player statement running a little, so concurrent requests overlap on the server."""
    for s in servers:
        s.script(PLAYER, delay=delay)


def _get(pm: urllib3.PoolManager, url: str) -> tuple[int, Any]:
    resp = pm.request("GET", url)
    return resp.status, json.loads(resp.data)


def _hammer(base: str, threads: int = 16, per_thread: int = 25) -> list[dict[str, Any]]:
    """``threads`` x ``per_thread`` GET /player/<n> with distinct n; checks each answer is its own."""
    pm = urllib3.PoolManager(maxsize=threads, timeout=urllib3.Timeout(connect=5.0, read=30.0), retries=False)

    def worker(t: int) -> list[dict[str, Any]]:
        out = []
        for i in range(per_thread):
            n = t * 1000 + i
            status, doc = _get(pm, f"{base}/player/{n}")
            assert status == 200, doc
            assert doc["n"] == n and doc["name"] == f"player{n}", (n, doc)
            out.append(doc)
        return out

    try:
        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(worker, t) for t in range(threads)]
            return [doc for f in futures for doc in f.result(timeout=120)]
    finally:
        pm.clear()


def _check_server_side(servers: list[FakeGraphd], total: int) -> None:
    stats = [s.stats() for s in servers]
    assert sum(st.statements for st in stats) == total
    for st in stats:
        assert st.max_concurrent_statements <= SIZE, st
        assert st.max_concurrent_statements_per_session <= 1, st
    # the load really overlapped on the server
    assert max(st.max_concurrent_statements for st in stats) >= 2, stats


class _ThreadedServer:
    """werkzeug's threaded development server on 127.0.0.1 (a free port), in a thread."""

    def __init__(self, app: Any) -> None:
        self.server = werkzeug_serving.make_server("127.0.0.1", 0, app, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)  # fmt: skip

    def __enter__(self) -> _ThreadedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10.0)


@pytest.fixture
def quiet_werkzeug() -> Iterator[None]:
    import logging

    logger = logging.getLogger("werkzeug")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


# ---- Flask ---------------------------------------------------------------------------------


@pytest.fixture
def flask_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """``load(hosts, **env)`` imports examples/flask_app.py afresh (its client is made at import)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    loaded: list[ModuleType] = []

    def load(hosts: str, **env: str) -> ModuleType:
        monkeypatch.setenv("NEBULA_HOSTS", hosts)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        sys.modules.pop("flask_app", None)
        module = importlib.import_module("flask_app")
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        module.app.extensions["nebula_sync"].close()
    sys.modules.pop("flask_app", None)


def test_flask_threaded_server_under_concurrent_requests(fake_graphd_factory: Factory,
                                                         flask_app: Callable[..., ModuleType],
                                                         quiet_werkzeug: None) -> None:  # fmt: skip
    servers = [fake_graphd_factory(), fake_graphd_factory()]
    _hold_statements(*servers)
    module = flask_app(",".join(s.address for s in servers), NEBULA_POOL_SIZE=str(SIZE))
    client = module.app.extensions["nebula_sync"]
    with _ThreadedServer(module.app) as srv:
        docs = _hammer(srv.base)
    assert len(docs) == 400
    assert {d["pid"] for d in docs} == {os.getpid()}
    assert {d["host"] for d in docs} == {s.address for s in servers}  # both hosts served
    _check_server_side(servers, 400)
    assert client.stats().sessions_busy == 0
    client.close()
    for s in servers:
        s.wait_for(lambda st: st.sessions_open == 0 and st.connections_open == 0)


def test_flask_health_and_errors(fake_graphd_factory: Factory, flask_app: Callable[..., ModuleType]) -> None:
    server = fake_graphd_factory(web_port=0)
    assert server.web is not None
    module = flask_app(server.address, NEBULA_WEB_PORT=str(server.web.port))
    http = module.app.test_client()
    resp = http.get("/health")
    assert resp.status_code == 200 and resp.get_json()["healthy"] is True
    assert http.get("/player/5").get_json() == {"n": 5, "name": "player5", "pid": os.getpid(),
                                                "host": server.address}  # fmt: skip
    server.script(PLAYER, error=-1005, message="boom")
    resp = http.get("/player/6")
    assert resp.status_code == 502 and resp.get_json()["error"] == "ExecutionError"
    server.web.set_status_code(503)
    resp = http.get("/health")
    assert resp.status_code == 503
    assert resp.get_json()["hosts"][0]["http_status"] == 503


# ---- Django (in-process) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_setup() -> Iterator[ModuleType]:
    """Django configured from examples/django_app/settings.py, once per process; yields its nebula module."""
    wanted = "django_app.settings"
    if os.environ.get("DJANGO_SETTINGS_MODULE", wanted) != wanted:
        pytest.skip("another Django project is configured in this process")
    sys.path.insert(0, str(EXAMPLES))
    old = os.environ.get("DJANGO_SETTINGS_MODULE")
    os.environ["DJANGO_SETTINGS_MODULE"] = wanted
    try:
        django.setup()
        nebula = importlib.import_module("django_app.nebula")
        yield nebula
        nebula.close_client()
    finally:
        sys.path.remove(str(EXAMPLES))
        if old is None:
            os.environ.pop("DJANGO_SETTINGS_MODULE", None)


@pytest.fixture
def django_nebula(django_setup: ModuleType) -> Iterator[Callable[..., Any]]:
    """``configure(hosts, **overrides)`` points the Django project at fake graphd servers."""
    from django.test import override_settings

    active: list[Any] = []

    def configure(hosts: str, **overrides: Any) -> None:
        from django.conf import settings

        cfg = dict(settings.NEBULA, HOSTS=hosts, **overrides)
        ctx = override_settings(NEBULA=cfg)
        ctx.enable()
        active.append(ctx)
        django_setup.close_client()

    yield configure
    django_setup.close_client()
    for ctx in reversed(active):
        ctx.disable()


def test_django_test_client(fake_graphd_factory: Factory, django_nebula: Callable[..., Any],
                            django_setup: ModuleType) -> None:  # fmt: skip
    from django.test import Client

    server = fake_graphd_factory(web_port=0)
    assert server.web is not None
    django_nebula(server.address, WEB_PORT=server.web.port)
    http = Client()
    resp = http.get("/player/7")
    assert resp.status_code == 200
    assert resp.json() == {"n": 7, "name": "player7", "pid": os.getpid(), "host": server.address}
    assert http.get("/health").json()["healthy"] is True
    # one client for the process: the same object on every call
    assert django_setup.get_client() is django_setup.get_client()
    server.script(PLAYER, error=-1009, message="nope")
    resp = http.get("/player/8")
    assert resp.status_code == 502 and resp.json()["error"] == "SemanticError"
    server.web.stop()
    resp = http.get("/health")
    assert resp.status_code == 503 and resp.json()["hosts"][0]["http_status"] is None
    assert http.get("/nowhere").status_code == 404
    django_setup.close_client()
    server.wait_for(lambda st: st.sessions_open == 0 and st.connections_open == 0)


def test_django_threaded_server_under_concurrent_requests(fake_graphd_factory: Factory,
                                                          django_nebula: Callable[..., Any],
                                                          django_setup: ModuleType,
                                                          quiet_werkzeug: None) -> None:  # fmt: skip
    from django.core.wsgi import get_wsgi_application

    servers = [fake_graphd_factory(), fake_graphd_factory()]
    _hold_statements(*servers)
    django_nebula(",".join(s.address for s in servers), POOL_SIZE=SIZE)
    with _ThreadedServer(get_wsgi_application()) as srv:
        docs = _hammer(srv.base)
    assert len(docs) == 400 and {d["host"] for d in docs} == {s.address for s in servers}
    _check_server_side(servers, 400)
    django_setup.close_client()
    for s in servers:
        s.wait_for(lambda st: st.sessions_open == 0 and st.connections_open == 0)


# ---- gunicorn --preload, several workers ---------------------------------------------------

WORKERS = 3
BOOT_TIMEOUT = 60.0


def _wait_for_log(proc: subprocess.Popen[bytes], log: Path, pattern: str, count: int,
                  deadline: float) -> list[re.Match[str]]:  # fmt: skip
    """Poll gunicorn's log file until ``pattern`` matched ``count`` times (the process must live)."""
    rx = re.compile(pattern)
    while True:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        found = list(rx.finditer(text))
        if len(found) >= count:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {proc.returncode}:\n{text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gunicorn log never matched {pattern!r} x{count}:\n{text}")
        time.sleep(0.05)  # polling a log file for a process to come up, with a deadline


@pytest.mark.parametrize("target", ["flask_app:app", "django_app.wsgi"])
def test_gunicorn_preload_several_workers(fake_graphd_factory: Factory, tmp_path: Path, target: str) -> None:
    pytest.importorskip("gunicorn")
    server = fake_graphd_factory()
    server.script(PLAYER, delay=0.01)  # each request holds its worker a little: load spreads out
    log = tmp_path / "gunicorn.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEBULA_", "DJANGO_", "GUNICORN_"))}
    env.update(NEBULA_HOSTS=server.address, NEBULA_POOL_SIZE="2",
               PYTHONPATH=os.pathsep.join([str(EXAMPLES), str(ROOT), env.get("PYTHONPATH", "")]))  # fmt: skip
    if target.startswith("django"):
        env["DJANGO_SETTINGS_MODULE"] = "django_app.settings"
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--preload", "-w", str(WORKERS),
           "-k", "sync", "-b", "127.0.0.1:0", "--log-file", str(log), "--log-level", "info",
           target]  # fmt: skip
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=EXAMPLES, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        (listening,) = _wait_for_log(proc, log, r"Listening at: http://127\.0\.0\.1:(\d+)", 1, deadline)
        booted = _wait_for_log(proc, log, r"Booting worker with pid: (\d+)", WORKERS, deadline)
        worker_pids = {int(m.group(1)) for m in booted}
        assert len(worker_pids) == WORKERS and proc.pid not in worker_pids
        # the client was created at import, in the master, before the fork: it connected already
        before = server.stats()
        assert before.connections_accepted >= 1 and before.handshakes >= 1
        assert before.authentications == 0 and before.sessions_open == 0

        base = f"http://127.0.0.1:{listening.group(1)}"
        seen: set[int] = set()
        done = 0
        stop_at = time.monotonic() + 60.0
        while seen != worker_pids and time.monotonic() < stop_at and done < 2000:
            docs = _hammer(base, threads=9, per_thread=10)
            done += len(docs)
            seen |= {d["pid"] for d in docs}
            assert {d["host"] for d in docs} == {server.address}
        assert seen == worker_pids, f"requests reached workers {seen} of {worker_pids}"

        # Who ran what: every statement carries its worker's pid as the $pid parameter.
        by_session: dict[int, set[int]] = {}
        log_entries = [e for e in server.statement_log() if PLAYER.search(e.statement)]
        assert len(log_entries) == done
        for entry in log_entries:
            by_session.setdefault(entry.session_id, set()).add(entry.parameters["pid"].iVal)
        shared = {sid: pids for sid, pids in by_session.items() if len(pids) > 1}
        assert shared == {}, f"sessions used by more than one process: {shared}"
        assert {p for pids in by_session.values() for p in pids} == worker_pids
        assert proc.pid not in {p for pids in by_session.values() for p in pids}
        stats = server.stats()
        assert len(by_session) >= WORKERS and stats.sessions_open >= WORKERS
        # the master's connection plus at least one of each worker's own
        assert stats.connections_accepted >= 1 + WORKERS
        assert stats.max_concurrent_statements_per_session <= 1
        assert stats.invalid_session_requests == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
    text = log.read_text(encoding="utf-8", errors="replace")
    stderr = (tmp_path / "stderr.txt").read_text(encoding="utf-8", errors="replace")
    assert code == 0, text + stderr
    assert len(re.findall(r"Worker exiting \(pid: \d+\)", text)) == WORKERS, text
    assert "Traceback" not in text + stderr and "ResourceWarning" not in stderr, text + stderr
    # Every worker closed its client at exit (atexit): its sessions were signed out, not left to expire.
    final = server.wait_for(lambda st: st.sessions_open == 0 and st.connections_open == 0, timeout=10)
    assert final.signouts >= len(by_session)
