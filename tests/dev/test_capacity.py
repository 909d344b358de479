"""worker/dev/bench/capacity.py: per-check Redis cost from INFO deltas, on a small run."""

from __future__ import annotations

import pytest

from worker.dev.bench.capacity import ROUNDS, delta, run


def test_delta_keeps_only_what_moved() -> None:
    assert delta({"get": 3.0, "~in": 10.0}, {"get": 5.0, "set": 1.0, "~in": 10.0}) == {
        "get": 2.0,
        "set": 1.0,
    }


@pytest.mark.integration
def test_a_small_run_measures_both_kinds_of_check() -> None:
    """Every connection is checked in each round; a refresh costs three Salesforce calls and
    more Redis commands and bytes than a fresh check; memory per connection is plausible."""
    result = run(40)
    fresh, refresh = result["rounds"]
    assert [fresh["name"], refresh["name"]] == list(ROUNDS)
    assert fresh["checks"] == refresh["checks"] == 40
    assert fresh["per_check"]["salesforce_calls"] == 1.0
    assert refresh["per_check"]["salesforce_calls"] == 3.0
    for key in ("commands", "bytes_to_redis", "bytes_from_redis"):
        assert 0 < fresh["per_check"][key] < refresh["per_check"][key], key
    assert "info" not in refresh["commands"]  # the probes are not counted as the checks' own
    assert 300 < result["memory"]["memory_usage_per_connection"] < 4000
