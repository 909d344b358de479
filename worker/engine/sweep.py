"""The sweep: claim what is due, in chunks, and hand each chunk to the pool.

Cost is O(due), never O(all): it reads the due index from its low end only. Each chunk is
claimed atomically (its scores pushed to `now + claim_for`), so two overlapping sweeps, or two
beats firing at once, never hand out one id twice; an id whose batch is lost (worker killed)
comes due again when its claim runs out.

A sweep that claimed all it was allowed ends `full`: more may be due than one sweep takes, and
the task sweeps again as soon as the pool has reached its batches (`worker.jobs.tasks`), so a
backlog drains at the pool's pace, not at `sweep_limit` per `sweep_interval`. `room` keeps the
batches waiting in the broker under one sweep's worth, however many sweeps run.

A sweep also claims what comes due before the next one (`horizon`: an interval, at most
MAX_HORIZON) and hands it to the pool paced: ids due within `PACE_SPAN` of each other go in one
batch that starts when its first id is due (a Celery countdown), so the pool checks each
connection at its due time instead of running a whole interval's checks in one burst at the
sweep (which took both worker processes for seconds every minute and stalled the credential
reads beside them). What is already due goes at once, `batch_size` at a time. The policy still
counts a check up to `lookahead` early as due (`policy.Timing.lookahead`): a batch starts at
its first id's time, the rest of it up to `PACE_SPAN` early, and the manual sweep
(`tokenworker sweep --inline`) checks what is due within the lookahead at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from worker.domain.policy import MAX_JITTER
from worker.store.connections import Store

MAX_HORIZON = 300.0  # seconds: the longest countdown a batch gets, far under the broker's
# visibility timeout (an ETA message held longer than it is delivered again)
PACE_SPAN = 1.0  # seconds of due times one paced batch covers
# Dispatch: (ids, start_at). start_at <= now: at once; later: a countdown to that moment.
Dispatch = Callable[[list[str], float], None]

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
    """How early a check may start and still count as due: half an interval, at most
    MAX_JITTER (the manual sweep claims this far ahead and checks at once)."""
    return min(settings.sweep_interval / 2.0, MAX_JITTER)


def horizon(settings: SweepSettings) -> float:
    """How far ahead a scheduled sweep claims: up to the next sweep, at most MAX_HORIZON."""
    return min(settings.sweep_interval, MAX_HORIZON)


def claim_window(settings: SweepSettings) -> float:
    """How long claimed ids stay out of reach before they come due again."""
    return max(2 * settings.lease_ttl, 2 * settings.sweep_interval)


async def claim(
    store: Store, settings: SweepSettings, now: float, size: int, ahead: float | None = None
) -> list[tuple[str, float]]:
    """Up to `size` ids due by `now` + `ahead` (default: the lookahead), each with its due
    time, pushed out of reach for the claim window."""
    until = now + (lookahead(settings) if ahead is None else ahead)
    return await store.claim_due(until, size, claim_window(settings))


def collect(into: list[tuple[list[str], float]]) -> Dispatch:
    """A dispatch that keeps the batches and their start times (callers that check them
    themselves: the manual and benchmark sweeps, the tests)."""
    return lambda ids, start_at: into.append((ids, start_at))


def claimed_ids(batches: list[tuple[list[str], float]]) -> list[str]:
    """Every id of what `collect` kept, in order."""
    return [connection_id for ids, _ in batches for connection_id in ids]


def paced(
    due: list[tuple[str, float]], now: float, size: int, span: float = PACE_SPAN
) -> Iterator[tuple[list[str], float]]:
    """`due` (earliest first) as batches of at most `size` ids, each with its start time: what
    is due by `now` starts at once; later ids go in batches covering `span` seconds of due
    times, each starting when its first id is due."""
    ids: list[str] = []
    start = now
    for connection_id, at in due:
        if ids and (len(ids) >= size or (at > now and at - start > span)):
            yield ids, start
            ids = []
        if not ids:
            start = max(at, now)
        ids.append(connection_id)
    if ids:
        yield ids, start


async def sweep(
    store: Store,
    settings: SweepSettings,
    now: float,
    dispatch: Dispatch,
    *,
    window_guard: bool = True,
    limit: int | None = None,
) -> SweepResult:
    """Claim up to `limit` (at most `sweep_limit`) ids due by `now` + `horizon`,
    `batch_size` at a time, and dispatch them `paced`."""
    if window_guard and not await _first_in_window(store, settings):
        return SweepResult(0, 0, skipped=True)
    most = settings.sweep_limit if limit is None else min(limit, settings.sweep_limit)
    claimed = batches = 0
    while claimed < most:
        size = min(settings.batch_size, most - claimed)
        due = await claim(store, settings, now, size, horizon(settings))
        if not due:
            break
        for ids, start in paced(due, now, settings.batch_size):
            dispatch(ids, start)
            batches += 1
        claimed += len(due)
        if len(due) < size:
            break
    return SweepResult(claimed, batches, full=claimed > 0 and claimed >= most)


async def _first_in_window(store: Store, settings: SweepSettings) -> bool:
    """False when another scheduled sweep ran less than half an interval ago (two beats)."""
    ttl_ms = max(1, int(settings.sweep_interval * 500))
    return bool(await store.redis.set(store.keys.sweep_guard, b"1", nx=True, px=ttl_ms))
