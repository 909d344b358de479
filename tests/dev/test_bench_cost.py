"""The cost scenario's model pieces: the floor, and the simulated users' activity rule."""

from __future__ import annotations

import json

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
