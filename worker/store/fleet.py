"""The fleet read model: what `status`, `connections list` and the exporter know about the
fleet, read from plain fields and kept counts. Nothing here decrypts a token.

Counts by (integration, status, sealing key) come from the counts the store keeps on every
write (worker.store.counting), so reading them costs the same at a million connections as at
ten. Ids by status come from the small per-status sets for the non-active statuses, otherwise
from the sorted sets of every id and of every `integration|id` (a status asked for is tested
on two plain fields of each). The due backlog, worker heartbeats, the beat lease and the
last sweep are one pipelined read (`processes`).

A record is readable by a process when its refresh token is sealed under a key the process
holds; one that is not (a key nobody holds, no sealed refresh token, an unknown status) is
*unreadable*. The counts say how many; `unreadable` names them, reading the broken-id set
and, only when the counts report records under keys this process lacks, a SCAN of plain
fields to find those. A tampered ciphertext under a held key is not found here: only opening
it tells (`connections show`, `export`, a check).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from worker.domain.models import ConnectionStatus
from worker.errors import StoreError
from worker.store import codec
from worker.store.counting import CHUNK, PARKED, Counting, Progress
from worker.store.crypto import SEALED_MIN, VERSION, HeaderCheck
from worker.store.keys import Keys

KNOWN = frozenset(s.value for s in ConnectionStatus)
LAST_SWEEP = "last_sweep_timestamp_seconds"  # field of Keys.metrics (worker.telemetry.metrics)


@dataclass(frozen=True)
class Cell:
    integration: str
    status: str
    key_id: str  # hex id of the key that sealed the refresh token; "-" when none did

    def readable(self, held: frozenset[str]) -> bool:
        return self.status in KNOWN and self.key_id in held


@dataclass(frozen=True)
class Counts:
    cells: dict[Cell, int]

    @classmethod
    def parse(cls, raw: dict[bytes, bytes]) -> Counts:
        cells: dict[Cell, int] = {}
        for name, count in raw.items():
            integration, status, key_id = name.decode().split("|")
            cells[Cell(integration, status, key_id)] = int(count)
        return cls(cells)

    def by_integration(self) -> Counter[tuple[str, str]]:
        """Records naming an integration, by (integration, status), readable or not."""
        found: Counter[tuple[str, str]] = Counter()
        for cell, count in self.cells.items():
            if cell.integration:
                found[(cell.integration, cell.status)] += count
        return found

    def readable(self, held: frozenset[str]) -> Counter[tuple[str, str]]:
        """Records a holder of `held` key ids can read, by (integration, status)."""
        found: Counter[tuple[str, str]] = Counter()
        for cell, count in self.cells.items():
            if cell.readable(held):
                found[(cell.integration, cell.status)] += count
        return found

    def unreadable(self, held: frozenset[str]) -> int:
        return sum(n for cell, n in self.cells.items() if not cell.readable(held))

    def under_other_keys(self, held: frozenset[str]) -> int:
        """Well-formed records sealed under keys not in `held` (they are not in the broken set)."""
        return sum(
            n
            for cell, n in self.cells.items()
            if cell.status in KNOWN and cell.key_id != "-" and cell.key_id not in held
        )


@dataclass(frozen=True)
class Backlog:
    due_now: int  # next check time has passed
    overdue: int  # due for longer than one sweep interval
    scheduled: int  # in the due index at all
    oldest_due_at: float | None  # the earliest next check, due or not

    def oldest_age(self, now: float) -> float:
        """How long the oldest due connection has waited (0 when none is due)."""
        if not self.due_now or self.oldest_due_at is None:
            return 0.0
        return max(0.0, now - self.oldest_due_at)


@dataclass(frozen=True)
class Beat:
    leader: bool  # a beat holds the scheduler lease
    expires_in: float | None  # seconds left on it


@dataclass(frozen=True)
class Processes:
    backlog: Backlog
    heartbeats: dict[str, float]  # worker node -> last consumed at (every one recorded)
    beat: Beat
    last_sweep_at: float | None


@dataclass(frozen=True)
class IntegrationFacts:
    name: str
    provider: str
    status: str
    introspection: bool


class Fleet:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.counting = Counting(redis, keys)

    async def counts(self, progress: Progress | None = None) -> Counts:
        """Counts by cell. A store without counts is backfilled first, once (or the process
        backfilling it is waited for): see worker.store.counting."""
        await self.counting.complete(progress)
        return await self._counts() or await self.counts(progress)

    async def counts_within(self, budget: float) -> Counts | None:
        """Counts by cell, or None while a first backfill is still running after `budget`
        seconds of work on it (for a reader that must answer, like a scrape)."""
        if not await self.counting.complete(budget=budget):
            return None
        return await self._counts() or await self.counts_within(budget)

    async def _counts(self) -> Counts | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.fleet_counts)
            pipe.hmget(self.keys.fleet_meta, ["gen", "complete"])
            raw, (gen, complete) = await pipe.execute()
        if complete != (gen or b"1"):
            return None  # a recount started after the backfill was found complete
        return Counts.parse(raw)

    async def ids(self, status: str | None = None, integration: str | None = None) -> list[str]:
        """Ids of the connections in `status` of `integration` (None matches all), sorted.
        Read from the kept sets (worker.store.counting), never a SCAN: a non-active status's
        small set, else every id or one integration's, with a status tested on plain fields."""
        await self.counting.complete()
        if status is not None and status in PARKED:
            kept = self.keys.fleet_ids(status)
            members: set[bytes] = await self.redis.smembers(kept)  # type: ignore[assignment]
            ids = sorted(m.decode() for m in members)
            return ids if integration is None else await self._scan_filter(ids, None, integration)
        ids = await self._indexed(integration)
        return ids if status is None else await self._scan_filter(ids, status, None)

    async def _indexed(self, integration: str | None) -> list[str]:
        """Every id (the whole integration|id set, sorted by id), or one integration's."""
        if integration is None:
            members: list[bytes] = await self.redis.zrange(self.keys.fleet_by_integration, 0, -1)  # type: ignore[assignment]
            return sorted(m.split(b"|", 1)[1].decode() for m in members)
        head = f"{integration}|".encode()
        members = await self.redis.zrangebylex(
            self.keys.fleet_by_integration, b"[" + head, b"(" + head + b"\x7f"
        )  # type: ignore[assignment]
        return [m[len(head) :].decode() for m in members]

    async def _scan_filter(
        self, ids: list[str], status: str | None, integration: str | None
    ) -> list[str]:
        kept: list[str] = []
        for chunk in _chunks(ids):
            found = await self._plain(chunk, "integration", "status")
            for cid, (owner, state) in zip(chunk, found, strict=True):
                if owner is None:
                    continue  # removed meanwhile, or no integration: no status to match
                if integration is not None and owner.decode() != integration:
                    continue
                if status is not None and (state or b"active").decode() != status:
                    continue
                kept.append(cid)
        return kept

    async def unreadable(self, counts: Counts, check: HeaderCheck) -> list[tuple[str, StoreError]]:
        """(id, what is wrong) of every record `check`'s holder cannot read, sorted by id."""
        members: set[bytes] = await self.redis.smembers(self.keys.fleet_broken)  # type: ignore[assignment]
        ids = {m.decode() for m in members}
        held = frozenset(k.hex() for k in check.held)
        if counts.under_other_keys(held):
            ids |= await self._under_other_keys(check.held, counts.under_other_keys(held))
        found: list[tuple[str, StoreError]] = []
        for chunk in _chunks(sorted(ids)):
            async with self.redis.pipeline(transaction=False) as pipe:
                for cid in chunk:
                    pipe.hgetall(self.keys.conn(cid))
                raws = await pipe.execute()
            for cid, raw in zip(chunk, raws, strict=True):
                try:
                    if raw:
                        codec.connection_from_raw(cid, raw, check)
                except StoreError as error:
                    found.append((cid, error))
        return found

    async def _under_other_keys(self, held: frozenset[bytes], expected: int) -> set[str]:
        """Ids of well-formed records sealed under keys not held: a SCAN of plain fields
        that stops once it found as many as the counts say there are."""
        found: set[str] = set()
        batch: list[str] = []
        async for key in self._conn_keys():
            batch.append(self.keys.connection_id(key))
            if len(batch) >= CHUNK:
                found |= await self._sealed_elsewhere(batch, held)
                batch = []
                if len(found) >= expected:
                    return found
        return found | await self._sealed_elsewhere(batch, held)

    async def _sealed_elsewhere(self, ids: list[str], held: frozenset[bytes]) -> set[str]:
        found = await self._plain(ids, "rt", "status")
        return {
            cid
            for cid, (sealed, status) in zip(ids, found, strict=True)
            if sealed is not None
            and len(sealed) >= SEALED_MIN
            and sealed[:1] == VERSION
            and sealed[1:5] not in held
            and (status or b"active").decode() in KNOWN
        }

    async def processes(self, now: float, overdue_after: float) -> Processes:
        """The due backlog, heartbeats, the beat lease and the last sweep, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(self.keys.due, "-inf", now)
            pipe.zcount(self.keys.due, "-inf", now - overdue_after)
            pipe.zcard(self.keys.due)
            pipe.zrange(self.keys.due, 0, 0, withscores=True)
            pipe.hgetall(self.keys.heartbeat)
            pipe.pttl(self.keys.beat)
            pipe.hget(self.keys.metrics, LAST_SWEEP)
            due, overdue, scheduled, first, beats, ttl_ms, sweep = await pipe.execute()
        return Processes(
            Backlog(int(due), int(overdue), int(scheduled), float(first[0][1]) if first else None),
            {node.decode(): float(at) for node, at in beats.items()},
            Beat(ttl_ms > 0, ttl_ms / 1000 if ttl_ms > 0 else None),
            float(sweep) if sweep is not None else None,
        )

    async def integrations(self) -> list[IntegrationFacts]:
        """Each integration's plain facts (its secret is not read)."""
        members: set[bytes] = await self.redis.smembers(self.keys.integrations)  # type: ignore[assignment]
        names = sorted(m.decode() for m in members)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self.keys.integration(name), ["provider", "status", "introspection"])
            found = await pipe.execute()
        return [
            IntegrationFacts(name, provider.decode(), (status or b"active").decode(), intro != b"0")
            for name, (provider, status, intro) in zip(names, found, strict=True)
            if provider is not None
        ]

    def _conn_keys(self) -> AsyncIterator[bytes]:
        return self.redis.scan_iter(match=self.keys.conn_pattern, count=CHUNK)

    async def _plain(self, ids: list[str], *fields: str) -> list[list[bytes | None]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hmget(self.keys.conn(cid), list(fields))
            found: list[list[bytes | None]] = await pipe.execute()
        return found


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    return (ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK))
