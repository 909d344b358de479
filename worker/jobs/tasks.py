"""Celery tasks: thin wrappers over `worker.engine.sweep` and `worker.engine.refresher`.

Arguments are ids only (never tokens). Every task is safe to run twice: the sweep claims ids
atomically, each check takes a per-connection lease and saves with compare-and-set. Transient
Salesforce failures are not Celery retries: they reschedule the connection in the due index
(so no ETA message can outlive the broker's visibility timeout). Only infrastructure failures
(the store unreachable) retry the task itself, with backoff capped by TOKENWORKER_RETRY_MAX.

Each worker process keeps one event loop and one Runtime (Redis pool, HTTP keep-alive pools)
for its whole life, created lazily after fork.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog
from celery import Task
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config import logging as tw_logging
from config.celery import BATCH_BUDGET, app
from config.settings import Settings
from worker.engine.runtime import Runtime
from worker.engine.sweep import sweep
from worker.service import health
from worker.telemetry import metrics

T = TypeVar("T")
log = structlog.get_logger("tokenworker.tasks")
_INFRA_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
DRAIN_TIMEOUT = 10.0  # seconds for cancelled leftovers to unwind (their finally blocks)
_state: dict[str, Any] = {}


def settings() -> Settings:
    value: Settings = app.conf.tokenworker_settings
    return value


def _loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = _state.get("loop")
    if loop is None or loop.is_closed():
        try:
            import uvloop  # noqa: PLC0415

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        _state["loop"] = loop
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
    current: Runtime | None = _state.get("runtime")
    if current is None:
        current = run(_open_runtime())
        _state["runtime"] = current
    return current


async def _open_runtime() -> Runtime:
    from worker.telemetry.webhooks import forwarder  # noqa: PLC0415

    return Runtime.open(settings(), forward=forwarder(settings(), deliver_webhook.delay))


@worker_init.connect
def _check_store(**_: Any) -> None:
    """Refuse to start, or warn loudly, when the store can lose or evict tokens."""
    # worker_init comes before Celery's setup_logging: configure ours now, so this warning
    # is JSON (and redacted) like every other line.
    tw_logging.configure(settings().log_format)
    import redis as sync_redis  # noqa: PLC0415

    from worker.service.health import persistence_problems  # noqa: PLC0415

    client = sync_redis.Redis.from_url(settings().redis_url, socket_connect_timeout=5)
    try:
        problems = persistence_problems(client)
    except sync_redis.RedisError as error:
        problems = [f"store unreachable at start: {type(error).__name__}"]
    finally:
        client.close()
    for problem in problems:
        log.warning("store.unsafe", problem=problem)
    if problems and settings().require_persistence:
        raise SystemExit("tokenworker: refusing to start: " + "; ".join(problems))


@worker_process_init.connect
def _instrument(**_: Any) -> None:
    metrics.instrument(runtime().client, metrics.RECORDER.tally)


task_postrun.connect(metrics.on_task_postrun)
worker_ready.connect(health.on_worker_ready)
worker_shutdown.connect(health.on_worker_shutdown)


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    current: Runtime | None = _state.pop("runtime", None)
    if current is not None:
        run(current.close())


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Task | None = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


_RETRYING = {
    "bind": True,
    "autoretry_for": _INFRA_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": int(settings().retry_max),
    "retry_jitter": True,
    "max_retries": 10,
}


@app.task(name="tokenworker.sweep", ignore_result=False, **_RETRYING)
def sweep_task(self: Task, scheduled: bool = True) -> dict[str, object]:
    """Claim due connections and enqueue one check_batch per chunk."""
    rt = runtime()

    def dispatch(ids: list[str]) -> None:
        check_batch.apply_async((ids,), queue="refresh")

    result = run(sweep(rt.store, settings(), time.time(), dispatch, window_guard=scheduled))
    log.info("sweep.done", **result.as_dict())
    return result.as_dict()


@app.task(name="tokenworker.check_batch", ignore_result=True, **_RETRYING)
def check_batch(self: Task, connection_ids: list[str]) -> dict[str, int]:
    """Check a chunk of connections with bounded concurrency inside this process."""
    results = run(runtime().refresher.check_many(connection_ids, budget=BATCH_BUDGET))
    counts = Counter(result.outcome.value for result in results)
    log.info("batch.done", size=len(connection_ids), **counts)
    return dict(counts)


@app.task(name="tokenworker.check_connection", ignore_result=False, **_RETRYING)
def check_connection(self: Task, connection_id: str) -> dict[str, object]:
    """Introspect one connection now and refresh it if needed, whatever its status."""
    return run(runtime().refresher.check(connection_id, explicit=True)).as_dict()


@app.task(name="tokenworker.refresh_connection", ignore_result=False, **_RETRYING)
def refresh_connection(self: Task, connection_id: str) -> dict[str, object]:
    """Refresh one connection now, whatever its status (an operator's explicit action)."""
    return run(runtime().refresher.check(connection_id, force=True)).as_dict()


@app.task(name=health.PING_TASK, ignore_result=True)
def ping() -> None:
    """A no-op a worker sends itself: finishing it records the worker's heartbeat."""


@app.task(
    name="tokenworker.deliver_webhook",
    bind=True,
    max_retries=8,
    ignore_result=True,
)
def deliver_webhook(self: Task, event: dict[str, Any]) -> None:
    """POST one event to TOKENWORKER_WEBHOOK_URL, signed; retried with backoff on failure."""
    from worker.telemetry.webhooks import WebhookError, deliver  # noqa: PLC0415

    try:
        run(deliver(settings(), event))
    except WebhookError as error:
        countdown = min(settings().retry_max, 2.0**self.request.retries * 5)
        raise self.retry(exc=error, countdown=countdown) from None
