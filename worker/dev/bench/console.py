"""`tokenworker bench --console`: console page times at a million stored connections.

Starts its own redis-server (no persistence) on a copy of `--rdb`, or on an empty one it
seeds with `--seed N` connections (default 1,000,000) in the pre-counts record format as the
status bench does, with one in a hundred failing with a last error. They are counted and
indexed once first, as the first reader would (timed as `backfill_s`). Then the console is
served by a real `python -m worker.api` process, signed in with an admin key over HTTP, and
each page is requested `--runs` times in turn: the overview, the connections page unfiltered, sorted
by next check and by last error time, filtered by integration and by status (alone, with an
integration, by last error and by next check: the one order no index serves, a bounded
window), and the second page of each by its cursor. Prints
p50/p99 per page and writes them as JSON (default worker/dev/bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import redis
from redis.asyncio import Redis

from worker.dev.bench.status import PREFIX, bench_store
from worker.dev.embedded import free_port
from worker.store.apikeys import ApiKeys, Scope
from worker.store.counting import Counting
from worker.store.crypto import generate_key
from worker.store.keys import Keys

TARGET_MS = 100.0
RESULTS = Path(__file__).parent / "results"
PAGES = {
    "overview": "/console",
    "connections": "/console/connections",
    "by_next_check": "/console/connections?sort=next_check",
    "by_last_error": "/console/connections?sort=-last_error",
    "integration": "/console/connections?integration=bench",
    "failing": "/console/connections?status=failing",
    "failing_integration": "/console/connections?status=failing&integration=bench",
    "failing_by_last_error": "/console/connections?status=failing&sort=-last_error",
    "failing_by_next_check": "/console/connections?status=failing&sort=next_check",
}
NEXT = re.compile(r'href="([^"]+)" rel="next"')
FAILING_EVERY = 100


def _fail_some(client: redis.Redis, count: int) -> None:
    """One in FAILING_EVERY seeded records failing with an error at a distinct time."""
    keys, now = Keys(PREFIX), time.time()
    with client.pipeline(transaction=False) as pipe:
        for i in range(0, count, FAILING_EVERY):
            error = {"error": "invalid_grant", "error_description": "expired access/refresh token",
                     "http_status": 400, "at": now - i}  # fmt: skip
            key = keys.conn(f"s{i:07d}")
            pipe.hset(key, "status", "failing")
            pipe.hset(key, "last_error", json.dumps(error))
            if len(pipe) >= 5000:
                pipe.execute()
        pipe.execute()


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50_ms": round(statistics.median(ordered), 1), "p99_ms": round(p99, 1),
            "max_ms": round(ordered[-1], 1), "n": len(ordered)}  # fmt: skip


def _admin_key(url: str) -> str:
    async def create() -> str:
        client = Redis.from_url(url)
        try:
            key, _ = await ApiKeys(client, PREFIX).create("bench-console", Scope.ADMIN)
            return key
        finally:
            await client.aclose()

    return asyncio.run(create())


def _api(url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real `python -m worker.api` on this store; its base URL once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TOKENWORKER_REDIS_URL": url, "TOKENWORKER_KEY_PREFIX": PREFIX,
           "TOKENWORKER_PUBLIC_URL": base, "TOKENWORKER_LOG_LEVEL": "WARNING"}  # fmt: skip
    command = [sys.executable, "-m", "worker.api", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the api exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return proc, base
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the api did not answer /healthz within 60 s")


def _backfill(url: str) -> float:
    """Count and index the seeded store (what the first reader does once), timed."""

    async def run() -> float:
        client = Redis.from_url(url)
        try:
            started = time.monotonic()
            await Counting(client, Keys(PREFIX)).complete()
            return time.monotonic() - started
        finally:
            await client.aclose()

    return asyncio.run(run())


def _time_pages(url: str, runs: int, work: str) -> dict[str, dict[str, float]]:
    proc, base = _api(url, Path(work) / "api.log")
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            client.post("/console/sign-in", data={"api_key": _admin_key(url)})
            first = client.get("/console/connections")
            assert 'data-testid="connections-table"' in first.text, first.text[:300]
            paths = dict(PAGES)
            for name, path in PAGES.items():
                found = NEXT.search(client.get(path).text) if name != "overview" else None
                if found:
                    paths[name + "_page2"] = found.group(1).replace("&amp;", "&")
            samples: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(runs):
                for name, path in paths.items():
                    began = time.perf_counter()
                    answer = client.get(path)
                    samples[name].append((time.perf_counter() - began) * 1000)
                    assert answer.status_code == 200, (path, answer.status_code)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {name: _percentiles(s) for name, s in samples.items()}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["SECRET"] = "bench-secret"
    if not args.rdb:  # a store of its own: any key will do (an --rdb needs the seed's key)
        os.environ.setdefault("TOKENWORKER_ENCRYPTION_KEYS", generate_key())

    def fill(client: redis.Redis) -> None:
        _fail_some(client, args.seed)

    with bench_store(args.rdb, args.seed, fill=fill) as (client, url, _env):
        stored = int(client.dbsize())
        backfill = _backfill(url)
        work = tempfile.mkdtemp(prefix="tw-console-")
        try:
            pages = _time_pages(url, args.runs, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {
            "connections_stored": int(client.zcard(Keys(PREFIX).due)),
            "keys": stored,
            "used_memory_mb": round(int(client.info("memory")["used_memory"]) / 2**20, 1),
            "backfill_s": round(backfill, 1),
            "pages": pages,
            "overview_p99_ms": pages["overview"]["p99_ms"],
            "failing": int(client.scard(Keys(PREFIX).fleet_ids("failing"))),
            "connections_p99_ms": max(v["p99_ms"] for k, v in pages.items() if k != "overview"),
            "target_ms": TARGET_MS,
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }


def run(args: argparse.Namespace) -> int:
    random.seed(1)
    result = measure(args)
    result["passed"] = {
        "overview": result["overview_p99_ms"] <= TARGET_MS,
        "connections": result["connections_p99_ms"] <= TARGET_MS,
    }
    text = json.dumps(result, indent=2)
    print(text)
    output = Path(args.output) if args.output != "bench-results.json" else (
        RESULTS / f"console-{date.today().isoformat()}.json")  # fmt: skip
    output.write_text(text + "\n")
    print(f"results written to {output}")
    return 0 if all(result["passed"].values()) else 1
