"""The throughput profile's summary: the functions that tell where a check's time goes, not
the process-start frames every sample shares."""

from __future__ import annotations

from pathlib import Path

from worker.dev.bench import profile


def test_summary_leaves_out_the_frames_every_sample_shares(tmp_path: Path) -> None:
    base = "main (celery/bin/celery.py);run (worker/jobs/process.py)"
    lines = [
        f"{base};introspect (worker/salesforce/client.py);post (aiohttp/client.py) 60",
        f"{base};_flush (worker/store/pipelining.py) 30",
        f"{base} 10",
    ]
    (tmp_path / "worker-1.txt").write_text("\n".join(lines) + "\n")
    spots = {spot.function: spot for spot in profile.summarize(str(tmp_path), top=3)}
    assert set(list(spots)[:2]) == {
        "introspect (worker/salesforce/client.py)",
        "post (aiohttp/client.py)",
    }
    assert spots["introspect (worker/salesforce/client.py)"].inclusive == 0.6
    assert spots["post (aiohttp/client.py)"].own == 0.6
    assert spots["_flush (worker/store/pipelining.py)"].inclusive == 0.3
    assert "main (celery/bin/celery.py)" not in spots
    assert "run (worker/jobs/process.py)" not in spots  # on top of 10% of samples, in all
    assert profile.by_area(str(tmp_path)) == {
        "aiohttp": 0.6,
        "tokenworker code": 0.3,
        profile.LOOP: 0.1,
    }


def test_cpu_per_item_is_each_process_share_of_the_window_per_unit_of_work() -> None:
    """Cores busy over a window, turned into microseconds of CPU per check (or per call), with
    the box's total beside them; nothing when nothing was done."""
    per = profile.cpu_per_item_us({"worker": 1.2, "redis-server": 0.2}, 10.0, 20_000)
    assert per == {"worker": 600.0, "redis-server": 100.0, "all": 700.0}
    assert profile.cpu_per_item_us({"worker": 1.0}, 10.0, 0) == {}


def test_cpucheck_runs_its_checks_with_the_rate_limit_not_binding() -> None:
    """cpucheck's loop makes more calls per second than the default limit (1,000/s per
    integration) allows: at the default, waiting for permits was counted as checks' CPU."""
    from worker.dev.bench import cpucheck  # noqa: PLC0415
    from worker.dev.bench.population import BENCH_RATE_LIMIT  # noqa: PLC0415

    settings = cpucheck.settings("redis://127.0.0.1:1/0", 200)
    assert settings.rate_limit == float(BENCH_RATE_LIMIT) >= 10_000
