"""The Celery app: broker, queues, routes, beat schedule, time limits, logging signals.

Start a worker with `celery -A config.celery worker -Q sweep,refresh,ops` and beat with
`celery -A config.celery beat -S worker.jobs.beat.LeaseScheduler` (see the Procfile). Settings come
from the environment.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging
from kombu import Queue  # type: ignore[attr-defined]

from config import logging as tw_logging
from config.settings import Settings, SettingsError
from worker.engine.saving import BATCH_BUDGET, check_window, save_window
from worker.jobs.beat import beat_config
from worker.opsconfig import OpsSettings

__all__ = ["BATCH_BUDGET", "app", "celery_config", "hard_time_limit", "soft_time_limit"]

VISIBILITY_TIMEOUT = 3600  # seconds; every retry delay stays well under it (RETRY_MAX)


def soft_time_limit(settings: Settings) -> float:
    """Seconds a task may run before Celery interrupts it: the last answer one of its checks
    may wait for (`check_window`, 152 s with the defaults) plus the whole `save_window`
    (120 s) during which a rotated token's save rides out a store outage. An interrupt
    between a send and its save would lose that token, so this is a worst case: 272 s."""
    return check_window(settings) + save_window(settings)


def hard_time_limit(settings: Settings) -> float:
    """Seconds after which Celery kills the child: 30 s after the soft limit (302 s)."""
    return soft_time_limit(settings) + 30


def celery_config(settings: Settings, ops: OpsSettings | None = None) -> dict[str, Any]:
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
        "task_soft_time_limit": soft_time_limit(settings),
        "task_time_limit": hard_time_limit(settings),
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
app.autodiscover_tasks(["worker.jobs"], related_name="tasks", force=True)
