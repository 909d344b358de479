"""tune_gc: a worker child or api process, once set up, keeps what startup built out of later
collections and collects its young generation less often (the figures: runtime.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker.engine.runtime import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored")
def test_startup_objects_are_frozen_and_the_young_generation_waits_longer() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_freeze_count() > 10_000  # modules, functions, settings: all of startup
    young, middle, old = gc.get_threshold()
    assert young == GC_YOUNG_THRESHOLD > 700
    assert (middle, old) == (10, 10)  # the older generations keep CPython's pace
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # cycles made later are still collected
