"""`tokenworker status`: fleet counts, backlog, processes (moving to `worker.service.status`)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from worker.domain.models import ConnectionStatus
from worker.engine import events
from worker.engine.runtime import Runtime
from worker.errors import StoreError
from worker.service.health import current
from worker.service.transfer import Unreadable, iter_connections
from worker.telemetry.metrics import metrics_key

SAMPLE = 100  # unreadable records listed by `status --json`; all are counted


async def status(rt: Runtime, unreadable: Unreadable | None = None) -> dict[str, Any]:
    """Fleet counts. An unreadable record (a key nobody holds, an incomplete hash) is counted
    and passed to `unreadable`, never allowed to hide the rest of the fleet."""
    now = time.time()
    counts: Counter[str] = Counter()
    by_integration: dict[str, Counter[str]] = {}
    bad: list[dict[str, str]] = []
    skipped = 0

    def note(connection_id: str, error: StoreError) -> None:
        nonlocal skipped
        skipped += 1
        if len(bad) < SAMPLE:
            bad.append({"id": connection_id, "problem": str(error)})
        if unreadable is not None:
            unreadable(connection_id, error)

    async for conn in iter_connections(rt.store, unreadable=note):
        counts[conn.status.value] += 1
        by_integration.setdefault(conn.integration, Counter())[conn.status.value] += 1
    oldest = await rt.store.oldest_due()
    due_now = await rt.store.due_count(now)
    recent = await events.read_events(rt.redis, rt.store.keys, limit=200)
    failures = [e for _, e in recent if e.get("event") in events.ALERTS][-10:]
    return {
        "connections": sum(counts.values()),
        "unreadable": skipped,
        "unreadable_records": bad,
        "by_status": {s.value: counts.get(s.value, 0) for s in ConnectionStatus},
        "due_now": due_now,
        "scheduled": int(await rt.redis.zcard(rt.store.keys.due)),
        "oldest_due_at": oldest if due_now else None,
        "overdue_seconds": round(now - oldest, 1) if due_now and oldest else 0.0,
        "next_due_at": oldest,
        "overdue": await rt.store.due_count(now - rt.settings.sweep_interval),
        "integrations": [
            {**i.public(), "connections": dict(by_integration.get(i.name, {}))}
            for i in await rt.store.list_integrations()
        ],
        "recent_failures": failures,
        **await _processes(rt, now),
        "at": now,
    }


async def _processes(rt: Runtime, now: float) -> dict[str, Any]:
    """Workers by last consumption, whether a beat holds the lock, when a sweep last ran."""
    raw: dict[Any, Any] = await rt.redis.hgetall(rt.store.keys.heartbeat)
    beats = current({k.decode(): float(v) for k, v in raw.items()}, now)
    workers = [
        {"worker": node, "last_consumed_at": at, "age_seconds": round(now - at, 1)}
        for node, at in sorted(beats.items(), key=lambda item: -item[1])
    ]
    ttl_ms = await rt.redis.pttl(rt.store.keys.beat)
    last_sweep = await rt.redis.hget(metrics_key(rt.store.keys), "last_sweep_timestamp_seconds")
    return {
        "workers": workers,
        "beat": {"leader": ttl_ms > 0, "lock_expires_in": ttl_ms / 1000 if ttl_ms > 0 else None},
        "last_sweep_at": float(last_sweep) if last_sweep is not None else None,
    }
