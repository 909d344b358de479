"""What one check ended with, as returned to tasks, the CLI and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Outcome(str, Enum):
    FRESH = "fresh"  #: introspected; no refresh needed yet
    REFRESHED = "refreshed"  #: a new access token is stored
    FAILED = "failed"  #: a transient failure; a retry is scheduled
    REAUTH_REQUIRED = "reauth_required"  #: the grant is dead
    MISCONFIGURED = "misconfigured"  #: the integration's credentials were rejected
    CONTENDED = "contended"  #: another worker holds the lease; not a failure
    SKIPPED = "skipped"  #: paused (reauth_required or integration misconfigured)
    SUPERSEDED = "superseded"  #: a newer write won; nothing of ours was needed
    DEFERRED = "deferred"  #: its batch ran out of time before starting it; due again at once
    NOT_FOUND = "not_found"  #: no such connection
    ERROR = "error"  #: the record could not be processed (e.g. no key decrypts it)

    @property
    def ok(self) -> bool:
        """Did the check asked for do its work? The one definition, used by every caller.

        CONTENDED is no failure of the connection, but the check asked for did not run:
        another worker's did, and its outcome is not ours to report, so an operator's explicit
        `check`/`refresh` that meets it exits 1 and can be retried.
        """
        return self in _SUCCEEDED


@dataclass(frozen=True)
class CheckResult:
    connection_id: str
    outcome: Outcome
    reason: str | None = None
    error: dict[str, Any] | None = None
    next_check_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "error": self.error,
            "next_check_at": self.next_check_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        """The inverse of `as_dict`: a result that crossed a task boundary as JSON."""
        return cls(
            connection_id=data["connection_id"],
            outcome=Outcome(data["outcome"]),
            reason=data.get("reason"),
            error=data.get("error"),
            next_check_at=data.get("next_check_at"),
        )


_SUCCEEDED = frozenset({Outcome.FRESH, Outcome.REFRESHED, Outcome.SKIPPED, Outcome.SUPERSEDED})
