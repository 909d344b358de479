"""worker/store/tracking.py on a real redis-server of its own: what Redis reports, and a
session that ends when the server stops answering (so a cache never trusts entries no report
will invalidate)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterable

import pytest
import redis.asyncio as redis_async

from config.settings import Settings
from worker.dev.embedded import EmbeddedRedis
from worker.store.tracking import ANSWER, HEALTH, Tracking


class Listener:
    def __init__(self) -> None:
        self.events: list[object] = []

    def tracking_started(self) -> None:
        self.events.append("started")

    def tracking_lost(self) -> None:
        self.events.append("lost")

    def invalidated(self, keys: Iterable[str] | None) -> None:
        self.events.append(None if keys is None else list(keys))

    async def until(self, event: object, limit: float) -> float:
        """Seconds until `event` is the last event (at most `limit`)."""
        began = time.monotonic()
        while time.monotonic() - began < limit:
            if self.events and self.events[-1] == event:
                return time.monotonic() - began
            await asyncio.sleep(0.05)
        pytest.fail(f"no {event!r} within {limit} s: {self.events}")


@pytest.fixture
def server(own_redis: EmbeddedRedis) -> EmbeddedRedis:
    return own_redis


async def started(server: EmbeddedRedis) -> tuple[Listener, asyncio.Future[None]]:
    settings = Settings.from_env({"TOKENWORKER_REDIS_URL": server.url}, require_keys=False)
    listener = Listener()
    task = asyncio.ensure_future(Tracking(settings.store_endpoint, "tw:conn:", listener).run())
    await listener.until("started", 10)
    return listener, task


async def test_writes_under_the_prefix_are_reported_and_no_others(server: EmbeddedRedis) -> None:
    listener, task = await started(server)
    client = redis_async.Redis.from_url(server.url)
    try:
        await client.hset("tw:conn:a", "x", "1")
        await client.hset("tw:connect-session:s", "x", "1")  # another prefix
        await client.delete("tw:conn:a")
        await client.flushdb()
        await listener.until(None, 5)
        assert listener.events == ["started", ["tw:conn:a"], ["tw:conn:a"], None]
    finally:
        task.cancel()
        await client.aclose()


async def test_a_server_that_stops_answering_ends_the_session(server: EmbeddedRedis) -> None:
    """SIGSTOP: the connections stay open but nothing answers. The session ends within a
    check interval and the answer time, and starts again once the server answers."""
    listener, task = await started(server)
    assert server.process is not None
    try:
        os.kill(server.process.pid, signal.SIGSTOP)
        took = await listener.until("lost", 3 * (HEALTH + ANSWER))
        assert took <= 2 * (HEALTH + ANSWER), f"lost only after {took:.1f}s"
        os.kill(server.process.pid, signal.SIGCONT)
        await listener.until("started", 15)
    finally:
        task.cancel()
