"""Selecting connections for ops commands without decrypting them all.

Ids come from the fleet read model (worker.store.fleet: the kept id set of a non-active
status, else a SCAN reading two plain fields), and only the page being shown is fetched and
decrypted, so `connections list --limit 50 --offset 1000` costs one pass over the ids, not
1050 decryptions, and `--status failing` costs O(failing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.domain.models import ConnectionStatus
from worker.engine.runtime import Runtime
from worker.errors import InputError, StoreError
from worker.store.fleet import Fleet


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total: int  # connections matching the filters, on every page
    offset: int
    # (id, what is wrong) of records on this page that could not be read: left out
    unreadable: list[tuple[str, StoreError]] = field(default_factory=list)


def check_status(status: str | None) -> None:
    allowed = [s.value for s in ConnectionStatus]
    if status is not None and status not in allowed:
        raise InputError(f"--status {status!r}: expected one of {', '.join(allowed)}")


async def matching_ids(
    rt: Runtime, status: str | None = None, integration: str | None = None
) -> list[str]:
    """Ids of the connections matching both filters (None matches all), sorted."""
    check_status(status)
    return await Fleet(rt.redis, rt.store.keys).ids(status, integration)


async def page_connections(
    rt: Runtime, status: str | None, integration: str | None, offset: int, limit: int | None
) -> Page:
    """One page of `connections list` rows, sorted by id."""
    if offset < 0 or (limit is not None and limit < 1):
        raise InputError("--offset must be 0 or more and --limit 1 or more")
    ids = await matching_ids(rt, status, integration)
    chosen = ids[offset : offset + limit] if limit else ids[offset:]
    conns = await rt.store.read_connections(chosen)
    async with rt.redis.pipeline(transaction=False) as pipe:
        for cid in chosen:
            pipe.zscore(rt.store.keys.due, cid)
        scores = await pipe.execute()
    rows = []
    unreadable: list[tuple[str, StoreError]] = []
    for cid, conn, score in zip(chosen, conns, scores, strict=True):
        if isinstance(conn, StoreError):
            unreadable.append((cid, conn))
            continue
        if conn is None:
            continue
        row = conn.public()
        row["next_check_at"] = float(score) if score is not None else None
        rows.append(row)
    return Page(rows, len(ids), offset, unreadable)
