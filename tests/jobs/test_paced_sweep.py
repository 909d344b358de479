"""A scheduled sweep hands the pool what comes due before the next sweep, and each connection
is checked at its due time, not at the sweep: a real Celery worker on real Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from celery import Celery

from tests.conftest import Emu
from tests.helpers import connect
from tests.processes import Proc, celery_env, wait_ready, wait_until, with_runtime
from worker.dev.embedded import EmbeddedRedis
from worker.engine.runtime import Runtime
from worker.store.keys import Keys

pytestmark = pytest.mark.integration
AHEAD = (4.0, 8.0)  # seconds after the sweep that the two connections come due


def _checked_at(env: dict[str, str], ids: list[str]) -> list[float | None]:
    async def read(rt: Runtime) -> list[float | None]:
        found = await rt.store.get_connections(ids)
        return [conn.last_check_at if conn else None for conn in found]

    return with_runtime(env, read)


def test_a_swept_connection_is_checked_when_it_comes_due_not_at_the_sweep(
    redis_server: EmbeddedRedis, emu: Emu
) -> None:
    env = celery_env(redis_server, broker_db=10, TOKENWORKER_SWEEP_INTERVAL="60")
    worker = Proc.worker(env, f"paced-{uuid.uuid4().hex[:6]}@%h")
    store = redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"])
    app = Celery(broker=env["TOKENWORKER_BROKER_URL"])
    try:
        wait_ready(env, worker)
        made = with_runtime(env, lambda rt: connect(rt, emu, count=2, lifetime=3600))
        ids = [cid for cid, _ in made]
        keys = Keys(env["TOKENWORKER_KEY_PREFIX"])
        swept = time.time()
        due = [swept + ahead for ahead in AHEAD]
        store.zadd(keys.due, dict(zip(ids, due, strict=True)), xx=True)
        before = _checked_at(env, ids)
        app.send_task("tokenworker.sweep", args=[False], queue="sweep")
        wait_until(lambda: '"sweep.done"' in worker.log(), 30, "the sweep", interval=0.05)
        assert '"claimed": 2' in worker.log(), worker.tail()
        time.sleep(max(0.0, due[0] - 1.0 - time.time()))
        assert _checked_at(env, ids) == before  # claimed, not checked yet: neither is due
        wait_until(lambda: _checked_at(env, ids)[0] != before[0], 30, "the first check")
        first = _checked_at(env, ids)
        assert first[1] == before[1]  # the second is not due yet
        wait_until(lambda: _checked_at(env, ids)[1] != before[1], 30, "the second check")
        checked = _checked_at(env, ids)
        for at, when in zip(checked, due, strict=True):
            assert at is not None and when <= at < when + 3.0, (checked, due)
    finally:
        app.close()
        store.close()
        worker.close()
