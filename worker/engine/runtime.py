"""Builds the object graph from settings: one place where dependencies are wired.

Everything async here is bound to the event loop it was opened in; a worker process opens one
Runtime in its own long-lived loop after fork (see `worker.jobs.process`), the CLI opens one per
command.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from redis.asyncio import Redis

from config.redis_urls import RedisEndpoint
from config.settings import Settings
from worker.domain import policy
from worker.engine.events import EventSink, Forward
from worker.engine.limits import save_window
from worker.engine.refresher import Refresher
from worker.engine.sweep import lookahead
from worker.salesforce.client import AiohttpExchange, SalesforceClient
from worker.store import clients
from worker.store.connections import Store
from worker.store.crypto import Cipher
from worker.store.keys import Keys
from worker.store.leases import Leases
from worker.store.pipelining import AutoPipeline
from worker.store.ratelimit import RateLimiter
from worker.store.replication import Replication

# The cyclic collector in a long-lived process with hundreds of checks (or reads) in flight:
# a young-generation collection every 700 allocations (CPython's default) cost ~10% of the
# main thread's CPU in `worker.dev.bench.cpucheck` (1.02 s of 10.0 s, by a gc callback); at
# 10,000 it cost ~2%. Garbage cycles are still collected, a little later.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """For a worker child once it is set up: what startup built (modules, settings, the
    runtime) is moved out of every later collection, and the young generation is collected
    every GC_YOUNG_THRESHOLD allocations. Not the api's: its benefit there was not measured,
    and its reads' p99 beside a million's fleet rose the run it was in (README, Benchmark)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


STORE_TIMEOUT = 10.0  # seconds for a store command


def redis_client(endpoint: RedisEndpoint) -> Redis:
    """The engine's store client (a blocking pool of 64, see `clients.async_client`)."""
    return clients.async_client(
        endpoint, socket_timeout=STORE_TIMEOUT, socket_connect_timeout=5, health_check_interval=30
    )


def timing(settings: Settings) -> policy.Timing:
    """The durations the pure policy decides with, taken from the settings."""
    return policy.Timing(
        margin=settings.refresh_margin,
        default_lifetime=settings.default_lifetime,
        keepalive=settings.keepalive_interval,
        retry_base=settings.retry_base,
        retry_max=settings.retry_max,
        escalate_after=settings.escalate_after,
        escalate_after_failing=settings.escalate_after_failing,
        daily_attempt_cap=settings.daily_attempt_cap,
        lookahead=lookahead(settings),
    )


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    store: Store
    leases: Leases
    sink: EventSink
    client: SalesforceClient
    refresher: Refresher

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        redis: Redis | None = None,
        forward: Forward | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> Runtime:
        keys = Keys(settings.key_prefix)
        redis = redis if redis is not None else redis_client(settings.store_endpoint)
        auto = AutoPipeline(redis)
        store = Store(redis, Cipher(settings.encryption_keys), keys, auto)
        leases = Leases(redis, settings.lease_ttl, auto)
        sink = EventSink(redis, keys, forward=forward, clock=clock, auto=auto)
        exchange = http if http is not None else AiohttpExchange()
        client = SalesforceClient(exchange, settings.http_timeout)
        client.admission = RateLimiter(redis, keys, settings.rate_limit, auto, rng=rng)
        refresher = Refresher(
            store,
            leases,
            client,
            sink,
            timing(settings),
            lease_wait=settings.lease_ttl,
            concurrency=settings.concurrency,
            save_window=save_window(settings),
            replication=Replication(redis, settings.min_replicas, settings.replica_wait),
            clock=clock,
            rng=rng,
        )
        return cls(settings, redis, store, leases, sink, client, refresher)

    async def close(self) -> None:
        await self.client.aclose()
        await self.redis.aclose()
