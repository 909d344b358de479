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
# The scopes that make the token endpoint hand out a refresh token at all.
REFRESH_SCOPES = frozenset({"refresh_token", "offline_access"})


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
    # The callback URLs registered for the app; None accepts any loopback http(s) URL.
    redirect_uris: tuple[str, ...] | None = None


@dataclass(slots=True, frozen=True)
class User:
    user_id: str
    username: str
    org_id: str
    display_name: str
    email: str
    instance_url: str | None = None  # None: wherever the emulator listens


@dataclass(slots=True, eq=False)
class AuthorizationCode:
    """What one "Allow" handed the browser; single-use, valid `CODE_LIFETIME` seconds."""

    code: str
    client_id: str
    redirect_uri: str
    user: User
    scope: str
    code_challenge: str | None
    expires: float
    used: bool = False


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
    scope: str = SCOPE
    username: str = USERNAME
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

    @property
    def user_id(self) -> str:
        return self.id_url.rsplit("/", 1)[-1]

    @property
    def org_id(self) -> str:
        return self.id_url.rsplit("/", 2)[-2]


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
    authorize_calls: int = 0
    consents_allowed: int = 0
    consents_denied: int = 0
    code_calls: int = 0
    userinfo_calls: int = 0
    approval_revocations: int = 0
    api_usage: int = 0  # successful REST calls, as Sforce-Limit-Info reports them
    reuse_revocations: int = 0
    concurrent_refresh_rejections: int = 0
    # Token calls carrying a refresh token some earlier call already carried (with rotation
    # on, every one is a bug of the client: a second send of a consumed token).
    refresh_token_resends: int = 0
    token_calls_by_grant: Counter[str] = field(default_factory=Counter)
