"""The event log: the newest events, and following new ones as they come."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from worker.engine.events import read_events
from worker.engine.runtime import Runtime

FOLLOW_BATCH = 100  # events read per wait while following
FOLLOW_WAIT_MS = 2000  # how long one read waits for a new event before asking again


async def recent(rt: Runtime, limit: int) -> list[tuple[str, dict[str, Any]]]:
    """(stream id, event) pairs of the newest `limit` events (at least 1), oldest first."""
    return await read_events(rt.redis, rt.store.keys, limit=max(1, limit))


async def follow(rt: Runtime, after: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Every event after stream id `after`, as it arrives; never ends by itself."""
    while True:
        for row_id, event in await read_events(
            rt.redis, rt.store.keys, limit=FOLLOW_BATCH, after=after, block_ms=FOLLOW_WAIT_MS
        ):
            after = row_id
            yield row_id, event
