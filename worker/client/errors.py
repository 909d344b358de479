"""The API's errors as exceptions (the tree is drawn in `worker.client`): one class per
category, each carrying the API's `error` code, `message` and the body's other fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class TokenworkerAPIError(Exception):
    """The API answered with an error (its JSON shape: `error`, `message`, more fields)."""

    def __init__(self, status: int, error: str, message: str, extra: Mapping[str, Any]) -> None:
        self.status = status
        self.error = error
        self.message = message
        self.extra = dict(extra)
        super().__init__(f"{error}: {message} (HTTP {status})")


class AuthError(TokenworkerAPIError):
    """401 (missing or unknown API key) or 403 (the key's scope is too low)."""


class NotFoundError(TokenworkerAPIError):
    """No such connection, connect session or integration."""


class InvalidRequestError(TokenworkerAPIError):
    """A field of the request was refused; `field` names it."""

    @property
    def field(self) -> str | None:
        value = self.extra.get("field")
        return None if value is None else str(value)


class ReauthRequiredError(TokenworkerAPIError):
    """The customer must connect again; `last_error` says what Salesforce answered."""

    @property
    def last_error(self) -> Mapping[str, Any] | None:
        value = self.extra.get("last_error")
        return value if isinstance(value, Mapping) else None


class UnavailableError(TokenworkerAPIError):
    """No usable token now and Salesforce cannot be reached; ask again after `retry_after`."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        extra: Mapping[str, Any],
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, error, message, extra)
        self.retry_after = retry_after


def error_of(response: httpx.Response) -> TokenworkerAPIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        body = {"error": f"http_{response.status_code}", "message": response.reason_phrase}
    code, message = body["error"], str(body.get("message", ""))
    extra = {k: v for k, v in body.items() if k not in ("error", "message")}
    status = response.status_code
    if status == 503 or code == "salesforce_unavailable":
        return UnavailableError(status, code, message, extra, _retry_after(response, extra))
    kind: type[TokenworkerAPIError] = TokenworkerAPIError
    if code == "reauth_required":
        kind = ReauthRequiredError
    elif status in (401, 403):
        kind = AuthError
    elif status == 404:
        kind = NotFoundError
    elif status in (400, 422):
        kind = InvalidRequestError
    return kind(status, code, message, extra)


def _retry_after(response: httpx.Response, extra: Mapping[str, Any]) -> float | None:
    for value in (response.headers.get("retry-after"), extra.get("retry_after")):
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            continue
    return None


def result(response: httpx.Response) -> Any:
    if not response.is_success:
        raise error_of(response)
    return response.json()
