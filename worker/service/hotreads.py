"""Hot credentials reads: a per-process memory of the credentials this process just read.

A fresh-token read costs a Redis round trip and a decrypt; a host app fleet reading the same
connections thousands of times a second reads the same record over and over. An api process
attaches a `HotReads` to its Runtime (`attach`); `worker.service.credentials` then answers a
read from an entry while it may be trusted, and only if the token it holds is still valid for
the read's own `min_ttl` (checked on every hit, against the clock, exactly as on a Redis read).

How long an entry may be trusted:
- while Redis tells this process of every write to a connection record
  (`worker.store.tracking`: CLIENT TRACKING; the api wires it): until that record is written,
  however it is written and by whom, and at most `tracked_age` seconds (a safety net);
- otherwise (no tracking yet, or its session broke): at most `max_age` seconds
  (TOKENWORKER_API_CREDENTIALS_CACHE_AGE, at most 1 s). Losing tracking forgets every entry.

A tracked entry that was read since it was put is renewed before its age runs out, off the
read path (`renew`, a task of the api process): once a second the entries ending within
`RENEW_AHEAD` s have their record's `version` read, all in one round trip, and each whose
record is still at the version it was read at is served for a new drawn age from that check.
Every write of a record's content (a check, a refresh, an import, a status change, a key
rotation) is a compare-and-set that moves its version (worker.store.connections), so an
unchanged version is the same record a full read would return; a changed or missing one drops
the entry. Without renewal a host fleet's hot set was read again, record and decrypt, on the
read path, every 45-90 s: 2 x 222 reads a second over 10,000 hot connections and 2 api
processes, a quarter of a core and the tail of the reads beside them (`bench --million`).

Each entry gets its own share of that age, drawn when it is put: between (1 - SPREAD) and all
of it. With one fixed age, entries read together stay together: after an api restart or a
tracking session that began again (both forget everything) a host fleet's whole hot set is
read again in the same second, and again every `tracked_age` seconds after, for good: a burst
of store reads that saturated the api's cores and put a 162 ms p99 on the reads beside it
(`bench --million`). Drawn ages scatter such a crowd over the spread at its first renewal.

What this process does to a connection drops its entry at once (`drop`): a rejected token, a
refresh or check, a delete, a (re)connect, a read that had to refresh. A read that was in
flight while its entry was dropped or written does not put what it read (the `generation` it
began with is stale, or its key was invalidated meanwhile), so a rejected token cannot come
back through a slow read. Misses of one connection at the same moment (a burst of callers)
share one store read: they wait for the first and take what it put, each checked against its
own min_ttl; when it put nothing (a drop came, it failed), each reads for itself.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

from worker.engine.runtime import Runtime

T = TypeVar("T")
TRACKED_AGE = 90.0  # seconds an entry may be served at most while every write is reported
SPREAD = 0.5  # an entry's own age is drawn from (1 - SPREAD, 1] x the age: 45-90 s tracked
RENEW_EVERY = 1.0  # seconds between renewal rounds
RENEW_AHEAD = 5.0  # an entry is renewed when it has less than this left (rounds of slack)
RENEW_MAX = 20_000  # records' versions read in one round at most (the rest: next round)
log = structlog.get_logger("tokenworker.api")
Versions = Callable[[Sequence[str]], Awaitable[Sequence[int | None]]]


@dataclass(frozen=True)
class Entry(Generic[T]):
    value: T
    lifetime: float | None  # the connection's session lifetime: its default min_ttl needs it
    at: float  # monotonic seconds when it was read from the store
    age: float  # seconds it may be served from `at`: its drawn share of the cache's age
    version: int | None = None  # the record's version it was read at (None: never renewed)


class HotReads(Generic[T]):
    """At most `max_entries` entries, each served for at most `max_age` seconds, or
    `tracked_age` while Redis reports every write (`tracking_started`); each for its own
    share of that, drawn by `draw` (uniform in [0, 1)) when it is put."""

    def __init__(
        self,
        max_age: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        tracked_age: float = TRACKED_AGE,
        key_prefix: str = "",
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.max_age = max_age
        self.draw = draw
        self.tracked_age = tracked_age
        self.max_entries = max_entries
        self.clock = clock
        self.key_prefix = key_prefix  # the store key of entry `id` is key_prefix + id
        self.tracked = False
        self.generation = 0  # bumped by every drop: reads begun before it may not put
        self.hits = 0
        self.misses = 0
        self.joined = 0  # misses answered by another read of the same id already in flight
        self.invalidations = 0  # store keys Redis reported written
        self.renewed = 0  # entries renewed by a version check (`renew`)
        self.renewals_refused = 0  # entries whose record's version had moved: dropped
        self._entries: OrderedDict[str, Entry[T]] = OrderedDict()
        self._read: set[str] = set()  # keys served from their entry since it was put
        # (end of age, tie-breaker, key, entry) of tracked entries that may be renewed
        self._ends: list[tuple[float, int, str, Entry[T]]] = []
        self._seq = itertools.count()
        self._flights: dict[str, asyncio.Future[Entry[T] | None]] = {}
        self._written: set[str] = set()  # keys written while a read of them was in flight

    @property
    def age(self) -> float:
        """How long an entry may be served now."""
        return self.tracked_age if self.tracked else self.max_age

    def get(self, key: str) -> Entry[T] | None:
        entry = self._entries.get(key)
        if entry is not None and self.clock() - entry.at < entry.age:
            self._read.add(key)
            return entry
        if entry is not None:
            self._forget(key)
        return None

    def put(
        self,
        key: str,
        value: T,
        lifetime: float | None,
        generation: int,
        at: float,
        version: int | None = None,
    ) -> Entry[T] | None:
        """Remember `value`, read at `at` (from the record at `version`) by a read that began
        at `generation` (the entry, or None when a drop came since)."""
        if generation != self.generation or key in self._written:
            return None
        return self._keep(key, Entry(value, lifetime, at, self._drawn(), version))

    def _drawn(self) -> float:
        return self.age * (1.0 - SPREAD * self.draw())

    def _keep(self, key: str, entry: Entry[T]) -> Entry[T]:
        self._entries.pop(key, None)
        self._entries[key] = entry
        self._read.discard(key)
        if self.tracked and entry.version is not None:
            heapq.heappush(self._ends, (entry.at + entry.age, next(self._seq), key, entry))
            if len(self._ends) > 2 * self.max_entries + 1_000:
                self._compact()
        while len(self._entries) > self.max_entries:
            gone, _ = self._entries.popitem(last=False)  # the oldest: first to age out anyway
            self._read.discard(gone)
        return entry

    def _forget(self, key: str) -> None:
        self._entries.pop(key, None)
        self._read.discard(key)

    def _compact(self) -> None:
        """Keep only the live entries' ends (each put leaves its predecessor's behind until
        it comes due: a busy cache's heap would otherwise hold every put of the last age)."""
        self._ends = [
            (e.at + e.age, next(self._seq), k, e)
            for k, e in self._entries.items()
            if e.version is not None
        ]
        heapq.heapify(self._ends)

    def due_renewals(self, now: float) -> list[tuple[str, Entry[T]]]:
        """The entries to renew now: read since they were put, ending within RENEW_AHEAD s,
        still kept (at most RENEW_MAX; the rest stay for the next round). An entry nobody
        read is left to age out."""
        due: list[tuple[str, Entry[T]]] = []
        ends = self._ends
        while ends and ends[0][0] - now < RENEW_AHEAD and len(due) < RENEW_MAX:
            _, _, key, entry = heapq.heappop(ends)
            if self._entries.get(key) is entry and key in self._read:
                due.append((key, entry))
        return due

    def renew(
        self, due: Sequence[tuple[str, Entry[T]]], versions: Sequence[int | None], at: float
    ) -> None:
        """`versions` of the records of `due` were read, the round trip sent at `at`: an
        entry still kept whose record has not moved is served for a new drawn age from `at`;
        one whose record moved or is gone is dropped (tracking may not have said so yet)."""
        for (key, entry), version in zip(due, versions, strict=True):
            if self._entries.get(key) is not entry:
                continue  # dropped, written or put again meanwhile: nothing to renew
            if version != entry.version:  # moved, or None: the record is gone
                self.renewals_refused += 1
                self._forget(key)
                continue
            self.renewed += 1
            renewed = Entry(entry.value, entry.lifetime, at, self._drawn(), version)
            self._keep(key, renewed)

    def in_flight(self, key: str) -> asyncio.Future[Entry[T] | None] | None:
        """The store read of `key` under way in this process, if any: a miss meanwhile waits
        for it (shielded) instead of reading the same record again."""
        return self._flights.get(key)

    def take_off(self, key: str) -> asyncio.Future[Entry[T] | None]:
        flight: asyncio.Future[Entry[T] | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        return flight

    def land(
        self, key: str, flight: asyncio.Future[Entry[T] | None], entry: Entry[T] | None
    ) -> None:
        """The read is over: its waiters get `entry` (None: they read for themselves)."""
        if self._flights.get(key) is flight:
            del self._flights[key]
            self._written.discard(key)
        flight.set_result(entry)

    def drop(self, key: str) -> None:
        self.generation += 1
        self._forget(key)
        self._flights.pop(key, None)  # later misses start their own read
        self._written.discard(key)

    def forget_all(self) -> None:
        """Nothing kept may be trusted any more; reads in flight may not put."""
        self.generation += 1
        self._entries.clear()
        self._flights.clear()
        self._written.clear()
        self._read.clear()
        self._ends.clear()

    # worker.store.tracking.Listener
    def tracking_started(self) -> None:
        """From now on every write is reported: what was kept before is forgotten (a write
        between its read and this moment would never be reported)."""
        self.forget_all()
        self.tracked = True

    def tracking_lost(self) -> None:
        self.tracked = False
        self.forget_all()

    def invalidated(self, keys: Iterable[str] | None) -> None:
        """Redis reports `keys` written (None: all of them). An entry goes; a read of one in
        flight will not put what it read (Redis may have answered it before the write)."""
        if keys is None:
            self.forget_all()
            return
        skip = len(self.key_prefix)
        for key in keys:
            if not key.startswith(self.key_prefix):
                continue
            self.invalidations += 1
            name = key[skip:]
            self._forget(name)
            if name in self._flights:
                self._written.add(name)

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        reads = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / reads, 4) if reads else 0.0,
            "joined": self.joined,
            "entries": len(self._entries),
            "drops": self.generation,
            "invalidations": self.invalidations,
            "renewed": self.renewed,
            "renewals_refused": self.renewals_refused,
            "tracked": self.tracked,
        }


