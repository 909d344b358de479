"""The domain records: integrations, connections and their statuses."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

DEFAULT_SCOPES = "api refresh_token"  # the connect flow's OAuth scopes
DEFAULT_PROMPT = "consent"  # always show the approval page (a reconnect is a visible choice)


class Provider(str, Enum):
    SALESFORCE = "salesforce"  #: production orgs, login.salesforce.com
    SANDBOX = "salesforce-sandbox"  #: sandboxes, test.salesforce.com


class ConnectionStatus(str, Enum):
    ACTIVE = "active"  #: the last check or refresh succeeded
    FAILING = "failing"  #: transient failures; retried with backoff
    REAUTH_REQUIRED = "reauth_required"  #: the grant is dead; the customer must re-authorize


class IntegrationStatus(str, Enum):
    ACTIVE = "active"  #: client id and secret work
    MISCONFIGURED = "misconfigured"  #: Salesforce rejected the client; connections paused


class ExpirySource(str, Enum):
    INTROSPECTION = "introspection"  #: exp read from introspection (or a lifetime it taught us)
    EXPIRES_IN = "expires_in"  #: the token response carried expires_in
    ASSUMED = "assumed"  #: issued_at + TOKENWORKER_DEFAULT_LIFETIME


@dataclass(frozen=True)
class LastError:
    """Salesforce's own words about the last failure."""

    error: str
    error_description: str
    http_status: int | None
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "error_description": self.error_description,
            "http_status": self.http_status,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LastError:
        status = data.get("http_status")
        return cls(
            error=str(data.get("error", "")),
            error_description=str(data.get("error_description", "")),
            http_status=int(status) if status is not None else None,
            at=float(data.get("at", 0.0)),
        )


@dataclass(frozen=True)
class Integration:
    """A connected app: the client credentials every connection of it refreshes with."""

    name: str
    provider: Provider
    client_id: str
    client_secret: str = field(repr=False)
    login_url: str
    status: IntegrationStatus = IntegrationStatus.ACTIVE
    last_error: LastError | None = None
    introspection_available: bool = True
    version: int = 0
    # The connect flow (issue 13): what the authorize request asks for, and whether the end
    # user may type their My Domain host. Appended with defaults: older records lack them.
    scopes: str = DEFAULT_SCOPES
    prompt: str = DEFAULT_PROMPT
    ask_domain: bool = False

    def public(self) -> dict[str, Any]:
        """Everything but the secret, for output and events."""
        return {
            "name": self.name,
            "provider": self.provider.value,
            "client_id": self.client_id,
            "login_url": self.login_url,
            "status": self.status.value,
            "introspection": "available" if self.introspection_available else "unavailable",
            "last_error": self.last_error.as_dict() if self.last_error else None,
            "scopes": self.scopes,
            "prompt": self.prompt,
            "ask_domain": self.ask_domain,
        }


@dataclass(frozen=True)
class Connection:
    """One customer's Salesforce grant and what we know about its tokens."""

    id: str
    integration: str
    refresh_token: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    instance_url: str | None = None
    identity_url: str | None = None
    issued_at: float | None = None
    expires_at: float | None = None
    expiry_source: ExpirySource | None = None
    lifetime: float | None = None
    status: ConnectionStatus = ConnectionStatus.ACTIVE
    version: int = 0
    last_check_at: float | None = None
    last_refresh_at: float | None = None
    failures: int = 0
    failing_since: float | None = None
    escalated_at: float | None = None
    # Set just before a refresh token is sent, cleared by any saved answer: when a later check
    # finds it set, the earlier attempt's answer was lost and the token may be consumed.
    refresh_started_at: float | None = None
    attempts_day: int | None = None  # UTC day number the attempt count below belongs to
    attempts_today: int = 0
    last_error: LastError | None = None

    def evolve(self, **changes: Any) -> Connection:
        """A copy with `changes`: dataclasses.replace without running __init__ again (no
        field has a default factory or a check), at an eighth of its CPU; a check makes
        several of these."""
        unknown = changes.keys() - _CONNECTION_FIELDS
        if unknown:
            raise TypeError(f"Connection has no field(s) {', '.join(sorted(unknown))}")
        copy = object.__new__(Connection)
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    def healthy(self, now: float, **changes: Any) -> Connection:
        """This record after a success: active, failure bookkeeping cleared (last_error stays
        as history, with its time)."""
        return self.evolve(
            status=ConnectionStatus.ACTIVE,
            failures=0,
            failing_since=None,
            escalated_at=None,
            attempts_day=None,
            attempts_today=0,
            last_check_at=now,
            **changes,
        )

    def public(self) -> dict[str, Any]:
        """Every field but the tokens, for `show`, `list` and events."""
        return {
            "id": self.id,
            "integration": self.integration,
            "status": self.status.value,
            "instance_url": self.instance_url,
            "identity_url": self.identity_url,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "expiry_source": self.expiry_source.value if self.expiry_source else None,
            "lifetime": self.lifetime,
            "version": self.version,
            "last_check_at": self.last_check_at,
            "last_refresh_at": self.last_refresh_at,
            "failures": self.failures,
            "failing_since": self.failing_since,
            "escalated_at": self.escalated_at,
            "attempts_today": self.attempts_today,
            "last_error": self.last_error.as_dict() if self.last_error else None,
            "has_access_token": self.access_token is not None,
        }


_CONNECTION_FIELDS = frozenset(f.name for f in fields(Connection))
