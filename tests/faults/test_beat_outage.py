"""Scenario 5, the scheduler through a store outage (issue 11, D3): two beats share one Redis as
store and broker (the default deployment), and that Redis restarts, for 3 s and for 20 s (five
times the 4 s lock timeout). Both beats must still run afterwards, exactly one must schedule,
and sweeps must resume within one sweep interval of Redis answering again. The metrics
exporter must outlive the same outage and report the store down, then up.

Timing (tests/faults/harness.py): sweep every 2 s, TOKENWORKER_BEAT_LOCK_TIMEOUT=4, so the
leader renews and a standby polls at least every second (`Settings.beat_loop_interval`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from config.settings import Settings
from tests.faults.harness import (
    SWEEP_INTERVAL,
    Fleet,
    Ledger,
    Proc,
    process_env,
    wait_until,
)
from worker.dev.embedded import EmbeddedRedis, free_port
from worker.store.keys import Keys

pytestmark = pytest.mark.integration

LOCK_TIMEOUT = 4  # TOKENWORKER_BEAT_LOCK_TIMEOUT in process_env
# A beat retries an unreachable store at least this often (it backs off up to this).
RETRY_CAP = Settings(beat_lock_timeout=LOCK_TIMEOUT).beat_loop_interval
# Slack for two loaded cores: process wake-up, the broker reconnect, the log write.
SLACK = 1.5
SENT = "Sending due task sweep"


def _sends(beat: Proc) -> int:
    return beat.log().count(SENT)


def _outage(store: EmbeddedRedis, seconds: float) -> float:
    """Stop the store (SIGTERM, as a restart does), keep it down, start it on the same port
    and data directory; returns the monotonic time it answered again."""
    store.stop(remove=False)
    time.sleep(seconds)  # the outage itself: nothing to wait for
    store.start()
    return time.monotonic()


def _two_beats(
    fleet: Fleet, ledger: Ledger, redis_factory: Callable[[], EmbeddedRedis], prefix: str
) -> tuple[EmbeddedRedis, dict[str, str], list[Proc]]:
    store = redis_factory()
    env = process_env(store.url, f"redis://127.0.0.1:{store.port}/1", prefix)
    ledger.prefixes.add(prefix)
    beats = [fleet.beat(env), fleet.beat(env)]
    wait_until(lambda: sum(map(_sends, beats)) >= 1, 30, "one beat sends a sweep")
    return store, env, beats


def _only_one_schedules(beats: list[Proc], store: EmbeddedRedis, prefix: str) -> None:
    """Over three sweep intervals exactly one beat sends, and the lock names one holder."""
    before = [_sends(b) for b in beats]
    time.sleep(3 * SWEEP_INTERVAL)  # an observation window: counting what happens in it
    grew = [_sends(b) - n for b, n in zip(beats, before, strict=True)]
    assert sorted(grew)[0] == 0 and sorted(grew)[1] >= 2, f"sends per beat: {grew}"
    client = redis.Redis(port=store.port)
    try:
        assert client.pttl(Keys(prefix).beat) > 0
    finally:
        client.close()


@pytest.mark.parametrize("outage", [3.0, 20.0], ids=["3s", "20s-longer-than-the-lock"])
def test_two_beats_survive_a_store_restart_and_sweeps_resume_within_an_interval(
    fleet: Fleet,
    ledger: Ledger,
    redis_factory: Callable[[], EmbeddedRedis],
    prefix: str,
    outage: float,
) -> None:
    """Both beats live through the outage, sweeps resume within one sweep interval (+ the
    retry cap and SLACK) of Redis answering, and afterwards exactly one beat schedules."""
    store, _, beats = _two_beats(fleet, ledger, redis_factory, prefix)
    before = [_sends(b) for b in beats]
    answered = _outage(store, outage)

    def resumed() -> bool:
        dead = [b.tail() for b in beats if b.popen.poll() is not None]
        assert not dead, "a beat exited:\n" + "\n----\n".join(dead)
        return any(_sends(b) > n for b, n in zip(beats, before, strict=True))

    bound = SWEEP_INTERVAL + RETRY_CAP + SLACK
    wait_until(resumed, bound, f"a sweep sent within {bound:g}s of Redis answering", 0.05)
    resume = time.monotonic() - answered
    print(f"\nresume after a {outage:g}s outage: {resume:.2f}s", file=sys.stderr)
    _only_one_schedules(beats, store, prefix)
    assert [b.popen.poll() for b in beats] == [None, None], [b.tail() for b in beats]


def test_the_standby_takes_over_within_the_lock_timeout_after_kill_9(
    fleet: Fleet, ledger: Ledger, redis_factory: Callable[[], EmbeddedRedis], prefix: str
) -> None:
    """kill -9 of the leader: the standby sends within LOCK_TIMEOUT + its 1 s poll + SLACK."""
    _, _, beats = _two_beats(fleet, ledger, redis_factory, prefix)
    leader, standby = sorted(beats, key=_sends, reverse=True)
    assert _sends(standby) == 0
    leader.kill()
    killed = time.monotonic()
    bound = LOCK_TIMEOUT + 1 + SLACK
    wait_until(lambda: _sends(standby) >= 1, bound, "the standby sends a sweep", 0.05)
    print(f"\ntakeover after kill -9: {time.monotonic() - killed:.2f}s", file=sys.stderr)
    assert standby.popen.poll() is None


def _store_up(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("tokenworker_store_up "):
            return float(line.split()[1])
    return None


def test_the_metrics_exporter_outlives_a_store_outage(
    fleet: Fleet, redis_factory: Callable[[], EmbeddedRedis], prefix: str, ledger: Ledger
) -> None:
    """`tokenworker metrics` answers store_up 1, then 0 while the store is down (10 s, two
    of its 5 s socket timeouts), then 1 again, and is still running."""
    store = redis_factory()
    env = process_env(store.url, f"redis://127.0.0.1:{store.port}/1", prefix)
    ledger.prefixes.add(prefix)
    port = free_port()
    argv = [sys.executable, "-m", "worker.cli", "metrics", "--port", str(port)]
    argv += ["--addr", "127.0.0.1"]
    exporter = fleet.start("metrics", argv, env)
    wait_until(lambda: _store_up(port) == 1.0, 30, "the exporter reports the store up")
    store.stop(remove=False)
    try:
        wait_until(lambda: _store_up(port) == 0.0, 15, "the exporter reports the store down")
        time.sleep(10)  # the outage goes on: the exporter must keep answering through it
        assert _store_up(port) == 0.0
    finally:
        store.start()
    wait_until(lambda: _store_up(port) == 1.0, 15, "the exporter reports the store up again")
    assert exporter.popen.poll() is None, exporter.tail()
