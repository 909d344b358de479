"""`tokenworker bench --million` (issue 16): one box keeps a million connections fresh at real
lifetimes, in real time.

Real redis-server (deploy/redis.conf), the emulator at 50 ms per call (`millionemu`, compact
mode), the Celery worker as the Procfile runs it (2 prefork processes) and beat
(LeaseScheduler), every worker setting at its default but the per-integration rate limit (the
benchmark's, see `population.store_env`: one integration stands for a fleet's many).

1. import: `connections` imported through `transfer.import_records` while the fleet runs
   (`millionfleet`); each is due at once (its expiry is unknown until its first check).
2. warm-up: until every imported connection has had its first check and the broker is
   empty: the import's backlog, including sessions imported already near their expiry.
3. steady: `steady_s` of real time, measured (`millionprobe`): overdue, worker CPU, calls.
Staleness and Redis memory are sampled every 30 s over the whole run; `million_stale_max` is
the steady state's (the warm-up's own max is reported beside it: a session imported with less
life left than the import's backlog takes to check expires before its first check).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from config.settings import Settings
from worker.dev.bench import api, population
from worker.dev.bench.emuadmin import EmulatorAdmin, Stats
from worker.dev.bench.millionemu import MillionEmulator
from worker.dev.bench.millionfleet import floor_calls_per_s, populate
from worker.dev.bench.millionprobe import (
    Overdue,
    Stale,
    cpu_seconds,
    memory_breakdown,
    redis_used_bytes,
    redis_used_bytes_safe,
)
from worker.dev.bench.millionprobe import not_active as count_not_active
from worker.dev.bench.millionreads import ReadParams, Reads
from worker.dev.bench.progress import Ticker, say
from worker.dev.bench.report import Target
from worker.dev.bench.services import Workspace
from worker.dev.bench.throughput import Pool
from worker.dev.bench.workload import Activity, Member
from worker.store.keys import Keys

BEAT = ["-m", "celery", "-A", "config.celery", "beat", "-S", "worker.jobs.beat.LeaseScheduler"]
MB = 1024 * 1024

TARGETS = (
    Target("million_stale_max", "0", lambda v: v == 0),
    Target("million_overdue_p99_s", "<= sweep interval (60)", lambda v: v <= 60.0),
    Target("million_worker_cpu", "<= 0.25 of 2 cores", lambda v: v <= 0.25),
    Target("million_redis_mb", "<= 1024", lambda v: v <= 1024),
    Target("million_calls_per_s", "- (floor beside)", None),
    Target("million_floor_calls_per_s", "- (1 refresh/lifetime)", None),
    Target("million_import_s", "-", None),
    Target("million_warmup_s", "- (backlog absorbed)", None),
    Target("million_warmup_stale_max", "- (import + warm-up)", None),
    Target("million_emulator_bytes_per_grant", "-", None),
    Target("million_redis_bytes_per_conn", "- (used memory / connections)", None),
    Target("million_reads_per_s", ">= 3000 (closed loop, 64 clients)", lambda v: v >= 3000),
    Target("million_read_p50_ms", "- (paced at 3000/s)", None),
    Target("million_read_p99_ms", "<= 10 (paced at 3000/s)", lambda v: v <= 10),
    Target("million_read_salesforce_calls", "0 (fresh tokens)", lambda v: v == 0),
)

NOTES = {
    "million_stale_max": "steady state: max over samples every 30 s of live grants whose "
    "newest access token expired at the emulator (it counts every connection, so it bounds "
    "the active ones; million_not_active: the others); million_warmup_stale_max: the same "
    "during import + warm-up (sessions imported near expiry, not yet checked), "
    "million_run_stale_max: the whole run",
    "million_overdue_p99_s": "steady state: a due id's stored last_check_at minus its due "
    "time (0 when it started early), for every id seen unclaimed within the sweep interval + "
    "10 s of its due time (sampled every 2 s)",
    "million_worker_cpu": "steady state: CPU of the Celery worker and its prefork children / "
    "(wall time x cores)",
    "million_calls_per_s": "steady state: token + introspect calls at the emulator per second; "
    "the floor is one refresh per session lifetime",
    "million_reads_per_s": "credential reads of fresh tokens (next check >= 30 min away) "
    "through 2 api processes, 64 keep-alive clients, inside the steady window (the fleet "
    "keeps running): closed loop for reads/s, then paced at 3,000/s for p50/p99 (from each "
    "read's scheduled time); million_read_salesforce_calls: the read records' version "
    "changes (a refresh on read saves; the worker leaves these alone)",
    "rate_limit": "default settings but the benchmark's per-integration rate limit (one "
    "integration stands for a fleet's many)",
}


@dataclass(frozen=True)
class MillionParams:
    connections: int = 1_000_000
    steady_s: float = 600.0
    latency_ms: float = 50.0
    worker_processes: int = 2
    active_share: float = 0.25
    import_concurrency: int = 32
    stale_every_s: float = 30.0
    overdue_every_s: float = 2.0
    warmup_deadline_s: float = 1_200.0
    seed: int = 16
    # TOKENWORKER_WORKER_NICE of the worker's children: the api, the load generator, the
    # emulator and Redis share its two cores here, and a read must not wait for the worker.
    # 19 since stop 17 (one run each, same VM): paced read p99 166.8 ms at 10, 18.8 ms at 19,
    # overdue p99 4.55 -> 0.51 s, worker CPU 0.253 -> 0.214 (million-1m-2026-12-01-s17b/c).
    worker_nice: int = 19

    @property
    def mode(self) -> str:
        return "million"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sampler:
    """Stale grants and Redis memory every `every` s, whatever phase is running."""

    def __init__(self, emu: MillionEmulator, store: redis.Redis, every: float) -> None:
        self.emu, self.store, self.every = emu, store, every
        self.stale = Stale()
        self.redis_max = 0
        self._last = 0.0

    def tick(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        self.stale.take(self.emu)
        self.redis_max = max(self.redis_max, redis_used_bytes(self.store))


class Checked:
    """Checks the worker finished, from its log's `batch.done` lines (read incrementally)."""

    def __init__(self, path: str) -> None:
        self.path, self.offset, self.total = path, 0, 0

    def count(self) -> int:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            for line in log:
                if not line.endswith(b"\n"):
                    break  # a line still being written: read it next time
                self.offset += len(line)
                if b'"batch.done"' in line:
                    with contextlib.suppress(ValueError):
                        self.total += int(json.loads(line).get("size", 0))
        return self.total