async def renew(cache: HotReads[Any], versions: Versions, every: float = RENEW_EVERY) -> None:
    """Until cancelled: a renewal round every `every` s while the cache is tracked (see the
    module docstring). A round that fails (Redis away) renews nothing: its entries age out
    as they would without renewal, and the next round tries again."""
    while True:
        await asyncio.sleep(every)
        if not cache.tracked:
            continue
        at = cache.clock()
        due = cache.due_renewals(at)
        if not due:
            continue
        try:
            found = await versions([key for key, _ in due])
        except Exception as error:  # Redis away, or anything: logged; the entries age out
            log.warning("api.credentials_cache.renewal_failed", error=type(error).__name__)
            continue
        cache.renew(due, found, at)


# By the Runtime's identity (a dataclass: not hashable), forgotten when it is collected.
_attached: dict[int, HotReads[Any]] = {}


def attach(rt: Runtime, cache: HotReads[Any]) -> None:
    """Serve `rt`'s credentials reads through `cache` (the api process does, at startup)."""
    _attached[id(rt)] = cache
    weakref.finalize(rt, _attached.pop, id(rt), None)


def of(rt: Runtime) -> HotReads[Any] | None:
    return _attached.get(id(rt))


def drop(rt: Runtime, connection_id: str) -> None:
    """This process changed (or is about to change) `connection_id`: forget what it read."""
    cache = _attached.get(id(rt))
    if cache is not None:
        cache.drop(connection_id)
