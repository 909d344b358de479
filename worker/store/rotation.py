"""Key rotation: re-encrypt every stored secret under the first configured key.

Put the new key first in TOKENWORKER_ENCRYPTION_KEYS, keep the old ones after it, run
`tokenworker keys rotate`, then drop the old keys. Rotation is resumable and idempotent: it walks
the store with SCAN (its cursor saved in Redis), skips values already sealed under the first
key, and saves each connection with compare-and-set: a worker writing at the same time wins
(a check that found the token fresh writes only its times, leaving the tokens sealed as they
were), and rotation reads the record again and saves it again. A record that keeps changing
for five attempts is reported as skipped (rotate again before dropping the old key). Its saves leave
`refresh_started_at` alone: a worker may have marked a refresh in flight after rotation read
the record (the mark does not change the version), and erasing that mark would let the next
attempt resend a token the lost answer may have consumed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from worker.errors import ConflictError, StoreError
from worker.store.connections import KEEP_SCHEDULE, Store


@dataclass
class RotationReport:
    rotated: int = 0
    current: int = 0
    unreadable: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # kept changing: still under an old key

    def as_dict(self) -> dict[str, object]:
        return {
            "rotated": self.rotated,
            "current": self.current,
            "unreadable": self.unreadable,
            "skipped": self.skipped,
        }


async def _rotate_integrations(store: Store, report: RotationReport) -> None:
    for integration in await store.list_integrations():
        raw = await store.redis.hget(store.keys.integration(integration.name), "secret")
        if isinstance(raw, bytes) and store.cipher.is_current(raw):
            report.current += 1
            continue
        await store.save_integration(integration)
        report.rotated += 1


async def _rotate_connection(store: Store, connection_id: str, report: RotationReport) -> None:
    key = store.keys.conn(connection_id)
    sealed = await store.redis.hmget(key, ["rt", "at"])
    if all(not isinstance(v, bytes) or store.cipher.is_current(v) for v in sealed):
        report.current += 1
        return
    for _ in range(5):
        try:
            conn = await store.get_connection(connection_id)
        except StoreError as error:  # a key nobody holds, or an incomplete record
            report.unreadable.append(f"{connection_id}: {error}")
            return
        if conn is None:
            return
        try:
            await store.save_connection(conn, KEEP_SCHEDULE, mark=False)
        except ConflictError:
            continue
        report.rotated += 1
        return
    report.skipped.append(f"{connection_id}: kept changing while rotating; rotate again")


async def rotate(
    store: Store, progress: Callable[[int], None] | None = None, batch: int = 500
) -> RotationReport:
    """Re-encrypt everything; resumes from the saved cursor after an interruption."""
    report = RotationReport()
    await _rotate_integrations(store, report)
    saved = await store.redis.get(store.keys.rotation)
    cursor = int(saved) if saved else 0
    seen = 0
    while True:
        cursor, keys = await store.redis.scan(cursor, match=store.keys.conn_pattern, count=batch)
        for key in keys:
            await _rotate_connection(store, store.keys.connection_id(key), report)
        seen += len(keys)
        if progress is not None:
            progress(seen)
        if cursor == 0:
            await store.redis.delete(store.keys.rotation)
            return report
        await store.redis.set(store.keys.rotation, str(cursor))
