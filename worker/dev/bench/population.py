"""The throughput scenario's population: emulator grants imported as connections.

A share of them hold an access token the emulator has already expired, so their check is
introspect (inactive) -> refresh -> introspect the new token to learn its lifetime; the rest
are introspect -> still fresh -> reschedule.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass

import redis

from config.settings import Settings
from worker.dev.bench import seed
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.engine.runtime import Runtime
from worker.service import integrations
from worker.store.crypto import Cipher, generate_key
from worker.store.keys import Keys

INTEGRATION = "bench"
PREFIX = "bench:"
NOT_DUE = 10**9  # seconds ahead: parked until the benchmark makes them due


@dataclass(frozen=True)
class Population:
    ids: list[str]
    warm_ids: list[str]
    expired: int
    client_id: str
    secret: str


BENCH_RATE_LIMIT = "20000"


def store_env(redis_url: str, broker_url: str, key: str | None = None) -> dict[str, str]:
    """TOKENWORKER_* for every process of the run (worker, in-process runtimes): the
    caller's own settings (so a configuration can be benchmarked), then the run's store.

    The per-integration rate limit (default 1,000 calls/s) would cap the one benchmark
    integration below what is measured: unless the caller sets one, it is 20,000/s, so the
    limiter runs (and costs what it costs) without binding."""
    return {
        "TOKENWORKER_RATE_LIMIT": BENCH_RATE_LIMIT,
        **{name: value for name, value in os.environ.items() if name.startswith("TOKENWORKER_")},
        "TOKENWORKER_REDIS_URL": redis_url,
        "TOKENWORKER_BROKER_URL": broker_url,
        "TOKENWORKER_ENCRYPTION_KEYS": key or generate_key(),
        "TOKENWORKER_KEY_PREFIX": PREFIX,
        "TOKENWORKER_LOG_FORMAT": "json",
    }


def cipher_of(settings: Settings) -> Cipher:
    return Cipher(settings.encryption_keys)


def add_integration(
    settings: Settings, emulator_url: str, client_id: str, secret: str, name: str = INTEGRATION
) -> None:
    async def go() -> None:
        rt = Runtime.open(settings)
        try:
            await integrations.add(rt, name, "salesforce", client_id, secret, emulator_url)
        finally:
            await rt.close()

    asyncio.run(go())


def prepare(
    settings: Settings,
    admin: EmulatorAdmin,
    connections: int,
    warmup: int,
    expired_share: float,
    rng: random.Random,
) -> Population:
    """Grants at the emulator, connections in the store; warm-up ones due now, the rest parked."""
    client_id, secret = admin.client()
    add_integration(settings, admin.base_url, client_id, secret)
    grants = admin.grants(client_id, connections + warmup)
    expired = rng.sample(range(len(grants)), int(expired_share * len(grants)))
    admin.grant_action([grants[i].grant_id for i in expired], "expire")
    ids = [f"c{n:07d}" for n in range(connections)]
    warm_ids = [f"w{n:05d}" for n in range(warmup)]
    client = redis.Redis.from_url(settings.redis_url)
    now = time.time()
    pairs = zip(warm_ids + ids, grants[connections:] + grants[:connections], strict=True)
    records = [
        (seed.imported(cid, INTEGRATION, grant), now if cid[0] == "w" else now + NOT_DUE)
        for cid, grant in pairs
    ]
    seed.write(client, Keys(settings.key_prefix), cipher_of(settings), records)
    client.close()
    expired_measured = sum(1 for i in expired if i < connections)
    return Population(ids, warm_ids, expired_measured, client_id, secret)
