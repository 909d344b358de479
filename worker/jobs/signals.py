"""Every Celery signal tokenworker handles, in one place (`worker.jobs.tasks` imports it).

Main process: `worker_init` checks the store's durability (and may refuse to start),
`worker_ready` forgets long-gone workers and starts the self-ping, `worker_shutdown` stops it
and removes this node's heartbeat. Each child: `worker_process_init` instruments the Salesforce
client, tunes the garbage collector and lowers the child's CPU priority (WORKER_NICE),
`task_prerun`/`task_postrun` bind the task to log lines and record metrics and the heartbeat,
`worker_process_shutdown` closes the Runtime.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog
from celery import Celery, Task
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from config import logging as tw_logging
from worker.engine.runtime import tune_gc
from worker.jobs import process
from worker.service import health
from worker.store import clients
from worker.store.keys import Keys
from worker.telemetry import metrics

log = structlog.get_logger("tokenworker.tasks")
_PINGERS: list[health.Pinger] = []  # this main process's self-ping (one; a list to pop)


@worker_init.connect
def _check_store(**_: Any) -> None:
    """Refuse to start, or warn loudly, when the store can lose or evict tokens."""
    settings = process.settings()
    # worker_init comes before Celery's setup_logging: configure ours now, so this warning
    # is JSON (and redacted) like every other line.
    tw_logging.configure(settings.log_format)
    client = clients.sync_client(settings.store_endpoint, socket_connect_timeout=5)
    try:
        problems = health.persistence_problems(client)
    except redis.RedisError as error:
        problems = [f"store unreachable at start: {type(error).__name__}"]
    finally:
        client.close()
    for problem in problems:
        log.warning("store.unsafe", problem=problem)
    if problems and settings.require_persistence:
        raise SystemExit("tokenworker: refusing to start: " + "; ".join(problems))


@worker_process_init.connect
def _instrument(**_: Any) -> None:
    metrics.instrument(process.runtime().client, metrics.RECORDER.tally)
    tune_gc()
    nice = process.settings().worker_nice
    if nice:
        os.nice(nice)


@task_postrun.connect
def _record(
    task: Task | None = None, state: str | None = None, retval: Any = None, **_: Any
) -> None:
    """In the child that ran the task: tally what it reports, record the heartbeat."""
    if task is None:
        return
    settings = process.settings()
    now = time.time()
    metrics.record_task(metrics.RECORDER.tally, task.name, state, retval, now)
    node = getattr(task.request, "hostname", None)
    metrics.RECORDER.flush(settings.store_endpoint, Keys(settings.key_prefix), node, now)


@worker_ready.connect
def _start_pinging(sender: Any = None, **_: Any) -> None:
    """Main process, once it consumes: forget long-gone workers, start the self-ping."""
    settings = process.settings()
    health.forget_silent_workers(settings.store_endpoint, Keys(settings.key_prefix), time.time())
    send = _ping_sender(sender.app, sender.hostname, settings.ping_interval)
    _PINGERS.append(health.Pinger(send, settings.ping_interval).start())


def _ping_sender(app: Celery, node: str, interval: float) -> Callable[[], object]:
    queue = f"{node}.dq2"  # Celery's worker_direct queue of this node

    def send() -> object:
        # Its own short-lived connection: the worker's pooled ones belong to the consumer's
        # event loop thread. No result (the backend would subscribe for it from here).
        with app.connection_for_write() as connection:
            return app.send_task(
                health.PING_TASK,
                queue=queue,
                expires=max(2 * interval, 10.0),
                connection=connection,
                retry=False,
                ignore_result=True,
            )

    return send


@worker_shutdown.connect
def _stop_pinging(sender: Any = None, **_: Any) -> None:
    """Sent once the warm shutdown has finished every task: stop pinging and remove this
    node's heartbeat, so a replaced worker leaves no stale entry."""
    while _PINGERS:
        _PINGERS.pop().stop()
    if sender is None:
        return
    settings = process.settings()
    health.remove_heartbeat(settings.store_endpoint, Keys(settings.key_prefix), sender.hostname)


@worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    process.close_runtime()


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Task | None = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
