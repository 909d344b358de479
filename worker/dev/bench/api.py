"""`tokenworker bench --api`: credential reads of fresh tokens through the real `api` process.

Setup: a real redis-server, the emulator (50 ms per Salesforce call), `connections` imported
from emulator grants (fresh: their next check is far away), an API key (scope read), the
Celery worker (`-c 2`, the Procfile's) sent a sweep every `SWEEP_EVERY_S` as beat would, and
`api_processes` `python -m worker.api` processes, each on its own port (one uvicorn process uses
one core at most; two cores, two processes, the generator's clients spread over them).

The load: `clients` keep-alive connections (worker.dev.bench.loadgen, raw asyncio on uvloop,
one request in flight each), `GET /connections/{id}/credentials` over every connection in
turn, a warm-up, then the measured window. Reported: reads/s, p50/p99 latency (send to last
byte), Salesforce calls during the window (token + introspection + REST at the emulator: 0 is
the target for fresh tokens), CPU seconds per wall second of each process role, the api's CPU
per read, the share of reads its credentials cache answered without a record read (HGETALLs
at Redis against reads; each process's own counts as it stopped), and the generator's own
delays inside the latencies (late sends, late resumes). The api processes run with the
deployment defaults (TOKENWORKER_API_CREDENTIALS_CACHE_AGE=0 in the environment turns the
cache off for a comparison).

Nango's model beside it, COMPUTED (not measured), as an upper bound: every read introspects
the token at Salesforce first, one call of `latency_ms` per read. With `clients` callers each
waiting for its read, reads/s <= clients / latency even if everything else cost nothing, its
p50 >= latency, and Salesforce calls = reads (each counted against the org's daily API limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import redis

from config.settings import Settings
from worker.dev.bench import loadgen, population, seed
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.progress import say
from worker.dev.bench.services import Workspace, start_emulator
from worker.dev.bench.throughput import Pool
from worker.dev.embedded import free_port
from worker.engine.runtime import Runtime
from worker.store.apikeys import ApiKeys, Scope
from worker.store.keys import Keys

SWEEP_EVERY_S = 3.0
TARGET_RATE = 3_000  # reads/s: the target, offered in the paced phase
# The api under cProfile. uvicorn re-raises the SIGTERM it handled once it has shut down, so
# a handler turning it into SystemExit is what lets the profile be written.
PROFILED = """
import cProfile, signal, sys
from worker.api.__main__ import main
def stop(*_):
    raise SystemExit(0)
signal.signal(signal.SIGTERM, stop)
profile = cProfile.Profile()
try:
    profile.runcall(main, sys.argv[1:])
finally:
    profile.dump_stats({out!r})
