"""The auto-pipeline: commands queued in one tick share a round trip; a slow flush does not
hold up the next one."""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import ResponseError

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
        # A failed command's error stands in its place; the others still answer.
        mixed = await auto.run_all(
            lambda p: p.get("tw:order"),
            lambda p: p.hgetall("tw:order"),  # a string, not a hash: WRONGTYPE
            lambda p: p.set("tw:order", "c"),
        )
        assert mixed[0] == b"b" and mixed[2] is True
        assert isinstance(mixed[1], ResponseError), mixed
    finally:
        await client.delete("tw:order")
        await client.aclose()


async def test_a_cancelled_flush_leaves_no_command_waiting_for_a_reply(
    redis_server: EmbeddedRedis,
) -> None:
    """A batch cut off by its time limit cancels every task, the pipeline's flushes too: the
    commands of a cancelled flush are cancelled with it, so a detached lease release (a queued
    command nobody awaits but settle()) never leaves settle() waiting forever."""
    client = clients.async_client(RedisEndpoint(redis_server.url), socket_timeout=5)
    auto = AutoPipeline(client)
    try:
        blocked = auto.queue(lambda p: p.brpop(["tw:nothing-here"], timeout=3))
        behind = auto.queue(lambda p: p.ping())
        await asyncio.sleep(0.1)  # the flush is in flight, waiting on the BRPOP
        for flush in list(auto._flushes):
            flush.cancel()
        done, pending = await asyncio.wait([blocked, behind], timeout=1)
        assert pending == set() and all(future.cancelled() for future in done)
        assert await auto.run(lambda p: p.ping()) is True  # and the pipeline goes on
    finally:
        await client.aclose()
