"""``NebulaAsyncClient``: an asyncio face on :class:`~nebula_sync.NebulaClient`.

nebula_sync is a synchronous client; this wrapper runs its calls in a dedicated thread pool sized
to the session pools (``hosts × size`` threads), so ``asyncio.gather`` over many statements runs
them concurrently without blocking the event loop. It follows the vendor's async facade
(``async with await NebulaAsyncClient.connect(...)``, ``execute``, ``execute_py``, ``ping``,
``close``); its ``borrow()`` and ``do_ping=`` are not provided (use :meth:`NebulaClient.session`
through :attr:`NebulaAsyncClient.sync_client` in a thread for a held session).
Safe to use from one event loop; the underlying client is thread-safe.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Optional

from nebula_sync import _fork
from nebula_sync._client import _DEFAULT, NebulaClient, Params
from nebula_sync.errors import ClientClosed, NebulaError, PoolTimeout

if TYPE_CHECKING:
    from nebula_sync._result import ResultSet

__all__ = ["NebulaAsyncClient"]


class NebulaAsyncClient:
    """Create with ``await NebulaAsyncClient.connect(...)`` (same arguments as ``NebulaClient``).

    A call waits at most ``wait_timeout`` for a worker thread (there is one per session), then
    fails with :class:`~nebula_sync.errors.PoolTimeout`, as the synchronous client does. A call
    cancelled before a worker took it never runs; one cancelled while it runs goes on to its end
    in its thread (a blocking call cannot be interrupted), and its session stays busy until then.
    """

    def __init__(self, client: NebulaClient) -> None:
        self._client = client
        self._wait_timeout = client._pool_config.wait_timeout
        self._workers = max(1, len(client.stats().hosts) * client._pool_config.size)  # one per session
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="nebula_sync-aio")
        # calls handed to the thread pool and not finished: fewer than _workers means a worker is
        # free and takes the next call at once. Guarded by _lock (finished calls count down from
        # worker threads).
        self._lock = threading.Lock()
        self._unfinished = 0
        #: the process the thread pool was made in: a forked child inherits the pool without its
        #: threads (a call would wait for ever), so it makes its own
        self._pid = _fork._pid

    def _after_fork(self) -> None:
        # The parent's pool, lock and count are left alone: their threads do not exist here.
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="nebula_sync-aio")
        self._lock = threading.Lock()
        self._unfinished = 0
        self._pid = _fork._pid

    @classmethod
    async def connect(cls, *args: Any, **kwargs: Any) -> NebulaAsyncClient:
        """Build the client in a worker thread (it connects to every host) and wrap it. If the
        caller is cancelled meanwhile, the client is closed once it is built."""
        loop = asyncio.get_running_loop()
        lock = threading.Lock()  # orders "built" against "abandoned", from two threads
        state: dict[str, Any] = {}

        def build() -> NebulaClient:
            client = NebulaClient(*args, **kwargs)
            with lock:
                abandoned = state.get("abandoned", False)
                state["client"] = client
            if abandoned:
                client.close()
            return client

        try:
            client = await loop.run_in_executor(None, build)
        except asyncio.CancelledError:
            with lock:
                state["abandoned"] = True
                built = state.get("client")
            if built is not None:  # built just as the caller gave up: close it off the loop
                loop.run_in_executor(None, built.close)
            raise
        return cls(client)

    @property
    def sync_client(self) -> NebulaClient:
        """The underlying thread-safe client."""
        return self._client

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._client.closed:
            raise ClientClosed("the client is closed")
        if self._pid != _fork._pid:
            self._after_fork()
        with self._lock:
            try:
                work = self._executor.submit(functools.partial(fn, *args, **kwargs))
            except RuntimeError:  # the thread pool was shut down: close() ran
                raise ClientClosed("the client is closed") from None
            queued = self._unfinished >= self._workers  # else a free worker takes it at once
            self._unfinished += 1
        work.add_done_callback(self._finished)
        # Cancelling this await cancels a call no worker has taken yet; a running one goes on.
        result = asyncio.wrap_future(work)
        wait = self._wait_timeout
        if queued and wait is not None:
            try:
                done, _ = await asyncio.wait({result}, timeout=wait)
            except asyncio.CancelledError:
                # asyncio.wait leaves it queued otherwise; cancelling the wrapper also cancels the
                # call (if no worker took it yet) and keeps a later failure of a running one from
                # being logged as never retrieved
                result.cancel()
                raise
            if not done and work.cancel():  # still queued: every worker stayed busy
                raise PoolTimeout(
                    f"no session became free within wait_timeout={wait}s (all "
                    f"{self._workers} worker threads of the asyncio client busy)"
                )
        return await result

    def _finished(self, _: object) -> None:
        with self._lock:
            self._unfinished -= 1

    async def execute(
        self, statement: str, params: Params = None, *, timeout: Optional[float] = _DEFAULT,
        idempotent: bool = False,
    ) -> ResultSet:  # fmt: skip
        """See :meth:`NebulaClient.execute`."""
        result: ResultSet = await self._call(
            self._client.execute, statement, params, timeout=timeout, idempotent=idempotent
        )
        return result

    async def execute_py(
        self, statement: str, params: Params = None, *, timeout: Optional[float] = _DEFAULT,
        idempotent: bool = False,
    ) -> ResultSet:  # fmt: skip
        """See :meth:`NebulaClient.execute_py`."""
        result: ResultSet = await self._call(
            self._client.execute_py, statement, params, timeout=timeout, idempotent=idempotent
        )
        return result

    async def execute_json(
        self, statement: str, params: Params = None, *, timeout: Optional[float] = _DEFAULT,
        idempotent: bool = False,
    ) -> Any:  # fmt: skip
        """See :meth:`NebulaClient.execute_json`."""
        return await self._call(
            self._client.execute_json, statement, params, timeout=timeout, idempotent=idempotent
        )

    async def ping(self, timeout: Optional[float] = _DEFAULT) -> bool:
        """See :meth:`NebulaClient.ping`: ``False`` on any :class:`~nebula_sync.errors.NebulaError`,
        after :meth:`close` too (a bad ``timeout`` is still a ``ValueError``)."""
        try:
            result: bool = await self._call(self._client.ping, timeout)
        except NebulaError:  # closed, or no worker free within wait_timeout
            return False
        return result

    async def close(self) -> None:
        """Close the client and then the thread pool, in a worker thread (the event loop runs on).
        Calls still queued then fail with :class:`~nebula_sync.errors.ClientClosed`."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._close_sync)

    def _close_sync(self) -> None:
        self._client.close()
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> NebulaAsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
