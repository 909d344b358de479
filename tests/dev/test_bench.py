"""The benchmark harness end to end in its smallest configuration: a smoke test of the
harness (every figure present, sane, everything cleaned up), not a timed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.dev.bench.command import REQUIRED


def _bench(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`tokenworker bench ARGS` with its own temporary directory (TMPDIR), so the check that
    it leaves no workspace behind sees only this run's (other runs may share /tmp)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "bench", *args],
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert not list(scratch.glob("tokenworker-bench-*")), "the bench left its workspace behind"
    return done


def test_smoke_bench_writes_every_figure_with_sane_types(tmp_path: Path) -> None:
    """`tokenworker bench --smoke` runs all three scenarios and writes every key of issue 6."""
    output = tmp_path / "bench.json"
    done = _bench(tmp_path, "--smoke", "--output", str(output), timeout=60)
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
    simulated = results["details"]["cost"]  # two shards of 8, merged
    assert simulated["connections"] == 16
    assert sum(simulated["members_by_lifetime"].values()) == 16
    ratio = results["calls_per_conn_day"] / results["calls_floor"]
    assert abs(results["floor_ratio"] - ratio) < 0.01
    assert set(results["machine"]) >= {
        "cpu_count",
        "cpu_model",
        "python",
        "redis_version",
        "platform",
    }
    [bare] = results["details"]["ceiling"]  # one bare loop in smoke mode
    assert set(bare["cpu_seconds"]) == {"bare loop 1", "emulator", "redis-server"}
    assert set(bare["cores_busy"]) == set(bare["cpu_us_per_call"]) - {"all"}
    expected = bare["cpu_seconds"]["emulator"] / bare["calls"] * 1e6
    assert bare["cpu_us_per_call"]["emulator"] == pytest.approx(expected, abs=0.1)
    assert results["params"]["mode"] == "smoke"
    assert "METRIC" in done.stdout and "idle_sweep_ms_1m" in done.stdout


def test_one_phase_runs_alone_and_reports_only_its_figures(tmp_path: Path) -> None:
    """`--phase throughput`: the check path and its ceiling, nothing of the cost or store
    scenarios run or reported (a change to the check path measured in a third of the time)."""
    output = tmp_path / "bench.json"
    done = _bench(tmp_path, "--smoke", "--phase", "throughput", "--output", str(output), timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["checks_per_s"] > 0 and results["efficiency"] > 0
    assert not {"calls_per_conn_day", "stale_max", "idle_sweep_ms_1m"} & set(results)
    assert set(results["details"]["phase_seconds"]) == {"throughput"}
    assert set(results["passed"]) == {"checks_per_s", "efficiency", "redis_bytes_per_conn"}
    assert "efficiency" in done.stdout and "floor_ratio" not in done.stdout
    assert "(throughput only)" in done.stderr


def test_phase_is_refused_where_it_picks_nothing(tmp_path: Path) -> None:
    """--phase picks scenarios of the main run; with --api it would be silently ignored."""
    done = _bench(tmp_path, "--api", "--smoke", "--phase", "cost", timeout=30)
    assert done.returncode == 2
    assert "--phase picks scenarios of the main run, not of --api" in done.stderr


def test_api_smoke_bench_writes_its_figures(tmp_path: Path) -> None:
    """`tokenworker bench --api --smoke`: the api, a worker and the load generator run; every
    figure of the api table is written, fresh reads cost no Salesforce call."""
    from worker.dev.bench.api import REQUIRED as API_REQUIRED  # noqa: PLC0415

    output = tmp_path / "bench-api.json"
    done = _bench(tmp_path, "--api", "--smoke", "--output", str(output), timeout=120)
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


def test_deployed_smoke_bench_writes_its_figures(tmp_path: Path) -> None:
    """`tokenworker bench --deployed --smoke`: the pool's capacity, then beat (started by the
    benchmark, first sending after one default sweep interval) drains the backlog."""
    from worker.dev.bench.report import DEPLOYED_TARGETS  # noqa: PLC0415

    output = tmp_path / "bench-deployed.json"
    done = _bench(tmp_path, "--deployed", "--smoke", "--output", str(output), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    for target in DEPLOYED_TARGETS:
        assert results[target.key] > 0, target.key
    assert results["details"]["deployed"]["sweeps"] >= 1  # sent by beat: the bench sent none
    assert results["details"]["settings"]["sweep_interval"] == 60.0  # the default
    assert results["params"]["mode"] == "smoke"
    assert "deployed_checks_per_s" in done.stdout
