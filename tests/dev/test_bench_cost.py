"""The cost scenario's model pieces: the floor, and the simulated users' activity rule."""

from __future__ import annotations

import json

from worker.dev.bench.cost import grouped
from worker.dev.bench.params import DAY, LIFETIMES_MIN
from worker.dev.bench.simemulator import ACTIVITY_PATH, SimApp
from worker.dev.bench.workload import floor_per_day, lifetimes
from worker.dev.emulator.http import Request
from worker.dev.emulator.state import State

LIFETIME = 1800.0


def _activity(app: SimApp, grant_ids: list[str]) -> None:
    body = json.dumps({"grants": grant_ids}).encode()
    assert app.handle(Request("POST", ACTIVITY_PATH, "", {}, body)).status == 200


def test_activity_extends_a_session_only_past_half_its_timeout() -> None:
    """Salesforce's rule: activity in the first half of a session changes nothing; past the
    half it moves the expiry to now + timeout."""
    clock = [1_800_000_000.0]
    state = State(clock=lambda: clock[0])
    state.upsert_client("cid", "secret")
    [issued] = state.create_grants("cid", lifetime=LIFETIME)
    grant, start = issued.grant, clock[0]
    app = SimApp(state)
    clock[0] = start + LIFETIME / 2 - 1
    _activity(app, [grant.grant_id])
    assert grant.latest.exp == start + LIFETIME
    clock[0] = start + LIFETIME / 2 + 1
    _activity(app, [grant.grant_id, "no-such-grant"])
    assert grant.latest.exp == clock[0] + LIFETIME


def test_the_floor_of_the_benchmark_mix_is_one_refresh_per_lifetime() -> None:
    """Round-robin over Salesforce's timeouts: (96+48+24+12+6+3+2+1)/8 = 24 a day."""
    spans = lifetimes(8 * 40)
    assert sorted(set(spans)) == [m * 60.0 for m in LIFETIMES_MIN]
    assert sum(floor_per_day(s) for s in spans) / len(spans) == 24.0
    assert floor_per_day(DAY) == 1.0


def test_paced_batches_within_the_span_run_together_at_the_first_ones_time() -> None:
    """The cost simulation joins the sweep's per-second batches starting within GROUP_S of a
    group's first: never later than a batch's own start (a late check would hide staleness),
    never more than the span early."""
    batches = [(["a"], 100.0), (["b", "c"], 101.0), (["d"], 110.0), (["e"], 110.5)]
    assert grouped(batches, 10.0) == [(["a", "b", "c", "d"], 100.0), (["e"], 110.5)]
    assert grouped(batches, 0.5) == [(["a"], 100.0), (["b", "c"], 101.0), (["d", "e"], 110.0)]
    own = {i: at for names, at in batches for i in names}
    for ids, start in grouped(batches, 10.0):
        assert all(start <= own[i] < start + 10.0 + 1e-9 for i in ids)
