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


def test_cpu_per_item_is_each_process_cpu_per_unit_of_work() -> None:
    """CPU seconds over a window, turned into microseconds per check (or per call), with the
    box's total beside them; nothing when nothing was done."""
    per = profile.cpu_per_item_us({"worker": 12.0, "redis-server": 2.0}, 20_000)
    assert per == {"worker": 600.0, "redis-server": 100.0, "all": 700.0}
    assert profile.cpu_per_item_us({"worker": 1.0}, 0) == {}


def test_the_cpu_meter_counts_only_the_cpu_spent_between_start_and_stop() -> None:
    """A child that burns ~0.3 s of CPU before the meter starts and ~0.3 s after: the meter
    sees the second only (to the clock tick), and its cores busy stay within one core."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415

    burn = (
        "import sys, time\n"
        "def spin(s):\n"
        "    end = time.process_time() + s\n"
        "    while time.process_time() < end: pass\n"
        "spin(0.3); print('a', flush=True); sys.stdin.readline(); spin(0.3)\n"
        "print('b', flush=True); sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "a\n"
        meter = profile.CpuMeter({"child": child.pid})
        meter.start()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline() == "b\n"
        time.sleep(0.1)
        cores = meter.stop()
        assert 0.25 <= meter.spent["child"] <= 0.45
        assert 0 < cores["child"] <= 1.0
    finally:
        child.kill()
        child.wait()
