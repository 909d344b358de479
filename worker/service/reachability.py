"""Is the store, the broker, reachable? One-line answers that never show a password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis

from worker.errors import Unreachable

PROBE_TIMEOUT = 3.0  # seconds to connect and answer PING; a healthy Redis takes milliseconds


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def unreachable(where: str, url: str, error: BaseException) -> Unreachable:
    """The error naming which Redis (`store` or `broker`) failed, where, and how."""
    detail = str(error).strip().replace("\n", " ")
    password = urlsplit(url).password
    if password:
        detail = detail.replace(password, "***")
    return Unreachable(
        f"{where} Redis unreachable at {safe_url(url)}: {type(error).__name__}: {detail}"
    )


def require_reachable(store_url: str, broker_url: str) -> None:
    """Raise Unreachable unless the store and the broker answer PING within seconds.

    Whatever enqueues checks first: Celery would retry an unreachable result backend for
    ~20 s and then end in a traceback instead of one line.
    """
    places = {"store": store_url}
    if broker_url != store_url:
        places["broker"] = broker_url
    for where, url in places.items():
        client = redis.Redis.from_url(
            url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
        )
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise unreachable(where, url, error) from None
        finally:
            client.close()
