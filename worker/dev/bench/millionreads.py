"""`bench --million`'s credential reads (issue 16, section 4): fresh-token reads through the
real `api` processes while the worker keeps the fleet fresh, inside the steady window.

The api processes (`python -m worker.api`, one per core) start once the fleet has run a while
in steady state; `clients` keep-alive clients (worker.dev.bench.loadgen, its own process) read
`GET /connections/{id}/credentials` over `READ_IDS` connections whose next check is at least
`FRESH_FOR_S` away: fresh throughout the reads, so the worker leaves them alone and a
Salesforce call on one of them could only come from a read. Two phases, as `bench --api`: a
closed loop (reads/s), then reads paced at `api.TARGET_RATE` (p50/p99 from each read's
scheduled time: no coordinated omission).

Salesforce calls caused by reads: a read refreshes only through the refresher's save, which
bumps the record's `version`; the read set's versions before and after, summed, bound them.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.dev.bench import api, loadgen
from worker.dev.bench.millionprobe import cpu_seconds
from worker.dev.bench.services import Workspace
from worker.dev.embedded import free_port
from worker.store.keys import Keys

READ_IDS = 10_000  # connections read, in turn (more than any cache line, fewer than the due)
FRESH_FOR_S = 1_800.0  # a read connection's next check is at least this far away


@dataclass(frozen=True)
class ReadParams:
    clients: int = 64
    api_processes: int = 2
    warmup_s: float = 3.0
    window_s: float = 30.0
    after_s: float = 120.0  # into the steady window (less when the window is short)

    @classmethod
    def for_steady(cls, steady_s: float) -> ReadParams:
        """30 s windows, shorter in a short steady window (a smoke run's)."""
        return cls(window_s=min(30.0, max(2.0, steady_s / 4)))

    @property
    def span_s(self) -> float:
        """What the reads take: the api's start, then two phases of (2 s start + warm-up +
        window)."""
        return 10.0 + 2 * (loadgen.START_S + self.warmup_s + self.window_s)


@dataclass
class Reads:
    """The read phases, run in a thread beside the steady window's sampling."""

    ws: Workspace
    env: dict[str, str]
    store: redis.Redis
    keys: Keys
    key: str  # API key (scope read)
    p: ReadParams = field(default_factory=ReadParams)
    # name -> pids whose cores busy are sampled each second of each phase's window (the
    # worker, the emulator, Redis: who was busy when the tail happened); the api processes'
    # own pids are added when they start
    watch: dict[str, list[int]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="million-reads", daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._measure()
        except Exception as error:  # reported in the results; the steady window goes on
            self.error = f"{type(error).__name__}: {error}"

    def _measure(self) -> None:
        ids = fresh_ids(self.store, self.keys, time.time() + FRESH_FOR_S, READ_IDS)
        if len(ids) < self.p.clients:
            raise RuntimeError(f"only {len(ids)} connections fresh for {FRESH_FOR_S:g}s")
        before = versions(self.store, self.keys, ids)
        procs, ports = [], []
        for n in range(self.p.api_processes):
            port = free_port()
            args = [sys.executable, "-m", "worker.api", "--host", "127.0.0.1", "--port", str(port)]
            procs.append(self.ws.spawn(args, {**os.environ, **self.env}, f"api-{n}.log"))
            ports.append(port)
        self.watch = {**self.watch, "api": [proc.pid for proc in procs]}
        try:
            for port, proc in zip(ports, procs, strict=True):
                api._wait_healthy(f"http://127.0.0.1:{port}", proc)
            paths = [f"/connections/{cid}/credentials" for cid in ids]
            closed = self._phase(ports, paths, None)
            paced = self._phase(ports, paths, float(api.TARGET_RATE))
        finally:
            for proc in procs:
                self.ws.stop(proc)
        after = versions(self.store, self.keys, ids)
        calls = sum(max(0, after[cid] - before[cid]) for cid in ids)
        self.figures = {
            "million_reads_per_s": closed["reads_per_s"],
            "million_read_p50_ms": paced["p50_ms"],
            "million_read_p99_ms": paced["p99_ms"],
            "million_read_salesforce_calls": calls,
        }
        self.details = {
            "closed_loop": closed,
            "paced": paced,
            "read_ids": len(ids),
            # each api process's cache counts as it stopped (both phases and their warm-ups)
            "api_credentials_cache": [
                api._cache_stats(self.ws.path(f"api-{n}.log")) for n in range(len(procs))
            ],
        }

    def _phase(self, ports: list[int], paths: list[str], rate: float | None) -> dict[str, Any]:
        opens = time.time() + loadgen.START_S + self.p.warmup_s
        forks = redis_forks(self.store)
        watch_store(self.store)
        busy = Busy(self.watch, opens, self.p.window_s)
        busy.start()
        results = loadgen.run(
            ports, paths, self.key, self.p.clients, 1, self.p.warmup_s, self.p.window_s, rate
        )
        busy.join()
        found = summary(results, self.p.window_s, opens, rate)
        found["cores_by_second"] = busy.cores
        after = redis_forks(self.store)
        # Did the store fork (RDB snapshot, AOF rewrite) in the window: its pause and its
        # child's core are candidates for a read's tail on a shared box.
        found["store_forks"] = after["total_forks"] - forks["total_forks"]
        found["store_latest_fork_ms"] = round(after["latest_fork_usec"] / 1000.0, 1)
        found["store_slow"] = store_slow(self.store, opens, self.p.window_s)
        return found


class Busy(threading.Thread):
    """Cores busy per second of the window, for each named group of processes."""

    def __init__(self, watch: dict[str, list[int]], opens: float, window_s: float) -> None:
        super().__init__(name="million-busy", daemon=True)
        self.watch, self.opens, self.window_s = watch, opens, window_s
        self.cores: dict[str, list[float]] = {name: [] for name in watch}

    def run(self) -> None:
        time.sleep(max(0.0, self.opens - time.time()))
        last = {name: cpu_seconds(pids) for name, pids in self.watch.items()}
        for second in range(1, int(self.window_s) + 1):
            time.sleep(max(0.0, self.opens + second - time.time()))
            for name, pids in self.watch.items():
                now = cpu_seconds(pids)
                self.cores[name].append(round(now - last[name], 2))
                last[name] = now


SLOW_US = 1000  # the store's commands slower than this are listed for each read window
SLOW_KEPT = 4096  # slow-log entries the store keeps (and a window reads back)


def watch_store(store: redis.Redis) -> None:
    """Start the store's slow log afresh at SLOW_US, and its latency monitor at 1 ms."""
    store.config_set("slowlog-log-slower-than", SLOW_US)
    store.config_set("slowlog-max-len", SLOW_KEPT)
    store.config_set("latency-monitor-threshold", 1)
    store.slowlog_reset()
    store.latency_reset()


def store_slow(store: redis.Redis, opens: float, window_s: float) -> dict[str, Any]:
    """What held the store's one thread for over SLOW_US in the window: each command by its
    second in the window (whole seconds: the one the window opens in counts), its ms and its
    name (EVALSHA with the script's sha prefix; never an argument, which may carry a sealed
    token), and the latency monitor's events (fork, aof-write, expire-cycle, ...) with their
    worst ms."""
    entries = []
    for entry in store.slowlog_get(SLOW_KEPT):
        at = int(entry["start_time"]) - int(opens)  # the slow log keeps whole seconds
        if not 0 <= at < window_s:
            continue
        words = bytes(entry["command"]).split(b" ")
        name = words[0].decode(errors="replace").upper()
        if name == "EVALSHA" and len(words) > 1:
            name += " " + words[1][:8].decode(errors="replace")
        entries.append([at, round(int(entry["duration"]) / 1000.0, 2), name])
    latest: list[list[Any]] = store.latency_latest()  # [event, at, latest ms, max ms]
    events = {_text(row[0]): int(row[3]) for row in latest}
    return {"commands": sorted(entries), "latency_events_max_ms": events}


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def redis_forks(store: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = store.info("stats")
    return {name: int(stats.get(name, 0)) for name in ("total_forks", "latest_fork_usec")}


def fresh_ids(store: redis.Redis, keys: Keys, not_before: float, count: int) -> list[str]:
    """Up to `count` ids whose next check is at `not_before` or later."""
    found: list[bytes] = store.zrangebyscore(keys.due, not_before, "+inf", start=0, num=count)  # type: ignore[assignment]
    return [m.decode() for m in found]


def versions(store: redis.Redis, keys: Keys, ids: list[str]) -> dict[str, int]:
    pipe = store.pipeline(transaction=False)
    for cid in ids:
        pipe.hget(keys.conn(cid), "version")
    return {cid: int(v or 0) for cid, v in zip(ids, pipe.execute(), strict=True)}


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def summary(
    results: list[loadgen.LoadResult], window_s: float, opens: float, rate: float | None
) -> dict[str, Any]:
    """Reads/s (over the window, or to the last answer when it came later), latencies."""
    latencies = sorted(ms for r in results for ms in r.latencies_ms)
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r.errors.items():
            errors[name] = errors.get(name, 0) + count
    reads = sum(r.reads for r in results)
    span = max(window_s, max((r.last_done for r in results), default=0.0) - opens)
    return {
        "offered_per_s": rate,
        "reads": reads,
        "reads_per_s": round(reads / span, 1),
        "errors": errors,
        "p50_ms": round(_percentile(latencies, 0.50), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else 0.0,
        "load_generator_cores": round(sum(r.cpu_s for r in results) / window_s, 2),
        "load_generator_gc": sum(r.gc_collections for r in results),  # 0: its collector is off
        # The generator's own delays (inside the latencies above): sending late, resuming late.
        "send_lag_p99_ms": round(
            _percentile(sorted(ms for r in results for ms in r.send_lags_ms), 0.99), 2
        ),
        "resume_lag_p99_ms": round(
            _percentile(sorted(ms for r in results for ms in r.resume_lags_ms), 0.99), 2
        ),
        # Reads slower than loadgen.SLOW_MS by second of the window: a tail spread over the
        # window (contention all along) or in a few seconds (a pause: a fork, a burst).
        "slow_by_second": slow_by_second(results, opens),
    }


def slow_by_second(results: list[loadgen.LoadResult], opens: float) -> dict[str, int]:
    counts: dict[int, int] = {}
    for r in results:
        for sent, _ in r.slow:
            second = int(sent - opens)
            counts[second] = counts.get(second, 0) + 1
    return {str(second): counts[second] for second in sorted(counts)}
