"""Settings: one frozen dataclass built from the environment (12-factor).

Every value is validated when the process starts; a missing or malformed value raises
`SettingsError` naming the variable and what was expected, so a worker never runs
half-configured. Durations are seconds (integers or decimals) so tests can use small ones.
Every number has an allowed range, refused at start with the variable and the range named:
the upper bounds catch values that parse but cannot work (milliseconds typed as seconds, 1e23).
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from config.redis_urls import RedisEndpoint, RedisUrlError, TlsFiles, check, safe
from config.urls import origin_of

PREFIX = "TOKENWORKER_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Seconds:
    """A duration parser with an allowed range: more than 0 (or at least `low` when set), at
    most `high`. Upper bounds catch values that parse but cannot work: milliseconds typed as
    seconds (LEASE_TTL=30000 would block a dead worker's connections for 8 h) or 1e308."""

    high: float
    low: float = 0.0

    @property
    def allowed(self) -> str:
        start = f"at least {self.low:.10g}" if self.low else "more than 0"
        return f"{start} and at most {self.high:.10g} seconds"

    def __call__(self, name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(
                f"{name}={raw!r}: expected a number of seconds, e.g. 900"
            ) from None
        too_low = value < self.low if self.low else value <= 0
        if not math.isfinite(value) or too_low or value > self.high:
            raise SettingsError(f"{name}={raw!r}: expected {self.allowed}")
        return value


@dataclass(frozen=True)
class WholeSeconds(Seconds):
    """A duration in whole seconds (a fraction is dropped), for Redis expiries set in seconds."""

    def __call__(self, name: str, raw: str) -> int:
        return int(super().__call__(name, raw))


@dataclass(frozen=True)
class Count:
    """A whole number from 1 to `high`."""

    high: int

    @property
    def allowed(self) -> str:
        return f"a whole number from 1 to {self.high}"

    def __call__(self, name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a whole number, e.g. 100") from None
        if not 1 <= value <= self.high:
            raise SettingsError(f"{name}={raw!r}: expected {self.allowed}")
        return value


@dataclass(frozen=True)
class Niceness:
    """A CPU priority step down (os.nice): 0 (as started) to 19 (the lowest)."""

    @property
    def allowed(self) -> str:
        return "a whole number from 0 (as started) to 19 (the lowest priority)"

    def __call__(self, name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a whole number, e.g. 10") from None
        if not 0 <= value <= 19:
            raise SettingsError(f"{name}={raw!r}: expected {self.allowed}")
        return value


@dataclass(frozen=True)
class Rate:
    """Calls per second: 0 (no limit), or from 0.01 to `high`."""

    high: float

    @property
    def allowed(self) -> str:
        return f"0 (no limit), or from 0.01 to {self.high:.10g} calls per second"

    def __call__(self, name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(
                f"{name}={raw!r}: expected calls per second, e.g. 1000"
            ) from None
        if not math.isfinite(value) or value < 0 or 0 < value < 0.01 or value > self.high:
            raise SettingsError(f"{name}={raw!r}: expected {self.allowed}")
        return value


HOUR = 3600.0
DAY = 24 * HOUR


def _redis_url(name: str, raw: str) -> str:
    try:
        return check(raw)
    except RedisUrlError as error:
        raise SettingsError(f"{name}: {error}") from None


@dataclass(frozen=True)
class Replicas:
    """`auto` (None: 1 when the master has a replica, 0 when it is alone) or 0 to `high`."""

    high: int

    @property
    def allowed(self) -> str:
        return f"auto, or a whole number from 0 to {self.high}"

    def __call__(self, name: str, raw: str) -> int | None:
        if raw.lower() == "auto":
            return None
        if not (raw.isascii() and raw.isdigit()) or int(raw) > self.high:
            raise SettingsError(f"{name}={raw!r}: expected {self.allowed}")
        return int(raw)


def _readable_file(name: str, raw: str) -> str:
    """A path checked at start: a missing or unreadable CA or key fails here, naming the
    setting, instead of as a TLS handshake error on the first Redis call."""
    path = os.path.expanduser(raw)
    if not os.path.isfile(path):
        raise SettingsError(f"{name}={raw!r}: no such file")
    if not os.access(path, os.R_OK):
        raise SettingsError(f"{name}={raw!r}: the file is not readable by this user")
    return path


def _http_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}: expected an http(s):// URL with a host")
    return raw


def parse_keys(name: str, raw: str) -> tuple[bytes, ...]:
    """Comma-separated keys, each 32 random bytes in URL-safe base64 (Fernet's key format)."""
    keys: list[bytes] = []
    for position, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            continue
        try:
            key = base64.urlsafe_b64decode(item.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise SettingsError(
                f"{name}: key #{position} is not URL-safe base64 "
                "(generate one with `tokenworker keys generate`)"
            ) from None
        if len(key) != 32:
            raise SettingsError(
                f"{name}: key #{position} decodes to {len(key)} bytes, expected 32 "
                "(generate one with `tokenworker keys generate`)"
            )
        keys.append(key)
    if not keys:
        raise SettingsError(f"{name}: expected at least one key")
    return tuple(keys)


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in allowed:
            raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
        return raw

    return parse


def _flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _text(name: str, raw: str) -> str:
    del name
    return raw


def _public_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if origin_of(raw) is None or parts.query or parts.fragment:
        raise SettingsError(f"{name}: expected an http(s):// base URL, e.g. https://tw.example.com")
    return raw.rstrip("/")


def _origins(name: str, raw: str) -> tuple[str, ...]:
    found: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        origin = origin_of(item)
        parts = urlsplit(item)
        if origin is None or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise SettingsError(
                f"{name}: {item!r} is not an origin; expected scheme://host[:port], "
                "e.g. https://app.example.com"
            )
        found.append(origin)
    return tuple(found)


SETTINGS = "Settings"
OPERATIONS = "Operations"


def _setting(
    env: str, parse: Callable[[str, str], Any], default: Any, doc: str, section: str = SETTINGS
) -> Any:
    meta = {"env": env, "parse": parse, "doc": doc, "section": section}
    return field(default=default, metadata=meta)


# -- the `api` process ---------------------------------------------------------------------


def _host(name: str, raw: str) -> str:
    if any(c in raw for c in " /\\@?#") or len(raw) > 253:
        raise SettingsError(f"{name}={raw!r}: expected an address or host name, e.g. 127.0.0.1")
    return raw


MAX_CREDENTIALS_CACHE_AGE = 1.0


def _cache_age(name: str, raw: str) -> float:
    """Seconds from 0 (off) to MAX_CREDENTIALS_CACHE_AGE: longer would widen what another
    process's refresh, rejection or delete leaves unseen here (see worker.service.hotreads)."""
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds, e.g. 0.5") from None
    if not math.isfinite(value) or not 0.0 <= value <= MAX_CREDENTIALS_CACHE_AGE:
        raise SettingsError(
            f"{name}={raw!r}: expected 0 (off) to {MAX_CREDENTIALS_CACHE_AGE:g} seconds"
        )
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the worker, beat and CLI read from the environment."""

    redis_url: str = _setting(
        "REDIS_URL",
        _redis_url,
        "redis://127.0.0.1:6379/0",
        "Store Redis (connections, due index, locks, events). Must persist (AOF).",
    )
    broker_url: str = _setting(
        "BROKER_URL", _redis_url, "", "Celery broker; defaults to TOKENWORKER_REDIS_URL."
    )
    # -- TLS to a managed Redis (rediss:// URLs; see config/redis_tls.py) --
    redis_ca: str = _setting(
        "REDIS_CA",
        _readable_file,
        "",
        "CA bundle (PEM) that verifies the rediss:// store and broker; default: the system's "
        "CAs. The server is always verified.",
    )
    redis_cert: str = _setting(
        "REDIS_CERT",
        _readable_file,
        "",
        "Client certificate (PEM) for a Redis that requires one (tls-auth-clients yes); set "
        "with TOKENWORKER_REDIS_KEY.",
    )
    redis_key: str = _setting(
        "REDIS_KEY",
        _readable_file,
        "",
        "Private key (PEM, unencrypted) of TOKENWORKER_REDIS_CERT.",
    )
    # -- Sentinel and replication (a rotated refresh token must outlive a failover) --
    sentinel_password: str = _setting(
        "SENTINEL_PASSWORD",
        _text,
        "",
        "Password of the sentinels themselves, when a redis+sentinel:// URL is used and they "
        "require one (the data nodes' password goes in the URL).",
    )
    min_replicas: int | None = _setting(
        "MIN_REPLICAS",
        Replicas(16),
        None,
        "Replicas that must confirm a rotated refresh token and the refresh-sent mark (WAIT); "
        "auto: 1 when the master has (or had within 60 s) a replica, 0 when it is alone.",
    )
    replica_wait: float = _setting(
        "REPLICA_WAIT",
        Seconds(5.0, low=0.01),  # below the store clients' 10 s socket timeout
        1.0,
        "Seconds one WAIT for MIN_REPLICAS may take; a shortfall keeps the answer and saves it "
        "again (on the new master after a failover) until it is confirmed.",
    )
    encryption_keys: tuple[bytes, ...] = _setting(
        "ENCRYPTION_KEYS",
        parse_keys,
        (),
        "Comma-separated keys (32 bytes, URL-safe base64). The first encrypts; all decrypt.",
    )
    refresh_margin: float = _setting(
        "REFRESH_MARGIN",
        Seconds(DAY),
        300.0,
        "Refresh when fewer seconds than this remain (at most half the session lifetime; a "
        "day at most). The default covers a late sweep, a failed call and its retry at the "
        "default sweep interval; a reader needing longer asks with min_ttl.",
    )
    default_lifetime: float = _setting(
        "DEFAULT_LIFETIME",
        Seconds(DAY),
        7200.0,
        "Assumed access-token lifetime when no expiry is known (the org's session timeout, "
        "15 minutes to 24 hours in Salesforce).",
    )
    sweep_interval: float = _setting(
        "SWEEP_INTERVAL",
        Seconds(HOUR, low=1.0),
        60.0,
        "How often beat runs the sweep (an hour at most: a sweep also retries what failed).",
    )
    keepalive_interval: float = _setting(
        "KEEPALIVE_INTERVAL",
        Seconds(365 * DAY),
        604800.0,
        "Refresh at least this often even when the access token is fresh (a year at most).",
    )
    http_timeout: float = _setting(
        "HTTP_TIMEOUT",
        Seconds(120.0),
        10.0,
        "Timeout of each call to Salesforce (two minutes at most; the lease must outlast two).",
    )
    webhook_url: str = _setting(
        "WEBHOOK_URL", _http_url, "", "POST failure, escalation and recovery events here."
    )
    webhook_secret: str = _setting(
        "WEBHOOK_SECRET", _text, "", "HMAC-SHA256 key that signs webhook bodies."
    )
    log_format: Literal["json", "console"] = _setting(
        "LOG_FORMAT",
        _choice("json", "console"),
        "json",
        "json in production; console for people at a terminal.",
    )
    retry_base: float = _setting(
        "RETRY_BASE",
        Seconds(1800.0),
        30.0,
        "First backoff after a transient failure (doubles; at most RETRY_MAX).",
    )
    retry_max: float = _setting(
        "RETRY_MAX",
        Seconds(1800.0),
        900.0,
        "Longest backoff; at most half the broker's one-hour visibility timeout, which a "
        "longer task retry countdown would exceed (the task would then run twice).",
    )
    lease_ttl: float = _setting(
        "LEASE_TTL",
        Seconds(600.0),
        30.0,
        "Per-connection lease; longer than two HTTP timeouts. A killed worker's connections "
        "wait this long, and the task time limits grow with it: ten minutes at most.",
    )
    key_prefix: str = _setting("KEY_PREFIX", _text, "tw:", "Prefix of every store key.")
    batch_size: int = _setting(
        "BATCH_SIZE", Count(50_000), 2000, "Connections per check_batch task."
    )
    concurrency: int = _setting(
        "CONCURRENCY",
        Count(10_000),
        100,
        "Connections checked at once inside one worker process (each may hold a socket).",
    )
    worker_nice: int = _setting(
        "WORKER_NICE",
        Niceness(),
        0,
        "Each worker child lowers its own CPU priority by this much at its start (os.nice). "
        "Set 10 when the api or anything else that answers in milliseconds shares the "
        "worker's cores: a sweep's burst of checks then waits for them, not they for it (a "
        "check's deadline is minutes away). An idle box runs the worker as fast as before.",
    )
    sweep_limit: int = _setting(
        "SWEEP_LIMIT",
        Count(1_000_000),
        50000,
        "Most connections one sweep claims (in one Redis call: a million at most).",
    )
    rate_limit: float = _setting(
        "RATE_LIMIT",
        Rate(100_000.0),
        1000.0,
        "Salesforce calls per second per integration, shared by every worker (0: no limit).",
    )
    escalate_after: int = _setting(
        "ESCALATE_AFTER",
        Count(1000),
        5,
        "Consecutive transient failures of a connection before one connection.escalated.",
    )
    escalate_after_failing: float = _setting(
        "ESCALATE_AFTER_FAILING",
        Seconds(30 * DAY),
        21600.0,
        "Seconds a connection may stay failing before one connection.escalated (30 days at "
        "most).",
    )
    daily_attempt_cap: int = _setting(
        "DAILY_ATTEMPT_CAP",
        Count(10_000),
        100,
        "Failed attempts per connection per UTC day before it waits for the next day.",
    )
    require_persistence: bool = _setting(
        "REQUIRE_PERSISTENCE",
        _flag,
        False,
        "Refuse to start (instead of warning) when the store Redis lacks AOF or evicts keys.",
    )
    # A beat lock over an hour would leave the fleet unswept that long after the leader dies; a
    # ping over an hour makes every liveness probe fail (`health --max-age` defaults to 300 s).
    beat_lock_timeout: int = _setting(
        "BEAT_LOCK_TIMEOUT",
        WholeSeconds(HOUR, low=2.0),
        25,
        "Seconds the active beat's Redis lock outlives its last renewal; a standby beat takes "
        "over this long (plus up to 1 s) after the leader dies. Whole seconds (a fraction is "
        "dropped).",
        OPERATIONS,
    )
    ping_interval: float = _setting(
        "PING_INTERVAL",
        Seconds(HOUR, low=0.1),
        30.0,
        "Each worker sends itself a no-op ping task this often; consuming it records the "
        "heartbeat that `tokenworker health --liveness` reads (keep it well under --max-age).",
        OPERATIONS,
    )
    # -- the `api` process (tokenworker api) --
    api_host: str = _setting(
        "API_HOST",
        _host,
        "127.0.0.1",
        "Address the `api` process listens on (0.0.0.0 for every interface; put TLS in front).",
    )
    api_port: int = _setting("API_PORT", Count(65535), 8080, "Port of the `api` process.")
    public_url: str = _setting(
        "PUBLIC_URL",
        _public_url,
        "http://127.0.0.1:8080",
        "The api's external base URL (https in production): the OAuth callback is "
        "PUBLIC_URL/oauth/callback, the URL to register on the connected app.",
    )
    allowed_return_origins: tuple[str, ...] = _setting(
        "ALLOWED_RETURN_ORIGINS",
        _origins,
        (),
        "Comma-separated origins (scheme://host[:port]) a connect flow may send the browser "
        "back to (return_to); any other return_to is refused.",
    )
    connect_session_ttl: float = _setting(
        "CONNECT_SESSION_TTL",
        Seconds(DAY, low=60.0),
        600.0,
        "Seconds a connect session may wait for the customer to finish authorizing.",
    )
    api_credentials_cache_age: float = _setting(
        "API_CREDENTIALS_CACHE_AGE",
        _cache_age,
        1.0,
        "Seconds (0 to 1; 0 turns the cache off) an api process may answer a credentials read "
        "from what it read in the last such seconds, each hit re-checked against min_ttl, "
        "while Redis does not report writes (see API_CREDENTIALS_CACHE_TRACKING). A change "
        "made through the same process drops its entry at once; one made elsewhere (a worker, "
        "another api process) can go unseen this long.",
    )
    api_credentials_cache_tracking: bool = _setting(
        "API_CREDENTIALS_CACHE_TRACKING",
        _flag,
        True,
        "Ask Redis to report every write to a connection record (CLIENT TRACKING, Redis 6+): "
        "while it does, an entry is served until its record is written (at most 45-90 s from "
        "its last check against the store; an entry being read is re-checked by version, off "
        "the read path) and "
        "a change made elsewhere is seen within milliseconds. A Redis or proxy that refuses "
        "it, a lost connection or a failover fall back to API_CREDENTIALS_CACHE_AGE.",
    )
    api_credentials_cache_entries: int = _setting(
        "API_CREDENTIALS_CACHE_ENTRIES",
        Count(1_000_000),
        10_000,
        "Connections one api process keeps in its credentials cache; the oldest entry makes "
        "room.",
    )

    def __post_init__(self) -> None:
        if not self.broker_url:
            object.__setattr__(self, "broker_url", self.redis_url)
        self._check_tls()
        if self.lease_ttl <= 2 * self.http_timeout:
            raise SettingsError(
                f"{PREFIX}LEASE_TTL={self.lease_ttl:g} must be longer than two "
                f"HTTP timeouts ({PREFIX}HTTP_TIMEOUT={self.http_timeout:g})"
            )
        if self.retry_base > self.retry_max:
            raise SettingsError(
                f"{PREFIX}RETRY_BASE={self.retry_base:g} must not exceed "
                f"{PREFIX}RETRY_MAX={self.retry_max:g}"
            )

    def _check_tls(self) -> None:
        if bool(self.redis_cert) != bool(self.redis_key):
            raise SettingsError(
                f"{PREFIX}REDIS_CERT and {PREFIX}REDIS_KEY go together: set both or neither"
            )
        files = self.redis_ca or self.redis_cert
        urls = (self.redis_url, self.broker_url)
        if files and not any(url.startswith("rediss://") for url in urls):
            # Silently plaintext would be worse than refusing: TLS applies to rediss:// URLs
            # only (a redis+sentinel:// group is reached without TLS).
            raise SettingsError(
                f"{PREFIX}REDIS_CA/REDIS_CERT are set but neither {PREFIX}REDIS_URL nor "
                f"{PREFIX}BROKER_URL is a rediss:// URL: TLS would not be used"
            )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, require_keys: bool = True
    ) -> Settings:
        """Build settings from `environ` (default: the process environment)."""
        source = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            name = PREFIX + item.metadata["env"]
            raw = source.get(name)
            if raw is None or raw.strip() == "":
                continue
            values[item.name] = item.metadata["parse"](name, raw.strip())
        if require_keys and not values.get("encryption_keys"):
            raise SettingsError(
                f"{PREFIX}ENCRYPTION_KEYS is required: comma-separated keys, each 32 random "
                "bytes in URL-safe base64 (create one with `tokenworker keys generate`)"
            )
        return cls(**values)

    @property
    def beat_loop_interval(self) -> int:
        """The leading beat renews its lease at least this often (and a beat retries an
        unreachable store this often at most): a fifth of the lease's lifetime, so a stalled
        tick never lets a healthy leader's lease expire."""
        return max(1, min(5, self.beat_lock_timeout // 5))

    @property
    def store_endpoint(self) -> RedisEndpoint:
        """How to reach the store (`worker.store.clients` builds clients from it)."""
        return RedisEndpoint(self.redis_url, self.sentinel_password, self.redis_tls)

    @property
    def broker_endpoint(self) -> RedisEndpoint:
        return RedisEndpoint(self.broker_url, self.sentinel_password, self.redis_tls)

    @property
    def redis_tls(self) -> TlsFiles:
        """The TLS files for rediss:// URLs (checked when the settings were read)."""
        return TlsFiles(self.redis_ca, self.redis_cert, self.redis_key)

    def __repr__(self) -> str:
        shown = {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if item.name not in ("encryption_keys", "webhook_secret", "sentinel_password")
        }
        shown["sentinel_password"] = "<set>" if self.sentinel_password else "<unset>"
        shown["redis_url"], shown["broker_url"] = safe(self.redis_url), safe(self.broker_url)
        shown["encryption_keys"] = f"<{len(self.encryption_keys)} keys>"
        shown["webhook_secret"] = "<set>" if self.webhook_secret else "<unset>"
        return f"Settings({shown})"


def described(doc: str, parse: object) -> str:
    """The meaning, plus the allowed range of a bounded setting ("Allowed: ...")."""
    allowed = getattr(parse, "allowed", None)
    return f"{doc} Allowed: {allowed}." if allowed else doc


def reference(section: str | None = None) -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting (of one `section`, when given), for docs
    that cannot drift."""
    rows = []
    for item in fields(Settings):
        if section is not None and item.metadata["section"] != section:
            continue
        default = item.default
        shown = "" if default in ("", ()) else "auto" if default is None else str(default)
        meaning = described(item.metadata["doc"], item.metadata["parse"])
        rows.append((PREFIX + item.metadata["env"], shown, meaning))
    return rows
