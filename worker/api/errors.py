"""API errors: one JSON shape, `{"error": CODE, "message": TEXT, ...}`, with its HTTP status.

Codes are a contract (DESIGN.md): unauthorized 401, forbidden 403, not_found 404,
invalid_request 400/422 (naming the field), reauth_required 409 (with `last_error`),
salesforce_unavailable 503 (with `Retry-After`). A message never carries a token or a key.
"""

from __future__ import annotations

from typing import Any

from worker.errors import TokenworkerError


class ApiError(TokenworkerError):
    """An answer the API gives instead of a result."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


def invalid(field: str, expected: str, status: int = 422) -> ApiError:
    """A request field that is missing or malformed: names the field and what was expected."""
    return ApiError(status, "invalid_request", f"{field}: expected {expected}", field=field)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {ident!r}")
