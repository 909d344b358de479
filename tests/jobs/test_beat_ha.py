"""HA beat: the lease (one owner token per key), the scheduler's tick through store and broker
failures, and two real beat processes, one of which schedules while the other takes over."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
import redis
from celery import Celery

from config.celery import BEAT_SCHEDULER, beat_config
from config.settings import Settings
from tests.processes import Proc, celery_env, wait_until
from worker.dev.embedded import EmbeddedRedis, free_port
from worker.jobs.beat import STANDBY_POLL, Lease, LeaseScheduler
from worker.store.keys import Keys

LOCK_TIMEOUT = 4  # seconds; production uses 25 (TOKENWORKER_BEAT_LOCK_TIMEOUT)


def test_the_lease_outlives_several_renewals_and_lives_under_the_prefix() -> None:
    """The loop interval is a fifth of the lock timeout; the scheduler is ours, named by the
    path `config.celery` gives Celery (config imports nothing from worker)."""
    settings = Settings()
    config = beat_config(settings)
    assert config["beat_scheduler"] == BEAT_SCHEDULER
    assert f"{LeaseScheduler.__module__}.{LeaseScheduler.__qualname__}" == BEAT_SCHEDULER
    assert settings.beat_lock_timeout == 25
    assert config["beat_max_loop_interval"] == 5
    assert Settings(beat_lock_timeout=4).beat_loop_interval == 1
    scheduler = _scheduler(Settings(key_prefix="tw-test:"))
    assert scheduler.lease.key == "tw-test:beat:lock"
    assert scheduler.lease.ttl_ms == 25_000


@pytest.mark.integration
class TestLease:
    def test_one_holder_renews_and_only_the_holder_releases(
        self, redis_server: EmbeddedRedis, prefix: str
    ) -> None:
        client = redis.Redis.from_url(redis_server.url)
        key = Keys(prefix).beat
        first, second = Lease(client, key, 4), Lease(client, key, 4)
        assert first.hold() is True
        assert second.hold() is False
        client.pexpire(key, 50)  # almost gone: a renewal restores the full lifetime
        assert first.hold() is True
        assert 3000 < client.pttl(key) <= 4000
        second.release()  # not its lease: nothing happens
        assert client.get(key) == first.token.encode()
        first.release()
        assert not client.exists(key)
        assert second.hold() is True

    def test_a_holder_whose_lease_expired_is_not_the_holder_any_more(
        self, redis_server: EmbeddedRedis, prefix: str
    ) -> None:
        client = redis.Redis.from_url(redis_server.url)
        key = Keys(prefix).beat
        first, second = Lease(client, key, 4), Lease(client, key, 4)
        assert first.hold()
        client.delete(key)  # expired while the holder was away
        assert second.hold()
        assert first.hold() is False


def _scheduler(settings: Settings) -> LeaseScheduler:
    """The scheduler of a bare app (config.celery needs the encryption keys) with our sweep."""
    app = Celery("beat-test")
    app.conf.update(beat_config(settings), timezone="UTC", enable_utc=True)
    app.conf.tokenworker_settings = settings
    return LeaseScheduler(app)


class _Sends:
    """Stands in for the broker: records the entries sent, or fails while `down`."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    def __call__(self, entry: Any, **_: Any) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.sent.append(entry.name)


