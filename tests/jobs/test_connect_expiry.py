"""Abandoned connect sessions end without anyone asking: the beat-scheduled sweep records
them `expired` and emits `connection.connect_failed`, with a real worker and a real beat."""

from __future__ import annotations

import time

import pytest
import redis

from config.celery import BEAT_SCHEDULER
from tests.conftest import Emu
from tests.helpers import connect, events_of
from tests.processes import Proc, celery_env, wait_ready, wait_until, with_runtime
from worker.dev.embedded import EmbeddedRedis
from worker.engine.runtime import Runtime
from worker.service.connect import sessions_of
from worker.store.keys import Keys


@pytest.mark.integration
def test_an_abandoned_session_is_expired_and_reported_by_the_sweep(
    redis_server: EmbeddedRedis, emu: Emu
) -> None:
    env = celery_env(redis_server, broker_db=9, TOKENWORKER_SWEEP_INTERVAL="1")

    async def abandoned(rt: Runtime) -> tuple[str, str]:
        await connect(rt, emu)  # the integration "acme"
        sessions = sessions_of(rt)
        # Created 11 minutes ago with the default 10-minute TTL: the customer never came back.
        old = await sessions.create("acme", "cust-9", None, "v" * 43, time.time() - 660, 600)
        live = await sessions.create("acme", "cust-10", None, "v" * 43, time.time(), 600)
        return old.id, live.id

    old, live = with_runtime(env, abandoned)
    keys = Keys(env["TOKENWORKER_KEY_PREFIX"])
    store = redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"])
    worker = Proc.worker(env, "expiry@%h")
    beat = Proc.celery(env, "beat", "-S", BEAT_SCHEDULER, "--loglevel", "INFO")
    try:
        wait_ready(env, worker)

        def status(session_id: str) -> bytes | None:
            found: bytes | None = store.hget(keys.connect_session(session_id), "status")
            return found

        # Nobody reads the session: only the sweep can have recorded this.
        wait_until(lambda: status(old) == b"expired", 30, "the sweep to expire the session")
        failed = [
            e for e in with_runtime(env, events_of) if e["event"] == "connection.connect_failed"
        ]
        assert [(e["connection_id"], e["error"], e["session_id"]) for e in failed] == [
            ("cust-9", "session_expired", old)
        ]
        assert status(live) == b"pending"
        assert not store.zscore(keys.connect_pending, old)
    finally:
        beat.close()
        worker.close()
        store.close()
