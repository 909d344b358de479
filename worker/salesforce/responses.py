"""Parsing Salesforce's answers into typed results or classified errors. Pure; no I/O.

Salesforce answers are treated as hostile input: every field is type-checked, numbers are
range-checked, and anything unexpected becomes a `TransientError` (never a stored token).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from config.redaction import redact_text
from worker.domain.answers import IntrospectionResult, TokenResponse
from worker.errors import (
    ConfigurationError,
    PermanentError,
    RateLimitedError,
    SalesforceError,
    TransientError,
)

MAX_BODY_BYTES = 64 * 1024
_TOKEN_RE = re.compile(r"^[\x21-\x7e]{8,4096}$")
_MIN_EPOCH = 946_684_800.0  # 2000-01-01: anything earlier is garbage, not a timestamp
_MAX_EPOCH = 32_503_680_000.0  # 3000-01-01


def epoch_seconds(value: Any) -> float | None:
    """Seconds since the epoch from seconds or milliseconds (string or number), else None.

    Milliseconds are told apart by magnitude: no plausible date in seconds exceeds 1e11.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or value > 1e15 or not math.isfinite(value):
        return None
    seconds = float(value) / 1000.0 if value > 1e11 else float(value)
    return seconds if _MIN_EPOCH <= seconds <= _MAX_EPOCH else None


def _positive_seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and 0 < value < 10 * 365 * 86400:  # rejects inf/NaN
        return float(value)
    return None


def _optional_str(data: dict[str, Any], key: str, limit: int = 2048) -> str | None:
    value = data.get(key)
    if isinstance(value, str) and 0 < len(value) <= limit:
        return value
    return None


