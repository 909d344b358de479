"""cpucheck's own settings: what it measures is a check's CPU, not waiting on the limiter."""

from __future__ import annotations

from worker.dev.bench import cpucheck
from worker.dev.bench.population import BENCH_RATE_LIMIT


def test_cpucheck_runs_its_checks_with_the_rate_limit_not_binding() -> None:
    """cpucheck's loop makes more calls per second than the default limit (1,000/s per
    integration) allows: at the default, waiting for permits was counted as checks' CPU."""
    settings = cpucheck.settings("redis://127.0.0.1:1/0", 200)
    assert settings.rate_limit == float(BENCH_RATE_LIMIT) >= 10_000
