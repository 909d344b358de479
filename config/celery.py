"""The Celery app: broker, queues, routes, beat schedule, time limits, logging signals.

Start a worker with `celery -A config.celery worker -Q sweep,refresh,ops` and beat with
`celery -A config.celery beat -S worker.beat.LeaseScheduler` (see the Procfile). Settings come
from the environment.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging
from kombu import Queue  # type: ignore[attr-defined]

from config import logging as tw_logging
from config.settings import Settings, SettingsError
from worker.beat import beat_config
from worker.opsconfig import OpsSettings
from worker.ratelimit import PERMIT_WAIT

VISIBILITY_TIMEOUT = 3600  # seconds; every retry delay stays well under it (RETRY_MAX)
# Seconds after which a check_batch starts no new check and gives the rest back, due at once.
# A healthy batch of 2,000 ids takes about a second; this bounds a batch against a slow
# Salesforce, and with it the task time limits and how long a warm shutdown waits.
BATCH_BUDGET = 60.0


# The most Salesforce calls one check makes: introspect, the lost-answer introspection of the
# refresh token, the refresh, one retry after losing a concurrent refresh, and introspecting
# the new token to learn its lifetime.
CALLS_PER_CHECK = 5


def soft_time_limit(settings: Settings) -> float:
    """Seconds a task may run before Celery interrupts it (a soft limit between a send and its
    save would lose a rotated token, so this is a worst case, not a typical one).

    A check starts at most max(BATCH_BUDGET, LEASE_TTL) seconds in (a batch starts none after
    its budget; an explicit check waits at most LEASE_TTL for the lease). Once started, each
    of its calls may wait PERMIT_WAIT for a permit and HTTP_TIMEOUT for the answer, plus the
    ~1.5 s pause before the retry; LEASE_TTL more covers a stalled store at save time.
    167 s with the defaults (60 s budget, 10 s HTTP timeout, 5 s permit wait, 30 s lease).
    """
    start = max(BATCH_BUDGET, settings.lease_ttl)
    per_check = CALLS_PER_CHECK * (settings.http_timeout + PERMIT_WAIT) + 2.0
    return max(120.0, start + per_check + settings.lease_ttl)


def celery_config(settings: Settings, ops: OpsSettings | None = None) -> dict[str, Any]:
    soft_limit = soft_time_limit(settings)
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.broker_url,
        "result_expires": 3600,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "task_queues": [Queue("sweep"), Queue("refresh"), Queue("ops")],
        "task_default_queue": "refresh",
        "task_routes": {
            "tokenworker.sweep": {"queue": "sweep"},
            "tokenworker.check_batch": {"queue": "refresh"},
            "tokenworker.check_connection": {"queue": "ops"},
            "tokenworker.refresh_connection": {"queue": "ops"},
            "tokenworker.deliver_webhook": {"queue": "ops"},
        },
        # Tasks are idempotent (lease + compare-and-set), so a crashed child's task is redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": soft_limit,
        "task_time_limit": soft_limit + 30,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Each worker also consumes its own queue, where it sends itself liveness pings.
        "worker_direct": True,
        **beat_config(ops or OpsSettings.from_env()),
        "beat_schedule": {
            "sweep": {
                "task": "tokenworker.sweep",
                "schedule": settings.sweep_interval,
                # A sweep queued during an outage is worthless once the next one is due.
                "options": {"expires": settings.sweep_interval, "queue": "sweep"},
            }
        },
    }


def make_app(settings: Settings) -> Celery:
    app = Celery("tokenworker")
    app.conf.update(celery_config(settings))
    app.conf.tokenworker_settings = settings
    return app


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    tw_logging.configure(Settings.from_env(require_keys=False).log_format)


def _settings() -> Settings:
    try:
        OpsSettings.from_env()  # fail here, with the variable named, rather than mid-start
        return Settings.from_env()
    except SettingsError as error:
        raise SystemExit(f"tokenworker: {error}") from None


app = make_app(_settings())
app.autodiscover_tasks(["worker"], related_name="tasks", force=True)
