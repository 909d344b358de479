"""What the API answers, as frozen dataclasses (unknown fields are tolerated, so an older SDK
keeps working against a newer API). Tokens stay out of every repr."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Credentials:
    """A token for one connection, and where to use it (the org's instance_url)."""

    connection_id: str
    integration: str
    provider: str | None
    access_token: str = field(repr=False)
    instance_url: str | None
    token_type: str
    issued_at: float | None
    expires_at: float | None
    expiry_source: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Credentials:
        return cls(
            connection_id=str(data["connection_id"]),
            integration=str(data["integration"]),
            provider=data.get("provider"),
            access_token=str(data["access_token"]),
            instance_url=data.get("instance_url"),
            token_type=str(data.get("token_type") or "Bearer"),
            issued_at=_float(data.get("issued_at")),
            expires_at=_float(data.get("expires_at")),
            expiry_source=data.get("expiry_source"),
        )


@dataclass(frozen=True)
class ConnectSession:
    """Send the customer's browser to `connect_url` before `expires_at`."""

    id: str
    connect_url: str
    expires_at: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConnectSession:
        return cls(str(data["id"]), str(data["connect_url"]), _float(data.get("expires_at")))


@dataclass(frozen=True)
class ConnectSessionStatus:
    """`status` is pending, connected, failed or expired; `error` is Salesforce's, if any."""

    id: str
    status: str
    connection_id: str | None
    error: str | None = None
    error_description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConnectSessionStatus:
        known = {"id", "status", "connection_id", "error", "error_description"}
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            connection_id=data.get("connection_id"),
            error=data.get("error"),
            error_description=data.get("error_description"),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class Connection:
    """A stored connection, no secrets (`connections show --json`); `extra` has every field."""

    id: str
    integration: str
    status: str
    instance_url: str | None
    expires_at: float | None
    last_error: Mapping[str, Any] | None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Connection:
        return cls(
            id=str(data["id"]),
            integration=str(data["integration"]),
            status=str(data["status"]),
            instance_url=data.get("instance_url"),
            expires_at=_float(data.get("expires_at")),
            last_error=data.get("last_error"),
            extra=dict(data),
        )
