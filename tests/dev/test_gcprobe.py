"""The GC probe a bench run can be started under: every Python process that imports it writes
its collections and pauses where TOKENWORKER_GCPROBE_DIR says, and nothing without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from worker.dev.bench import gcpauses

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "worker" / "dev" / "bench" / "gcprobe"
# 200,000 cycles kept, then let go (garbage for a full collection), the full collection, over a
# second of nothing, another full collection: the second one rewrites the file with both.
CHILD = """
import gc, time
class Node:
    pass
kept = []
for _ in range(200_000):
    a, b = Node(), Node()
    a.other, b.other = b, a
    kept.append(a)
del kept, a, b
gc.collect()
time.sleep(1.1)
gc.collect()
"""


def _run_child(tmp_path: Path, probe_dir: Path | None) -> None:
    env = {**os.environ, "PYTHONPATH": f"{PROBE}{os.pathsep}{ROOT}", "TOKENWORKER_GCPROBE_MS": "0"}
    env.pop("TOKENWORKER_GCPROBE_DIR", None)
    if probe_dir is not None:
        env["TOKENWORKER_GCPROBE_DIR"] = str(probe_dir)
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=60, cwd=tmp_path)


def test_each_process_writes_its_full_collections_with_their_wall_times(tmp_path: Path) -> None:
    began = time.time()
    _run_child(tmp_path, tmp_path)
    files = list(tmp_path.glob("gc-*.json"))
    assert len(files) == 1
    found = json.loads(files[0].read_text())
    assert found["counts"][2] >= 2  # both explicit full collections
    full = [pause for pause in found["pauses"] if pause[1] == 2]
    assert len(full) >= 2 and all(began <= pause[0] <= time.time() for pause in full)
    assert max(pause[3] for pause in full) >= 400_000  # the first one freed the cycles
    seen = gcpauses.summarize(found, full[-1][0], full[-1][0])  # the window: the last only
    assert seen["pauses"][2]["count"] == 1
    assert seen["pauses"][2]["max_ms"] == full[-1][2]


def test_without_the_directory_it_writes_nothing(tmp_path: Path) -> None:
    _run_child(tmp_path, None)
    assert not list(tmp_path.rglob("gc-*.json"))
