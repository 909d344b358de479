"""`TokenworkerAuth`: an httpx.Auth that makes any httpx client a Salesforce client for one
connection."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Generator

import httpx

from worker.client.api import AsyncTokenworkerClient, TokenworkerClient
from worker.client.results import Credentials
from worker.salesforce.sessions import Rejection, classify_401

REUSE_MARGIN = 60.0  # seconds: a held token with less left than this is asked for again


class TokenworkerAuth(httpx.Auth):
    """Adds the connection's Bearer token to requests against its instance_url.

    The token is reused while it has more than REUSE_MARGIN (or `min_ttl`) seconds left. On
    Salesforce's 401 `INVALID_SESSION_ID` the token is reported (`token_rejected`, one refresh
    however many report it) and the request sent once more with the new one; a second 401 is
    returned as it is, and so is the 401 saying the session is not valid for this API (a
    policy, which no refresh fixes). A request to any other origin than the instance_url is
    refused before a token is attached. Reporting needs an API key of scope `connect`."""

    def __init__(
        self,
        client: TokenworkerClient | AsyncTokenworkerClient,
        connection_id: str,
        *,
        min_ttl: float | None = None,
    ) -> None:
        self._client = client
        self._connection_id = connection_id
        self._min_ttl = min_ttl
        self._held: Credentials | None = None

    def __repr__(self) -> str:
        return f"TokenworkerAuth(connection_id={self._connection_id!r})"

    def _reusable(self) -> Credentials | None:
        held = self._held
        margin = max(REUSE_MARGIN, self._min_ttl or 0.0)
        if held is None or held.expires_at is None or held.expires_at - time.time() <= margin:
            return None
        return held

    def _authorize(self, request: httpx.Request, creds: Credentials) -> httpx.Request:
        self._held = creds
        if creds.instance_url is None or not _same_origin(request.url, creds.instance_url):
            raise ValueError(
                f"TokenworkerAuth: {request.url.scheme}://{request.url.host} is not the "
                f"instance_url of connection {self._connection_id!r}"
            )
        request.headers["Authorization"] = f"Bearer {creds.access_token}"
        return request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        client = self._client
        if not isinstance(client, TokenworkerClient):
            raise TypeError("an httpx.Client needs TokenworkerAuth(TokenworkerClient(...), id)")
        request.read()  # a retry sends the body again
        creds = self._reusable() or client.credentials(self._connection_id, self._min_ttl)
        response = yield self._authorize(request, creds)
        if response.status_code == 401 and classify_401(response.read()) is Rejection.EXPIRED:
            fresh = client.token_rejected(self._connection_id, creds.access_token)
            response.close()
            retried = yield self._authorize(request, fresh)
            if retried.status_code == 401:
                self._held = None  # never reuse a token Salesforce refused

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        client = self._client
        if not isinstance(client, AsyncTokenworkerClient):
            raise TypeError(
                "an httpx.AsyncClient needs TokenworkerAuth(AsyncTokenworkerClient(...), id)"
            )
        await request.aread()
        creds = self._reusable() or await client.credentials(self._connection_id, self._min_ttl)
        response = yield self._authorize(request, creds)
        if response.status_code == 401 and classify_401(await response.aread()) is (
            Rejection.EXPIRED
        ):
            fresh = await client.token_rejected(self._connection_id, creds.access_token)
            await response.aclose()
            retried = yield self._authorize(request, fresh)
            if retried.status_code == 401:
                self._held = None


def _same_origin(url: httpx.URL, instance_url: str) -> bool:
    base = httpx.URL(instance_url)
    return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
