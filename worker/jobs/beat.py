"""HA beat: a Celery scheduler that sends the sweep only while it holds a lease in the store.

Run it with `celery -A config.celery beat -S worker.jobs.beat.LeaseScheduler` (the Procfile), on
two hosts. Each beat holds or polls one key, `<prefix>beat:lock`, whose value is the holder's
own token: it is taken with SET NX PX and renewed or released only by that token (Lua compare-
and-renew, compare-and-delete). The leader renews every `beat_loop_interval` seconds and sends
`tokenworker.sweep` every TOKENWORKER_SWEEP_INTERVAL; a standby polls every second and takes
over at most TOKENWORKER_BEAT_LOCK_TIMEOUT (+ that second) after the leader's last renewal.
A clean stop releases the key, so a standby takes over within a second.

No store or broker error ever ends a beat: a failed renewal stops sending at once (the lease
may be gone), the error is logged once per outage, the beat retries with a backoff capped at
the loop interval, and it sends as soon as it holds the lease again. Two beats could overlap
only for a send that outlasted a lease; that is harmless, because the sweep is the only entry
and is idempotent (the window guard and atomic claims in `worker.engine.sweep`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import redis
import structlog
from celery.beat import ScheduleEntry, Scheduler

from config.settings import Settings
from worker.store import clients
from worker.store.keys import Keys

STANDBY_POLL = 1.0  # seconds between a standby's attempts to take the lease
FIRST_RETRY = 0.25  # seconds before the first retry of an unreachable store or broker

log = structlog.get_logger("tokenworker.beat")

# KEYS: the lease. ARGV: our token, ttl ms. Take the lease if free, renew it if ours.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """One owner token on one key in the store Redis."""

    def __init__(self, client: redis.Redis, key: str, ttl: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        # Readable in `redis-cli GET` (which host leads); not a secret.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take or renew the lease; False when another beat holds it. Raises RedisError."""
        return bool(self._hold(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.token])


class Outage:
    """One trouble spot (store or broker): logged when it starts and ends, not per attempt."""

    def __init__(self, what: str, cap: float) -> None:
        self.what = what
        self.cap = cap
        self.failures = 0
        self.since = 0.0

    def failed(self, error: BaseException) -> float:
        """Record a failure; returns how long to wait before the next attempt."""
        if self.failures == 0:
            self.since = time.monotonic()
            problem = f"{type(error).__name__}: {error}"
            log.warning("beat.unreachable", what=self.what, problem=problem)
        self.failures += 1
        return min(self.cap, FIRST_RETRY * 2.0 ** (self.failures - 1))

    def ended(self) -> None:
        if self.failures:
            down = round(time.monotonic() - self.since, 1)
            log.info("beat.reachable", what=self.what, after_seconds=down, attempts=self.failures)
            self.failures = 0


class LeaseScheduler(Scheduler):  # type: ignore[misc]  # Celery is untyped
    """Celery's in-memory scheduler (the sweep entry of `beat_schedule`), gated by a Lease."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        settings: Settings = app.conf.tokenworker_settings
        self.renew_every = float(app.conf.beat_max_loop_interval)
        client = clients.sync_client(
            settings.store_endpoint, socket_timeout=self.renew_every, socket_connect_timeout=2
        )
        self.lease = Lease(client, Keys(settings.key_prefix).beat, settings.beat_lock_timeout)
        self.leading = False
        self.store = Outage("store", self.renew_every)
        self.broker = Outage("broker", self.renew_every)
        self._backoff: float | None = None  # set by a failed send
        super().__init__(app, *args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Renew (or try to take) the lease, then send what is due if we hold it. Never
        raises: `celery beat` exits on any exception out of tick, and a beat that exits
        schedules nothing until someone restarts it."""
        try:
            held = self.lease.hold()
        except Exception as error:
            self._lead(False)
            return self.store.failed(error)
        self.store.ended()
        self._lead(held)
        if not held:
            return STANDBY_POLL
        try:
            delay = float(super().tick(*args, **kwargs))
        except Exception as error:
            return self.broker.failed(error)
        backoff, self._backoff = self._backoff, None
        return min(delay if backoff is None else backoff, self.renew_every)

    def _lead(self, held: bool) -> None:
        if held and not self.leading:
            log.info("beat.leading", lease=self.lease.key)
        elif self.leading and not held:
            log.warning("beat.lease_lost", lease=self.lease.key)
        self.leading = held

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        """Send one due entry. A failed send leaves it due, retried after a backoff (only
        while we lead), so a sweep follows the broker's return at once; logged once per
        broker outage."""
        try:
            self.apply_async(entry, producer=self.producer, advance=False)
        except Exception as error:
            self._backoff = self.broker.failed(error)
            self.schedule[entry.name] = entry  # undo the reservation: still due
            self._heap = None  # rebuilt from the schedule on the next tick
            return
        self.broker.ended()
        # The line operators and tests count as a send: written only once the broker has it.
        log.info(f"Scheduler: Sending due task {entry.name} ({entry.task})")

    def _ensure_connected(self) -> Any:
        # Celery's default retries the broker 100 times, blocking the tick (and the lease
        # renewal) for minutes; one bounded attempt per tick keeps the loop alive.
        return self.connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0.5, interval_max=0.5
        )

    def close(self) -> None:
        """A clean stop hands the lease over at once instead of after the lock timeout."""
        if self.leading:
            try:
                self.lease.release()
            except redis.RedisError as error:
                log.warning("beat.lease_unreleased", problem=f"{type(error).__name__}: {error}")
        self.lease.client.close()
        super().close()

    @property
    def info(self) -> str:
        return f"lease {self.lease.key} ({self.lease.ttl_ms // 1000} s), token {self.lease.token}"
