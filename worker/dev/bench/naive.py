"""The naive policy, beside tokenworker's in the same benchmark and on the same simulated org.

What a first implementation usually does: at every sweep, one task per connection, and each
task introspects its connection with a synchronous HTTP call, refreshing when the token is
inactive or inside the margin. Run in this process (each "task" is one synchronous call
sequence; Celery's own overhead is left out, which only flatters the naive policy) on the
simulated clock, with the same lifetimes and user activity as the tokenworker run.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx

from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.params import DAY, BenchParams
from worker.dev.bench.progress import Ticker
from worker.dev.bench.simemulator import SimClock
from worker.dev.bench.workload import Activity, members_for

INTROSPECT = "/services/oauth2/introspect"
TOKEN = "/services/oauth2/token"


@dataclass
class NaiveResult:
    connections: int
    days: float
    token_calls: int
    introspect_calls: int
    wall_s: float

    @property
    def calls_per_conn_day(self) -> float:
        return (self.token_calls + self.introspect_calls) / self.connections / self.days


@dataclass
class _Held:
    access_token: str
    refresh_token: str


class _Naive:
    def __init__(self, http: httpx.Client, client_id: str, secret: str, margin: float) -> None:
        self.http = http
        self.credentials = {"client_id": client_id, "client_secret": secret}
        self.margin = margin

    def check(self, held: _Held, now: float) -> None:
        """One task: introspect; refresh when inactive or near expiry."""
        form = {"token": held.access_token, "token_type_hint": "access_token"}
        facts = self.http.post(INTROSPECT, data={**form, **self.credentials}).json()
        if facts.get("active") and float(facts.get("exp", 0)) - now > self.margin:
            return
        form = {"grant_type": "refresh_token", "refresh_token": held.refresh_token}
        answer = self.http.post(TOKEN, data={**form, **self.credentials}).json()
        held.access_token = answer["access_token"]
        held.refresh_token = answer.get("refresh_token", held.refresh_token)


def run(params: BenchParams, sim: SimClock, rng_seed: int) -> NaiveResult:
    rng = random.Random(rng_seed)
    admin = EmulatorAdmin(sim.base_url)
    client_id, secret = admin.client()
    made = members_for(admin, client_id, params.naive_connections, params.active_share, rng)
    held = [_Held(grant.access_token, grant.refresh_token) for _, grant in made]
    activity = Activity([member for member, _ in made], sim.now, params.naive_days * DAY, rng)
    start, ticks = sim.now, int(params.naive_days * DAY / params.sweep_interval)
    admin.reset_stats()
    activity.schedule(admin)
    began, ticker = time.monotonic(), Ticker(3.0)
    with httpx.Client(base_url=sim.base_url, timeout=30) as http:
        naive = _Naive(http, client_id, secret, params.margin)
        for tick in range(ticks + 1):
            if time.monotonic() - began > params.deadline_s:
                raise RuntimeError(f"naive: not done in {params.deadline_s:g}s")
            sim.now = start + tick * params.sweep_interval
            for one in held:
                naive.check(one, sim.now)
            hours = (sim.now - start) / 3600
            ticker.maybe(f"naive: simulated {hours:5.1f} h of {params.naive_days * 24:g} h")
    stats = admin.stats()
    admin.close()
    wall = time.monotonic() - began
    calls = (stats.token_calls, stats.introspect_calls)
    return NaiveResult(len(held), params.naive_days, *calls, wall)
