"""The cost scenario's model pieces: the floor, the simulated users' activity rule, and how the
shards' results add up."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from worker.dev.bench import workload
from worker.dev.bench.cost import CostResult, grouped, merge
from worker.dev.bench.params import DAY, LIFETIMES_MIN
from worker.dev.bench.simemulator import ACTIVITY_PATH, STALE_PATH, SimApp
from worker.dev.bench.workload import Activity, Member, floor_per_day, lifetimes
from worker.dev.emulator.http import Request
from worker.dev.emulator.records import Grant
from worker.dev.emulator.state import State

LIFETIME = 1800.0


def _post(app: SimApp, path: str, body: dict[str, object]) -> dict[str, int]:
    answer = app.handle(Request("POST", path, "", {}, json.dumps(body).encode()))
    assert answer.status == 200
    result: dict[str, int] = json.loads(answer.body)
    return result


def _org() -> tuple[list[float], State, Grant]:
    """A simulated org on a settable clock with one grant of LIFETIME issued at its start."""
    clock = [1_800_000_000.0]
    state = State(clock=lambda: clock[0])
    state.upsert_client("cid", "secret")
    [issued] = state.create_grants("cid", lifetime=LIFETIME)
    return clock, state, issued.grant


def test_activity_extends_a_session_only_past_half_its_timeout() -> None:
    """Salesforce's rule: activity in the first half of a session changes nothing; past the
    half it moves the expiry to the call's time + timeout."""
    clock, state, grant = _org()
    start = clock[0]
    app = SimApp(state)
    clock[0] = start + LIFETIME / 2 - 1
    _post(app, ACTIVITY_PATH, {"schedule": [[clock[0], grant.grant_id]]})
    assert grant.latest.exp == start + LIFETIME
    clock[0] = start + LIFETIME / 2 + 1
    _post(app, ACTIVITY_PATH, {"schedule": [[clock[0], grant.grant_id], [clock[0], "no-such"]]})
    assert grant.latest.exp == clock[0] + LIFETIME


def test_scheduled_activity_is_made_before_the_org_answers_any_request() -> None:
    """A call whose time has passed is made before the org answers whatever request comes
    next, not only the activity route: here the freshness probe finds the session extended
    (stale without the call: its original expiry has passed)."""
    clock, state, grant = _org()
    start, token = clock[0], grant.latest.token
    app = SimApp(state)
    _post(app, ACTIVITY_PATH, {"schedule": [[start + LIFETIME / 2 + 10, grant.grant_id]]})
    clock[0] = start + LIFETIME + 5
    assert _post(app, STALE_PATH, {"tokens": [token]})["stale"] == 0
    assert grant.latest.exp == start + LIFETIME / 2 + 10 + LIFETIME


def test_scheduled_activity_happens_at_its_own_time_once_the_clock_passes_it() -> None:
    """A run's activity is handed over once; each call is made at its simulated time, even
    when the next request comes long after (the session is extended from that time, not from
    whenever the emulator next hears from anyone), and not before the clock gets there."""
    clock, state, grant = _org()
    start = clock[0]
    app = SimApp(state)
    early, late = start + LIFETIME / 2 - 1, start + LIFETIME / 2 + 10
    schedule = [[late, grant.grant_id], [early, grant.grant_id], [late + 5, "no-such-grant"]]
    assert _post(app, ACTIVITY_PATH, {"schedule": schedule}) == {"made": 0, "pending": 3}
    clock[0] = early + 1  # a request after the first call: only it is made, changing nothing
    assert _post(app, ACTIVITY_PATH, {"schedule": []}) == {"made": 1, "pending": 2}
    assert grant.latest.exp == start + LIFETIME
    clock[0] = late + 600  # the next request, long after the second call's time
    assert _post(app, ACTIVITY_PATH, {"schedule": []}) == {"made": 3, "pending": 0}
    assert grant.latest.exp == late + LIFETIME


class _Recorder:
    """An EmulatorAdmin stand-in that records the `field` of each body its http client posts."""

    def __init__(self, field: str = "grants") -> None:
        self.http = self
        self.field = field
        self.posted: list[Any] = []

    def post(self, path: str, json: dict[str, Any]) -> _Recorder:
        assert path == ACTIVITY_PATH
        self.posted.append(json[self.field])
        return self

    def raise_for_status(self) -> _Recorder:
        return self