def _warm_up(
    store: redis.Redis, keys: Keys, pool: Pool, p: MillionParams, loop: Any
) -> tuple[float, int, bool]:
    """Until every imported connection had its first check: as many checks done as
    connections, none due at or before the import's end (a check reschedules later, a claim
    too), no batch waiting. (seconds, checks done by then, absorbed): at the deadline the
    run goes on to its steady window, flagged, rather than lose a half-hour run."""
    started, imported_by = time.monotonic(), time.time()
    checked = Checked(pool.ws.path(pool.log_name))
    ticker = Ticker(10.0)
    while time.monotonic() - started < p.warmup_deadline_s:
        backlog = int(store.zcount(keys.due, "-inf", imported_by))
        done = checked.count()
        if backlog == 0 and done >= p.connections and pool.waiting() == 0:
            return time.monotonic() - started, done, True
        ticker.maybe(f"million: warm-up, {done:,} checks done, {backlog:,} not yet claimed")
        loop()
        time.sleep(1.0)
    say(f"million: the backlog was NOT absorbed in {p.warmup_deadline_s:g}s; steady anyway")
    return time.monotonic() - started, checked.count(), False


def _activity(members: list[Member], p: MillionParams, rng: random.Random) -> Activity:
    """The users' activity over the rest of the run, frozen out of the collector with what the
    import kept: it lives to the end (a full collection walking it took 0.9 s at stop 22)."""
    activity = Activity(members, time.time(), p.warmup_deadline_s + p.steady_s + 60, rng)
    gc.freeze()
    return activity


