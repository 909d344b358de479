"""worker/engine/sweep.py: a sweep claims what comes due before the next sweep (a real Redis
server) and hands it out paced, each batch to start when its first connection is due; the
policy counts a check up to half an interval early as due."""

from __future__ import annotations

import time
from collections.abc import Callable

from config.settings import Settings
from worker.engine.runtime import Runtime
from worker.engine.sweep import (
    MAX_HORIZON,
    PACE_SPAN,
    collect,
    horizon,
    lookahead,
    paced,
    sweep,
)


async def test_a_sweep_claims_what_comes_due_before_the_next_one_with_its_start_times(
    runtime_for: Callable[..., Runtime], settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for(sweep_interval="60")
    rt = runtime_for(sweep_interval="60")
    try:
        now = time.time()
        due = {"past": now - 5, "soon": now + 25, "later": now + 55, "far": now + 90}
        await rt.redis.zadd(rt.store.keys.due, due)
        batches: list[tuple[list[str], float]] = []
        result = await sweep(rt.store, settings, now, collect(batches), window_guard=False)
        assert batches == [(["past"], now), (["soon"], due["soon"]), (["later"], due["later"])]
        assert (result.claimed, result.batches) == (3, 3)
        left = await rt.redis.zrangebyscore(rt.store.keys.due, "-inf", now + 120)
        assert left == [b"far"]  # the claimed ones were pushed out of reach
    finally:
        await rt.close()


def test_paced_batches_start_at_their_first_due_time_and_cover_one_span() -> None:
    now = 1000.0
    due = [("a", 990.0), ("b", 999.0), ("c", 1000.0), ("d", 1000.5), ("e", 1001.2)]
    due += [("f", 1001.9), ("g", 1002.3), ("h", 1010.0)]
    assert list(paced(due, now, size=10)) == [
        (["a", "b", "c", "d"], now),  # due by now, and what comes due within a span of it
        (["e", "f"], 1001.2),
        (["g"], 1002.3),
        (["h"], 1010.0),
    ]


def test_paced_batches_hold_at_most_the_batch_size() -> None:
    due = [(f"i{n}", 5.0) for n in range(5)] + [(f"j{n}", 20.0) for n in range(3)]
    assert list(paced(due, 10.0, size=2)) == [
        (["i0", "i1"], 10.0),
        (["i2", "i3"], 10.0),
        (["i4"], 10.0),
        (["j0", "j1"], 20.0),
        (["j2"], 20.0),
    ]
    assert PACE_SPAN == 1.0


def test_the_horizon_is_an_interval_and_at_most_five_minutes(
    settings_for: Callable[..., Settings],
) -> None:
    assert horizon(settings_for(sweep_interval="60")) == 60.0
    assert horizon(settings_for(sweep_interval="10")) == 10.0
    assert horizon(settings_for(sweep_interval="3600")) == MAX_HORIZON == 300.0


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
