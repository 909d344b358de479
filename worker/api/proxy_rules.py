"""The proxy's rules as pure functions: where a request may go, which headers cross, and what
Salesforce's 401 means.

Where: only ever to the connection's stored instance_url. The caller's path is checked raw and
after percent-decoding (repeatedly, so `%252e%252e` is caught too): no `.`/`..` segments, no
`//`, no backslash, no control characters, no scheme, no literal `@`. Then the target is built
with yarl from the instance_url's own parts and its origin compared to the instance_url's before
anything is sent. A percent-encoded `@` (`%40`, an email in an external id) stays inside the
path, so it is allowed.

What a 401 means lives in `worker.salesforce.sessions` (the SDK needs it too).

Headers: hop-by-hop headers (RFC 9110 section 7.6.1, plus those the Connection header names)
never cross, either way. Towards Salesforce the caller's Authorization, Cookie, Host and any
header carrying our API key are dropped and our Bearer token added. Back to the caller
Set-Cookie is dropped: Salesforce's cookies belong to Salesforce's domain, not ours, and one
tenant's cookies must not reach another caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

from yarl import URL

from worker.api.errors import ApiError

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NEVER_FORWARDED = frozenset({"authorization", "cookie", "host", "expect"})
_NEVER_RETURNED = frozenset({"set-cookie"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DECODE_ROUNDS = 4

RawHeaders = list[tuple[bytes, bytes]]


def _refuse(reason: str) -> ApiError:
    return ApiError(
        400,
        "invalid_request",
        f"path: {reason}; the proxy only forwards to the instance_url",
        field="path",
    )


def check_path(raw: str) -> str:
    """The caller's path (after `/proxy/{id}/`, still percent-encoded) or a 400 naming why."""
    if "@" in raw or "\\" in raw or " " in raw or _CONTROL.search(raw):
        raise _refuse("`@`, backslashes, spaces and control characters are not allowed")
    decoded = raw
    for _ in range(_DECODE_ROUNDS):
        _check_decoded(decoded)
        once = unquote(decoded)
        if once == decoded:
            return raw
        decoded = once
    raise _refuse("too many layers of percent-encoding")


def _check_decoded(path: str) -> None:
    if "\\" in path or _CONTROL.search(path):
        raise _refuse("backslashes and control characters are not allowed")
    if path.startswith("/") or "//" in path:
        raise _refuse("empty segments (`//`) are not allowed")
    if _SCHEME.match(path):
        raise _refuse("an absolute URL is not a path")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise _refuse("`.` and `..` segments are not allowed")


def target(instance_url: str | None, path: str, query: str) -> URL:
    """instance_url + "/" + path (query kept), proven to stay on the instance_url's origin."""
    if not instance_url:
        raise ApiError(
            409, "no_instance_url", "this connection has no stored instance_url; reconnect it"
        )
    base = URL(instance_url)
    if base.scheme not in ("http", "https") or not base.host or base.user or base.password:
        raise ApiError(500, "internal_error", "the stored instance_url is not usable")
    url = URL.build(
        scheme=base.scheme,
        authority=base.raw_authority,
        path=base.raw_path.rstrip("/") + "/" + path,
        query_string=query,
        encoded=True,
    )
    if url.origin() != base.origin() or not url.raw_path.startswith(base.raw_path.rstrip("/")):
        raise _refuse("it would leave the instance_url")
    return url


def _named_by_connection(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.decode("latin-1").split(","))
    return frozenset(named)


def request_headers(
    headers: RawHeaders, access_token: str, api_key: str, *, buffered: bool
) -> list[tuple[str, str]]:
    """The caller's headers as Salesforce gets them: ours out, the Bearer token in."""
    named = _named_by_connection(headers)
    out = []
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in HOP_BY_HOP or name in named or name in _NEVER_FORWARDED:
            continue
        if buffered and name == "content-length":
            continue  # the buffered body sets its own
        if api_key and api_key in value:
            continue
        out.append((raw_name.decode("latin-1"), value))
    out.append(("Authorization", f"Bearer {access_token}"))
    return out


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """Salesforce's headers as the caller gets them (Sforce-Limit-Info and all), hop-by-hop out."""
    headers = list(headers)
    named = _named_by_connection(headers)
    return [
        (name.lower(), value)
        for name, value in headers
        if (key := name.decode("latin-1").lower()) not in HOP_BY_HOP
        and key not in named
        and key not in _NEVER_RETURNED
    ]
