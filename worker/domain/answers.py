"""Salesforce's answers as the domain sees them, once `worker.salesforce.responses` has parsed
and checked them: a refresh grant and an introspection verdict. Plain records, no parsing."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenResponse:
    """A successful refresh_token grant."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    instance_url: str | None
    identity_url: str | None
    issued_at: float | None
    issued_at_raw: str | None
    signature: str | None = field(repr=False)
    expires_in: float | None
    scope: str | None


@dataclass(frozen=True)
class IntrospectionResult:
    """What introspection says about one token."""

    active: bool
    exp: float | None = None
    iat: float | None = None
