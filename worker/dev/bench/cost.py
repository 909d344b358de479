"""Scenario 2: Salesforce calls per connection per simulated day, and freshness.

Driven in this process on a simulated clock (one real Celery run of a day is impractical):
`worker.engine.sweep.sweep` claims what is due at the simulated now, `Refresher.check_many`
checks it through a `worker.engine.runtime.Runtime` whose clock is the simulated one, and the
emulator (its own
process, see `simemulator`) reads the same clock. Every sweep interval of simulated time:
sample freshness, sweep, check; users' activity is handed to the emulator once, which makes
each call at its own simulated time (`simemulator`). Calls come from the emulator's counters.

Freshness: at every sample, before the sweep, the access token of every `active` connection is
looked up at the emulator; `stale` counts those already past their emulator-side expiry.

Shards: the driver is one CPU-bound process (34.6 s of CPU in 40.9 s of wall for 320
connections on the 1 Dec VM), so `Shards` splits the population over `cost_shards`
processes side by side, each with its own simulated org (emulator, clock) and key prefix over
the same simulated day, and `merge` adds their results up (two halves: 23.5-23.9 s).
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import redis
import uvloop

from config.settings import Settings
from worker.dev.bench import seed
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.params import DAY, BenchParams
from worker.dev.bench.population import add_integration, cipher_of
from worker.dev.bench.progress import Ticker
from worker.dev.bench.services import Workspace
from worker.dev.bench.simemulator import STALE_PATH, SimClock
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
    members_by_lifetime: dict[str, int] = field(default_factory=dict)
    stale_by_sample: list[int] = field(default_factory=list)  # the probe's count, in order
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


def cost_settings(base: dict[str, str], params: BenchParams, prefix: str = "cost:") -> Settings:
    env = dict(base)
    env.update(
        {
            "TOKENWORKER_KEY_PREFIX": prefix,
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


def grouped(batches: list[tuple[list[str], float]], span: float) -> list[tuple[list[str], float]]:
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
    sim: SimClock,
    ids: list[str],
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
            if tick % every == 0:
                result.stale_by_sample.append(await _stale(rt.store, http, ids, result))
                result.stale_max = max(result.stale_by_sample)
                result.samples += 1
            batches: list[tuple[list[str], float]] = []
            await sweep(rt.store, settings, sim.now, collect(batches), window_guard=False)
            for claimed, at in grouped(batches, GROUP_S):  # each group at its start time
                sim.now = max(sim.now, at)
                for checked in await check_in_batches(rt, claimed):
                    outcomes[checked.outcome.value] += 1
            hours = (sim.now - start) / 3600
            ticker.maybe(f"cost: simulated {hours:5.1f} h of {params.days * 24:g} h")
    finally:
        await http.aclose()
        await rt.close()
    result.outcomes = dict(outcomes)


def run(
    base_env: dict[str, str],
    params: BenchParams,
    sim: SimClock,
    rng_seed: int,
    prefix: str = "cost:",
    connections: int | None = None,
) -> CostResult:
    """The tokenworker policy over `params.days` simulated days for `connections` (default
    `params.cost_connections`) stored under `prefix`."""
    rng = random.Random(rng_seed)
    settings = cost_settings(base_env, params, prefix)
    admin = EmulatorAdmin(sim.base_url)
    client_id, secret = admin.client()
    add_integration(settings, sim.base_url, client_id, secret, name=INTEGRATION)
    count = params.cost_connections if connections is None else connections
    made = members_for(admin, client_id, count, params.active_share, rng)
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
    activity.schedule(admin)
    began = time.monotonic()
    uvloop.run(_simulate(settings, sim, ids, params, result))
    result.wall_s = time.monotonic() - began
    stats = admin.stats()
    result.token_calls, result.introspect_calls = stats.token_calls, stats.introspect_calls
    result.activity_events = activity.made(admin)
    result.refreshes_by_lifetime = _by_lifetime(members, admin.token_calls_by_grant(), params)
    result.members_by_lifetime = dict(Counter(_lifetime_key(m.lifetime) for m in members))
    admin.close()
    return result


def merge(parts: list[CostResult]) -> CostResult:
    """One result from shards run over the same simulated day: calls, outcomes and activity add
    up; the per-connection models average weighted by connections, each lifetime's refreshes
    by its members; the freshness probe sampled every shard at the same simulated moments, so
    the stale counts add up sample by sample before their max is taken."""
    total = sum(part.connections for part in parts)
    stale = [sum(counts) for counts in zip(*(p.stale_by_sample for p in parts), strict=True)]
    outcomes: Counter[str] = Counter()
    members: Counter[str] = Counter()
    for part in parts:
        outcomes.update(part.outcomes)
        members.update(part.members_by_lifetime)
    by_lifetime: dict[str, list[float]] = {}
    for key, size in sorted(members.items(), key=lambda item: float(item[0].removesuffix("min"))):
        shares = [p for p in parts if p.members_by_lifetime.get(key)]
        got = sum(p.refreshes_by_lifetime[key][0] * p.members_by_lifetime[key] for p in shares)
        by_lifetime[key] = [round(got / size, 2), *shares[0].refreshes_by_lifetime[key][1:]]
    return CostResult(
        connections=total,
        days=parts[0].days,
        token_calls=sum(p.token_calls for p in parts),
        introspect_calls=sum(p.introspect_calls for p in parts),
        lower_bound=sum(p.lower_bound * p.connections for p in parts) / total,
        floor=sum(p.floor * p.connections for p in parts) / total,
        stale_max=max(stale, default=0),
        samples=len(stale),
        activity_events=sum(p.activity_events for p in parts),
        outcomes=dict(outcomes),
        refreshes_by_lifetime=by_lifetime,
        members_by_lifetime=dict(members),
        wall_s=max(p.wall_s for p in parts),
        stale_examples=[e for p in parts for e in p.stale_examples][:5],
        stale_by_sample=stale,
    )


class Shards:
    """`run` split over one process per simulated org in `sims`, side by side: shard k takes
    its share of `params.cost_connections` under the key prefix `cost{k}:` with seed
    `seed + k`. Started at construction; `wait` shows progress from the shards' clocks and
    merges their results."""

    def __init__(
        self,
        ws: Workspace,
        base_env: dict[str, str],
        params: BenchParams,
        sims: list[SimClock],
        seed: int,
    ) -> None:
        self.ws, self.params, self.sims = ws, params, sims
        self.procs: list[subprocess.Popen[bytes]] = []
        self.outs: list[str] = []
        n = params.cost_connections
        for k, sim in enumerate(sims):
            self.outs.append(ws.path(f"cost-shard-{k}.out.json"))
            spec = {
                "env": base_env,
                "params": params.as_dict(),
                "base_url": sim.base_url,
                "clock_path": sim.clock_path,
                "seed": seed + k,
                "prefix": f"cost{k}:",
                "connections": n // len(sims) + (1 if k < n % len(sims) else 0),
                "out": self.outs[-1],
            }
            path = ws.path(f"cost-shard-{k}.json")
            with open(path, "w") as handle:
                json.dump(spec, handle)
            args = [sys.executable, "-m", "worker.dev.bench.cost", path]
            self.procs.append(ws.spawn(args, {**os.environ}, f"cost-shard-{k}.log"))
        self.start = min(sim.now for sim in sims)
        self.deadline = time.monotonic() + params.deadline_s + SHARD_START_S

    def wait(self) -> CostResult:
        ticker, days = Ticker(3.0), self.params.days
        while any(p.poll() is None for p in self.procs) and time.monotonic() < self.deadline:
            hours = (min(sim.now for sim in self.sims) - self.start) / 3600
            ticker.maybe(
                f"cost: simulated {hours:5.1f} h of {days * 24:g} h ({len(self.sims)} shards)"
            )
            time.sleep(0.2)
        parts = []
        for k, (proc, out) in enumerate(zip(self.procs, self.outs, strict=True)):
            code = proc.poll()
            if code != 0:
                with open(self.ws.path(f"cost-shard-{k}.log")) as log:
                    tail = log.read()[-2000:]
                state = "still running at its deadline" if code is None else f"exited with {code}"
                raise RuntimeError(f"cost: shard {k} {state}:\n{tail}")
            with open(out) as handle:
                parts.append(CostResult(**json.load(handle)))
        return merge(parts)


SHARD_START_S = 60.0  # a shard's start and seeding, on top of its simulated day's deadline


def _shard(spec_path: str) -> None:
    """A shard's process: `run` on the simulated org its parent started, result to a file."""
    from config.logging import configure  # noqa: PLC0415

    configure("json", level=logging.WARNING)
    with open(spec_path) as handle:
        spec = json.load(handle)
    fields: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in spec["params"].items()
    }
    params = BenchParams(**fields)
    sim = SimClock(spec["base_url"], spec["clock_path"])
    try:
        result = run(spec["env"], params, sim, spec["seed"], spec["prefix"], spec["connections"])
    finally:
        sim.close()
    with open(spec["out"], "w") as handle:
        json.dump(asdict(result), handle)


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
        rows[_lifetime_key(span)] = [round(got, 2), round(bound, 2), floor_per_day(span)]
    return rows


def _lifetime_key(span: float) -> str:
    """A lifetime class's name in the results: "15min" .. "1440min"."""
    return f"{span / 60:g}min"


if __name__ == "__main__":
    _shard(sys.argv[1])
