"""HA beat: two real beat processes on celery-redbeat, one schedules, the other takes over."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from config.settings import Settings
from tests.processes import Proc, celery_env, wait_for
from worker.beat import SCHEDULER, redbeat_config
from worker.embedded import EmbeddedRedis
from worker.keys import Keys
from worker.opsconfig import OpsSettings

LOCK_TIMEOUT = 4  # seconds; production uses 25 (TOKENWORKER_BEAT_LOCK_TIMEOUT)


def test_the_lock_outlives_several_ticks_and_lives_under_the_prefix() -> None:
    """The loop interval is a fifth of the lock timeout; every redbeat key is under our prefix."""
    settings = Settings(key_prefix="acme:")
    config = redbeat_config(settings, OpsSettings())
    assert config["beat_scheduler"] == SCHEDULER
    assert config["redbeat_lock_timeout"] == 25
    assert config["beat_max_loop_interval"] == 5
    assert config["redbeat_key_prefix"].startswith("acme:")
    assert config["redbeat_lock_key"] == Keys("acme:").beat
    assert config["redbeat_redis_url"] == settings.redis_url
    assert OpsSettings(beat_lock_timeout=4).beat_loop_interval == 1


def _sends(proc: Proc) -> int:
    return proc.log().count("Sending due task sweep")


def _beat(env: dict[str, str]) -> Proc:
    return Proc(env, "beat", "-S", SCHEDULER, "--loglevel", "INFO")


@pytest.mark.integration
def test_a_standby_beat_waits_then_takes_over_from_a_killed_leader(
    redis_server: EmbeddedRedis,
) -> None:
    """While the leader lives the standby sends nothing; after kill -9 it sends sweeps within
    the lock timeout plus one loop interval."""
    env = celery_env(
        redis_server,
        broker_db=6,
        TOKENWORKER_BEAT_LOCK_TIMEOUT=str(LOCK_TIMEOUT),
        TOKENWORKER_SWEEP_INTERVAL="1",
    )
    broker = redis.Redis.from_url(env["TOKENWORKER_BROKER_URL"])
    lock = Keys(env["TOKENWORKER_KEY_PREFIX"]).beat
    leader = _beat(env)
    standby: Proc | None = None
    try:
        wait_for(lambda: _sends(leader) >= 1, 20, "the first beat to send a sweep")
        standby = _beat(env)
        wait_for(lambda: "beat: Starting" in standby.log(), 20, "the second beat to start")
        before = _sends(leader)
        wait_for(lambda: _sends(leader) >= before + 3, 10, "the leader to keep scheduling")
        assert _sends(standby) == 0
        assert "Acquired lock" not in standby.log()
        published = int(broker.llen("sweep"))  # nobody consumes: every sweep sent is there
        assert _sends(leader) - 1 <= published <= _sends(leader)

        leader.signal(signal.SIGKILL)
        leader.process.wait(10)
        killed = time.monotonic()
        wait_for(lambda: _sends(standby) >= 1, LOCK_TIMEOUT + 10, "the standby to take over")
        failover = time.monotonic() - killed
        assert failover <= LOCK_TIMEOUT + 2 * OpsSettings(LOCK_TIMEOUT).beat_loop_interval + 1
        assert redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"]).exists(lock)
        assert standby.stop() == 0
        assert not redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"]).exists(lock)
    finally:
        leader.close()
        if standby is not None:
            standby.close()
        broker.close()
