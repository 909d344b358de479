"""The auto-pipeline: commands queued in one tick share a round trip; a slow flush does not
hold up the next one."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis as redis_py
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


async def test_the_socket_timeout_bounds_a_whole_flush_once(own_redis: EmbeddedRedis) -> None:
    """One timer per flush, not one per reply: three BRPOPs of 0.3 s each answer 0.3 s apart
    (each reply alone within the 0.5 s socket timeout) but the flush outlives it, so every
    command of it fails with redis-py's TimeoutError after ~0.5 s, the connection gets its
    socket timeout back, and the next flush runs on a fresh connection."""
    client = clients.async_client(
        RedisEndpoint(own_redis.url), socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    auto = AutoPipeline(client)
    try:
        started = time.monotonic()
        replies = await auto.run_all(
            *(lambda p, n=n: p.brpop([f"tw:empty{n}"], timeout=0.3) for n in range(3))
        )
        took = time.monotonic() - started
        assert all(isinstance(reply, RedisTimeoutError) for reply in replies), replies
        assert 0.45 < took < 0.85, took
        assert await auto.run(lambda p: p.ping()) is True
        pooled = client.connection_pool._available_connections  # type: ignore[attr-defined]
        assert pooled and all(conn.socket_timeout == 0.5 for conn in pooled)
    finally:
        await client.aclose()


async def test_a_stalled_server_fails_the_flush_and_the_pipeline_goes_on_after(
    own_redis: EmbeddedRedis,
) -> None:
    client = clients.async_client(
        RedisEndpoint(own_redis.url), socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    auto = AutoPipeline(client)
    assert own_redis.process is not None
    try:
        assert await auto.run(lambda p: p.ping()) is True
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(auto.run(lambda p: p.ping()), timeout=5)
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        assert await auto.run(lambda p: p.set("tw:after", "1")) is True
    finally:
        await client.aclose()


async def test_a_flush_on_a_connection_the_server_closed_is_resent_by_the_retry_policy(
    own_redis: EmbeddedRedis,
) -> None:
    """The connection's retry policy applies to the whole flush, as in Pipeline.execute: with
    one retry, a flush that meets a pooled connection the server closed (an outage, a
    restart) reconnects and resends. Without a retry the first flush on each dead connection
    fails (the pool's check before handing one out does not see the server's close); the
    engine's client keeps redis-py's default for a pool from a URL (no retry: a resent
    pipeline may run twice) and its connections' health check (health_check_interval)."""
    client = clients.async_client(
        RedisEndpoint(own_redis.url), socket_timeout=2, retry=Retry(NoBackoff(), 1)
    )
    auto = AutoPipeline(client)
    admin = redis_py.Redis.from_url(own_redis.url)
    try:
        assert await auto.run_all(lambda p: p.ping(), lambda p: p.ping()) == [True, True]
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        await asyncio.sleep(0.1)
        replies = await auto.run_all(lambda p: p.set("tw:back", "1"), lambda p: p.get("tw:back"))
        assert replies == [True, b"1"]
    finally:
        admin.close()
        await client.aclose()
