"""What counts as a secret, in one place: field names and token-shaped strings.

The event builder refuses these names; the log pipeline masks them and anything that looks
like a Salesforce token, wherever it appears in a message.
"""

from __future__ import annotations

import re

SECRET_NAMES = frozenset(
    {
        "access_token",
        "refresh_token",
        "client_secret",
        "secret",
        "token",
        "password",
        "signature",
        "authorization",
        "encryption_keys",
        "key",
        "webhook_secret",
    }
)
# Salesforce access tokens look like `00Dxx...!AQ...`; refresh tokens like `5Aep861...`.
_TOKENISH = re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._\-]{20,}|\b5Aep[A-Za-z0-9._\-]{40,}")
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    return _TOKENISH.sub(REDACTED, text)
