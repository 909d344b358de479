"""Salesforce's `signature`: base64(HMAC-SHA256(client_secret, id + issued_at)).

It proves the identity URL and issue time came from Salesforce for this client. Strings are
used exactly as returned; the encoding is standard (not URL-safe) base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def compute(client_secret: str, identity_url: str, issued_at_raw: str) -> str:
    digest = hmac.new(
        client_secret.encode("utf-8"),
        (identity_url + issued_at_raw).encode("utf-8"),
        hashlib.sha256,
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid(
    client_secret: str, identity_url: str | None, issued_at_raw: str | None, signature: str
) -> bool:
    if identity_url is None or issued_at_raw is None:
        return False
    expected = compute(client_secret, identity_url, issued_at_raw).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
