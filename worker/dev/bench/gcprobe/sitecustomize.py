"""Every Python process's cyclic-GC pauses, for `bench` runs (a diagnostic, off by default).

    export TOKENWORKER_GCPROBE_DIR=/tmp/gc PYTHONPATH=worker/dev/bench/gcprobe:.
    tokenworker bench --million
    python -m worker.dev.bench.gcpauses /tmp/gc

Python imports `sitecustomize` at startup from the path, so every process the bench starts
(Celery, the api, emulators, load generators) registers a `gc.callbacks` entry that times each
collection. Each process keeps its collections by generation and every pause over
TOKENWORKER_GCPROBE_MS (default 2) with its wall time, and rewrites `gc-<pid>.json` in the
directory at most once a second, at a collection (a process killed by a signal keeps the last
one). Without TOKENWORKER_GCPROBE_DIR it does nothing.
"""

import gc
import json
import os
import sys
import time

_DIR = os.environ.get("TOKENWORKER_GCPROBE_DIR")


def _install(directory: str) -> None:
    over_ms = float(os.environ.get("TOKENWORKER_GCPROBE_MS", "2"))
    counts = [0, 0, 0]
    pauses: list[tuple[float, int, float, int]] = []
    state = {"began": 0.0, "written": 0.0}

    def write() -> None:
        path = os.path.join(directory, f"gc-{os.getpid()}.json")
        with open(path + ".tmp", "w") as handle:
            json.dump({"argv": sys.argv, "counts": counts, "pauses": pauses}, handle)
        os.replace(path + ".tmp", path)

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            state["began"] = time.perf_counter()
            return
        ms = (time.perf_counter() - state["began"]) * 1000.0
        counts[info["generation"]] += 1
        if ms > over_ms:
            at = round(time.time(), 3)
            pauses.append((at, info["generation"], round(ms, 2), info["collected"]))
        if time.time() - state["written"] > 1.0:
            state["written"] = time.time()
            write()

    gc.callbacks.append(timed)


if _DIR:
    _install(_DIR)
