"""Is the store, the broker, reachable? One-line answers that never show a password."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

from config import redis_urls
from config.redis_urls import RedisEndpoint
from worker.errors import Unreachable
from worker.store import clients

PROBE_TIMEOUT = 3.0  # seconds to connect and answer PING; a healthy Redis takes milliseconds


def safe_url(url: str) -> str:
    """The URL without its password, for messages (a Sentinel URL's too)."""
    return redis_urls.safe(url)


def unreachable(where: str, url: str, error: BaseException) -> Unreachable:
    """The error naming which Redis (`store` or `broker`) failed, where, and how."""
    detail = str(error).strip().replace("\n", " ")
    password = urlsplit(url).password
    if password:
        detail = detail.replace(password, "***")
    return Unreachable(
        f"{where} Redis unreachable at {safe_url(url)}: {type(error).__name__}: {detail}"
    )


def require_reachable(store: RedisEndpoint, broker: RedisEndpoint) -> None:
    """Raise Unreachable unless the store and the broker answer PING within seconds.

    Whatever enqueues checks first: Celery would retry an unreachable result backend for
    ~20 s and then end in a traceback instead of one line.
    """
    places = {"store": store}
    if broker.url != store.url:
        places["broker"] = broker
    for where, endpoint in places.items():
        client = clients.sync_client(
            endpoint, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
        )
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise unreachable(where, endpoint.url, error) from None
        finally:
            client.close()