"""
REQUIRED = ("reads_per_s", "p50_ms", "p99_ms", "paced_reads_per_s", "salesforce_calls")


@dataclass(frozen=True)
class ApiParams:
    mode: str
    connections: int
    clients: int
    api_processes: int
    load_processes: int
    warmup_s: float
    duration_s: float  # the paced window (its p99 wants the reads)
    closed_s: float  # the closed loop's window (a rate)
    latency_ms: float = 50.0
    rate_share: float = 1.0  # the paced phase offers TARGET_RATE x this (smoke: a little)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS = {
    "full": ApiParams("api", 1_000, 64, 2, 1, 5.0, 30.0, 30.0),
    "quick": ApiParams("api-quick", 1_000, 64, 2, 1, 2.0, 10.0, 5.0),
    "smoke": ApiParams("api-smoke", 50, 8, 1, 1, 1.0, 2.0, 2.0, rate_share=0.05),
}


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


TICKS = os.sysconf("SC_CLK_TCK")


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of these processes and their live descendants (Linux)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{pid}/children") as handle:
                children = [int(child) for child in handle.read().split()]
        except (OSError, ValueError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS + _cpu(children)
    return total


def _api_key(settings: Settings) -> str:
    async def go() -> str:
        rt = Runtime.open(settings)
        try:
            key, _ = await ApiKeys(rt.redis, settings.key_prefix).create("bench", Scope.READ)
            return key
        finally:
            await rt.close()

    return asyncio.run(go())


def _wait_healthy(url: str, proc: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"an api process exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the api at {url} did not answer /healthz within {timeout:g}s")


def run(
    ws: Workspace, p: ApiParams, profile_dir: str | None = None
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """(figures, notes, details) of one run; with `profile_dir`, each api process runs under
    cProfile and leaves `api-N.prof` there (py-spy is not installed here)."""
    server = ws.redis()
    env = population.store_env(server.url, f"redis://127.0.0.1:{server.port}/1")
    settings = Settings.from_env(env)
    emulator_url, emulator_pid = start_emulator(ws, p.latency_ms, 7200.0)
    admin = EmulatorAdmin(emulator_url)
    say(f"api: {p.connections} fresh connections, {p.api_processes} api process(es)")
    client_id, secret = admin.client()
    population.add_integration(settings, emulator_url, client_id, secret)
    grants = admin.grants(client_id, p.connections)
    ids = [f"c{n:06d}" for n in range(p.connections)]
    client = redis.Redis.from_url(settings.redis_url)
    later = time.time() + population.NOT_DUE
    records = [
        (seed.imported(cid, population.INTEGRATION, grant), later)
        for cid, grant in zip(ids, grants, strict=True)
    ]
    seed.write(client, Keys(settings.key_prefix), population.cipher_of(settings), records)
    client.close()
    key = _api_key(settings)

    pool = Pool(ws, env, 2)
    apis = []
    ports = []
    for n in range(p.api_processes):
        port = free_port()
        args = [sys.executable, "-m", "worker.api", "--host", "127.0.0.1", "--port", str(port)]
        if profile_dir is not None:
            out = os.path.join(os.path.abspath(profile_dir), f"api-{n}.prof")
            args[1:3] = ["-c", PROFILED.format(out=out)]
        apis.append(ws.spawn(args, {**os.environ, **env}, f"api-{n}.log"))
        ports.append(port)
    try:
        pool.wait_ready(60.0)
        for port, proc in zip(ports, apis, strict=True):
            _wait_healthy(f"http://127.0.0.1:{port}", proc)
        others = {
            "emulator": emulator_pid,
            "redis_server": server.process.pid if server.process else 0,
        }
        figures, notes, details = _measure(
            p, pool, admin, apis, ports, ids, key, others, settings.redis_url
        )
    finally:
        pool.close(graceful=False)
        admin.close()
        ws.stop(*apis)  # gracefully: each logs its cache's figures as it stops
    details["api_credentials_cache"] = [
        _cache_stats(ws.path(f"api-{n}.log")) for n in range(p.api_processes)
    ]
    return figures, notes, details


def _cache_stats(log: str) -> dict[str, int]:
    """What an api process said of its credentials cache as it stopped (both phases and their
    warm-ups; {} when it was off)."""
    with open(log, errors="replace") as handle:
        lines = [line for line in handle if "api.credentials_cache" in line]
    if not lines:
        return {}
    names = "hits|misses|joined|entries|drops|invalidations|renewed|renewals_refused"
    found = re.findall(rf"\b({names})\W+(\d+)", lines[-1])
    return {name: int(value) for name, value in found}


Phase = tuple[list[loadgen.LoadResult], dict[str, Any]]


def _measure(
    p: ApiParams,
    pool: Pool,
    admin: EmulatorAdmin,
    apis: list[Any],
    ports: list[int],
    ids: list[str],
    key: str,
    others: dict[str, int],
    store_url: str,
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    paths = [f"/connections/{cid}/credentials" for cid in ids]
    store = redis.Redis.from_url(store_url)
    roles = {
        "api": [proc.pid for proc in apis],
        "celery_worker": [pool.proc.pid],
        **{role: [pid] for role, pid in others.items()},
    }
    say(f"api: closed loop, {p.clients} clients, {p.warmup_s:g}s + {p.closed_s:g}s")
    try:
        closed = _phase(p, pool, admin, store, roles, ports, paths, key, None, p.closed_s)
        say(f"api: paced at {TARGET_RATE:,}/s in all, {p.clients} clients")
        rate = TARGET_RATE * p.rate_share
        paced = _phase(p, pool, admin, store, roles, ports, paths, key, rate, p.duration_s)
    finally:
        store.close()
    return _figures(p, closed, paced)


def _record_reads(store: redis.Redis) -> int:
    """HGETALL calls the store Redis has served: a connection record read (nothing else in
    this setup reads a whole hash), so reads minus these are the api's cache hits."""
    stats: dict[str, Any] = store.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


def _phase(
    p: ApiParams,
    pool: Pool,
    admin: EmulatorAdmin,
    store: redis.Redis,
    roles: dict[str, list[int]],
    ports: list[int],
    paths: list[str],
    key: str,
    rate: float | None,
    seconds: float,
) -> Phase:
    """One load run; the emulator's counters and every role's CPU around its window."""
    import threading  # noqa: PLC0415

    window: dict[str, Any] = {}
    stop = threading.Event()

    def observe() -> None:
        # Sweeps run throughout, as beat would send them.
        opens = window["opens"]
        next_sweep = time.time()
        while not stop.is_set():
            now = time.time()
            if now >= next_sweep:
                pool.sweep()
                next_sweep = now + SWEEP_EVERY_S
            if "before" not in window and now >= opens:
                window["before"] = admin.http.get("/_admin/stats").json()
                window["hgetall_before"] = _record_reads(store)
                window["cpu_before"] = {role: _cpu(pids) for role, pids in roles.items()}
            if "before" in window and "after" not in window and now >= opens + seconds:
                window["after"] = admin.http.get("/_admin/stats").json()
                window["hgetall_after"] = _record_reads(store)
                window["cpu_after"] = {role: _cpu(pids) for role, pids in roles.items()}
            stop.wait(0.02)

    window["opens"] = time.time() + loadgen.START_S + p.warmup_s  # as loadgen.run opens it
    window["seconds"] = seconds
    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    try:
        results = loadgen.run(
            ports, paths, key, p.clients, p.load_processes, p.warmup_s, seconds, rate
        )
        deadline = time.monotonic() + 5.0
        while "after" not in window and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.join(5)
    return results, window


