"""CPU per check, measured in one process: `python -m worker.dev.bench.cpucheck`.

Refresher.check_many runs over N connections seeded into a real redis-server against the
emulator (latency 0) on this process's event loop (uvloop, as a worker process runs it). The
emulator and Redis run in processes of their own (an emulator thread in this process made
the figure swing by +-10% from run to run: the two threads fought over the GIL), so the
figure is the CPU time of the main thread (time.thread_time): the worker's own cost per
check, independent of the box's load and of wall time.

Two paths are measured, each over `--rounds` passes of check_many over every connection:
  fresh    the common check: lease + read, introspect, save as still fresh, release
  refresh  a forced refresh: lease + read, mark, refresh call, save, release
`--profile FILE` writes a cProfile of the measured passes (main thread only; read it with
`python -m pstats FILE`).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext

import redis as redis_py

from config import logging as tw_logging
from config.settings import Settings
from worker.dev.bench import seed
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.population import BENCH_RATE_LIMIT
from worker.dev.bench.services import Workspace, start_emulator
from worker.dev.embedded import EmbeddedRedis
from worker.domain.outcomes import CheckResult, Outcome
from worker.engine.runtime import Runtime, tune_gc
from worker.service import integrations
from worker.store.crypto import generate_key
from worker.telemetry import metrics

PREFIX = "cpu:"
# path -> (check_many's force, the outcome every check of it must have)
PATHS = {"fresh": (False, Outcome.FRESH), "refresh": (True, Outcome.REFRESHED)}


def settings(redis_url: str, concurrency: int) -> Settings:
    return Settings.from_env(
        {
            "TOKENWORKER_REDIS_URL": redis_url,
            "TOKENWORKER_ENCRYPTION_KEYS": generate_key(),
            "TOKENWORKER_KEY_PREFIX": PREFIX,
            "TOKENWORKER_CONCURRENCY": str(concurrency),
            # As the benchmark's workers: the limiter runs without binding. At the default
            # (1,000/s per integration) this loop, faster than that, waited for permits and
            # took ~1.8 permit scripts per check: throttling's CPU counted as the check's.
            "TOKENWORKER_RATE_LIMIT": BENCH_RATE_LIMIT,
        }
    )


async def seeded(rt: Runtime, emu: EmulatorAdmin, count: int) -> list[str]:
    """An integration at the emulator and `count` imported connections, checked once (the
    first check learns each token's expiry; later ones are the steady fresh check)."""
    client_id, secret = emu.client()
    await integrations.add(rt, "acme", "salesforce", client_id, secret, emu.base_url)
    grants = emu.grants(client_id, count)
    ids = [f"c{n}" for n in range(count)]
    now = time.time()
    records = [(seed.imported(cid, "acme", g), now) for cid, g in zip(ids, grants, strict=True)]
    with redis_py.Redis.from_url(rt.settings.redis_url) as sync:
        seed.write(sync, rt.store.keys, rt.store.cipher, records)
    await expect(rt.refresher.check_many(ids), Outcome.FRESH)
    return ids


async def expect(batch: Awaitable[list[CheckResult]], outcome: Outcome) -> None:
    results = await batch
    counts = Counter(result.outcome for result in results)
    if counts != {outcome: len(results)}:
        raise RuntimeError(f"cpucheck: expected every check {outcome.value}, got {counts}")


async def cpu_per_check(
    rounds: int,
    ids: list[str],
    run: Callable[[], Awaitable[None]],
    profiler: cProfile.Profile | None,
) -> float:
    """Microseconds of this thread's CPU per check, over `rounds` passes."""
    guard: AbstractContextManager[object] = profiler if profiler is not None else nullcontext()
    start = time.thread_time()
    with guard:
        for _ in range(rounds):
            await run()
    return (time.thread_time() - start) / (rounds * len(ids)) * 1e6


async def measure(args: argparse.Namespace, redis_url: str, emu_url: str) -> dict[str, float]:
    rt = Runtime.open(settings(redis_url, args.concurrency))
    metrics.instrument(rt.client, metrics.Tally())  # as a worker process does
    emu = EmulatorAdmin(emu_url)
    profiler = cProfile.Profile() if args.profile else None
    try:
        ids = await seeded(rt, emu, args.connections)
        figures = {}
        for path, (force, outcome) in PATHS.items():
            if args.only not in (None, path):
                continue

            def run(force: bool = force, outcome: Outcome = outcome) -> Awaitable[None]:
                return expect(rt.refresher.check_many(ids, force=force), outcome)

            guard = profiler if args.profile_path == path else None
            figures[path] = await cpu_per_check(args.rounds, ids, run, guard)
        if profiler is not None:
            profiler.dump_stats(args.profile)
        return figures
    finally:
        emu.close()
        await rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.dev.bench.cpucheck")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="measure this many times")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--profile", help="write a cProfile of one path's passes here")
    parser.add_argument("--profile-path", choices=("fresh", "refresh"), default="fresh")
    parser.add_argument(
        "--only", choices=("fresh", "refresh"), help="measure one path (for an outside profiler)"
    )
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415  (the worker processes' loop)

    quiet_logs()
    tune_gc()  # as each worker process does at its start (worker_process_init)

    redis = EmbeddedRedis().start()
    try:
        with Workspace() as ws:
            emulator_url, _ = start_emulator(ws, latency_ms=0.0, lifetime=3600)
            best: dict[str, float] = {}
            for n in range(args.repeat):
                figures = uvloop.run(measure(args, redis.url, emulator_url))
                print(f"run {n + 1}: {cells(figures)}", flush=True)
                best = {path: min(us, best.get(path, us)) for path, us in figures.items()}
                redis_flush(redis.url)
            # The least is the figure: other load on the box only ever adds to a run's CPU time
            # (caches, frequency), never takes from it.
            print(f"least of {args.repeat}: {cells(best)}", flush=True)
    finally:
        redis.stop()


def cells(figures: dict[str, float]) -> str:
    return "  ".join(f"{path} {us:6.0f} us" for path, us in figures.items()) + " CPU per check"


def quiet_logs() -> None:
    """The worker's logging (JSON, INFO: each refresh logs its event), written to /dev/null:
    the rendering is part of a check's cost, the terminal's is not."""
    tw_logging.configure("json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115  (for the process's life)


def redis_flush(url: str) -> None:
    with redis_py.Redis.from_url(url) as client:
        client.flushall()


if __name__ == "__main__":
    main()
