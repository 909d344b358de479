"""Redis URLs: what the settings accept, parsed once, with an error naming what was expected.

Plain forms are redis-py's own (`redis://`, `rediss://`, `unix://`). A Sentinel group is
`redis+sentinel://[[user]:password@]host[:port],host[:port],.../MASTER_NAME[/DB]`: the
sentinels to ask, the name of the master they watch and the database number; the password in
the URL is the data nodes' (the sentinels' own is TOKENWORKER_SENTINEL_PASSWORD). This module
holds no environment: `config.settings` reads it, and `worker.store.clients` builds clients
from the `RedisEndpoint` the settings hand over.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

PLAIN = ("redis", "rediss", "unix")
SENTINEL = "redis+sentinel"
SENTINEL_PORT = 26379
EXPECTED = (
    "expected a redis://, rediss:// or unix:// URL, or "
    "redis+sentinel://[:password@]host:port,host:port/MASTER_NAME/DB"
)


class RedisUrlError(ValueError):
    """The URL is malformed; the message says what was expected (never the password)."""


@dataclass(frozen=True)
class Sentinel:
    """A parsed redis+sentinel:// URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    username: str | None
    password: str | None


@dataclass(frozen=True)
class TlsFiles:
    """TLS files for a rediss:// URL (TOKENWORKER_REDIS_CA/CERT/KEY; "" when unset)."""

    ca: str = ""
    cert: str = ""
    key: str = ""


@dataclass(frozen=True)
class RedisEndpoint:
    """Everything a client needs to reach one Redis role (the store or the broker).

    `sentinel_password` authenticates to the sentinels themselves; `tls` verifies a rediss://
    server. Its repr hides the password (the URL may hold one too: never log an endpoint)."""

    url: str
    sentinel_password: str = ""
    tls: TlsFiles = TlsFiles()

    @property
    def sentinel(self) -> Sentinel | None:
        """The parsed Sentinel group, or None for a plain URL."""
        return parse_sentinel(self.url) if self.url.startswith(SENTINEL + "://") else None

    def __repr__(self) -> str:
        return f"RedisEndpoint({safe(self.url)!r})"


def safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    auth, at, hosts = netloc.rpartition("@")
    if not at or ":" not in auth:
        return url
    return f"{scheme}{sep}{auth.partition(':')[0]}:***@{hosts}{slash}{path}"


def check(url: str) -> str:
    """`url` if it is a form the clients understand; else RedisUrlError saying what is wrong."""
    scheme = urlsplit(url).scheme
    if scheme == SENTINEL:
        parse_sentinel(url)
    elif scheme not in PLAIN:
        raise RedisUrlError(f"{EXPECTED}, got scheme {scheme!r}")
    return url


def parse_sentinel(url: str) -> Sentinel:
    rest = url[len(SENTINEL) + 3 :]
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user, colon, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(item) for item in netloc.split(","))
    parts = [p for p in path.split("/") if p] if path else []
    if not parts or len(parts) > 2:
        raise RedisUrlError(f"{EXPECTED}: the master name is missing (after the hosts)")
    db = 0
    if len(parts) == 2:
        if not (parts[1].isascii() and parts[1].isdigit()):
            raise RedisUrlError(f"{EXPECTED}: database {parts[1]!r} is not a number")
        db = int(parts[1])
    return Sentinel(sentinels, unquote(parts[0]), db, username, password)


def _host_port(item: str) -> tuple[str, int]:
    host, colon, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
    if not host or any(c in host for c in " /?#@"):
        raise RedisUrlError(f"{EXPECTED}: sentinel {item!r} is not host:port")
    if not colon:
        return host, SENTINEL_PORT
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise RedisUrlError(f"{EXPECTED}: sentinel {item!r} has no valid port")
    return host, int(port)
