"""The OAuth 2.0 web-server flow with PKCE (S256): the authorize URL and the code exchange.

The exchange goes through `SalesforceClient.token_grant`, so it shares the refresh's I/O
seam, deadline, body cap, redirect refusal, scrubbing and error classification. Pure helpers
(PKCE, the authorize URL, the identity URL's ids) do no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, replace
from urllib.parse import urlencode, urlsplit

from worker.domain.answers import TokenResponse
from worker.domain.models import Integration
from worker.salesforce import hosts
from worker.salesforce.client import SalesforceClient

CALLBACK_PATH = "/oauth/callback"
_VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 4.1
# Salesforce record ids: 15 or 18 characters; org ids start 00D, user ids 005.
_IDENTITY_RE = re.compile(
    r"^/id/(00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?)/(005[A-Za-z0-9]{12,15})/?$"
)


def new_verifier() -> str:
    """A PKCE code verifier: 64 URL-safe characters (384 bits)."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """S256: BASE64URL(SHA256(ASCII(verifier))) without padding (RFC 7636 4.2)."""
    if not _VERIFIER_RE.match(verifier):
        raise ValueError("a PKCE verifier is 43-128 characters of [A-Za-z0-9._~-]")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def callback_url(public_url: str) -> str:
    return public_url.rstrip("/") + CALLBACK_PATH


def authorize_url(
    integration: Integration, login_url: str, redirect_uri: str, state: str, verifier: str
) -> str:
    """Where the customer's browser goes: `login_url` + /services/oauth2/authorize."""
    query = {
        "response_type": "code",
        "client_id": integration.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": code_challenge(verifier),
        "code_challenge_method": "S256",
        "scope": integration.scopes,
        "prompt": integration.prompt,
    }
    return hosts.endpoint(login_url, hosts.AUTHORIZE_PATH) + "?" + urlencode(query)


async def exchange_code(
    client: SalesforceClient,
    integration: Integration,
    login_url: str,
    code: str,
    redirect_uri: str,
    verifier: str,
) -> TokenResponse:
    """The authorization_code grant at `login_url` (the integration's, or the My Domain the
    customer logged in on): the token response, or the classified SalesforceError."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "format": "json",
    }
    return await client.token_grant(replace(integration, login_url=login_url), form)


@dataclass(frozen=True)
class Identity:
    """Who authorized: the org and user ids from the token response's `id` URL."""

    org_id: str
    user_id: str

    def same_org(self, other: Identity) -> bool:
        return self.org_id[:15] == other.org_id[:15]  # 15- and 18-character forms agree

    def key(self) -> str:
        return f"{self.org_id[:15]}/{self.user_id[:15]}"


def identity(identity_url: str | None) -> Identity | None:
    """The ids in `https://HOST/id/ORG_ID/USER_ID`, or None when it has another shape."""
    if not identity_url:
        return None
    try:
        path = urlsplit(identity_url).path
    except ValueError:
        return None
    found = _IDENTITY_RE.match(path)
    return Identity(found.group(1), found.group(2)) if found else None
