"""Loaded into a test worker with `celery worker --include tests.faults.orphan_probe`: after
every task, each worker child reports the coroutines its event loop still holds. Any is an
orphan: a check of a finished (or failed) task that would resume, without its lease, when
the child runs its next task."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from celery.signals import task_postrun

MARK = "ORPHANS_PENDING"


@task_postrun.connect
def _report(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    from worker.jobs import process  # noqa: PLC0415

    loop = process.CURRENT.loop
    if loop is None or loop.is_closed():
        return
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if pending:
        names = sorted({t.get_coro().__qualname__ for t in pending})[:3]  # type: ignore[union-attr]
        sys.stderr.write(
            f"{MARK}={len(pending)} pid={os.getpid()} task={getattr(task, 'name', None)} "
            f"id={task_id} e.g. {names}\n"
        )
        sys.stderr.flush()
