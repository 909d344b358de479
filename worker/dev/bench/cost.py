"""Scenario 2: Salesforce calls per connection per simulated day, and freshness.

Driven in this process on a simulated clock (one real Celery run of a day is impractical):
`worker.engine.sweep.sweep` claims what is due at the simulated now, `Refresher.check_many`
checks it through a `worker.engine.runtime.Runtime` whose clock is the simulated one, and the
emulator (its own
process, see `simemulator`) reads the same clock. Every sweep interval of simulated time:
fire users' activity, sample freshness, sweep, check. Calls come from the emulator's counters.

Freshness: at every sample, before the sweep, the access token of every `active` connection is
looked up at the emulator; `stale` counts those already past their emulator-side expiry.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import redis

from config.settings import Settings
from worker.dev.bench import seed
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.params import DAY, BenchParams
from worker.dev.bench.population import add_integration, cipher_of
from worker.dev.bench.progress import Ticker
from worker.dev.bench.simemulator import STALE_PATH, SimEmulator
from worker.dev.bench.throughput import check_in_batches
from worker.dev.bench.workload import (
    Activity,
    Member,
    floor_per_day,
    lower_bound_per_day,
    members_for,
)
from worker.domain.models import ConnectionStatus
from worker.engine.runtime import Runtime
from worker.engine.sweep import collect, sweep
from worker.store.connections import Store
from worker.store.keys import Keys

INTEGRATION = "cost"


@dataclass
class CostResult:
    connections: int
    days: float
    token_calls: int
    introspect_calls: int
    lower_bound: float  # calls per connection per day: the old model, with our margin
    floor: float  # calls per connection per day: one refresh per session lifetime
    stale_max: int = 0
    samples: int = 0
    activity_events: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    refreshes_by_lifetime: dict[str, list[float]] = field(default_factory=dict)  # [got, bound]
    wall_s: float = 0.0
    stale_examples: list[dict[str, float | str | None]] = field(default_factory=list)

    @property
    def calls_per_conn_day(self) -> float:
        return (self.token_calls + self.introspect_calls) / self.connections / self.days

    @property
    def cost_ratio(self) -> float:
        return self.calls_per_conn_day / self.lower_bound

    @property
    def floor_ratio(self) -> float:
        return self.calls_per_conn_day / self.floor


def cost_settings(base: dict[str, str], params: BenchParams) -> Settings:
    env = dict(base)
    env.update(
        {
            "TOKENWORKER_KEY_PREFIX": "cost:",
            "TOKENWORKER_REFRESH_MARGIN": str(params.margin),
            "TOKENWORKER_SWEEP_INTERVAL": str(params.sweep_interval),
            "TOKENWORKER_SWEEP_LIMIT": str(max(20_000, params.cost_connections)),
        }
    )
    return Settings.from_env(env)


async def _stale(store: Store, http: httpx.AsyncClient, ids: list[str], result: CostResult) -> int:
    live = [
        conn
        for conn in await store.get_connections(ids)
        if conn is not None and conn.status is ConnectionStatus.ACTIVE and conn.access_token
    ]
    tokens = [conn.access_token for conn in live]
    answer = (await http.post(STALE_PATH, json={"tokens": tokens})).raise_for_status().json()
    for index in answer["first"][: max(0, 5 - len(result.stale_examples))]:
        conn = live[index]
        result.stale_examples.append(
            {
                "connection_id": conn.id,
                "at": answer["at"],
                "stored_expires_at": conn.expires_at,
                "stored_lifetime": conn.lifetime,
                "last_refresh_at": conn.last_refresh_at,
            }
        )
    return int(answer["stale"])


GROUP_S = 10.0  # simulated seconds of paced batches checked together (see `grouped`)


def grouped(
    batches: list[tuple[list[str], float]], span: float
) -> list[tuple[list[str], float]]:
    """The sweep's paced batches joined while they start within `span` of the first one, each
    group starting at its first batch's time. The pool starts each batch at its own time; run
    one after another, the simulated day's ~10,000 checks took 95 s of the bench's 2 minutes.
    A check moved earlier by under `span` can only refresh a little early, which adds at most
    span / (lifetime - margin) to the cost: 0.15% at the 2 h default, 1.7% at 15 min."""
    groups: list[tuple[list[str], float]] = []
    for ids, start in batches:
        if groups and start - groups[-1][1] <= span:
            groups[-1][0].extend(ids)
        else:
            groups.append((list(ids), start))
    return groups


async def _simulate(
    settings: Settings,
    sim: SimEmulator,
    admin: EmulatorAdmin,
    ids: list[str],
    activity: Activity,
    params: BenchParams,
    result: CostResult,
) -> None:
    rt = Runtime.open(settings, clock=lambda: sim.now)
    http = httpx.AsyncClient(base_url=sim.base_url, timeout=30)
    outcomes: Counter[str] = Counter()
    start, ticks = sim.now, int(params.days * DAY / params.sweep_interval)
    every = max(1, int(params.freshness_every / params.sweep_interval))
    ticker, began = Ticker(3.0), time.monotonic()
    try:
        for tick in range(ticks + 1):
            if time.monotonic() - began > params.deadline_s:
                raise RuntimeError(f"cost: simulated day not done in {params.deadline_s:g}s")
            sim.now = start + tick * params.sweep_interval
            activity.fire_until(sim.now, admin)
            if tick % every == 0:
                result.stale_max = max(result.stale_max, await _stale(rt.store, http, ids, result))
                result.samples += 1
            batches: list[tuple[list[str], float]] = []
            await sweep(rt.store, settings, sim.now, collect(batches), window_guard=False)
            for claimed, at in grouped(batches, GROUP_S):  # each group at its start time
                if at > sim.now:
                    sim.now = at
                    activity.fire_until(sim.now, admin)
                for checked in await check_in_batches(rt, claimed):
                    outcomes[checked.outcome.value] += 1
            hours = (sim.now - start) / 3600
            ticker.maybe(f"cost: simulated {hours:5.1f} h of {params.days * 24:g} h")
    finally:
        await http.aclose()
        await rt.close()
    result.outcomes = dict(outcomes)


def run(
    base_env: dict[str, str], params: BenchParams, sim: SimEmulator, rng_seed: int
) -> CostResult:
    """The tokenworker policy over `params.days` simulated days."""
    rng = random.Random(rng_seed)
    settings = cost_settings(base_env, params)
    admin = EmulatorAdmin(sim.base_url)
    client_id, secret = admin.client()
    add_integration(settings, sim.base_url, client_id, secret, name=INTEGRATION)
    made = members_for(admin, client_id, params.cost_connections, params.active_share, rng)
    ids = [f"k{n:06d}" for n in range(len(made))]
    store = redis.Redis.from_url(settings.redis_url)
    pairs = zip(ids, made, strict=True)
    records = [(seed.imported(cid, INTEGRATION, grant), sim.now) for cid, (_, grant) in pairs]
    seed.write(store, Keys(settings.key_prefix), cipher_of(settings), records)
    store.close()
    members = [member for member, _ in made]
    activity = Activity(members, sim.now, params.days * DAY, rng)
    bound = sum(lower_bound_per_day(m.lifetime, params.margin) for m in members) / len(members)
    floor = sum(floor_per_day(m.lifetime) for m in members) / len(members)
    result = CostResult(len(ids), params.days, 0, 0, bound, floor)
    admin.reset_stats()
    began = time.monotonic()
    asyncio.run(_simulate(settings, sim, admin, ids, activity, params, result))
    result.wall_s = time.monotonic() - began
    stats = admin.stats()
    result.token_calls, result.introspect_calls = stats.token_calls, stats.introspect_calls
    result.activity_events = activity.fired
    result.refreshes_by_lifetime = _by_lifetime(members, admin.token_calls_by_grant(), params)
    admin.close()
    return result


def _by_lifetime(
    members: list[Member], calls: dict[str, int], params: BenchParams
) -> dict[str, list[float]]:
    """Refreshes per connection per day for each lifetime class: [got, the old model's
    refreshes (its bound / 2), the floor]."""
    rows: dict[str, list[float]] = {}
    for span in sorted({m.lifetime for m in members}):
        group = [m for m in members if m.lifetime == span]
        got = sum(calls.get(m.grant_id, 0) for m in group) / len(group) / params.days
        bound = lower_bound_per_day(span, params.margin) / 2
        rows[f"{span / 60:g}min"] = [round(got, 2), round(bound, 2), floor_per_day(span)]
    return rows
