"""TLS for a managed Redis: the keyword arguments every client of a `rediss://` URL needs.

One pure function per kind of client, so redis-py clients, the Celery broker (kombu) and the
Celery result backend verify the server the same way: always against a CA (the system's, or
TOKENWORKER_REDIS_CA), with the client certificate when one is configured. A `redis://` or
`unix://` URL gets nothing. The files were checked when the settings were read.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from config.redis_urls import RedisEndpoint, TlsFiles
from config.settings import Settings

TLS_SCHEMES = frozenset({"rediss"})


def uses_tls(url: str) -> bool:
    return urlsplit(url).scheme in TLS_SCHEMES


def _tls_options(files: TlsFiles) -> dict[str, object]:
    # CERT_REQUIRED always: a managed Redis holds every refresh token, so an unverified
    # server is never acceptable (kombu and Celery take the same keys as redis-py).
    options: dict[str, object] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if files.ca:
        options["ssl_ca_certs"] = files.ca
    if files.cert:
        options["ssl_certfile"] = files.cert
        options["ssl_keyfile"] = files.key
    return options


def endpoint_kwargs(endpoint: RedisEndpoint) -> dict[str, object]:
    """redis-py keyword arguments for `endpoint`: TLS ones for rediss://, none otherwise
    (`worker.store.clients` passes them to every connection it makes)."""
    return _tls_options(endpoint.tls) if uses_tls(endpoint.url) else {}


def celery_tls(settings: Settings) -> dict[str, object]:
    """`broker_use_ssl` and `redis_backend_use_ssl` for Celery when the broker is rediss://
    (the result backend is the broker's Redis); nothing otherwise."""
    if not uses_tls(settings.broker_url):
        return {}
    options = _tls_options(settings.redis_tls)
    return {"broker_use_ssl": dict(options), "redis_backend_use_ssl": dict(options)}
