"""Pages of connection ids in a chosen order, read from sorted sets: no SCAN per page view.

Each order walks one index from the page's cursor (worker.store.counting keeps them):

- by id: `fleet:by-integration` (`integration|id`, score 0) by lexical range: one
  integration's range, or every integration's merged (the integrations that hold records, from
  the counts: a few ranges); an id prefix narrows the ranges. A
  non-active status (failing, reauth_required) walks `fleet:by-status` (`status|id`) or, with
  an integration, `fleet:by-status-integration` (`status|integration|id`) the same way: a
  status's page never reads the whole status.
- by next check: the due schedule (`due`, id -> next check), by rank from the cursor.
- by last error time: `fleet:by-error` (id -> its last error's time), by rank.

A filter the walked index does not serve (an active status on any index; a status, an
integration or a prefix on a score index) is tested on two plain fields of each candidate, and a
page view examines at most WINDOW candidates: when a rare filter leaves the page short (the
failing ones in next-check order), the page says so and its cursor continues where the walk
stopped. So a page view costs O(log N + WINDOW) whatever the store's size or the status's.

Cursors are the last id shown (by id) or "<score>,<id>" (by a score); ids contain no comma.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum

from redis.asyncio import Redis

from worker.errors import InputError
from worker.store.counting import PARKED, Counting
from worker.store.keys import Keys, check_id

WINDOW = 2000  # candidates one page view may examine beyond those it shows
CHUNK = 250  # candidates read per round trip
TOP = b"\x7f"  # above every character an id may hold: "prefix" + TOP bounds a prefix range


class Sort(str, Enum):
    ID = "id"
    NEXT_CHECK = "next_check"  #: soonest first
    NEXT_CHECK_DESC = "-next_check"  #: latest first
    ERROR = "-last_error"  #: most recent error first
    ERROR_ASC = "last_error"  #: oldest error first

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")


@dataclass(frozen=True)
class Query:
    status: str | None = None
    integration: str | None = None
    prefix: str | None = None
    sort: Sort = Sort.ID
    cursor: str | None = None


@dataclass(frozen=True)
class IdPage:
    ids: list[str]
    next_cursor: str | None  # where the next page starts, when more may follow
    short: bool = False  # the window ended before the page filled (a rare filter)


Anchor = tuple[float, str]
Skip = Callable[[str, float], bool]  # rows at the start of a ranked walk still before the anchor


def parse_cursor(sort: Sort, cursor: str | None) -> str | Anchor | None:
    """A cursor of `sort`'s form, or InputError."""
    if cursor is None:
        return None
    if sort is Sort.ID:
        return check_id("cursor", cursor)
    score, comma, cid = cursor.partition(",")
    try:
        return float(score), check_id("cursor", cid) if comma else ""
    except ValueError:
        raise InputError(f"cursor: expected <score>,<id> for sort {sort.value}") from None


def _cursor(sort: Sort, cid: str, score: float | None) -> str:
    return cid if sort is Sort.ID else f"{score!r},{cid}"


