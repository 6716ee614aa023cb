"""``NebulaAsyncClient``: an asyncio face on :class:`~nebula_sync.NebulaClient`.

nebula_sync is a synchronous client; this wrapper runs its calls in a dedicated thread pool sized
to the session pools (``hosts × size`` threads), so ``asyncio.gather`` over many statements runs
them concurrently without blocking the event loop. It exists so code written for the vendor's
async facade (``async with await NebulaAsyncClient.connect(...)``) runs unchanged.
Safe to use from one event loop; the underlying client is thread-safe.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Optional

from nebula_sync._client import _DEFAULT, NebulaClient, Params
from nebula_sync.config import SessionPoolConfig

if TYPE_CHECKING:
    from nebula_sync._result import ResultSet

__all__ = ["NebulaAsyncClient"]


class NebulaAsyncClient:
    """Create with ``await NebulaAsyncClient.connect(...)`` (same arguments as ``NebulaClient``)."""

    def __init__(self, client: NebulaClient, executor: ThreadPoolExecutor) -> None:
        self._client = client
        self._executor = executor

    @classmethod
    async def connect(cls, *args: Any, **kwargs: Any) -> NebulaAsyncClient:
        """Build the client in a worker thread (it connects to every host) and wrap it."""
        loop = asyncio.get_running_loop()
        client = await loop.run_in_executor(None, functools.partial(NebulaClient, *args, **kwargs))
        pool_config = kwargs.get("session_pool_config") or SessionPoolConfig()
        workers = max(1, len(client.stats().hosts) * pool_config.size)
        return cls(client, ThreadPoolExecutor(workers, thread_name_prefix="nebula_sync-aio"))

    @property
    def sync_client(self) -> NebulaClient:
        """The underlying thread-safe client."""
        return self._client

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

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

    async def ping(self) -> bool:
        """See :meth:`NebulaClient.ping`."""
        result: bool = await self._call(self._client.ping)
        return result

    async def close(self) -> None:
        """Close the client (in a worker thread) and the thread pool."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._client.close)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> NebulaAsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
