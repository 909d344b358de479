"""Scenario 3: Redis memory per connection, and what a sweep costs with nothing due.

Memory is `MEMORY USAGE` (key, value and dict entry) of sampled connection hashes written by
the worker itself in the throughput run, plus each connection's share of the due index and of
the fleet's sorted sets (the console's indexes), as `bench --million` counts them in used
memory. The
idle sweep runs `worker.engine.sweep.sweep` exactly as the beat-triggered task does (window guard
included, reset before each run), against a store filled to each total with checked
connections in the real record format, none of them due; then with some due, to show that
the cost follows the number due, not the number stored.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import redis

from config.settings import Settings
from worker.dev.bench import seed
from worker.dev.bench.population import cipher_of
from worker.dev.bench.progress import say
from worker.engine.runtime import redis_client
from worker.engine.sweep import collect, sweep
from worker.store.connections import Store
from worker.store.keys import Keys

KIB = 1024
WRITERS = 2  # processes storing the series' records (the box has 2 cores)
PARALLEL_FROM = 50_000  # records; below this a spawned process costs more than it saves


@dataclass
class Memory:
    hash_bytes: float
    due_bytes: float
    sampled: int
    events_stream_bytes: int  # capped, not per connection: shown for completeness
    index_bytes: float = 0.0  # the fleet's sorted sets (worker.store.counting) per record

    @property
    def per_connection(self) -> float:
        return self.hash_bytes + self.due_bytes + self.index_bytes


@dataclass
class SweepTimes:
    total: int
    due: int
    median_ms: float
    p99_ms: float


@dataclass
class StoreResult:
    memory: Memory
    sweeps: list[SweepTimes] = field(default_factory=list)
    used_memory_per_conn: float = 0.0  # INFO used_memory growth / connections written
    populate_s: float = 0.0

    def idle(self) -> list[SweepTimes]:
        return [s for s in self.sweeps if s.due == 0]


def memory(client: redis.Redis, keys: Keys, ids: list[str], sample: int, seed_: int) -> Memory:
    chosen = random.Random(seed_).sample(ids, min(sample, len(ids)))
    pipe = client.pipeline(transaction=False)
    for connection_id in chosen:
        pipe.memory_usage(keys.conn(connection_id), samples=0)
    sizes = [int(size) for size in pipe.execute() if size]
    due_total = int(client.memory_usage(keys.due, samples=0) or 0)
    members = int(client.zcard(keys.due))
    events = int(client.memory_usage(keys.events, samples=0) or 0)
    indexed = int(client.zcard(keys.fleet_by_integration))  # every counted record
    index_total = sum(int(client.memory_usage(key, samples=0) or 0) for key in _indexes(keys))
    return Memory(
        statistics.fmean(sizes), due_total / max(1, members), len(sizes), events,
        index_total / max(1, indexed),
    )  # fmt: skip


def _indexes(keys: Keys) -> list[str]:
    """The fleet's per-record sorted sets: what `bench --million` counts in used memory too."""
    return [keys.fleet_by_integration, keys.fleet_by_error, keys.fleet_by_status,
            keys.fleet_by_status_integration]  # fmt: skip


def _quiet(client: redis.Redis, timeout: float) -> None:
    """Wait for a background AOF rewrite or RDB save to end: they fork and take a core."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["rdb_bgsave_in_progress"]:
            return
        time.sleep(0.2)


async def _time_sweeps(
    settings: Settings, repeats: int, expect: int, before: Callable[[], None] | None = None
) -> list[float]:
    """`repeats` timed sweeps on one warm client (a first, untimed one connects and loads
    the claim script); `before` runs ahead of each, untimed."""
    redis_async = redis_client(settings.store_endpoint)
    keys = Keys(settings.key_prefix)
    store = Store(redis_async, cipher_of(settings), keys)
    times: list[float] = []
    try:
        await sweep(store, settings, 0.0, collect([]))
        for _ in range(repeats):
            if before is not None:
                before()
            await redis_async.delete(keys.sweep_guard)
            batches: list[tuple[list[str], float]] = []
            started = time.perf_counter()
            result = await sweep(store, settings, time.time(), collect(batches))
            times.append((time.perf_counter() - started) * 1000)
            if result.claimed != expect:
                raise RuntimeError(f"store: sweep claimed {result.claimed}, expected {expect}")
    finally:
        await redis_async.aclose()
    return times


def populate(settings: Settings, start: int, stop: int, now: float) -> int:
    """Store connections s<start>..s<stop - 1>, checked and never due (next check 1 to 25 h
    ahead), from WRITERS processes at once when there are many: sealing a record's two tokens
    is ~15 us of Python, Redis's script writing it ~20 us (`seed.write_steady`), and each
    writer waits for its script in turn, so two overlap the two. The writers are spawned,
    not forked: a fork of this process (which runs threads) can inherit a lock some thread
    holds and hang."""
    count = stop - start
    if count < PARALLEL_FROM:
        return _write_range(settings, start, stop, now)
    step = -(-count // WRITERS)
    bounds = [(n, min(stop, n + step)) for n in range(start, stop, step)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(bounds), mp_context=context) as pool:
        jobs = [pool.submit(_write_range, settings, lo, hi, now) for lo, hi in bounds]
        return sum(job.result() for job in jobs)


def _write_range(settings: Settings, start: int, stop: int, now: float) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    rng = random.Random(start)
    records = ((f"s{n:07d}", now + 3600 + rng.random() * 86400) for n in range(start, stop))
    try:
        keys, cipher = Keys(settings.key_prefix), cipher_of(settings)
        return seed.write_steady(client, keys, cipher, "bench", records, now, 7200.0)
    finally:
        client.close()


def _summary(total: int, due: int, times: list[float]) -> SweepTimes:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return SweepTimes(total, due, round(statistics.median(ordered), 3), round(p99, 3))


def sweep_series(
    settings: Settings, totals: tuple[int, ...], repeats: int, timeout: float
) -> StoreResult:
    """Fill the store to each total (never due), timing idle sweeps; then some due."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.key_prefix)
    now, written, result = time.time(), 0, StoreResult(Memory(0, 0, 0, 0))
    base = int(client.info("memory")["used_memory"])
    for total in totals:
        started = time.monotonic()
        written += populate(settings, written, total, now)
        result.populate_s += time.monotonic() - started
        say(f"store: {written} connections stored; timing idle sweeps")
        _quiet(client, timeout)
        times = asyncio.run(_time_sweeps(settings, repeats, 0))
        result.sweeps.append(_summary(total, 0, times))
    result.used_memory_per_conn = (int(client.info("memory")["used_memory"]) - base) / written
    ids = [f"s{n:07d}" for n in range(written)]
    result.memory = memory(client, keys, ids, 1000, 11)
    for due in (100, 1_000, 10_000):
        if due > written:
            break
        chosen = ids[:due]

        def make_due(chosen: list[str] = chosen) -> None:
            seed.reschedule(client, keys, chosen, time.time() - 1)

        expect = min(due, settings.sweep_limit)
        times = asyncio.run(_time_sweeps(settings, max(3, repeats // 10), expect, make_due))
        result.sweeps.append(_summary(written, due, times))
    client.close()
    return result