def run(ws: Workspace, p: MillionParams) -> tuple[dict[str, Any], dict[str, Any]]:
    """(figures, details) of one run."""
    server = ws.redis()
    env = population.store_env(server.url, f"redis://127.0.0.1:{server.port}/1")
    env.setdefault("TOKENWORKER_WORKER_NICE", str(p.worker_nice))  # unless the caller set one
    settings = Settings.from_env(env)
    emu = MillionEmulator(ws, p.latency_ms)
    admin = EmulatorAdmin(emu.base_url)
    client_id, secret = admin.client()
    population.add_integration(settings, emu.base_url, client_id, secret)
    store, keys = redis.Redis.from_url(settings.redis_url), Keys(settings.key_prefix)
    pool = Pool(ws, env, p.worker_processes)
    rng = random.Random(p.seed)
    try:
        pool.wait_ready(60.0)
        ws.spawn([sys.executable, *BEAT, "--loglevel", "INFO"], pool.env, "beat.log")
        sampler = Sampler(emu, store, p.stale_every_s)
        rss_empty = emu.rss_bytes()
        say(f"million: importing {p.connections:,} connections (the fleet is running)")
        imported = populate(
            settings, emu, client_id, population.INTEGRATION, p.connections,
            p.active_share, p.import_concurrency, rng, sampler.tick,
        )  # fmt: skip
        rss_full = emu.rss_bytes()
        say(f"million: imported in {imported.seconds:,.0f}s; warm-up")
        activity = _activity(imported.members, p, rng)

        def loop() -> None:
            activity.fire_until(time.time(), admin)
            sampler.tick()

        warm_stats = admin.stats()
        # Beat sweeps once per interval; one sweep now starts the backlog without waiting up
        # to an interval (in a long import beat has long been sweeping: no difference).
        pool.sweep()
        warmup_s, warmup_checks, absorbed = _warm_up(store, keys, pool, p, loop)
        key = api._api_key(settings)
        watch = {
            "worker": [pool.proc.pid, *pool.child_pids()],
            "emulator": [emu.pid],
            "redis": [server.process.pid] if server.process is not None else [],
        }
        reads = Reads(ws, pool.env, store, keys, key, ReadParams.for_steady(p.steady_s), watch)
        sampler.tick(force=True)
        steady_start = time.time()
        say(f"million: backlog absorbed in {warmup_s:,.0f}s; steady for {p.steady_s:g}s")
        # a sweep claims up to an interval ahead: the overdue probe watches that far
        steady = _steady(store, keys, pool, admin, p, loop, reads, settings.sweep_interval + 10)
        if reads.error:
            say(f"million: the credential reads failed: {reads.error}")
        sampler.tick(force=True)
        not_active = count_not_active(store, keys)
        breakdown = memory_breakdown(store, keys, p.connections)
        rss_end = emu.rss_bytes()
    finally:
        pool.close()
        store.close()
        admin.close()
        emu.close()
    floor = floor_calls_per_s(imported.lifetimes)
    figures = {
        "million_stale_max": sampler.stale.max_since(steady_start),
        "million_overdue_p99_s": round(steady["overdue"].p99(), 2),
        "million_worker_cpu": round(steady["cpu_share"], 3),
        "million_redis_mb": round(sampler.redis_max / MB, 1),
        "million_calls_per_s": round(steady["calls_per_s"], 1),
        "million_floor_calls_per_s": round(floor, 1),
        "million_floor_ratio": round(steady["calls_per_s"] / floor, 3) if floor else 0.0,
        "million_redis_bytes_per_conn": breakdown["used"],
        "million_import_s": round(imported.seconds, 1),
        "million_import_per_s": round(p.connections / imported.seconds, 1),
        "million_warmup_s": round(warmup_s, 1),
        "million_warmup_stale_max": max(
            (s for t, s, _ in sampler.stale.samples if t < steady_start), default=0
        ),
        "million_run_stale_max": sampler.stale.max_since(0.0),
        "million_warmup_calls": steady["start_stats"].total - warm_stats.total,
        "million_warmup_checks": warmup_checks,
        "million_emulator_bytes_per_grant": round((rss_full - rss_empty) / p.connections, 1),
        "million_not_active": not_active,
        **reads.figures,
    }
    details = {
        "warmup_absorbed": absorbed,  # False: the steady window began with a backlog
        "reads": {**reads.details, "error": reads.error},
        "stale_samples": sampler.stale.samples,
        "stale_scan_ms_max": round(sampler.stale.scan_ms_max, 1),
        "overdue": {
            "checks_seen": len(steady["overdue"].late),
            "max_s": round(max(steady["overdue"].late, default=0.0), 2),
            "samples_cut": steady["overdue"].cut,
            "unresolved": steady["overdue"].unresolved,
        },
        "emulator_rss_mb": {
            "empty": round(rss_empty / MB, 1),
            "imported": round(rss_full / MB, 1),
            "end": round(rss_end / MB, 1),
        },
        "redis_bytes_per_conn": breakdown,
        "redis_used_mb_end": round(redis_used_bytes_safe(server.url) / MB, 1),
        "activity_fired": activity.fired,
        "active_users": len(imported.members),
        "steady_calls": steady["calls"],
        "steady_token_calls": steady["token_calls"],
        "steady_introspect_calls": steady["introspect_calls"],
        "settings": {
            "sweep_interval": settings.sweep_interval,
            "sweep_limit": settings.sweep_limit,
            "refresh_margin": settings.refresh_margin,
            "concurrency": settings.concurrency,
            "rate_limit_per_integration": settings.rate_limit,
        },
    }
    return figures, details


