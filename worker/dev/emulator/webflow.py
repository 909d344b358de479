"""The OAuth 2.0 web-server flow's rules: which authorize requests are acceptable, where
their errors go, PKCE, and the single-use authorization codes. No I/O, no HTML.

Salesforce's behaviour modelled here (sources in the fact sheet, /work/shared/reference/
salesforce-oauth.md, or named inline):
- An unknown client_id or a redirect_uri the app has not registered is shown on
  Salesforce's own error page, never redirected (RFC 6749 4.1.2.1; Salesforce's text is
  `error=redirect_uri_mismatch&error_description=redirect_uri must match configuration`,
  github.com/petewarden/salesforce_restphp_example/issues/1).
- Every later error, and a denial, goes back to the redirect_uri with `error`,
  `error_description` and `state` (`access_denied` / `end-user denied authorization`).
- PKCE: only S256; a wrong verifier is `invalid_grant` / `invalid code verifier`
  (salesforce.stackexchange.com/questions/330168).
- Codes live 15 minutes and are single-use; an expired one is `invalid_grant` /
  `expired authorization code`, an unknown or used one `invalid authorization code`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from worker.dev.emulator.records import (
    REFRESH_SCOPES,
    AuthorizationCode,
    Client,
    Issued,
    OAuthError,
    User,
)
from worker.dev.emulator.state import State

# RFC 7636 4.2: an S256 challenge is 43 base64url characters.
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# Salesforce's OAuth scope tokens (connected app "Selected OAuth Scopes"); anything else
# is `invalid_scope`.
KNOWN_SCOPES = frozenset(
    {
        "api", "refresh_token", "offline_access", "id", "profile", "email", "address",
        "phone", "openid", "full", "web", "chatter_api", "visualforce", "custom_permissions",
        "wave_api", "eclair_api", "pardot_api", "lightning", "content", "cdp_api",
        "sfap_api", "interaction_api", "forgot_password", "user_registration",
    }
)  # fmt: skip
DEFAULT_GRANTED_SCOPE = "api refresh_token"
_PRUNE_CODES_AT = 10_000
AUTHORIZE_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "scope",
    "prompt",
    "code_challenge",
    "code_challenge_method",
)


class PageError(Exception):
    """An authorize error Salesforce shows on its own page instead of redirecting."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


@dataclass(slots=True, frozen=True)
class AuthorizeRequest:
    client: Client
    redirect_uri: str
    state: str | None
    scope: str
    prompt: str
    code_challenge: str | None


def redirect_allowed(client: Client, uri: str) -> bool:
    if client.redirect_uris is not None:
        return uri in client.redirect_uris  # Salesforce compares the callback URL exactly
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.fragment or host is None:
        return False
    return host == "localhost" or _is_loopback_ip(host)


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: only "localhost" counts, never "127.0.0.1.evil.com"


def parse_authorize(state: State, params: dict[str, str]) -> AuthorizeRequest:
    """The request, or PageError (shown, not redirected) or OAuthError (redirected)."""
    client = state.clients.get(params.get("client_id", ""))
    if client is None:
        raise PageError("invalid_client_id", "client identifier invalid")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri:
        raise PageError("redirect_uri_missing", "redirect_uri must be provided")
    if not redirect_allowed(client, redirect_uri):
        raise PageError("redirect_uri_mismatch", "redirect_uri must match configuration")
    if params.get("response_type") != "code":
        raise OAuthError(302, "unsupported_response_type", "response type not supported")
    challenge = params.get("code_challenge") or None
    if challenge is not None:
        if params.get("code_challenge_method") != "S256":
            raise OAuthError(302, "invalid_request", "code_challenge_method must be S256")
        if not _S256_CHALLENGE.fullmatch(challenge):
            raise OAuthError(302, "invalid_request", "invalid code_challenge")
    scope = " ".join(params.get("scope", "").split()) or DEFAULT_GRANTED_SCOPE
    if any(token not in KNOWN_SCOPES for token in scope.split()):
        raise OAuthError(302, "invalid_scope", "the requested scope is not allowed")
    return AuthorizeRequest(
        client, redirect_uri, params.get("state"), scope, params.get("prompt", ""), challenge
    )


def redirect_location(redirect_uri: str, fields: dict[str, str | None]) -> str:
    query = urlencode({name: value for name, value in fields.items() if value is not None})
    return f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}"


def issue_code(state: State, request: AuthorizeRequest, user: User) -> str:
    if len(state.codes) >= _PRUNE_CODES_AT:
        now = state.clock()
        state.codes = {k: v for k, v in state.codes.items() if not v.used and v.expires > now}
    code = state.new_code()
    state.codes[code] = AuthorizationCode(
        code,
        request.client.client_id,
        request.redirect_uri,
        user,
        request.scope,
        request.code_challenge,
        state.clock() + state.code_lifetime,
    )
    return code


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def exchange(state: State, client: Client, form: dict[str, str]) -> Issued:
    """The authorization_code grant: checks, then a new grant; the code is used up."""
    record = state.codes.get(form.get("code", ""))
    if record is None or record.used or record.client_id != client.client_id:
        raise OAuthError(400, "invalid_grant", "invalid authorization code")
    if state.clock() >= record.expires:
        raise OAuthError(400, "invalid_grant", "expired authorization code")
    if form.get("redirect_uri", "") != record.redirect_uri:
        raise OAuthError(400, "redirect_uri_mismatch", "redirect_uri must match configuration")
    verifier = form.get("code_verifier")
    if record.code_challenge is None:
        if verifier:
            raise OAuthError(400, "invalid_grant", "invalid code verifier")
    elif not verifier or not hmac.compare_digest(s256(verifier), record.code_challenge):
        raise OAuthError(400, "invalid_grant", "invalid code verifier")
    record.used = True
    return state.approve(client.client_id, record.user, record.scope)


def gives_refresh_token(scope: str) -> bool:
    return not REFRESH_SCOPES.isdisjoint(scope.split())
