"""Checking connections now: one, a whole integration, or everything due (a sweep).

Where the checks run is a `Dispatch`: `InlineDispatch` runs them in this process over the
engine's Refresher; `worker.jobs.dispatch.CeleryDispatch` queues them for the worker pool and
optionally waits. The CLI's `--inline`/`--wait` and an API's `?wait=` choose between them;
what is checked, and what counts as success (`Outcome.ok`), is decided here once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.domain.outcomes import CheckResult, Outcome
from worker.engine.runtime import Runtime
from worker.engine.sweep import SweepResult, claim
from worker.errors import InputError
from worker.service import hotreads
from worker.service.integrations import require
from worker.service.paging import matching_ids
from worker.service.progress import OnProgress, quiet


@dataclass(frozen=True)
class Queued:
    """A task handed to the pool, not waited for."""

    task_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "queued": True}


@dataclass(frozen=True)
class Tally:
    """Outcomes of many checks by name; `queued` instead when they were queued unwaited."""

    outcomes: Counter[str] = field(default_factory=Counter)
    queued: int | None = None

    @property
    def ok(self) -> bool:
        return all(Outcome(name).ok for name in self.outcomes)


@dataclass(frozen=True)
class Swept:
    """A sweep run in this process: how many due ids it claimed and what their checks did."""

    claimed: int
    outcomes: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"claimed": self.claimed, "outcomes": self.outcomes}


@dataclass(frozen=True)
class IntegrationRefresh:
    """`refresh --integration`: how many connections matched and what their refreshes did."""

    integration: str
    connections: int
    tally: Tally

    @property
    def ok(self) -> bool:
        return self.tally.ok

    def as_dict(self) -> dict[str, Any]:
        if self.tally.queued is not None:
            return {"integration": self.integration, "queued": self.tally.queued}
        return {
            "integration": self.integration,
            "connections": self.connections,
            "outcomes": dict(self.tally.outcomes),
        }


class Dispatch(Protocol):
    async def check(self, connection_id: str, *, force: bool) -> CheckResult | Queued:
        """One check (`force`: a refresh), as an operator asks it."""

    async def check_many(
        self, ids: Sequence[str], *, force: bool, on_progress: OnProgress
    ) -> Tally:
        """Many checks; their outcomes by name."""

    async def sweep(self, on_progress: OnProgress) -> Swept | SweepResult | Queued:
        """Check everything due now."""


class InlineDispatch:
    """Runs checks in this process, over the Runtime's Refresher, `batch_size` at a time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def check(self, connection_id: str, *, force: bool) -> CheckResult:
        try:
            return await self.rt.refresher.check(connection_id, force=force, explicit=True)
        finally:
            hotreads.drop(self.rt, connection_id)

    async def check_many(
        self, ids: Sequence[str], *, force: bool, on_progress: OnProgress
    ) -> Tally:
        phase = "refreshing" if force else "checking"
        tally = Tally()
        size = self.rt.settings.batch_size
        on_progress(phase, 0, len(ids))
        for start in range(0, len(ids), size):
            batch = ids[start : start + size]
            try:
                results = await self.rt.refresher.check_many(batch, force=force)
            finally:
                for connection_id in batch:
                    hotreads.drop(self.rt, connection_id)
            tally.outcomes.update(result.outcome.value for result in results)
            on_progress(phase, start + len(results), len(ids))
        return tally

    async def sweep(self, on_progress: OnProgress) -> Swept:
        """One claim of up to `sweep_limit` due ids (due within its lookahead, pushed out of
        reach as a real sweep does), checked here."""
        settings = self.rt.settings
        due = await claim(self.rt.store, settings, time.time(), settings.sweep_limit)
        ids = [connection_id for connection_id, _ in due]
        tally = await self.check_many(ids, force=False, on_progress=on_progress)
        return Swept(len(ids), dict(tally.outcomes))


async def check(dispatch: Dispatch, connection_id: str, *, force: bool) -> CheckResult | Queued:
    """Check one connection now (`force`: refresh it whatever its token says). A NOT_FOUND
    outcome is returned, not raised: the caller shows it, then reports not found."""
    return await dispatch.check(connection_id, force=force)


async def sweep(
    dispatch: Dispatch, on_progress: OnProgress = quiet
) -> Swept | SweepResult | Queued:
    return await dispatch.sweep(on_progress)


async def refresh_integration(
    rt: Runtime,
    dispatch: Dispatch,
    name: str,
    status: str | None = None,
    on_progress: OnProgress = quiet,
) -> IntegrationRefresh:
    """Refresh every connection of integration `name` (only those in `status`, if given);
    the ids are read from plain fields, nothing is decrypted to choose them."""
    await require(rt, name)
    ids = await matching_ids(rt, status, name)
    tally = await dispatch.check_many(ids, force=True, on_progress=on_progress)
    return IntegrationRefresh(name, len(ids), tally)


def one_target(connection_id: str | None, integration: str | None, status: str | None) -> None:
    """`refresh` takes exactly one of an id and an integration; `status` only with the latter."""
    if (connection_id is None) == (integration is None):
        raise InputError("refresh: give a connection ID or --integration NAME (not both)")
    if connection_id is not None and status:
        raise InputError("--status applies to --integration only")
