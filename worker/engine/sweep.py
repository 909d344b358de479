"""The sweep: claim what is due, in chunks, and hand each chunk to the pool.

Cost is O(due), never O(all): it reads the due index from its low end only. Each chunk is
claimed atomically (its scores pushed to `now + claim_for`), so two overlapping sweeps, or two
beats firing at once, never hand out one id twice; an id whose batch is lost (worker killed)
comes due again when its claim runs out.

A sweep that claimed all it was allowed ends `full`: more may be due than one sweep takes, and
the task sweeps again as soon as the pool has reached its batches (`worker.jobs.tasks`), so a
backlog drains at the pool's pace, not at `sweep_limit` per `sweep_interval`. `room` keeps the
batches waiting in the broker under one sweep's worth, however many sweeps run.

A sweep also claims what comes due in the next `lookahead` seconds (half an interval, at most
a minute): without it an id waits up to a whole interval after its due time for the next
sweep, and a large fleet's share of a sweep queues behind the rest, so checks would start up
to an interval and more late. With it they start from half an interval early to half an
interval late. The policy counts a check that early as due (`policy.Timing.lookahead`): a
refresh is not turned into an introspection because it came a little early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from worker.domain.policy import MAX_JITTER
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
    full: bool = False  # claimed all it was allowed: more may be due

    def as_dict(self) -> dict[str, object]:
        return {
            "claimed": self.claimed,
            "batches": self.batches,
            "skipped": self.skipped,
            "full": self.full,
        }


def room(settings: SweepSettings, queued_batches: int) -> int:
    """How many ids a sweep may claim while `queued_batches` check batches wait in the broker:
    what keeps the backlog there under one `sweep_limit` (claims older than the claim window
    would come due again while still queued, and be checked twice)."""
    return max(0, settings.sweep_limit - queued_batches * settings.batch_size)


def lookahead(settings: SweepSettings) -> float:
    """How far ahead of its time a sweep claims an id: half an interval, at most MAX_JITTER."""
    return min(settings.sweep_interval / 2.0, MAX_JITTER)


def claim_window(settings: SweepSettings) -> float:
    """How long claimed ids stay out of reach before they come due again."""
    return max(2 * settings.lease_ttl, 2 * settings.sweep_interval)


async def claim(store: Store, settings: SweepSettings, now: float, size: int) -> list[str]:
    """Up to `size` ids due by `now` + `lookahead`, pushed out of reach for the claim window."""
    return await store.claim_due(now + lookahead(settings), size, claim_window(settings))


async def sweep(
    store: Store,
    settings: SweepSettings,
    now: float,
    dispatch: Callable[[list[str]], None],
    *,
    window_guard: bool = True,
    limit: int | None = None,
) -> SweepResult:
    """Claim up to `limit` (at most `sweep_limit`) ids due by `now` + `lookahead`,
    `batch_size` at a time, and dispatch each chunk."""
    if window_guard and not await _first_in_window(store, settings):
        return SweepResult(0, 0, skipped=True)
    most = settings.sweep_limit if limit is None else min(limit, settings.sweep_limit)
    claimed = batches = 0
    while claimed < most:
        size = min(settings.batch_size, most - claimed)
        ids = await claim(store, settings, now, size)
        if not ids:
            break
        dispatch(ids)
        claimed += len(ids)
        batches += 1
        if len(ids) < size:
            break
    return SweepResult(claimed, batches, full=claimed > 0 and claimed >= most)


async def _first_in_window(store: Store, settings: SweepSettings) -> bool:
    """False when another scheduled sweep ran less than half an interval ago (two beats)."""
    ttl_ms = max(1, int(settings.sweep_interval * 500))
    return bool(await store.redis.set(store.keys.sweep_guard, b"1", nx=True, px=ttl_ms))