def _summary(p: ApiParams, phase: Phase) -> dict[str, Any]:
    results, window = phase
    seconds = window["seconds"]
    latencies = [ms for r in results for ms in r.latencies_ms]
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r.errors.items():
            errors[name] = errors.get(name, 0) + count
    before, after = window.get("before", {}), window.get("after", {})
    calls = {
        name: int(after.get(name, 0)) - int(before.get(name, 0))
        for name in ("token_calls", "introspect_calls", "data_calls", "userinfo_calls")
    }
    cores = {
        role: round((window["cpu_after"][role] - window["cpu_before"][role]) / seconds, 2)
        for role in window.get("cpu_after", {})
    }
    cores["load_generator"] = round(sum(r.cpu_s for r in results) / seconds, 2)
    reads = sum(r.reads for r in results)
    lags = [ms for r in results for ms in r.send_lags_ms]
    resumes = [ms for r in results for ms in r.resume_lags_ms]
    store_reads = window.get("hgetall_after", 0) - window.get("hgetall_before", 0)
    # Reads answered per second from the window's start to the last answer: a paced run the
    # api cannot keep up with answers its window's reads late, over a longer time.
    span = max(seconds, max((r.last_done for r in results), default=0.0) - window["opens"])
    return {
        "reads": reads,
        "reads_per_s": round(reads / span, 1),
        "errors": errors,
        "salesforce_calls_by_endpoint": calls,
        "cores_busy": cores,
        "p50_ms": round(_percentile(latencies, 0.50), 2),
        "p90_ms": round(_percentile(latencies, 0.90), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "p999_ms": round(_percentile(latencies, 0.999), 2),
        "max_ms": round(max(latencies), 2) if latencies else 0.0,
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else 0.0,
        # the generator's own delays, both inside the latencies above: sending late (paced
        # reads whose client was idle when due) and resuming a read after its answer arrived
        "send_lag_p50_ms": round(_percentile(lags, 0.50), 2),
        "send_lag_p99_ms": round(_percentile(lags, 0.99), 2),
        "resume_lag_p50_ms": round(_percentile(resumes, 0.50), 2),
        "resume_lag_p99_ms": round(_percentile(resumes, 0.99), 2),
        "load_generator_gc": sum(r.gc_collections for r in results),  # 0: its collector is off
        # the api processes' credentials cache (TOKENWORKER_API_CREDENTIALS_CACHE_AGE): reads
        # answered without a record read from Redis, over the window
        "store_record_reads": store_reads,
        "cache_hit_rate": round(max(0.0, 1.0 - store_reads / reads), 3) if reads else 0.0,
        "cpu_ms_per_read_api": round(1000.0 * cores.get("api", 0.0) * seconds / reads, 3)
        if reads
        else 0.0,
    }


def _figures(
    p: ApiParams, closed: Phase, paced: Phase
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    top, steady = _summary(p, closed), _summary(p, paced)
    rate = TARGET_RATE * p.rate_share
    nango_reads_per_s = p.clients / (p.latency_ms / 1000.0)
    calls = sum(top["salesforce_calls_by_endpoint"].values()) + sum(
        steady["salesforce_calls_by_endpoint"].values()
    )
    figures: dict[str, Any] = {
        "reads_per_s": top["reads_per_s"],
        "p50_ms": steady["p50_ms"],
        "p99_ms": steady["p99_ms"],
        "paced_reads_per_s": steady["reads_per_s"],
        "salesforce_calls": calls,
        "nango_reads_per_s": round(nango_reads_per_s, 1),
        "nango_p50_ms": round(p.latency_ms, 1),
        "nango_salesforce_calls": top["reads"],
    }
    notes = {
        "reads_per_s": (
            f"closed loop (each of {p.clients} keep-alive clients sends its next read on the "
            f"answer) over {p.api_processes} api process(es) (python -m worker.api, uvicorn "
            f"uvloop/httptools), Celery worker -c 2 swept every {SWEEP_EVERY_S:g}s, "
            f"{p.closed_s:g}s window after {p.warmup_s:g}s warm-up"
        ),
        "p99_ms": (
            f"paced: the {p.clients} clients send {rate:,.0f} reads/s in all on a fixed "
            "schedule, latency from each read's scheduled time (no coordinated omission). "
            f"A closed loop cannot meet both targets: {p.clients} clients in flight means a "
            f"mean latency of {p.clients} / reads-per-s ({p.clients / 3000 * 1000:.0f} ms at "
            "3,000/s)"
        ),
        "salesforce_calls": "token + introspection + REST calls at the emulator, both windows",
        "nango_reads_per_s": (
            f"computed, not measured: an upper bound. Each of {p.clients} clients waits for one "
            f"{p.latency_ms:g} ms introspection per read, so reads/s <= {p.clients} / "
            f"{p.latency_ms:g} ms even with a server costing nothing; p50 >= {p.latency_ms:g} ms; "
            "one Salesforce call per read (nango_salesforce_calls: for our closed-loop reads)"
        ),
    }
    details = {"closed_loop": top, "paced": {**steady, "offered_per_s": rate}}
    return figures, notes, details