def test_the_schedule_goes_in_chunks_the_emulator_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """One post per SCHEDULE_CHUNK calls (a whole run's could exceed the emulator's MAX_BODY)."""
    monkeypatch.setattr(workload, "SCHEDULE_CHUNK", 3)
    activity = Activity([], 0.0, 0.0, random.Random(1))
    activity.calls = [(float(n), f"g{n}") for n in range(7)]
    admin = _Recorder("schedule")
    activity.schedule(admin)  # type: ignore[arg-type]
    assert admin.posted == [activity.calls[:3], activity.calls[3:6], activity.calls[6:]]


def test_real_time_activity_posts_each_call_once_when_its_time_has_come() -> None:
    members = [Member(f"g{n}", LIFETIME, active_user=n % 2 == 0) for n in range(40)]
    activity = Activity(members, 0.0, 4 * LIFETIME, random.Random(7))
    admin = _Recorder()
    for now in (LIFETIME, LIFETIME, 2.5 * LIFETIME, 4 * LIFETIME):
        activity.fire_until(now, admin)  # type: ignore[arg-type]
    by_time = sorted(activity.calls)
    cut = sum(1 for at, _ in by_time if at <= LIFETIME)
    cut2 = sum(1 for at, _ in by_time if at <= 2.5 * LIFETIME)
    expected = [[g for _, g in by_time[:cut]], [g for _, g in by_time[cut:cut2]]]
    expected.append([g for _, g in by_time[cut2:]])
    assert 0 < cut < cut2 < len(by_time)
    assert admin.posted == expected
    assert activity.fired == len(by_time)
    assert {g for _, g in by_time} <= {m.grant_id for m in members if m.active_user}


def test_real_time_activity_takes_a_call_at_exactly_now_once() -> None:
    activity = Activity([], 0.0, 0.0, random.Random(1))
    activity.calls = [(10.0, "a"), (20.0, "b"), (20.0, "c"), (30.0, "d")]
    admin = _Recorder()
    for now in (20.0, 20.0, 29.9, 30.0):
        activity.fire_until(now, admin)  # type: ignore[arg-type]
    assert admin.posted == [["a", "b", "c"], ["d"]]
    assert activity.fired == 4


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


def _part(connections: int, stale: list[int], got_15: float, members_15: int) -> CostResult:
    return CostResult(
        connections=connections,
        days=1.0,
        token_calls=10 * connections,
        introspect_calls=connections,
        lower_bound=60.0 if connections == 30 else 80.0,
        floor=24.0,
        stale_max=max(stale),
        samples=len(stale),
        outcomes={"refreshed": connections},
        refreshes_by_lifetime={"15min": [got_15, 144.0, 96.0], "1440min": [1.0, 1.0, 1.0]},
        members_by_lifetime={"15min": members_15, "1440min": connections - members_15},
        stale_by_sample=stale,
    )


def test_shards_stale_counts_add_up_sample_by_sample() -> None:
    """Every shard samples at the same simulated moments, so the fleet's stale count at a
    sample is the sum of the shards' counts then: [1, 2, 3] here, max 3; not the sum of the
    shards' maxima (4) and not the largest shard's (2)."""
    merged = merge([_part(30, [0, 2, 1], 100.0, 15), _part(10, [1, 0, 2], 200.0, 5)])
    assert merged.stale_by_sample == [1, 2, 3]
    assert merged.stale_max == 3
    assert merged.samples == 3


def test_shards_add_their_calls_and_weigh_per_connection_figures_by_size() -> None:
    """Calls and outcomes add up; the old model's bound averages by connections (30 at 60,
    10 at 80: 65), each lifetime's refreshes by its members (15 at 100, 5 at 200: 125)."""
    merged = merge([_part(30, [0], 100.0, 15), _part(10, [0], 200.0, 5)])
    assert (merged.connections, merged.token_calls, merged.introspect_calls) == (40, 400, 40)
    assert merged.outcomes == {"refreshed": 40}
    assert merged.lower_bound == 65.0
    assert merged.refreshes_by_lifetime["15min"] == [125.0, 144.0, 96.0]
    assert merged.members_by_lifetime == {"15min": 20, "1440min": 20}
    assert merged.calls_per_conn_day == 11.0
