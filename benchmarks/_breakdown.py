"""Where nebula_sync's CPU time per ``RETURN 1`` goes: ``bench_e2e.py --breakdown``.

Each line is the best of five timed loops of CPU time per call (``time.process_time``), one thread,
against the replay server. Layers are attributed by subtraction: the whole ``client.execute``, then
with the layer below stubbed out in this process (``Connection.execute`` returning a pre-decoded
reply, then the result wrapping, the connection pool and the session broker each replaced by a
constant). The stubs reach into private attributes (``client._broker``, ``_client._wrap_decoded``,
``SessionBroker.take_ready``); if those change, the attribution says so and the rest still runs.

Not a test, and not thread-safe: it patches classes for the duration of one measurement.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from nebula_sync import NebulaClient, SessionConfig, SessionPoolConfig, _client
from nebula_sync._connection import Connection
from nebula_sync._result import ResultSet
from nebula_sync._thrift import service, wire
from nebula_sync._thrift.fast import read_execute_reply


def cpu_per_call(fn: Callable[[], Any], n: int, repeat: int = 5) -> float:
    """Best CPU microseconds per call of ``fn`` over ``repeat`` loops of ``n`` calls."""
    for _ in range(min(n, 1000)):
        fn()
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - c0) / n * 1e6)
    return best


@contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class _CannedSocket:
    """Stands in for the socket: every recv returns the same reply frame (seqid 1)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply

    def settimeout(self, timeout: float | None) -> None:
        pass

    def setsockopt(self, *args: Any) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        pass

    def send(self, data: bytes) -> int:
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.reply


class _ReadyPoller:
    """Stands in for the connection's ``select.poll`` object: the canned reply is always ready."""

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        return [(0, select.POLLIN)]


def run(address: str, n: int, out: Callable[[str], None] = print) -> None:
    rows: list[tuple[str, float]] = []

    def line(label: str, fn: Callable[[], Any]) -> float:
        value = cpu_per_call(fn, n)
        rows.append((label, value))
        out(f"  {label:<62} {value:7.2f} us")
        return value

    client = NebulaClient(address, "root", "nebula", session_pool_config=SessionPoolConfig(size=1),
                          session_config=SessionConfig(space="bench"))  # fmt: skip
    try:
        total = line("client.execute('RETURN 1')", lambda: client.execute("RETURN 1"))
        conn = Connection(client._addresses[0], client._conn_config)
        conn.open()
        try:
            sock = conn._sock
            assert sock is not None
            args = service.ExecuteWithParameterArgs(sessionId=1, stmt=b"RETURN 1", parameterMap={})
            spec = [type(args), type(args).thrift_spec]
            body = wire.encode_struct(args, spec)
            msg = wire.binary_message(b"executeWithParameter", wire.CALL, 1, body)
            request = wire.theader_frame(msg, 1)
            sock.setblocking(True)  # the raw lines below: plain blocking calls
            sock.sendall(request)
            reply = sock.recv(65536)
            info = wire.parse_frame(reply, 4)
            _, _, _, pos = wire.parse_message_header(reply, info.offset)
            limits = client._conn_config.limits
            reader = wire.Reader(limits)  # as a Connection keeps one
            resp = read_execute_reply(reader, reply, pos).success

            def raw() -> Any:
                sock.sendall(request)
                return sock.recv(65536)

            floor = line("raw socket: sendall + recv (the floor)", raw)
            poller = select.poll()
            poller.register(sock, select.POLLIN)

            def raw_poll() -> Any:
                sock.sendall(request)
                poller.poll(10_000)
                return sock.recv(65536)

            line("raw socket with a poll() before recv, as the client waits", raw_poll)
            sock.setblocking(not conn._nonblocking)  # back as the connection keeps it
            timeout = client._conn_config.request_timeout

            def conn_execute() -> Any:
                conn._seqid = 0  # the canned reply carries seqid 1
                # a deadline, as the client passes one (request_timeout)
                deadline = None if timeout is None else time.monotonic() + timeout
                return conn.execute(1, b"RETURN 1", None, deadline)

            conn_real = line("Connection.execute (real socket)", conn_execute)
            with patched(conn, "_sock", _CannedSocket(reply)), patched(conn, "_poller", _ReadyPoller()):
                conn_py = line("Connection.execute, socket replaced (its Python work)", conn_execute)
            name = b"executeWithParameter"
            line("  ExecuteWithParameterArgs(...)",
                 lambda: service.ExecuteWithParameterArgs(sessionId=1, stmt=b"RETURN 1", parameterMap={}))
            line("  wire.encode_struct", lambda: wire.encode_struct(args, spec))
            line("  wire.binary_message", lambda: wire.binary_message(name, wire.CALL, 1, body))
            line("  wire.theader_frame", lambda: wire.theader_frame(msg, 1))
            line("  wire.parse_frame", lambda: wire.parse_frame(reply, 4))
            line("  wire.parse_message_header", lambda: wire.parse_message_header(reply, info.offset))
            line("  fast.read_execute_reply (1 x 1)", lambda: read_execute_reply(reader, reply, pos))
            line("  Connection.is_dropped (poll before reuse)", conn.is_dropped)
            line("  os.getpid()", os.getpid)
            line("ResultSet.from_response",
                 lambda: ResultSet.from_response(resp, statement="RETURN 1", host="h", elapsed_us=1))
        finally:
            conn.close()
        try:
            broker = client._broker
            session = broker.hosts[0].idle[-1]  # the session the statements above used
            assert session.conn is not None
            host = broker.hosts[0]
        except (AttributeError, TypeError, IndexError, AssertionError) as exc:
            out(f"  (layer attribution unavailable: the client's internals changed: {exc})")
            return

        def stmt() -> Any:
            return client.execute("RETURN 1")

        def take_ready(self: Any) -> Any:
            return host, session, session.conn

        def give_back_ready(self: Any, host: Any, session: Any, conn: Any, now: float) -> bool:
            session.conn = conn
            return True

        def execute(self: Any, sid: int, text: bytes, params: Any, deadline: Any, now: Any = None) -> Any:
            self.last_used = time.monotonic()  # as the real one does
            return resp

        broker_cls = type(broker)
        with patched(Connection, "execute", execute):
            above_conn = line("client.execute, Connection.execute stubbed", stmt)
            with patched(_client, "_wrap_decoded", lambda resp, *a: resp):
                no_result = line("  + _wrap_decoded (ResultSet) stubbed", stmt)
                with patched(Connection, "is_dropped", lambda self: False):
                    no_poll = line("  + poll before reuse (Connection.is_dropped) stubbed", stmt)
                    with patched(broker_cls, "take_ready", take_ready), \
                            patched(broker_cls, "give_back_ready", give_back_ready):  # fmt: skip
                        glue = line("  + SessionBroker.take_ready/give_back_ready stubbed", stmt)
        out("")
        out(f"  per statement, CPU: total {total:.1f} us = socket syscalls ~{floor:.1f} "
            f"+ Connection Python work ~{conn_py:.1f} + result wrapping ~{above_conn - no_result:.1f} "
            f"+ poll ~{no_result - no_poll:.1f} + session broker ~{no_poll - glue:.1f} "
            f"+ client call path ~{glue:.1f} ({total - conn_real - above_conn:+.1f} not attributed)")
    finally:
        client.close()
