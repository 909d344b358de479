"""A sweep that hits TOKENWORKER_SWEEP_LIMIT sweeps again at once, behind its batches, and the
broker never holds much more than one sweep of batches: a real Celery worker on real Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from celery import Celery

from tests.conftest import Emu
from tests.helpers import connect
from tests.processes import Proc, celery_env, wait_ready, wait_until, with_runtime, worker_args
from worker.dev.embedded import EmbeddedRedis
from worker.store.keys import Keys

pytestmark = pytest.mark.integration
LIMIT, BATCH, BACKLOG = 4, 2, 20
SETTINGS = {
    "TOKENWORKER_SWEEP_LIMIT": str(LIMIT),
    "TOKENWORKER_BATCH_SIZE": str(BATCH),
    "TOKENWORKER_SWEEP_INTERVAL": "600",  # no beat here; only the sweeps sent below
}


def _backlog(env: dict[str, str], emu: Emu) -> tuple[redis.Redis, Keys]:
    """BACKLOG imported connections, all due now (as after an outage)."""
    name = f"chain-{uuid.uuid4().hex[:6]}"
    with_runtime(env, lambda rt: connect(rt, emu, count=BACKLOG, lifetime=3600, name=name))
    store = redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"])
    return store, Keys(env["TOKENWORKER_KEY_PREFIX"])


def _due(store: redis.Redis, keys: Keys) -> int:
    """Connections due or claimed: a claim pushes the score 20 minutes ahead (twice the sweep
    interval), a check to 55 minutes ahead (the hour-long token's expiry minus the margin)."""
    return int(store.zcount(keys.due, "-inf", time.time() + 2000))


def _sweep(env: dict[str, str]) -> None:
    app = Celery(broker=env["TOKENWORKER_BROKER_URL"])
    try:
        app.send_task("tokenworker.sweep", args=[False], queue="sweep")
    finally:
        app.close()


def test_a_full_sweep_sweeps_again_until_the_backlog_is_checked(
    redis_server: EmbeddedRedis, emu: Emu
) -> None:
    """One sweep, five times the limit due: every connection is checked, by sweeps that the
    full ones sent (without them the rest waits for beat, ten minutes here)."""
    env = celery_env(redis_server, broker_db=7, **SETTINGS)
    worker = Proc.worker(env, f"chain-{uuid.uuid4().hex[:6]}@%h")
    try:
        wait_ready(env, worker)
        store, keys = _backlog(env, emu)
        assert _due(store, keys) == BACKLOG
        _sweep(env)
        wait_until(lambda: _due(store, keys) == 0, 60, "the whole backlog to be checked")
        # The last full sweep's successor finds nothing due and ends the chain.
        wait_until(lambda: '"full": false' in worker.log(), 30, "a sweep that was not full")
        assert worker.log().count('"sweep.done"') == BACKLOG // LIMIT + 1, worker.tail()
        store.close()
    finally:
        worker.close()


def test_the_broker_holds_at_most_one_sweep_of_batches(
    redis_server: EmbeddedRedis, emu: Emu
) -> None:
    """With nothing consuming the refresh queue, a full sweep leaves its batches and the next
    sweep there; another sweep then claims nothing: the queue has no room."""
    env = celery_env(redis_server, broker_db=8, **SETTINGS)
    node = f"sweeps-{uuid.uuid4().hex[:6]}@%h"
    worker = Proc.celery(env, *worker_args(node, concurrency=1, queues="sweep"))
    broker = redis.Redis.from_url(env["TOKENWORKER_BROKER_URL"])
    try:
        wait_ready(env, worker)
        store, keys = _backlog(env, emu)
        _sweep(env)
        batches_and_next = LIMIT // BATCH + 1
        wait_until(
            lambda: broker.llen("refresh") == batches_and_next, 30, "one sweep's batches queued"
        )
        _sweep(env)
        wait_until(lambda: worker.log().count('"sweep.done"') == 2, 30, "the second sweep")
        assert broker.llen("refresh") == batches_and_next
        assert _due(store, keys) == BACKLOG  # claimed ones count too: nothing was checked
        assert int(store.zcount(keys.due, "-inf", time.time())) == BACKLOG - LIMIT
        store.close()
    finally:
        broker.close()
        worker.close()
