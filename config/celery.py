"""The Celery app shell: broker, queues, routes, the beat schedule, logging.

Start a worker with `celery -A config.celery worker -Q sweep,refresh,ops` and beat with
`celery -A config.celery beat -S worker.jobs.beat.LeaseScheduler` (see the Procfile).

Importing this module reads nothing: the configuration is built from the environment the
first time Celery asks for it (`on_configure`), and a bad setting then stops the worker or
beat with one line naming the variable. The tasks, their signal handlers, the task time
limits and the beat scheduler live in `worker.jobs`, named here by string only: `config/`
imports nothing from `worker`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from celery import Celery
from celery.signals import setup_logging
from kombu import Queue  # type: ignore[attr-defined]

from config import logging as tw_logging
from config.redis_tls import celery_tls
from config.redis_urls import Sentinel
from config.settings import Settings, SettingsError

__all__ = ["BEAT_SCHEDULER", "app", "beat_config", "celery_config"]

VISIBILITY_TIMEOUT = 3600  # seconds; every retry delay stays well under it (RETRY_MAX)
BEAT_SCHEDULER = "worker.jobs.beat.LeaseScheduler"


def beat_config(settings: Settings) -> dict[str, Any]:
    """Beat: our lease-gated scheduler, renewing every `beat_loop_interval`, and the sweep."""
    return {
        "beat_scheduler": BEAT_SCHEDULER,
        "beat_max_loop_interval": settings.beat_loop_interval,
        "beat_schedule": {
            "sweep": {
                "task": "tokenworker.sweep",
                "schedule": settings.sweep_interval,
                # A sweep queued during an outage is worthless once the next one is due.
                # Beat never reads a sweep's result: without ignore_result every send would
                # subscribe to it on the result backend, and reconnect that pub/sub inline
                # (20 retries) after a broker restart while the tick waits.
                "options": {
                    "expires": settings.sweep_interval,
                    "queue": "sweep",
                    "ignore_result": True,
                },
            }
        },
    }


def broker_config(settings: Settings) -> dict[str, Any]:
    """The broker and result backend: the URL as is, or a Sentinel group mapped onto kombu's
    and Celery's sentinel transports (`sentinel://host:port;...` plus the master's name and
    the sentinels' password in the transport options)."""
    options: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT}
    group = settings.broker_endpoint.sentinel
    url = backend = settings.broker_url
    if group is not None:
        url = sentinel_urls(group)
        # Celery's sentinel backend reads the credentials from the first URL only, and its
        # censored config dump (`celery inspect conf`, `celery report`) masks only that one.
        backend = sentinel_urls(group, credentials_on_all=False)
        options["master_name"] = group.master
        if settings.sentinel_password:
            options["sentinel_kwargs"] = {"password": settings.sentinel_password}
    return {
        "broker_url": url,
        "result_backend": backend,
        "broker_transport_options": options,
        "result_backend_transport_options": dict(options),
    }


def sentinel_urls(group: Sentinel, *, credentials_on_all: bool = True) -> str:
    """kombu's form of a Sentinel group: one sentinel:// URL per sentinel, `;`-separated, each
    with the data nodes' database, and their credentials on every URL (kombu's failover reads
    each alternate's) or on the first only (Celery's result backend)."""
    auth = ""
    if group.password is not None:
        auth = f"{quote(group.username or '', safe='')}:{quote(group.password, safe='')}@"
    return ";".join(
        f"sentinel://{auth if n == 0 or credentials_on_all else ''}{host}:{port}/{group.db}"
        for n, (host, port) in enumerate(group.sentinels)
    )


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        **broker_config(settings),
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
        "broker_connection_retry_on_startup": True,
        # TLS to a rediss:// broker and result backend: verified against TOKENWORKER_REDIS_CA.
        **celery_tls(settings),
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Each worker also consumes its own queue, where it sends itself liveness pings.
        "worker_direct": True,
        **beat_config(settings),
        # The one Settings every part of the process reads (`worker.jobs.process.settings`).
        "tokenworker_settings": settings,
    }


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise SystemExit(f"tokenworker: {error}") from None


app = Celery("tokenworker")


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    sender.config_from_object(celery_config(_settings()))


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    tw_logging.configure(app.conf.tokenworker_settings.log_format)


# Registering the tasks imports `worker.jobs.tasks` (and its signal handlers); it reads nothing.
app.autodiscover_tasks(["worker.jobs"], related_name="tasks", force=True)
