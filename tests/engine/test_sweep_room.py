"""worker/engine/sweep.py: how much a sweep may claim while batches wait in the broker."""

from __future__ import annotations

from dataclasses import dataclass

from worker.engine.sweep import room


@dataclass(frozen=True)
class Limits:
    lease_ttl: float = 30.0
    sweep_interval: float = 60.0
    sweep_limit: int = 50_000
    batch_size: int = 2_000


def test_an_empty_queue_leaves_the_whole_limit() -> None:
    assert room(Limits(), 0) == 50_000


def test_queued_batches_count_at_their_full_size() -> None:
    """A queued message may be a short last batch: counting it full only errs on the side of
    a smaller broker backlog."""
    assert room(Limits(), 5) == 40_000


def test_a_full_queue_leaves_nothing_never_less() -> None:
    assert room(Limits(), 25) == 0
    assert room(Limits(), 40) == 0
