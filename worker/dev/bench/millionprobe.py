"""What `bench --million` samples while the fleet runs: staleness, overdue, CPU, memory.

- stale: every `stale_every` s, the emulator counts live grants whose newest access token has
  expired (`millionemu`): no decryption, one pass over the grants in the emulator.
- overdue: every `overdue_every` s, the ids that came within `ahead` s of their due time
  since the last sample (ZRANGEBYSCORE due (last bound, now + ahead]: a sweep claims up to an
  interval before the due time, so `ahead` is longer than the interval and every id is read
  before a sweep moves it); once its due time has come, its stored `last_check_at` (a
  plaintext field: the check's start, or for a refresh the answer's time, one call later)
  minus its due time is how late the check started (0 when it started early). Each sample
  reads only the new slice: re-reading the whole range (~26,000 ids at a million) held the
  store's one thread for 15-32 ms every 2 s, beside the reads being measured. An id scheduled
  into a range already read (a retry, an import) is not followed; in the steady state every
  check reschedules its id a session lifetime ahead.
- worker CPU: utime + stime of the Celery worker and its prefork children from /proc.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import redis

from worker.dev.bench.millionemu import MillionEmulator
from worker.store import codec
from worker.store.keys import Keys

TICKS = os.sysconf("SC_CLK_TCK")
WATCH_MAX = 200_000  # due ids followed at once (a sample beyond this is cut, and noted)
WAIT_S = 60.0  # how long after its due time an id that left the range may wait for its check


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime (+ the reaped children's) of these processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited: its time is in its parent's reaped-children fields
        total += sum(int(value) for value in fields[11:15])
    return total / TICKS


@dataclass
class Stale:
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, stale, live)
    scan_ms_max: float = 0.0  # the emulator's longest pass over its grants

    def take(self, emu: MillionEmulator) -> int:
        stale, live, scan_ms = emu.stale()
        self.samples.append((time.time(), stale, live))
        self.scan_ms_max = max(self.scan_ms_max, scan_ms)
        return stale

    def max_since(self, start: float) -> int:
        return max((s for t, s, _ in self.samples if t >= start), default=0)


@dataclass
class Overdue:
    store: redis.Redis
    keys: Keys
    ahead: float = 0.0  # seconds before its due time an id is watched
    watching: dict[bytes, float] = field(default_factory=dict)  # id -> due time
    late: list[float] = field(default_factory=list)
    cut: int = 0  # samples cut at WATCH_MAX
    unresolved: int = 0  # ids whose check was never seen saved
    read: int = 0  # due ids read, all samples
    bound: float | None = None  # the highest due time read so far

    def take(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        low = "-inf" if self.bound is None else f"({self.bound!r}"
        due: list[tuple[bytes, float]] = self.store.zrangebyscore(  # type: ignore[assignment]
            self.keys.due, low, now + self.ahead, start=0, num=WATCH_MAX, withscores=True
        )
        self.read += len(due)
        self.cut += len(due) >= WATCH_MAX
        self.bound = float(due[-1][1]) if len(due) >= WATCH_MAX else now + self.ahead
        for member, score in due:
            self.watching.setdefault(member, score)
        ripe = [member for member, at in self.watching.items() if at <= now]
        pipe = self.store.pipeline(transaction=False)
        for member in ripe:
            pipe.hget(self.keys.conn(member.decode()), codec.name("last_check_at"))
        for member, stamp in zip(ripe, pipe.execute(), strict=True):
            at = self.watching[member]
            checked = float(stamp) if stamp else 0.0
            if checked >= at - 1.0:  # a paced batch starts up to a second early
                self.late.append(max(0.0, checked - at))
            elif now < at + WAIT_S:
                continue  # not yet checked
            else:
                self.unresolved += 1
            del self.watching[member]

    def p99(self) -> float:
        if not self.late:
            return 0.0
        ordered = sorted(self.late)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def redis_used_bytes(store: redis.Redis) -> int:
    return int(store.info("memory")["used_memory"])


def memory_breakdown(
    store: redis.Redis, keys: Keys, connections: int, sample: int = 300
) -> dict[str, float]:
    """Bytes per connection by where they sit: `MEMORY USAGE ... SAMPLES 0` (key, value and
    dict entry) of a sample of record hashes, and of each whole index divided by the
    connections; `rest` is used_memory less those, per connection (leases, the stream, the
    broker's queues, Redis's own fixed cost: what does not grow with the fleet shows here
    divided by N)."""
    ids: list[bytes] = store.zrandmember(keys.due, sample) or []  # type: ignore[assignment]
    pipe = store.pipeline(transaction=False)
    for member in ids:
        pipe.memory_usage(keys.conn(member.decode()), samples=0)
    sizes = [int(size) for size in pipe.execute() if size]
    per = max(1, connections)
    found = {"hash": sum(sizes) / max(1, len(sizes))}
    indexes = {
        "due": keys.due,
        "by_integration": keys.fleet_by_integration,
        "by_error": keys.fleet_by_error,
        "by_status": keys.fleet_by_status,
        "by_status_integration": keys.fleet_by_status_integration,
    }
    for name, key in indexes.items():
        found[name] = int(store.memory_usage(key, samples=0) or 0) / per
    used = redis_used_bytes(store) / per
    found["rest"] = used - sum(found.values())
    found["used"] = used
    return {name: round(value, 1) for name, value in found.items()}


def not_active(store: redis.Redis, keys: Keys) -> int:
    """Connections in any status but active, from the fleet counts ("integration|status|key")."""
    total = 0
    counts: dict[bytes, bytes] = store.hgetall(keys.fleet_counts)  # type: ignore[assignment]
    for name, count in counts.items():
        if name.split(b"|")[1] != b"active":
            total += int(count)
    return total


def redis_used_bytes_safe(url: str) -> int:
    """Used memory after the fleet stopped (0 if Redis is already gone)."""
    try:
        client = redis.Redis.from_url(url)
        try:
            return redis_used_bytes(client)
        finally:
            client.close()
    except redis.RedisError:
        return 0
