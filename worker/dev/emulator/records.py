"""The records the emulated org keeps: clients, grants, access tokens, counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DEFAULT_LIFETIME = 7200.0  # Salesforce's default session timeout: two hours
# How long after a rotation (beyond its answer's own flight) the consumed token coming back
# counts as a concurrent refresh, not a reuse. Salesforce documents no figure: kept small.
DEFAULT_RACE_WINDOW_MS = 100.0
SCOPE = "refresh_token api"
USERNAME = "user@example.com"


class OAuthError(Exception):
    """An OAuth error answer, exactly as Salesforce words it."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


@dataclass(slots=True)
class Client:
    client_id: str
    client_secret: str
    rotation: bool
    introspect: bool


@dataclass(slots=True, eq=False)
class AccessToken:
    token: str
    grant: Grant
    iat: float
    exp: float
    lifetime: float
    revoked: bool = False

    def active(self, now: float) -> bool:
        return not self.revoked and not self.grant.revoked and self.exp > now


@dataclass(slots=True, eq=False)
class Grant:
    grant_id: str
    client_id: str
    instance_url: str
    id_url: str
    lifetime: float | None
    vary_access_token: bool
    created: float
    refresh_token: str
    refresh_count: int = 0
    revoked: bool = False
    tokens: list[AccessToken] = field(default_factory=list)
    # The refresh token the last rotation consumed, and until when a request carrying it is a
    # concurrent refresh (answered "expired authorization code") rather than a reuse.
    previous_refresh_token: str | None = None
    race_until: float = 0.0

    @property
    def latest(self) -> AccessToken:
        return self.tokens[-1]


@dataclass(slots=True, frozen=True)
class Issued:
    """What one grant or refresh handed out; `refresh_token` is set only when it is new."""

    grant: Grant
    access: AccessToken
    issued_at_ms: str
    refresh_token: str | None


@dataclass(slots=True)
class Stats:
    token_calls: int = 0
    introspect_calls: int = 0
    revoke_calls: int = 0
    data_calls: int = 0
    reuse_revocations: int = 0
    concurrent_refresh_rejections: int = 0
    token_calls_by_grant: Counter[str] = field(default_factory=Counter)
