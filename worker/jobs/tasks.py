"""Celery tasks: thin wrappers over `worker.engine.sweep` and `worker.engine.refresher`.

Arguments are ids only (never tokens). Every task is safe to run twice: the sweep claims ids
atomically, each check takes a per-connection lease and saves with compare-and-set. Transient
Salesforce failures are not Celery retries: they reschedule the connection in the due index
(so no ETA message can outlive the broker's visibility timeout). Only infrastructure failures
(the store unreachable) retry the task itself, with backoff capped by TOKENWORKER_RETRY_MAX.

Importing this module registers the tasks, the task time limits and (through
`worker.jobs.signals`) the signal handlers; it reads no setting until Celery configures the app.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from kombu.exceptions import OperationalError as BrokerUnreachable

from config.celery import app
from worker.engine.limits import BATCH_BUDGET, hard_time_limit, soft_time_limit
from worker.engine.sweep import room, sweep
from worker.errors import TokenworkerError
from worker.jobs import signals  # noqa: F401  (registers the signal handlers)
from worker.jobs.process import WEBHOOK_TASK, run, runtime, settings
from worker.service import connect
from worker.service.health import PING_TASK
from worker.store.clients import STORE_DOWN

log = structlog.get_logger("tokenworker.tasks")
# A failover's demoted master (ReadOnlyError) included; BrokerUnreachable: kombu's word for
# the broker's Redis being away (the sweep reads the refresh queue's depth).
_INFRA_ERRORS = (*STORE_DOWN, BrokerUnreachable)
MAX_RETRIES = 10
EXPIRE_PER_SWEEP = 1_000  # abandoned connect sessions ended per sweep; the rest next time
REFRESH_QUEUE = "refresh"  # config.celery routes check_batch here (Redis: one list)


def _time_limits() -> dict[str, float]:
    """No limit may interrupt a check before its answer is saved (`worker.engine.limits`)."""
    return {
        "task_soft_time_limit": soft_time_limit(settings()),
        "task_time_limit": hard_time_limit(settings()),
    }


app.add_defaults(_time_limits)  # a promise: evaluated when Celery configures the app


@contextmanager
def _retried_on_outage(task: Task) -> Iterator[None]:
    """Retry `task` when the store is unreachable: exponential backoff with full jitter, at
    most TOKENWORKER_RETRY_MAX (Celery's `retry_backoff`, with the cap read when a retry
    happens rather than when this module is imported)."""
    try:
        yield
    except _INFRA_ERRORS as error:
        cap = int(settings().retry_max)
        countdown = get_exponential_backoff_interval(
            factor=1, retries=task.request.retries, maximum=cap, full_jitter=True
        )
        raise task.retry(exc=error, countdown=countdown) from None


@app.task(name="tokenworker.sweep", bind=True, ignore_result=False, max_retries=MAX_RETRIES)
def sweep_task(self: Task, scheduled: bool = True) -> dict[str, object]:
    """Claim the connections due before the next sweep and enqueue one check_batch per chunk,
    each to start when its first connection is due (`worker.engine.sweep.paced`); then end
    the connect sessions past their TTL (a customer left on Salesforce's own error page never
    comes back, and the host app may never ask: each ends `expired` with
    `connection.connect_failed`).

    A sweep that claimed all it was allowed sends the next one at once, into the refresh
    queue behind its own batches: it runs when the pool has reached them, so a backlog keeps
    the pool busy instead of waiting for beat, and the broker never holds much more than one
    sweep's batches (`worker.engine.sweep.room`)."""

    def dispatch(ids: list[str], start_at: float) -> None:
        wait = start_at - time.time()
        check_batch.apply_async((ids,), queue="refresh", countdown=wait if wait > 0 else None)

    with _retried_on_outage(self):
        store = runtime().store
        allowed = room(settings(), _queued_batches())
        result = run(
            sweep(store, settings(), time.time(), dispatch, window_guard=scheduled, limit=allowed)
        )
        if result.full:
            sweep_task.apply_async((False,), queue=REFRESH_QUEUE, ignore_result=True)
        expired = _expire_sessions()
    done = {**result.as_dict(), "connect_sessions_expired": expired}
    log.info("sweep.done", allowed=allowed, **done)
    return done


def _expire_sessions() -> int:
    """End the connect sessions past their TTL; a failure of this step (other than the store
    being away, which retries the whole sweep) is logged and never fails the sweep itself."""
    try:
        return run(connect.expire_sessions(runtime(), EXPIRE_PER_SWEEP))
    except _INFRA_ERRORS:
        raise
    except TokenworkerError as error:
        log.error("sweep.expire_sessions_failed", error=type(error).__name__)
        return 0


def _queued_batches() -> int:
    """Messages waiting in the broker's refresh queue (check batches, mostly)."""
    with app.connection_for_read() as connection:
        return int(connection.default_channel.client.llen(REFRESH_QUEUE))


@app.task(name="tokenworker.check_batch", bind=True, ignore_result=True, max_retries=MAX_RETRIES)
def check_batch(self: Task, connection_ids: list[str]) -> dict[str, int]:
    """Check a chunk of connections with bounded concurrency inside this process."""
    with _retried_on_outage(self):
        results = run(runtime().refresher.check_many(connection_ids, budget=BATCH_BUDGET))
    counts = Counter(result.outcome.value for result in results)
    log.info("batch.done", size=len(connection_ids), **counts)
    return dict(counts)


@app.task(
    name="tokenworker.check_connection", bind=True, ignore_result=False, max_retries=MAX_RETRIES
)
def check_connection(self: Task, connection_id: str) -> dict[str, object]:
    """Introspect one connection now and refresh it if needed, whatever its status."""
    with _retried_on_outage(self):
        return run(runtime().refresher.check(connection_id, explicit=True)).as_dict()


@app.task(
    name="tokenworker.refresh_connection", bind=True, ignore_result=False, max_retries=MAX_RETRIES
)
def refresh_connection(self: Task, connection_id: str) -> dict[str, object]:
    """Refresh one connection now, whatever its status (an operator's explicit action)."""
    with _retried_on_outage(self):
        return run(runtime().refresher.check(connection_id, force=True)).as_dict()


@app.task(name=PING_TASK, ignore_result=True)
def ping() -> None:
    """A no-op a worker sends itself: finishing it records the worker's heartbeat."""


@app.task(name=WEBHOOK_TASK, bind=True, max_retries=8, ignore_result=True)
def deliver_webhook(self: Task, event: dict[str, Any]) -> None:
    """POST one event to TOKENWORKER_WEBHOOK_URL, signed; retried with backoff on failure."""
    from worker.telemetry.webhooks import WebhookError, deliver  # noqa: PLC0415

    try:
        run(deliver(settings(), event))
    except WebhookError as error:
        countdown = min(settings().retry_max, 2.0**self.request.retries * 5)
        raise self.retry(exc=error, countdown=countdown) from None
