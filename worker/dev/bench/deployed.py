"""`tokenworker bench --deployed`: checks per second as deployed, beside the pool's capacity.

`checks_per_s` (the main run) feeds the pool a sweep every 0.5 s: the pool's capacity. As
deployed, beat (the Procfile's `celery beat -S worker.jobs.beat.LeaseScheduler`) sends one
sweep every TOKENWORKER_SWEEP_INTERVAL, and each claims at most TOKENWORKER_SWEEP_LIMIT, so
a backlog (after an outage, an import) drains no faster than the settings allow. This run
measures both on the same pool and the same mix, every worker setting at its default (but
the benchmark's per-integration rate limit, see `population.store_env`):

1. capacity: `capacity` connections due at once, sweeps sent by the benchmark every 0.5 s;
2. deployed: `backlog` connections due at once (several sweep limits), beat sending sweeps.

The mix is the simulated day's: most checks find a stored expiry that says the token is due
and refresh it (one call); `fresh_share` are first checks of imported connections (no known
expiry: introspect, still fresh). The clock of each phase runs from its first claim until
nothing is due or claimed.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from config.settings import Settings
from worker.dev.bench import population, seed
from worker.dev.bench.emuadmin import EmulatorAdmin, Grant
from worker.dev.bench.progress import say
from worker.dev.bench.services import Workspace, start_emulator
from worker.dev.bench.throughput import Pool, drain
from worker.domain.models import Connection, ExpirySource
from worker.store.keys import Keys

BEAT = ["-m", "celery", "-A", "config.celery", "beat", "-S", "worker.jobs.beat.LeaseScheduler"]
DUE_IN = 60.0  # the stored expiry of a "due" connection: inside any margin, so it refreshes
LIFETIME = 7200.0  # the emulator's session timeout, learned: no introspection after refresh


@dataclass(frozen=True)
class DeployedParams:
    mode: str
    capacity: int  # connections for the capacity phase
    backlog: int  # connections for the deployed phase (several TOKENWORKER_SWEEP_LIMITs)
    warmup: int
    fresh_share: float
    worker_processes: int = 2
    latency_ms: float = 50.0
    deadline_s: float = 600.0
    seed: int = 16

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = DeployedParams("full", capacity=50_000, backlog=200_000, warmup=1_000, fresh_share=0.03)
QUICK = DeployedParams("quick", capacity=20_000, backlog=110_000, warmup=600, fresh_share=0.03)
SMOKE = DeployedParams(
    "smoke", capacity=200, backlog=400, warmup=0, fresh_share=0.03, deadline_s=120.0
)
PRESETS = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


@dataclass(frozen=True)
class Phase:
    checks: int
    seconds: float
    sweeps: int  # sent by the benchmark (capacity) or counted in the worker log (deployed)

    @property
    def checks_per_s(self) -> float:
        return self.checks / self.seconds if self.seconds > 0 else 0.0


def _record(cid: str, grant: Grant, due: bool, now: float) -> Connection:
    conn = seed.imported(cid, population.INTEGRATION, grant)
    if not due:
        return conn  # no known expiry: the check introspects
    return conn.evolve(
        expires_at=now + DUE_IN, expiry_source=ExpirySource.INTROSPECTION, lifetime=LIFETIME
    )


def _populate(
    settings: Settings, admin: EmulatorAdmin, p: DeployedParams
) -> dict[str, list[str]]:
    """Grants and connections, all parked; {"warm": ids, "capacity": ids, "backlog": ids}."""
    client_id, secret = admin.client()
    population.add_integration(settings, admin.base_url, client_id, secret)
    sizes = {"warm": p.warmup, "capacity": p.capacity, "backlog": p.backlog}
    grants = admin.grants(client_id, sum(sizes.values()))
    rng, now = random.Random(p.seed), time.time()
    groups: dict[str, list[str]] = {}
    records: list[tuple[Connection, float]] = []
    for name, size in sizes.items():
        groups[name] = [f"{name[0]}{n:07d}" for n in range(size)]
        for cid in groups[name]:
            due = rng.random() >= p.fresh_share
            records.append((_record(cid, grants[len(records)], due, now), now + population.NOT_DUE))
    client = redis.Redis.from_url(settings.redis_url)
    seed.write(client, Keys(settings.key_prefix), population.cipher_of(settings), records)
    client.close()
    return groups


def _sweeps_sent(ws: Workspace) -> int:
    with open(ws.path("celery.log"), "rb") as log:
        return sum(1 for line in log if b'"sweep.done"' in line)


def run(ws: Workspace, p: DeployedParams) -> tuple[dict[str, Any], dict[str, Any]]:
    """(figures, details) of both phases."""
    server = ws.redis()
    env = population.store_env(server.url, f"redis://127.0.0.1:{server.port}/1")
    settings = Settings.from_env(env)
    url, _ = start_emulator(ws, p.latency_ms, LIFETIME)
    admin = EmulatorAdmin(url)
    say(f"deployed: {p.capacity + p.backlog + p.warmup:,} connections into the store")
    groups = _populate(settings, admin, p)
    keys, store = Keys(settings.key_prefix), redis.Redis.from_url(settings.redis_url)
    pool = Pool(ws, env, p.worker_processes)
    try:
        pool.wait_ready(60.0)
        # Beat first sends one interval after it starts: started now, that wait overlaps the
        # capacity phase (whose bench-sent sweeps take what beat's would find).
        ws.spawn([sys.executable, *BEAT, "--loglevel", "INFO"], pool.env, "beat.log")
        if groups["warm"]:
            seed.reschedule(store, keys, groups["warm"], time.time())
            pool.sweep()
            drain(store, keys, None, len(groups["warm"]), p.deadline_s)
        say(f"deployed: pool capacity on {p.capacity:,} due (a sweep every 0.5 s)")
        seed.reschedule(store, keys, groups["capacity"], time.time())
        pool.sweep()
        first, end, sweeps = drain(store, keys, pool, p.capacity, p.deadline_s)
        capacity = Phase(p.capacity, end - first, sweeps + 1)
        say(f"deployed: {capacity.checks_per_s:,.0f} checks/s; now {p.backlog:,} due, beat")
        before = _sweeps_sent(ws)
        seed.reschedule(store, keys, groups["backlog"], time.time())
        first, end, _ = drain(store, keys, None, p.backlog, p.deadline_s)
        deployed = Phase(p.backlog, end - first, _sweeps_sent(ws) - before)
    finally:
        pool.close()
        store.close()
        admin.close()
    figures = {
        "deployed_checks_per_s": round(deployed.checks_per_s, 1),
        "pool_checks_per_s": round(capacity.checks_per_s, 1),
        "deployed_share": round(deployed.checks_per_s / capacity.checks_per_s, 3),
    }
    details = {
        "capacity": {**asdict(capacity), "checks_per_s": capacity.checks_per_s},
        "deployed": {**asdict(deployed), "checks_per_s": deployed.checks_per_s},
        "settings": {
            "sweep_interval": settings.sweep_interval,
            "sweep_limit": settings.sweep_limit,
            "batch_size": settings.batch_size,
            "concurrency": settings.concurrency,
            "refresh_margin": settings.refresh_margin,
            "rate_limit_per_integration": settings.rate_limit,
        },
    }
    return figures, details