def _steady(
    store: redis.Redis,
    keys: Keys,
    pool: Pool,
    admin: EmulatorAdmin,
    p: MillionParams,
    loop: Any,
    reads: Reads,
    ahead: float,
) -> dict[str, Any]:
    """The steady window: `steady_s`, longer if the reads (started `reads.p.after_s` in, or
    earlier when the window is short) have not ended by then, so they run inside it."""
    overdue = Overdue(store, keys, ahead)
    reads_at = max(0.0, min(reads.p.after_s, p.steady_s - reads.p.span_s))
    pids = [pool.proc.pid, *pool.child_pids()]
    start_stats: Stats = admin.stats()
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    ticker = Ticker(30.0)
    next_overdue = 0.0
    while (elapsed := time.monotonic() - t0) < p.steady_s or reads.running:
        if elapsed >= reads_at and not reads.started:
            say(f"million: credential reads, {reads.p.clients} clients, the fleet running")
            reads.start()
        if elapsed > p.steady_s + 4 * reads.p.span_s:
            break  # reads stalled: the figures say so (reads.error or none)
        if elapsed >= next_overdue:
            overdue.take()
            next_overdue = elapsed + p.overdue_every_s
        loop()
        ticker.maybe(f"million: steady {elapsed:,.0f}/{p.steady_s:g}s")
        time.sleep(min(0.5, p.overdue_every_s / 2))
    seconds = time.monotonic() - t0
    cpu = cpu_seconds([pool.proc.pid, *pool.child_pids()]) - cpu0
    end_stats = admin.stats()
    calls = end_stats.total - start_stats.total
    return {
        "overdue": overdue,
        "cpu_share": cpu / seconds / (os.cpu_count() or 1),
        "calls_per_s": calls / seconds,
        "calls": calls,
        "token_calls": end_stats.token_calls - start_stats.token_calls,
        "introspect_calls": end_stats.introspect_calls - start_stats.introspect_calls,
        "start_stats": start_stats,
    }
