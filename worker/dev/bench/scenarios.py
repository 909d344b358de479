"""Runs the three scenarios in order and gathers their figures, notes and details.

Order matters on a 2-core box: the Celery worker is stopped before the ceiling is measured,
the throughput emulator before the simulated day, and nothing else runs while timing.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from typing import Any

import redis

from config.settings import Settings
from worker.dev.bench import ceiling, cost, naive, population, profile, storage, throughput
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.params import BenchParams
from worker.dev.bench.progress import say
from worker.dev.bench.services import Workspace, start_emulator
from worker.dev.bench.simemulator import SimEmulator
from worker.dev.bench.throughput import ThroughputResult
from worker.store.keys import Keys

Figures = dict[str, Any]


class Run:
    def __init__(self, ws: Workspace, params: BenchParams, profile_dir: str | None) -> None:
        self.ws = ws
        self.params = params
        self.profile_dir = profile_dir
        self.figures: Figures = {}
        self.notes: dict[str, str] = {}
        self.details: dict[str, Any] = {"phase_seconds": {}}
        self.redis = ws.redis()
        self.env = population.store_env(self.redis.url, f"redis://127.0.0.1:{self.redis.port}/1")
        self.settings = Settings.from_env(self.env)

    def _phase(self, name: str, started: float) -> None:
        self.details["phase_seconds"][name] = round(time.monotonic() - started, 1)

    def throughput(self) -> None:
        p, started = self.params, time.monotonic()
        url, emulator_pid = start_emulator(self.ws, p.latency_ms, 7200.0)
        admin = EmulatorAdmin(url)
        say(f"throughput: {p.connections} connections ({p.expired_share:.0%} expired) + warm-up")
        # The Celery worker starts (imports, forks) while the population is seeded: it
        # idles until the first sweep is sent.
        pool = throughput.Pool(self.ws, self.env, p.worker_processes) if p.celery else None
        try:
            pop = population.prepare(
                self.settings, admin, p.connections, p.warmup, p.expired_share,
                random.Random(p.seed),
            )  # fmt: skip
            assert self.redis.process is not None
            others = {"emulator": emulator_pid, "redis-server": self.redis.process.pid}
            if pool is not None:
                result = throughput.run_celery(
                    self.settings, admin, pop, pool, p.deadline_s, others, self.profile_dir
                )
            else:
                result = throughput.run_inline(self.settings, admin, pop, p.deadline_s)
                self.notes["checks_per_s"] = "in-process (--no-celery), not the Celery path"
        finally:
            if pool is not None:
                pool.close(graceful=False)
        say(f"throughput: {result.checks_per_s:,.0f} checks/s; measuring the ceiling")
        best = self._ceiling(admin, result, others)
        self.figures["checks_per_s"] = round(result.checks_per_s, 1)
        self.figures["ceiling_per_s"] = round(best, 1)
        self.figures["efficiency"] = round(result.checks_per_s / best, 3) if best else 0.0
        self.details["throughput"] = {
            **asdict(result),
            "batch_size": self.settings.batch_size,
            "concurrency": self.settings.concurrency,
            "rate_limit_per_integration": self.settings.rate_limit,
            "calls_per_check": round(result.calls_per_check, 3),
            "expired": pop.expired,
            "cpu_us_per_check": profile.cpu_per_item_us(result.cpu_seconds, result.checks),
        }
        if self.profile_dir is not None:
            self.details["profile_by_area"] = profile.by_area(self.profile_dir)
            self.details["profile"] = [asdict(h) for h in profile.summarize(self.profile_dir)]
        self._memory(pop.ids)
        admin.close()
        self._phase("throughput", started)

    def _ceiling(
        self, admin: EmulatorAdmin, result: ThroughputResult, others: dict[str, int]
    ) -> float:
        """Checks/s the bare loop would reach making the worker's calls per check."""
        calls = max(1000, round(result.calls))
        concurrency = self.settings.concurrency
        runs = [
            ceiling.measure(self.ws, admin, calls, n, concurrency, 300.0, others)
            for n in self.params.ceiling_processes
        ]
        self.details["ceiling"] = [
            {
                **asdict(run),
                "calls_per_s": round(run.calls_per_s, 1),
                "cores_busy": run.cores_busy,
                "cpu_us_per_call": profile.cpu_per_item_us(run.cpu_seconds, run.calls),
            }
            for run in runs
        ]
        per_check = result.calls_per_check or 1.0
        return max(run.calls_per_s for run in runs) / per_check

    def _memory(self, ids: list[str]) -> None:
        client = redis.Redis.from_url(self.settings.redis_url)
        found = storage.memory(
            client, Keys(self.settings.key_prefix), ids, self.params.memory_sample, self.params.seed
        )
        client.close()
        self.figures["redis_bytes_per_conn"] = round(found.per_connection, 1)
        self.details["memory"] = {**asdict(found), "source": "records written by the worker"}

    def cost(self) -> None:
        p, started = self.params, time.monotonic()
        start = float(int(time.time()))
        sims: list[SimEmulator] = []
        try:  # the naive policy on an org of its own while the shards run (a core is spare)
            sims += [SimEmulator(self.ws, start, f"sim{k}") for k in range(p.cost_shards + 1)]
            say(f"cost: {p.cost_connections} connections, {p.days:g} simulated day(s)")
            shards = cost.Shards(self.ws, self.env, p, list(sims[1:]), p.seed)
            say(f"naive: {p.naive_connections} connections, {p.naive_days:g} simulated day(s)")
            plain = naive.run(p, sims[0], p.seed + 1)
            smart = shards.wait()
        finally:
            for sim in sims:
                sim.stop()
        self.figures["calls_per_conn_day"] = round(smart.calls_per_conn_day, 2)
        self.figures["calls_lower_bound"] = round(smart.lower_bound, 2)
        self.figures["cost_ratio"] = round(smart.cost_ratio, 3)
        self.figures["calls_floor"] = round(smart.floor, 2)
        self.figures["floor_ratio"] = round(smart.floor_ratio, 3)
        self.figures["naive_calls_per_conn_day"] = round(plain.calls_per_conn_day, 1)
        self.figures["stale_max"] = smart.stale_max
        self.notes["cost_ratio"] = (
            "simulated clock, driven in-process (Runtime + sweep + Refresher.check_many), "
            f"margin {p.margin:g}s, sweep every {p.sweep_interval:g}s; "
            "naive: in-process, sync httpx"
        )
        self.details["cost"] = {
            **asdict(smart),
            "calls_per_conn_day": round(smart.calls_per_conn_day, 3),
            "floor_ratio": round(smart.floor_ratio, 3),
        }
        self.details["naive"] = {**asdict(plain), "calls_per_conn_day": plain.calls_per_conn_day}
        self._phase("cost", started)

    def store(self) -> None:
        p, started = self.params, time.monotonic()
        server = self.ws.redis()
        env = {**self.env, "TOKENWORKER_REDIS_URL": server.url, "TOKENWORKER_KEY_PREFIX": "s:"}
        result = storage.sweep_series(
            Settings.from_env(env), p.store_totals, p.sweep_repeats, p.deadline_s
        )
        server.stop()
        idle = result.idle()
        largest, smallest = idle[-1], idle[0]
        self.figures["idle_sweep_ms_1m"] = largest.p99_ms
        self.figures["idle_sweep_growth"] = round(largest.median_ms / smallest.median_ms, 2)
        if largest.total < 1_000_000:
            self.notes["idle_sweep_ms_1m"] = (
                f"measured at {largest.total:,} stored, NOT 1M (p99; flat vs {smallest.total:,}"
                " so the 1M figure is extrapolated)"
            )
        else:
            self.notes["idle_sweep_ms_1m"] = f"p99 of {p.sweep_repeats} sweeps, 1,000,000 stored"
        self.details["store"] = asdict(result)
        self._phase("store", started)
