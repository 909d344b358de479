"""Graceful shutdown: SIGTERM while Salesforce is rotating a refresh token loses nothing."""

from __future__ import annotations

import signal
import uuid

import pytest
import redis

from tests.conftest import Emu
from tests.helpers import connect
from tests.processes import Proc, celery_app, celery_env, wait_ready, wait_until, with_runtime
from worker.dev.embedded import EmbeddedRedis
from worker.store.keys import Keys

pytestmark = pytest.mark.integration


def test_sigterm_mid_refresh_keeps_the_rotated_refresh_token(
    redis_server: EmbeddedRedis, emu: Emu
) -> None:
    """A worker told to stop while a rotating refresh is in flight finishes it: the token the
    emulator holds is the stored one, the grant is alive, and the lease is released."""
    # Calls must outlast the emulator's 2 s latency, or the worker gives up on an answer
    # that rotates the token anyway (a different hazard, not shutdown's).
    env = celery_env(
        redis_server, broker_db=4, TOKENWORKER_HTTP_TIMEOUT="6", TOKENWORKER_LEASE_TTL="15"
    )
    worker = Proc.worker(env, f"stop-{uuid.uuid4().hex[:6]}@%h", concurrency=1)
    store = redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"])
    try:
        wait_ready(env, worker)
        [(cid, grant)] = with_runtime(
            env, lambda rt: connect(rt, emu, rotation=True, name=f"s-{uuid.uuid4().hex[:6]}")
        )
        emu.post("/_admin/config", {"latency_ms": 2000})
        app = celery_app(env)
        app.send_task("tokenworker.refresh_connection", args=[cid], queue="ops")
        app.close()
        wait_until(lambda: emu.token_calls(grant["grant_id"]) >= 1, 20, "the refresh to be sent")
        worker.signal(signal.SIGTERM)
        code = worker.popen.wait(40)
    finally:
        emu.post("/_admin/config", {"latency_ms": 0})
        worker.stop()
        log = worker.log()
        worker.close()
    assert code == 0, log[-3000:]
    assert "Warm shutdown" in log
    assert "'outcome': 'refreshed'" in log  # the in-flight task finished, not abandoned
    view = emu.grant(grant["grant_id"])
    stored = with_runtime(env, lambda rt: rt.store.get_connection(cid))
    assert stored is not None
    assert view["revoked"] is False
    assert view["refresh_token"] != grant["refresh_token"]  # it did rotate
    assert stored.refresh_token == view["refresh_token"]
    assert emu.token_calls(grant["grant_id"]) == 1
    assert not store.exists(Keys(env["TOKENWORKER_KEY_PREFIX"]).lease(cid))
    store.close()
