"""The benchmark harness end to end in its smallest configuration: a smoke test of the
harness (every figure present, sane, everything cleaned up), not a timed assertion."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from worker.dev.bench.command import REQUIRED


def _leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("tokenworker-bench-*")}


def test_smoke_bench_writes_every_figure_with_sane_types(tmp_path: Path) -> None:
    """`tokenworker bench --smoke` runs all three scenarios and writes every key of issue 6."""
    before = _leftovers()
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "bench", "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    for key in REQUIRED:
        assert isinstance(results[key], int | float), key
        assert not isinstance(results[key], bool), key
        assert results[key] >= 0, key
    for key in ("checks_per_s", "ceiling_per_s", "calls_lower_bound", "redis_bytes_per_conn"):
        assert results[key] > 0, key
    assert isinstance(results["stale_max"], int)
    assert results["naive_calls_per_conn_day"] > results["calls_per_conn_day"]
    assert results["calls_floor"] == 24.0  # 16 connections, two of each session timeout
    ratio = results["calls_per_conn_day"] / results["calls_floor"]
    assert abs(results["floor_ratio"] - ratio) < 0.01
    assert set(results["machine"]) >= {
        "cpu_count",
        "cpu_model",
        "python",
        "redis_version",
        "platform",
    }
    assert results["params"]["mode"] == "smoke"
    assert "METRIC" in done.stdout and "idle_sweep_ms_1m" in done.stdout
    assert _leftovers() <= before


def test_api_smoke_bench_writes_its_figures(tmp_path: Path) -> None:
    """`tokenworker bench --api --smoke`: the api, a worker and the load generator run; every
    figure of the api table is written, fresh reads cost no Salesforce call."""
    from worker.dev.bench.api import REQUIRED as API_REQUIRED  # noqa: PLC0415

    before = _leftovers()
    output = tmp_path / "bench-api.json"
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "bench", "--api", "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    for key in API_REQUIRED:
        assert isinstance(results[key], int | float) and not isinstance(results[key], bool), key
    assert results["reads_per_s"] > 0 and results["p99_ms"] > 0
    assert results["salesforce_calls"] == 0
    assert results["details"]["closed_loop"]["errors"] == {}
    assert results["nango_reads_per_s"] == 8 / 0.05
    assert results["params"]["mode"] == "api-smoke"
    assert "reads_per_s" in done.stdout and "nango_reads_per_s" in done.stdout
    assert _leftovers() <= before


def test_deployed_smoke_bench_writes_its_figures(tmp_path: Path) -> None:
    """`tokenworker bench --deployed --smoke`: the pool's capacity, then beat (started by the
    benchmark, first sending after one default sweep interval) drains the backlog."""
    from worker.dev.bench.report import DEPLOYED_TARGETS  # noqa: PLC0415

    before = _leftovers()
    output = tmp_path / "bench-deployed.json"
    argv = ["bench", "--deployed", "--smoke", "--output", str(output)]
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", *argv],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    for target in DEPLOYED_TARGETS:
        assert results[target.key] > 0, target.key
    assert results["details"]["deployed"]["sweeps"] >= 1  # sent by beat: the bench sent none
    assert results["details"]["settings"]["sweep_interval"] == 60.0  # the default
    assert results["params"]["mode"] == "smoke"
    assert "deployed_checks_per_s" in done.stdout
    assert _leftovers() <= before
