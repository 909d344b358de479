"""The sweep: claim what is due, in chunks, and hand each chunk to the pool.

Cost is O(due), never O(all): it reads the due index from its low end only. Each chunk is
claimed atomically (its scores pushed to `now + claim_for`), so two overlapping sweeps, or two
beats firing at once, never hand out one id twice; an id whose batch is lost (worker killed)
comes due again when its claim runs out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from worker.store.connections import Store


class SweepSettings(Protocol):
    """What a sweep reads (`config.settings.Settings` has it; the engine never reads the
    environment itself)."""

    @property
    def lease_ttl(self) -> float: ...

    @property
    def sweep_interval(self) -> float: ...

    @property
    def sweep_limit(self) -> int: ...

    @property
    def batch_size(self) -> int: ...


@dataclass(frozen=True)
class SweepResult:
    claimed: int
    batches: int
    skipped: bool = False  # another sweep already ran in this window

    def as_dict(self) -> dict[str, object]:
        return {"claimed": self.claimed, "batches": self.batches, "skipped": self.skipped}


def claim_window(settings: SweepSettings) -> float:
    """How long claimed ids stay out of reach before they come due again."""
    return max(2 * settings.lease_ttl, 2 * settings.sweep_interval)


async def sweep(
    store: Store,
    settings: SweepSettings,
    now: float,
    dispatch: Callable[[list[str]], None],
    *,
    window_guard: bool = True,
) -> SweepResult:
    """Claim up to `sweep_limit` due ids, `batch_size` at a time, and dispatch each chunk."""
    if window_guard and not await _first_in_window(store, settings):
        return SweepResult(0, 0, skipped=True)
    claimed = batches = 0
    claim_for = claim_window(settings)
    while claimed < settings.sweep_limit:
        size = min(settings.batch_size, settings.sweep_limit - claimed)
        ids = await store.claim_due(now, size, claim_for)
        if not ids:
            break
        dispatch(ids)
        claimed += len(ids)
        batches += 1
        if len(ids) < size:
            break
    return SweepResult(claimed, batches)


async def _first_in_window(store: Store, settings: SweepSettings) -> bool:
    """False when another scheduled sweep ran less than half an interval ago (two beats)."""
    ttl_ms = max(1, int(settings.sweep_interval * 500))
    return bool(await store.redis.set(store.keys.sweep_guard, b"1", nx=True, px=ttl_ms))
