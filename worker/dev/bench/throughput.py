"""Scenario 1: checks per second through the real production path.

A Celery worker (`celery -A config.celery worker -Q sweep,refresh,ops -c 2`, the Procfile's
command with two prefork children) is fed `tokenworker.sweep` tasks, like beat would, while
the refresh queue is short (a sweep claims at most TOKENWORKER_SWEEP_LIMIT ids, and claims
expire after a window, so it must not run far ahead of the pool). The clock runs from the
first claim until nothing is due or claimed in the due index. Outcomes are summed from the
worker's own `batch.done` log lines; Salesforce calls from the emulator's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from config.settings import Settings
from worker.dev.bench import profile, seed
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.population import Population
from worker.dev.bench.progress import Ticker, say
from worker.dev.bench.services import Workspace
from worker.domain.outcomes import CheckResult
from worker.engine.runtime import Runtime
from worker.engine.sweep import claimed_ids, collect, sweep
from worker.store.keys import Keys

POLL_S = 0.05
QUEUE_LOW = 30  # check_batch messages waiting: below this, the next sweep may run
PROFILE_S = 10.0
HORIZON_S = 1_800.0  # claimed ids sit within this of now; checked ones much further out


@dataclass
class ThroughputResult:
    mode: str
    checks: int
    seconds: float
    calls: int
    outcomes: dict[str, int] = field(default_factory=dict)
    sweeps: int = 0
    cores_busy: dict[str, float] = field(default_factory=dict)  # CPU s per wall s, by process
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # over the same window

    @property
    def checks_per_s(self) -> float:
        return self.checks / self.seconds if self.seconds > 0 else 0.0

    @property
    def calls_per_check(self) -> float:
        return self.calls / self.checks if self.checks else 0.0


class Pool:
    """The Celery worker as production runs it, with two prefork children."""

    def __init__(self, ws: Workspace, env: dict[str, str], processes: int) -> None:
        self.ws = ws
        self.processes = processes
        self.env = {**os.environ, **env}
        self.log_name = "celery.log"
        args = [sys.executable, "-m", "celery", "-A", "config.celery", "worker"]
        args += ["-Q", "sweep,refresh,ops", "-c", str(processes), "--loglevel", "INFO"]
        args += ["--without-mingle", "--without-gossip", "-n", f"bench-{os.getpid()}@%h"]
        self.proc = ws.spawn(args, self.env, self.log_name)
        from celery import Celery  # noqa: PLC0415  (heavy; only the Celery mode needs it)

        self.app = Celery(broker=env["TOKENWORKER_BROKER_URL"])
        self.broker = redis.Redis.from_url(env["TOKENWORKER_BROKER_URL"])

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Celery worker exited: {self.log_tail()}")
            if self.app.control.ping(timeout=0.5):
                return
        raise RuntimeError(f"the Celery worker did not answer a ping: {self.log_tail()}")

    def child_pids(self) -> list[int]:
        found = subprocess.run(  # noqa: S603
            ["pgrep", "-P", str(self.proc.pid)],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        return [int(pid) for pid in found.stdout.split()]

    def sweep(self) -> None:
        self.app.send_task("tokenworker.sweep", args=[False], queue="sweep")

    def waiting(self) -> int:
        return int(self.broker.llen("refresh")) + int(self.broker.llen("sweep"))

    def log_size(self) -> int:
        return os.path.getsize(self.ws.path(self.log_name))

    def outcomes_since(self, offset: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        with open(self.ws.path(self.log_name), "rb") as log:
            log.seek(offset)
            for line in log:
                if b'"batch.done"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    entry: dict[str, Any] = json.loads(line)
                    counts.update(
                        {k: v for k, v in entry.items() if isinstance(v, int) and k != "size"}
                    )
        return counts

    def log_tail(self) -> str:
        with open(self.ws.path(self.log_name), errors="replace") as log:
            return log.read()[-3000:]

    def close(self, graceful: bool = True) -> None:
        """Stop the worker: a warm shutdown, or (`graceful=False`, once its figures are taken)
        SIGKILL, since nothing reads what a warm shutdown would write."""
        try:
            if graceful:
                self.ws.stop(self.proc)
            else:
                self.ws.kill(self.proc)
        finally:
            self.broker.close()


def drain(
    store: redis.Redis, keys: Keys, pool: Pool | None, total: int, deadline_s: float
) -> tuple[float, float, int]:
    """Feed sweeps until nothing is due or claimed; (first claim, end, sweeps sent)."""
    start = time.time()
    horizon = start + HORIZON_S
    first_claim: float | None = None
    sweeps, last_sweep = 0, 0.0
    ticker = Ticker()
    while time.time() - start < deadline_s:
        now = time.time()
        due = int(store.zcount(keys.due, "-inf", now))
        pending = int(store.zcount(keys.due, "-inf", horizon))
        if first_claim is None and due < total:
            first_claim = now
        if pending == 0:
            return first_claim or start, now, sweeps
        if pool is not None and due and now - last_sweep > 0.5 and pool.waiting() < QUEUE_LOW:
            pool.sweep()
            sweeps, last_sweep = sweeps + 1, now
        ticker.maybe(f"throughput: {total - pending}/{total} checked")
        time.sleep(POLL_S)
    raise RuntimeError(f"throughput: still {pending} unchecked after {deadline_s:g}s")


def run_celery(
    settings: Settings,
    admin: EmulatorAdmin,
    population: Population,
    pool: Pool,
    deadline_s: float,
    others: dict[str, int],
    profile_dir: str | None = None,
) -> ThroughputResult:
    """Warm `pool` (started, perhaps not ready yet) on the warm-up connections, then time the
    main population. The pool is left running (the caller stops it)."""
    keys = Keys(settings.key_prefix)
    store = redis.Redis.from_url(settings.redis_url)
    pool.wait_ready(60.0)
    say(f"throughput: Celery worker up ({pool.processes} processes); warming up")
    if population.warm_ids:
        pool.sweep()
        drain(store, keys, None, len(population.warm_ids), deadline_s)
        time.sleep(0.5)  # the warm-up's last batch.done lines
    admin.reset_stats()
    offset = pool.log_size()
    seed.reschedule(store, keys, population.ids, time.time())
    pool.sweep()
    children = pool.child_pids()
    meter = profile.CpuMeter(
        {
            "celery main process": pool.proc.pid,
            **{f"worker child {n + 1}": pid for n, pid in enumerate(children)},
            **others,
            "benchmark driver": os.getpid(),
        }
    )
    meter.start()
    spies = []
    if profile_dir is not None:
        spies = profile.start(children, PROFILE_S, profile_dir)
    first, end, sweeps = drain(store, keys, pool, len(population.ids), deadline_s)
    cores = meter.stop()
    for spy in spies:
        spy.wait(PROFILE_S + 30)
    time.sleep(0.5)  # the last batch.done lines are written after the last save
    stats = admin.stats()
    outcomes = pool.outcomes_since(offset)
    store.close()
    checks = sum(outcomes.values()) or len(population.ids)
    return ThroughputResult(
        "celery", checks, end - first, stats.total, dict(outcomes), sweeps + 1, cores, meter.spent
    )


async def check_in_batches(rt: Runtime, ids: list[str]) -> list[CheckResult]:
    """What one worker process does with a sweep's ids: one check_batch after another."""
    size = rt.settings.batch_size
    results: list[CheckResult] = []
    for start in range(0, len(ids), size):
        results.extend(await rt.refresher.check_many(ids[start : start + size]))
    return results


def run_inline(
    settings: Settings, admin: EmulatorAdmin, population: Population, deadline_s: float
) -> ThroughputResult:
    """The same check cycle in this process (no Celery): the smoke test's path."""
    keys = Keys(settings.key_prefix)
    store = redis.Redis.from_url(settings.redis_url)
    admin.reset_stats()
    seed.reschedule(store, keys, population.ids, time.time())
    store.close()

    async def go() -> tuple[float, Counter[str]]:
        rt = Runtime.open(settings)
        counts: Counter[str] = Counter()
        started = time.perf_counter()
        try:
            while time.perf_counter() - started < deadline_s:
                batches: list[tuple[list[str], float]] = []
                result = await sweep(
                    rt.store, settings, time.time(), collect(batches), window_guard=False
                )
                claimed = claimed_ids(batches)
                if not result.claimed:
                    break
                for outcome in await check_in_batches(rt, claimed):
                    counts[outcome.outcome.value] += 1
        finally:
            await rt.close()
        return time.perf_counter() - started, counts

    seconds, counts = asyncio.run(go())
    stats = admin.stats()
    return ThroughputResult("inline", sum(counts.values()), seconds, stats.total, dict(counts))
