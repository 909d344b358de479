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
