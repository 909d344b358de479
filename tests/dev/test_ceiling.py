"""The bare-client ceiling's CPU accounting against a real emulator: the other processes are
metered from the moment the loops start calling, not from when they were spawned."""

from __future__ import annotations

import subprocess
import sys

from worker.dev.bench import ceiling
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.services import Workspace, start_emulator

# Burns ~0.8 s of CPU at once (the loops wait ~1.5 s for their common start), then idles.
EARLY_BURNER = (
    "import time\n"
    "end = time.process_time() + 0.8\n"
    "while time.process_time() < end: pass\n"
    "time.sleep(60)\n"
)


def test_the_ceiling_meters_other_processes_over_the_calls_only() -> None:
    with Workspace() as ws:
        url, emulator = start_emulator(ws, latency_ms=0.0, lifetime=3600)
        admin = EmulatorAdmin(url)
        burner = subprocess.Popen([sys.executable, "-c", EARLY_BURNER])
        try:
            others = {"emulator": emulator, "early burner": burner.pid}
            run = ceiling.measure(ws, admin, 300, 1, 10, 60.0, others)
        finally:
            burner.kill()
            burner.wait()
            admin.close()
    assert run.calls == 300 and run.errors == 0
    assert set(run.cpu_seconds) == {"bare loop 1", "emulator", "early burner"}
    assert run.cpu_seconds["bare loop 1"] > 0 and run.cpu_seconds["emulator"] > 0
    assert run.cpu_seconds["early burner"] < 0.2  # its 0.8 s came before the first call
    assert run.cores_busy["emulator"] == round(run.cpu_seconds["emulator"] / run.seconds, 3)
