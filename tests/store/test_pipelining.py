"""The auto-pipeline: commands queued in one tick share a round trip; a slow flush does not
hold up the next one."""

from __future__ import annotations

import asyncio
import time

from config.redis_urls import RedisEndpoint
from worker.dev.embedded import EmbeddedRedis
from worker.store import clients
from worker.store.pipelining import AutoPipeline


async def test_a_command_queued_during_a_slow_flush_does_not_wait_for_it(
    redis_server: EmbeddedRedis,
) -> None:
    """A second pipeline goes out while the first is in flight: a PING queued while a
    pipeline waits on a 1 s BRPOP is answered long before the BRPOP returns (with one
    pipeline at a time, every command queued meanwhile waited for the slowest flush)."""
    client = clients.async_client(RedisEndpoint(redis_server.url), socket_timeout=5)
    auto = AutoPipeline(client)
    try:
        slow = asyncio.ensure_future(auto.run(lambda p: p.brpop(["tw:nothing-here"], timeout=1)))
        await asyncio.sleep(0.1)  # the BRPOP's pipeline is in flight by now
        started = time.monotonic()
        assert await auto.run(lambda p: p.ping()) is True
        assert time.monotonic() - started < 0.5
        assert not slow.done()
        assert await slow is None
    finally:
        await client.aclose()


async def test_commands_queued_together_share_one_pipeline_in_order(
    redis_server: EmbeddedRedis,
) -> None:
    client = clients.async_client(RedisEndpoint(redis_server.url), socket_timeout=5)
    auto = AutoPipeline(client)
    try:
        replies = await auto.run_all(
            lambda p: p.set("tw:order", "a"),
            lambda p: p.get("tw:order"),
            lambda p: p.set("tw:order", "b"),
            lambda p: p.get("tw:order"),
        )
        assert replies == [True, b"a", True, b"b"]
    finally:
        await client.delete("tw:order")
        await client.aclose()