class FleetIndex:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.counting = Counting(redis, keys)

    async def ready(self, budget: float) -> bool:
        """The indexes are complete (a first backfill may take up to `budget` s here)."""
        return await self.counting.complete(budget=budget)

    async def page(self, query: Query, limit: int) -> IdPage:
        anchor = parse_cursor(query.sort, query.cursor)
        found: list[tuple[str, float | None]] = []
        examined = 0
        last: tuple[str, float | None] | None = None
        async for chunk in self._walk(query, anchor):
            keep = await self._matching(query, [cid for cid, _ in chunk])
            for (cid, score), ok in zip(chunk, keep, strict=True):
                examined += 1
                last = (cid, score)
                if ok:
                    found.append((cid, score))
                if len(found) == limit or examined >= WINDOW + limit:
                    return IdPage([c for c, _ in found], _cursor(query.sort, *last),
                                  short=len(found) < limit)  # fmt: skip
        return IdPage([c for c, _ in found], None)

    # -- walking an index ------------------------------------------------------------------

    def _walk(
        self, query: Query, anchor: str | Anchor | None
    ) -> AsyncIterator[list[tuple[str, float | None]]]:
        if query.sort is Sort.ID:
            return self._lex(query, anchor if isinstance(anchor, str) else None)
        key = self.keys.due if query.sort in (Sort.NEXT_CHECK, Sort.NEXT_CHECK_DESC) else (
            self.keys.fleet_by_error)  # fmt: skip
        return self._ranked(
            key, query.sort.descending, anchor if isinstance(anchor, tuple) else None
        )

    async def _lex(
        self, query: Query, after: str | None
    ) -> AsyncIterator[list[tuple[str, float | None]]]:
        """Chunks of ids in order from one index's ranges, one per head (several only for
        every id: one per integration), merged: each range gives its CHUNK first ids after
        the cursor, and the CHUNK first of their union are all ids up to its last."""
        key, heads = await self._lex_ranges(query)
        prefix = (query.prefix or "").encode()
        start = after.encode() if after is not None and after.encode() >= prefix else None
        while True:
            async with self.redis.pipeline(transaction=False) as pipe:
                for head in heads:
                    low = b"[" + head + prefix if start is None else b"(" + head + start
                    pipe.zrangebylex(key, low, b"(" + head + prefix + TOP, 0, CHUNK)
                found: list[list[bytes]] = await pipe.execute()
            ids = sorted(m[len(h) :] for h, members in zip(heads, found, strict=True)
                         for m in members)[:CHUNK]  # fmt: skip
            if not ids:
                return
            yield [(m.decode(), None) for m in ids]
            if len(ids) < CHUNK:
                return
            start = ids[-1]

    async def _lex_ranges(self, query: Query) -> tuple[str, list[bytes]]:
        """The lexical index serving the query's status and integration, and the heads before
        the id of the ranges to merge."""
        if query.status in PARKED and query.integration is not None:
            return (
                self.keys.fleet_by_status_integration,
                [f"{query.status}|{query.integration}|".encode()],
            )
        if query.status in PARKED:
            return self.keys.fleet_by_status, [f"{query.status}|".encode()]
        if query.integration is not None:
            return self.keys.fleet_by_integration, [f"{query.integration}|".encode()]
        return self.keys.fleet_by_integration, [o + b"|" for o in await self.counting.owners()]

    async def _ranked(
        self, key: str, descending: bool, anchor: Anchor | None
    ) -> AsyncIterator[list[tuple[str, float | None]]]:
        rank, skip = await self._start(key, descending, anchor)
        while True:
            end = rank + CHUNK - 1
            found: list[tuple[bytes, float]] = await self.redis.zrange(  # type: ignore[assignment]
                key, rank, end, desc=descending, withscores=True
            )
            if not found:
                return
            rank += len(found)
            chunk = [(m.decode(), float(s)) for m, s in found]
            yield [(c, s) for c, s in chunk if not skip(c, s)]

    async def _start(self, key: str, descending: bool, anchor: Anchor | None) -> tuple[int, Skip]:
        """The rank the page starts at, and which rows there are before the anchor still (ties
        with the anchor's score when the anchor itself moved)."""
        if anchor is None:
            return 0, _none
        score, cid = anchor
        if cid:
            now = await self.redis.zscore(key, cid)
            if now is not None and float(now) == score:  # the anchor is where it was
                ranked = self.redis.zrevrank if descending else self.redis.zrank
                rank = await ranked(key, cid)
                if isinstance(rank, int):
                    return rank + 1, _none
        if descending:
            before = await self.redis.zcount(key, f"({score!r}", "+inf")
            return int(before), lambda c, s: s == score and c >= cid
        before = await self.redis.zcount(key, "-inf", f"({score!r}")
        return int(before), lambda c, s: s == score and c <= cid

    async def _matching(self, query: Query, ids: list[str]) -> list[bool]:
        """Whether each candidate passes the filters its index does not serve."""
        lexical = query.sort is Sort.ID
        want_integration = None if lexical else query.integration
        prefix = None if lexical else query.prefix
        status = None if lexical and query.status in PARKED else query.status
        if status is None and want_integration is None:
            return [prefix is None or cid.startswith(prefix) for cid in ids]
        if status is not None and status in PARKED and want_integration is None and ids:
            # One membership test per candidate in the status's set: far cheaper than reading
            # each record, and O(chunk), not O(status).
            member = await self.redis.smismember(self.keys.fleet_ids(status), ids)
            return [bool(m) and (prefix is None or cid.startswith(prefix))
                    for cid, m in zip(ids, member, strict=True)]  # fmt: skip
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hmget(self.keys.conn(cid), ["integration", "status"])
            fields: list[list[bytes | None]] = await pipe.execute()
        return [
            owner is not None
            and (prefix is None or cid.startswith(prefix))
            and (want_integration is None or owner.decode() == want_integration)
            and (status is None or (state or b"active").decode() == status)
            for cid, (owner, state) in zip(ids, fields, strict=True)
        ]


def _none(cid: str, score: float) -> bool:
    return False