@pytest.mark.integration
class TestTick:
    """LeaseScheduler.tick against a real store, with the send itself replaced."""

    def _pair(self, url: str, prefix: str, sweep: float = 0.05) -> tuple[LeaseScheduler, _Sends]:
        settings = Settings(
            redis_url=url, key_prefix=prefix, sweep_interval=sweep, beat_lock_timeout=LOCK_TIMEOUT
        )
        scheduler = _scheduler(settings)
        sends = _Sends()
        scheduler.apply_async = sends  # type: ignore[method-assign]
        scheduler.producer = None  # no broker connection in these tests
        return scheduler, sends

    def _run(self, scheduler: LeaseScheduler, seconds: float) -> list[float]:
        delays, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            delay = scheduler.tick()
            delays.append(delay)
            time.sleep(min(max(delay, 0.0), 0.06))  # as Celery's loop sleeps, but shorter
        return delays

    def test_only_the_holder_sends(self, redis_server: EmbeddedRedis, prefix: str) -> None:
        leader, sent_by_leader = self._pair(redis_server.url, prefix)
        standby, sent_by_standby = self._pair(redis_server.url, prefix)
        self._run(leader, 0.2)
        delays = self._run(standby, 0.2)
        assert sent_by_leader.sent and not sent_by_standby.sent
        assert set(delays) == {STANDBY_POLL}
        leader.close()  # a clean stop releases: the standby leads at its next tick
        self._run(standby, 0.2)
        assert sent_by_standby.sent

    def test_an_unreachable_store_stops_sending_and_never_raises(self, prefix: str) -> None:
        scheduler, sends = self._pair(f"redis://127.0.0.1:{free_port()}/0", prefix)
        delays = [scheduler.tick() for _ in range(8)]
        assert sends.sent == []
        assert delays == sorted(delays) and delays[0] > 0  # a backoff, capped ...
        assert max(delays) == Settings(beat_lock_timeout=LOCK_TIMEOUT).beat_loop_interval

    def test_a_failed_send_stays_due_and_goes_out_when_the_broker_returns(
        self, redis_server: EmbeddedRedis, prefix: str
    ) -> None:
        scheduler, sends = self._pair(redis_server.url, prefix, sweep=3600)
        for entry in scheduler.schedule.values():  # due now, not in an hour
            entry.last_run_at = entry.default_now().replace(year=2000)
        sends.down = True
        delays = [scheduler.tick() for _ in range(3)]
        assert sends.sent == [] and all(d > 0 for d in delays)  # backing off, not spinning
        sends.down = False
        scheduler.tick()
        assert sends.sent == ["sweep"]
        self._run(scheduler, 0.2)
        assert sends.sent == ["sweep"]  # then the hour-long interval again


def _sends(proc: Proc) -> int:
    return proc.log().count("Sending due task sweep")


def _beat(env: dict[str, str]) -> Proc:
    return Proc.celery(env, "beat", "-S", BEAT_SCHEDULER, "--loglevel", "INFO")


@pytest.mark.integration
def test_a_standby_beat_waits_then_takes_over_from_a_killed_leader(
    redis_server: EmbeddedRedis,
) -> None:
    """While the leader lives the standby sends nothing; after kill -9 it sends sweeps within
    the lock timeout plus its one-second poll (+ 1 s slack)."""
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
        wait_until(lambda: _sends(leader) >= 1, 20, "the first beat to send a sweep")
        standby = _beat(env)
        wait_until(lambda: "beat: Starting" in standby.log(), 20, "the second beat to start")
        before = _sends(leader)
        wait_until(lambda: _sends(leader) >= before + 3, 10, "the leader to keep scheduling")
        assert _sends(standby) == 0
        assert "beat.leading" not in standby.log()
        # Nobody consumes, so every sweep sent is there; one is logged once the broker has it.
        logged = _sends(leader)
        published = int(broker.llen("sweep"))
        assert logged <= published <= _sends(leader) + 1

        leader.signal(signal.SIGKILL)
        leader.popen.wait(10)
        killed = time.monotonic()
        wait_until(lambda: _sends(standby) >= 1, LOCK_TIMEOUT + 10, "the standby to take over")
        failover = time.monotonic() - killed
        assert failover <= LOCK_TIMEOUT + STANDBY_POLL + 1
        assert redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"]).exists(lock)
        assert standby.stop() == 0
        assert not redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"]).exists(lock)
    finally:
        leader.close()
        if standby is not None:
            standby.close()
        broker.close()


@pytest.mark.integration
def test_beat_sends_sweeps_without_waiting_for_their_results(redis_server: EmbeddedRedis) -> None:
    """Beat never reads a sweep's result, so it sends with ignore_result and never touches the
    result backend: Celery's Redis backend would otherwise SUBSCRIBE (then UNSUBSCRIBE) on a
    pub/sub connection inside every send, and after a broker restart reconnect that connection
    inline, with up to 20 retries a second apart, while the beat's tick waits (a beat that
    sent no sweep for 27 s after a broker restart in CI)."""
    env = celery_env(redis_server, broker_db=6, TOKENWORKER_SWEEP_INTERVAL="1")
    broker = redis.Redis.from_url(env["TOKENWORKER_BROKER_URL"])
    subscribes_before = _subscribes(broker)
    beat = _beat(env)
    try:
        wait_until(lambda: _sends(beat) >= 3, 20, "beat to send three sweeps")
        messages = [json.loads(raw) for raw in broker.lrange("sweep", 0, -1)]
        assert len(messages) >= 3
        assert all(m["headers"]["ignore_result"] is True for m in messages)
        assert _subscribes(broker) == subscribes_before
    finally:
        beat.close()
        broker.close()


def _subscribes(client: redis.Redis) -> int:
    """SUBSCRIBE commands the server has run (server-wide; this suite runs one test at a time)."""
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_subscribe", {}).get("calls", 0))
