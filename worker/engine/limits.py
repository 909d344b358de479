"""How long the check cycle may take, and so the task time limits that must never cut it short.

The figures encode the engine's behaviour (how many calls a check makes, how long a batch
starts new checks, how long an answered refresh keeps trying to save), so they live next to
it; `worker.jobs` applies the time limits to the Celery app. With the default settings the
soft limit is 272 s and the hard limit 302 s; deploy/ waits longer than that before it kills
a worker (tests/test_deploy.py).
"""

from __future__ import annotations

from typing import Protocol

from worker.store.ratelimit import PERMIT_WAIT

# Seconds `save_refresh` keeps retrying an answered refresh through a store outage.
SAVE_WINDOW = 120.0
# Seconds after which a check_batch starts no new check and gives the rest back, due at once.
# A healthy batch of 2,000 ids takes about a second; this bounds a batch against a slow
# Salesforce, and with it the task time limits and how long a warm shutdown waits.
BATCH_BUDGET = 60.0
# The most Salesforce calls one check makes: introspect, the lost-answer introspection of the
# refresh token, the refresh, one retry after losing a concurrent refresh, and introspecting
# the new token to learn its lifetime (plus, rarely, its refresh token: see the refresher).
CALLS_PER_CHECK = 6
# Seconds between Celery's soft interrupt and its kill of the child.
HARD_AFTER_SOFT = 30.0


class Timeouts(Protocol):
    """The settings the limits follow (`config.settings.Settings` has them)."""

    @property
    def lease_ttl(self) -> float: ...

    @property
    def http_timeout(self) -> float: ...


def save_window(settings: Timeouts) -> float:
    """Seconds `save_refresh` keeps retrying an answered refresh through a store outage: 120 s,
    whatever the settings (about three times the 36 s of the fixed attempt count it replaces).
    The task time limits add it to `check_window`, so no limit interrupts a save within it."""
    del settings  # one figure to document; the time limits are derived from it
    return SAVE_WINDOW


def check_window(settings: Timeouts) -> float:
    """Seconds from a task's start to the last answer one of its checks may wait for.

    A check starts at most max(BATCH_BUDGET, LEASE_TTL) seconds in (a batch starts none after
    its budget; an explicit check waits at most LEASE_TTL for the lease). Once started, each
    of its calls may wait PERMIT_WAIT for a permit and HTTP_TIMEOUT for the answer, plus the
    ~1.5 s pause before the retry. 152 s with the defaults.
    """
    start = max(BATCH_BUDGET, settings.lease_ttl)
    return start + CALLS_PER_CHECK * (settings.http_timeout + PERMIT_WAIT) + 2.0


def soft_time_limit(settings: Timeouts) -> float:
    """Seconds a task may run before Celery interrupts it: the last answer one of its checks
    may wait for (`check_window`) plus the whole `save_window` during which a rotated token's
    save rides out a store outage. An interrupt between a send and its save would lose that
    token, so this is a worst case."""
    return check_window(settings) + save_window(settings)


def hard_time_limit(settings: Timeouts) -> float:
    """Seconds after which Celery kills the child: HARD_AFTER_SOFT after the soft limit."""
    return soft_time_limit(settings) + HARD_AFTER_SOFT
