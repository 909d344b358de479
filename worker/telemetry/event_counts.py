"""Counting events for the exporter: tails the event stream from where it stood at start.

Failures are counted by class (transient, permanent, configuration, integrity), Salesforce's
error code and stage; refreshes by reason and rotation; every event by name. Counts live in
this process (a restart starts them at zero, which Prometheus reads as a counter reset). Error
codes come from outside, so their number is capped: past MAX_ERROR_CODES they read "other".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from redis.asyncio import Redis

from worker.engine import events
from worker.store.keys import Keys

FAILURE_CLASSES = {
    events.TOKEN_REFRESH_FAILED: "transient",
    events.REAUTH_REQUIRED: "permanent",
    events.INTEGRATION_MISCONFIGURED: "configuration",
    events.SIGNATURE_INVALID: "integrity",
}
MAX_ERROR_CODES = 64  # distinct `error` label values; more are reported as "other"
_LABEL_RE = re.compile(r"[^a-z0-9_.]+")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class EventCounts:
    """Counts of events appended to the stream after this object was created."""

    def __init__(self, keys: Keys, batch: int = 5000) -> None:
        self.keys = keys
        self.batch = batch
        self.cursor: str | None = None
        self.events: Counter[str] = Counter()
        self.failures: Counter[tuple[str, str, str]] = Counter()
        self.refreshes: Counter[tuple[str, str]] = Counter()
        self._codes: set[str] = set()

    async def update(self, client: Redis, max_batches: int = 40) -> None:
        if self.cursor is None:
            newest: Any = await client.xrevrange(self.keys.events, count=1)
            self.cursor = _text(newest[0][0]) if newest else "0-0"
            return
        for _ in range(max_batches):
            after = f"({self.cursor}"
            rows: Any = await client.xrange(self.keys.events, min=after, count=self.batch)
            for row_id, data in rows:
                self.cursor = _text(row_id)
                self._count(data.get(b"data", b"{}"))
            if len(rows) < self.batch:
                return

    def _count(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        name = str(event.get("event", "unknown"))
        self.events[name] += 1
        if name in FAILURE_CLASSES:
            stage = str(event.get("stage") or "refresh")
            self.failures[(FAILURE_CLASSES[name], self._code(event.get("error")), stage)] += 1
        elif name == events.TOKEN_REFRESHED:
            rotated = "true" if event.get("rotated") else "false"
            self.refreshes[(str(event.get("reason") or "unknown"), rotated)] += 1

    def _code(self, error: object) -> str:
        code = _LABEL_RE.sub("_", str(error or "unknown").lower())[:48]
        if code not in self._codes and len(self._codes) >= MAX_ERROR_CODES:
            return "other"
        self._codes.add(code)
        return code
