"""What one worker process keeps between tasks: its event loop and its Runtime.

Each process (a prefork child) keeps one event loop and one Runtime (Redis pool, HTTP
keep-alive pools) for its whole life, created lazily on its first task, after fork: neither a
loop nor a socket may cross a fork. `worker.jobs.signals` closes the Runtime when it exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from config.celery import app
from config.settings import Settings
from worker.engine.runtime import Runtime
from worker.telemetry.webhooks import forwarder

T = TypeVar("T")
WEBHOOK_TASK = "tokenworker.deliver_webhook"
DRAIN_TIMEOUT = 10.0  # seconds for cancelled leftovers to unwind (their finally blocks)
log = structlog.get_logger("tokenworker.tasks")


@dataclass
class Process:
    loop: asyncio.AbstractEventLoop | None = None
    runtime: Runtime | None = None


CURRENT = Process()


def settings() -> Settings:
    """The settings the Celery app was configured with (read once, at its start)."""
    value: Settings = app.conf.tokenworker_settings
    return value


def _loop() -> asyncio.AbstractEventLoop:
    loop = CURRENT.loop
    if loop is None or loop.is_closed():
        try:
            import uvloop  # noqa: PLC0415

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        CURRENT.loop = loop
    return loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` in this process's loop; nothing it started outlives it. When it raises
    (or Celery interrupts it), whatever it left pending is cancelled and awaited here: a check
    suspended until the next task would resume long after its lease ran out."""
    loop = _loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        _drain(loop)


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    leftover = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if not leftover:
        return
    names = sorted({task.get_coro().__qualname__ for task in leftover})  # type: ignore[union-attr]
    for task in leftover:
        task.cancel()
    _, pending = loop.run_until_complete(asyncio.wait(leftover, timeout=DRAIN_TIMEOUT))
    log.warning(
        "loop.leftovers_cancelled", count=len(leftover), pending=len(pending), names=names[:5]
    )


def runtime() -> Runtime:
    if CURRENT.runtime is None:
        CURRENT.runtime = run(_open_runtime())
    return CURRENT.runtime


async def _open_runtime() -> Runtime:
    return Runtime.open(settings(), forward=forwarder(settings(), _enqueue_webhook))


def _enqueue_webhook(event: dict[str, Any]) -> object:
    # By name: the delivery task is defined in `worker.jobs.tasks`, which imports this module.
    return app.tasks[WEBHOOK_TASK].delay(event)


def close_runtime() -> None:
    current, CURRENT.runtime = CURRENT.runtime, None
    if current is not None:
        run(current.close())
