"""``NebulaAsyncClient`` against the fake graphd: waiting, cancellation and closing."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import warnings
from typing import Any

import pytest
from forking import in_forked_child

from nebula_sync import ConnectionConfig, NebulaAsyncClient, SessionPoolConfig
from nebula_sync.errors import ClientClosed, PoolTimeout
from nebula_sync.testing import FakeGraphd

REQUEST_TIMEOUT = 10.0  # far longer than any wait a test expects: waiting for it is a failure
CONN = ConnectionConfig(connect_timeout=2.0, request_timeout=REQUEST_TIMEOUT)


async def connect(server: FakeGraphd, **pool: Any) -> NebulaAsyncClient:
    return await NebulaAsyncClient.connect(
        hosts=[server.address], username="root", password="nebula",
        session_pool_config=SessionPoolConfig(**pool), conn_config=CONN,
    )  # fmt: skip


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)  # polling the fake server's counters, bounded by the deadline


def test_a_closed_async_client_raises_client_closed(fake_graphd: FakeGraphd) -> None:
    async def main() -> None:
        client = await connect(fake_graphd, size=1, wait_timeout=5.0)
        assert (await client.execute("RETURN 1 AS v")).rows() == [(1,)]
        await client.close()
        with pytest.raises(ClientClosed):
            await client.execute("RETURN 2")
        assert await client.ping() is False  # as the synchronous client's ping()
        await client.close()  # idempotent

    asyncio.run(main())


def test_a_call_waits_at_most_wait_timeout_for_a_worker(fake_graphd: FakeGraphd) -> None:
    rule = fake_graphd.script("RETURN 'block'", hold=True)

    async def main() -> None:
        async with await connect(fake_graphd, size=1, wait_timeout=0.3) as client:
            held = asyncio.ensure_future(client.execute("RETURN 'block'"))
            await until(lambda: fake_graphd.stats().statements_running == 1)
            start = time.monotonic()
            with pytest.raises(PoolTimeout):
                await client.execute("RETURN 'queued'")
            # The held statement never ends by itself (only at request_timeout): the call gave up
            # at its wait_timeout, not when a worker came free.
            assert 0.3 <= time.monotonic() - start < REQUEST_TIMEOUT / 2
            rule.release()
            assert (await held).rows() == [("block",)]
            assert (await client.execute("RETURN 3 AS v")).rows() == [(3,)]

    try:
        asyncio.run(main())
    finally:
        rule.release()
    assert "RETURN 'queued'" not in [e.statement for e in fake_graphd.statement_log()]  # never sent


@pytest.mark.parametrize("wait", [None, 5.0], ids=["no-wait-timeout", "wait-timeout"])
def test_a_call_cancelled_before_a_worker_took_it_never_runs(
    fake_graphd: FakeGraphd, wait: float | None
) -> None:
    rule = fake_graphd.script("RETURN 'block'", hold=True)

    async def main() -> None:
        async with await connect(fake_graphd, size=1, wait_timeout=wait) as client:
            held = asyncio.ensure_future(client.execute("RETURN 'block'"))
            await until(lambda: fake_graphd.stats().statements_running == 1)
            queued = asyncio.ensure_future(client.execute("RETURN 'cancelled'"))
            await until(lambda: client._unfinished == 2)  # handed to the thread pool, behind `held`
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            rule.release()
            await held
            assert (await client.execute("RETURN 4 AS v")).rows() == [(4,)]

    try:
        asyncio.run(main())
    finally:
        rule.release()
    assert "RETURN 'cancelled'" not in [e.statement for e in fake_graphd.statement_log()]


def test_a_cancelled_connect_closes_the_client_it_was_building(fake_graphd: FakeGraphd) -> None:
    rule = fake_graphd.script(method="verifyClientVersion", hold=True)

    async def main() -> None:
        task = asyncio.ensure_future(connect(fake_graphd, size=1, wait_timeout=5.0, min_idle=1))
        await until(lambda: fake_graphd.stats().connections_open == 1)  # the handshake is held
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rule.release()  # the client gets built now, after its caller gave up
        await until(lambda: fake_graphd.stats().authentications == 1)
        await until(lambda: fake_graphd.stats().connections_open == 0)

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        try:
            asyncio.run(main())
        finally:
            rule.release()
        gc.collect()
    stats = fake_graphd.stats()
    assert stats.sessions_open == 0 and stats.signouts == 1


def test_a_zero_wait_timeout_fails_only_when_every_worker_is_busy(fake_graphd: FakeGraphd) -> None:
    async def main() -> None:
        async with await connect(fake_graphd, size=2, wait_timeout=0) as client:
            for i in range(50):  # an idle client: a worker is always free
                assert (await client.execute("RETURN $i", {"i": i})).rows() == [(i,)]
            results = await asyncio.gather(*(client.execute("RETURN 1") for _ in range(2)))
            assert len(results) == 2  # two workers, two calls: none waits

    asyncio.run(main())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_an_async_client_made_before_fork_works_in_the_child(fake_graphd: FakeGraphd) -> None:
    # the child inherits the thread pool without its threads: a call there must not wait for ever
    async def use(client: NebulaAsyncClient) -> list[tuple[Any, ...]]:
        return (await asyncio.wait_for(client.execute("RETURN 7 AS v"), 10)).rows()

    client = asyncio.run(connect(fake_graphd, size=1, wait_timeout=5.0))
    try:
        assert asyncio.run(use(client)) == [(7,)] and asyncio.run(client.ping(timeout=5.0))

        def child() -> str:
            rows = asyncio.run(use(client))
            asyncio.run(client.close())
            return repr(rows)

        assert in_forked_child(child) == "[(7,)]"
        assert asyncio.run(use(client)) == [(7,)]  # the parent's own pool still works
    finally:
        asyncio.run(client.close())