def _token(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if isinstance(value, str) and _TOKEN_RE.match(value):
        return value
    return None


def decode_json_object(body: bytes, content_type: str, http_status: int) -> dict[str, Any]:
    """The body as a JSON object, or a TransientError that says what was wrong with it."""
    if "json" not in content_type.lower():
        kind = content_type.split(";", maxsplit=1)[0].strip() or "no content type"
        raise TransientError(
            "unexpected_response", f"expected JSON, got {kind}", http_status=http_status
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # includes UnicodeDecodeError and huge numbers
        raise TransientError(
            "unexpected_response", "body is not valid JSON", http_status=http_status
        ) from None
    if not isinstance(data, dict):
        raise TransientError(
            "unexpected_response", "JSON body is not an object", http_status=http_status
        )
    return data


def parse_token_response(data: dict[str, Any], http_status: int = 200) -> TokenResponse:
    access_token = _token(data, "access_token")
    if access_token is None:
        raise TransientError(
            "unexpected_response",
            "token response has no usable access_token",
            http_status=http_status,
        )
    issued_raw = data.get("issued_at")
    issued_raw_text = str(issued_raw) if isinstance(issued_raw, str | int) else None
    return TokenResponse(
        access_token=access_token,
        refresh_token=_token(data, "refresh_token"),
        instance_url=_optional_str(data, "instance_url"),
        identity_url=_optional_str(data, "id"),
        issued_at=epoch_seconds(issued_raw),
        issued_at_raw=issued_raw_text,
        signature=_optional_str(data, "signature", 512),
        expires_in=_positive_seconds(data.get("expires_in")),
        scope=_optional_str(data, "scope"),
    )


def parse_introspection(data: dict[str, Any], http_status: int = 200) -> IntrospectionResult:
    active = data.get("active")
    if not isinstance(active, bool):
        raise TransientError(
            "unexpected_response",
            "introspection answer has no boolean 'active'",
            http_status=http_status,
        )
    if not active:
        return IntrospectionResult(active=False)
    return IntrospectionResult(
        active=True, exp=epoch_seconds(data.get("exp")), iat=epoch_seconds(data.get("iat"))
    )


def _error_fields(body: bytes, content_type: str) -> tuple[str, str, bool]:
    """Salesforce's `error` and `error_description`, or a description of the garbage; the
    flag says whether the body was an OAuth error object."""
    try:
        data = json.loads(body) if "json" in content_type.lower() else None
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        description = data.get("error_description")
        text = description if isinstance(description, str) else ""
        return redact_text(data["error"][:200]), redact_text(text[:500]), True
    kind = content_type.split(";", maxsplit=1)[0].strip() or "no content type"
    return "unexpected_response", f"error answer without an OAuth error body ({kind})", False


_CONFIG_ERRORS = frozenset(
    {
        "invalid_client_id",
        "invalid_client",
        "unauthorized_client",
        "oauth_flow_disabled",
        "app_blocked",
        "invalid_app_access",
        "unsupported_grant_type",
        "invalid_request",
        "invalid_scope",
        "access_denied",
    }
)
_PERMANENT_ERRORS = frozenset({"inactive_user", "inactive_org", "invalid_token"})
_RATE_ERRORS = frozenset({"rate_limit_exceeded", "slow_down", "login_rate_exceeded"})


def classify(error: str, description: str, http_status: int | None) -> type[SalesforceError]:
    """The class of a Salesforce OAuth error, by `error` + `error_description` first.

    Unknown codes are transient: a guess must never cost a customer their connection; the
    escalation rules make a persistent unknown error loud instead.
    """
    code, text = error.lower(), description.lower()
    if code == "invalid_grant":
        if "authorization code" in text:
            return TransientError  # concurrent refresh of one token; re-read and retry
        if "ip restricted" in text or "login hours" in text:
            return ConfigurationError
        return PermanentError
    if code in _CONFIG_ERRORS:
        return ConfigurationError
    if code in _PERMANENT_ERRORS:
        return PermanentError
    if code in _RATE_ERRORS or ("rate" in text and "exceeded" in text):
        return RateLimitedError
    del http_status  # 5xx, timeouts and unknown codes alike: transient
    return TransientError


# Statuses whose meaning is "the request was not taken in" whatever the body says: a
# throttle (429) or an unavailable service (503, e.g. a proxy's HTML maintenance page).
_REFUSED_BEFORE_PROCESSING = frozenset({429, 503})


def proves_unconsumed(http_status: int, oauth_error_body: bool) -> bool:
    """Whether a non-200 answer to a refresh proves the refresh token was NOT consumed.

    Yes for:
    - any 4xx whose body is an OAuth error object (`{"error": ...}`), e.g. `invalid_grant`,
      `invalid_client`, `rate_limit_exceeded`: the token endpoint refused the grant, and an
      OAuth error answer issues no token (RFC 6749 5.2);
    - 429 and 503 with any body: the request was throttled or turned away before any handler
      ran (a proxy's or Salesforce's maintenance page).
    No for everything else: a 2xx we cannot use (truncated, oversized, without access_token)
    comes after Salesforce rotated the token; a 3xx, another 5xx (500 `unknown_error`, 502,
    504 from a gateway that gave up waiting) or a 4xx without an OAuth body (a WAF, a proxy)
    does not say whether the token endpoint ran; timeouts and resets have no answer at all.
    Keeping the mark when unsure costs one introspection of the refresh token before the next
    send; clearing it wrongly costs the grant (reuse revokes it).
    """
    if http_status in _REFUSED_BEFORE_PROCESSING:
        return True
    return 400 <= http_status < 500 and oauth_error_body


def error_from_response(
    http_status: int, body: bytes, content_type: str, retry_after: float | None = None
) -> SalesforceError:
    error, description, oauth_body = _error_fields(body, content_type)
    kind = classify(error, description, http_status)
    return kind(
        error,
        description,
        http_status=http_status,
        retry_after=retry_after,
        proves_unconsumed=proves_unconsumed(http_status, oauth_body),
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form only), capped at a day."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return min(seconds, 86400.0) if math.isfinite(seconds) and seconds >= 0 else None
