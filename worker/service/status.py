"""`tokenworker status`: the fleet at a glance, from the fleet read model (no decryption).

Its cost does not grow with the number of connections: counts are kept by the store, the
backlog, heartbeats, beat lease and last sweep are one pipelined read. The first run on a
store written before counts existed backfills them once (worker.store.counting).

`unreadable` counts the records this process could not read, as far as can be told without
decrypting: no sealed refresh token, an unknown status, or a refresh token sealed under a key
not in TOKENWORKER_ENCRYPTION_KEYS. Each is named (to `unreadable`, and the first SAMPLE in
`unreadable_records`). A ciphertext altered under a key we hold still counts as readable here;
`connections show`, `export` and the next check find it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.domain.models import ConnectionStatus, Integration
from worker.engine import events
from worker.engine.runtime import Runtime
from worker.errors import StoreError
from worker.service.health import current
from worker.store.counting import Progress
from worker.store.crypto import HeaderCheck
from worker.store.fleet import Fleet, Processes

SAMPLE = 100  # unreadable records listed by `status --json`; all are counted
STATUSES = [s.value for s in ConnectionStatus]
Unreadable = Callable[[str, StoreError], None]


@dataclass(frozen=True)
class FleetStatus:
    at: float
    by_integration: dict[tuple[str, str], int]  # readable connections by (integration, status)
    unreadable: int
    unreadable_records: list[tuple[str, StoreError]]  # the first SAMPLE of them
    processes: Processes
    integrations: list[Integration]
    recent_failures: list[dict[str, Any]]

    def by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for (_, status), count in self.by_integration.items():
            counts[status] += count
        return counts

    def connections_of(self, integration: str) -> dict[str, int]:
        found = {s: self.by_integration.get((integration, s), 0) for s in STATUSES}
        return {s: n for s, n in found.items() if n}

    def as_dict(self) -> dict[str, Any]:
        backlog = self.processes.backlog
        due = backlog.due_now > 0
        beats = current(self.processes.heartbeats, self.at)
        return {
            "connections": sum(self.by_integration.values()),
            "unreadable": self.unreadable,
            "unreadable_records": [
                {"id": cid, "problem": str(error)} for cid, error in self.unreadable_records
            ],
            "by_status": self.by_status(),
            "due_now": backlog.due_now,
            "scheduled": backlog.scheduled,
            "oldest_due_at": backlog.oldest_due_at if due else None,
            "overdue_seconds": round(backlog.oldest_age(self.at), 1),
            "next_due_at": backlog.oldest_due_at,
            "overdue": backlog.overdue,
            "integrations": [
                {**i.public(), "connections": self.connections_of(i.name)}
                for i in self.integrations
            ],
            "recent_failures": self.recent_failures,
            "workers": [
                {"worker": node, "last_consumed_at": at, "age_seconds": round(self.at - at, 1)}
                for node, at in sorted(beats.items(), key=lambda item: -item[1])
            ],
            "beat": {
                "leader": self.processes.beat.leader,
                "lock_expires_in": self.processes.beat.expires_in,
            },
            "last_sweep_at": self.processes.last_sweep_at,
            "at": self.at,
        }


async def status(
    rt: Runtime, unreadable: Unreadable | None = None, progress: Progress | None = None
) -> FleetStatus:
    """The fleet now. Each unreadable record is passed to `unreadable` and counted, never
    allowed to hide the rest; `progress` hears how many records a first-time backfill
    of the counts has counted."""
    now = time.time()
    fleet = Fleet(rt.redis, rt.store.keys)
    counts = await fleet.counts(progress)
    check = HeaderCheck(rt.store.cipher.key_ids)
    held = frozenset(k.hex() for k in check.held)
    bad = await fleet.unreadable(counts, check) if counts.unreadable(held) else []
    if unreadable is not None:
        for cid, error in bad:
            unreadable(cid, error)
    recent = await events.read_events(rt.redis, rt.store.keys, limit=200)
    return FleetStatus(
        at=now,
        by_integration=dict(counts.readable(held)),
        unreadable=counts.unreadable(held),
        unreadable_records=bad[:SAMPLE],
        processes=await fleet.processes(now, rt.settings.sweep_interval),
        integrations=await rt.store.list_integrations(),
        recent_failures=[e for _, e in recent if e.get("event") in events.ALERTS][-10:],
    )
