"""worker/engine/sweep.py: a sweep claims what comes due before the next sweep's half-way
point (a real Redis server), so a due check waits at most about half an interval."""

from __future__ import annotations

import time
from collections.abc import Callable

from config.settings import Settings
from worker.engine.runtime import Runtime
from worker.engine.sweep import lookahead, sweep


async def test_a_sweep_claims_ids_due_within_half_an_interval(
    runtime_for: Callable[..., Runtime], settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for(sweep_interval="60")
    rt = runtime_for(sweep_interval="60")
    try:
        now = time.time()
        due = {"past": now - 5, "soon": now + 25, "later": now + 35, "far": now + 600}
        await rt.redis.zadd(rt.store.keys.due, due)
        dispatched: list[str] = []
        result = await sweep(rt.store, settings, now, dispatched.extend, window_guard=False)
        assert sorted(dispatched) == ["past", "soon"]
        assert result.claimed == 2
        left = await rt.redis.zrangebyscore(rt.store.keys.due, "-inf", now + 60)
        assert left == [b"later"]  # the claimed ones were pushed out of reach
    finally:
        await rt.close()


def test_the_lookahead_is_half_an_interval_and_at_most_a_minute(
    settings_for: Callable[..., Settings],
) -> None:
    assert lookahead(settings_for(sweep_interval="60")) == 30.0
    assert lookahead(settings_for(sweep_interval="10")) == 5.0
    assert lookahead(settings_for(sweep_interval="3600")) == 60.0


async def test_the_runtime_lets_the_policy_count_a_check_that_early_as_due(
    runtime_for: Callable[..., Runtime],
) -> None:
    rt = runtime_for(sweep_interval="60")
    try:
        assert rt.refresher.timing.lookahead == 30.0
    finally:
        await rt.close()
