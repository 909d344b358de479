"""What Salesforce's 401 on an API call means: a dead token, or a session the API refuses.

Both carry `errorCode: INVALID_SESSION_ID`; only the message tells them apart. "Session expired
or invalid" is worth one refresh and one retry. "This session is not valid for use with the
REST API" is a policy (the connected app's scopes, API access for the user or org): a refresh
cannot fix it, so retrying would only loop (jsforce refuses to refresh on it for that reason).

Pure and dependency-free: the proxy and the host-app SDK (`worker.client`) both use it.
"""

from __future__ import annotations

import json
from enum import Enum


class Rejection(str, Enum):
    EXPIRED = "expired"  #: INVALID_SESSION_ID: the token is dead; refresh and retry once
    POLICY = "policy"  #: the session is not valid for this API: a refresh cannot help
    OTHER = "other"  #: any other 401: passed back as it is


def classify_401(body: bytes) -> Rejection:
    """What the body of a 401 from Salesforce's REST API says."""
    try:
        errors = json.loads(body)
    except ValueError:
        return Rejection.OTHER
    if isinstance(errors, dict):
        errors = [errors]
    if not isinstance(errors, list):
        return Rejection.OTHER
    for error in errors:
        if isinstance(error, dict) and error.get("errorCode") == "INVALID_SESSION_ID":
            message = str(error.get("message", "")).lower()
            return Rejection.POLICY if "not valid for use with" in message else Rejection.EXPIRED
    return Rejection.OTHER
