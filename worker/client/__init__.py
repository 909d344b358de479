"""The Python SDK for host applications: tokenworker's HTTP API, sync and async, over httpx.

    from worker.client import TokenworkerAuth, TokenworkerClient

    with TokenworkerClient("http://127.0.0.1:8080", api_key) as tw:
        creds = tw.credentials("cust-42")
        auth = TokenworkerAuth(tw, "cust-42")
        with httpx.Client(base_url=creds.instance_url, auth=auth) as salesforce:
            salesforce.get("/services/data/v62.0/limits")

`AsyncTokenworkerClient` has the same methods as coroutines (`connections` is an async
iterator); `TokenworkerAuth` works with either (an `httpx.Client` needs the sync client, an
`httpx.AsyncClient` the async one). Errors are exceptions carrying the API's `error` code,
`message` and the body's other fields:

    TokenworkerAPIError            any answer that is not a success (`status`, `error`, `message`,
    │                              `extra`); network failures stay httpx.TransportError
    ├── AuthError                  401 unauthorized, 403 forbidden: the API key
    ├── NotFoundError              404: no such connection or session
    ├── InvalidRequestError        400/422: `field` names what was wrong
    ├── ReauthRequiredError        409 reauth_required: `last_error` is Salesforce's verdict
    └── UnavailableError           503: `retry_after` seconds (from Retry-After)

Modules: `results` (typed, frozen), `errors`, `api` (the two clients), `auth`. Nothing here
logs. The API key and access tokens are kept out of every repr and message.
Depends on httpx only (plus `worker.salesforce.sessions`, pure), not on the worker.
"""

from worker.client.api import AsyncTokenworkerClient, TokenworkerClient
from worker.client.auth import TokenworkerAuth
from worker.client.errors import (
    AuthError,
    InvalidRequestError,
    NotFoundError,
    ReauthRequiredError,
    TokenworkerAPIError,
    UnavailableError,
)
from worker.client.results import Connection, ConnectSession, ConnectSessionStatus, Credentials

__all__ = [
    "AsyncTokenworkerClient",
    "AuthError",
    "ConnectSession",
    "ConnectSessionStatus",
    "Connection",
    "Credentials",
    "InvalidRequestError",
    "NotFoundError",
    "ReauthRequiredError",
    "TokenworkerAPIError",
    "TokenworkerAuth",
    "TokenworkerClient",
    "UnavailableError",
]
