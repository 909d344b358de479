"""The three calls tokenworker makes to Salesforce: introspect, refresh, revoke.

Takes any `httpx.AsyncClient`, so tests pass `httpx.MockTransport` or the emulator and
production passes the aiohttp-backed transport from `make_http_client` (plain httpx async
collapses at hundreds of requests in flight; see the README's benchmark section).

Credentials go only to the integration's login URL, redirects are never followed, each call
has one overall deadline (a slow drip cannot hold it open), and bodies are capped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx

from worker.errors import ConfigurationError, TransientError
from worker.models import Integration
from worker.redaction import REDACTED
from worker.salesforce import hosts
from worker.salesforce.responses import (
    MAX_BODY_BYTES,
    IntrospectionResult,
    TokenResponse,
    decode_json_object,
    error_from_response,
    parse_introspection,
    parse_retry_after,
    parse_token_response,
)

USER_AGENT = "tokenworker/0.1"


def make_http_client(timeout: float, max_connections: int = 400) -> httpx.AsyncClient:
    """The production client: httpx's API over aiohttp's I/O, keep-alive pools per host."""
    from httpx_aiohttp import AiohttpTransport  # noqa: PLC0415  (aiohttp is heavy to import)

    limits = httpx.Limits(max_connections=max_connections, keepalive_expiry=30)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits),
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def _scrub(body: bytes, secrets: tuple[str | None, ...]) -> bytes:
    for secret in secrets:
        if secret:
            body = body.replace(secret.encode(), REDACTED.encode())
    return body


class _Answer:
    __slots__ = ("body", "content_type", "retry_after", "status")

    def __init__(self, status: int, body: bytes, content_type: str, retry_after: float | None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.retry_after = retry_after


class SalesforceClient:
    """Salesforce's OAuth endpoints for one process; share it across connections."""

    def __init__(self, http: httpx.AsyncClient, timeout: float) -> None:
        self._http = http
        self._timeout = timeout

    async def introspect(
        self, integration: Integration, token: str, hint: str = "access_token"
    ) -> IntrospectionResult:
        answer = await self._post(
            integration, hosts.INTROSPECT_PATH, {"token": token, "token_type_hint": hint}
        )
        if answer.status == 200:
            data = decode_json_object(answer.body, answer.content_type, answer.status)
            return parse_introspection(data, answer.status)
        error = error_from_response(
            answer.status, answer.body, answer.content_type, answer.retry_after
        )
        if answer.status == 401 or error.error in ("invalid_client", "invalid_client_id"):
            raise ConfigurationError(
                error.error, error.error_description, http_status=answer.status
            )
        if error.error == "unsupported_token_type":
            # Salesforce's answer for a string that is no token of its at all: needs a refresh.
            return IntrospectionResult(active=False)
        if isinstance(error, TransientError):
            raise error
        raise TransientError(error.error, error.error_description, http_status=answer.status)

    async def refresh(self, integration: Integration, refresh_token: str) -> TokenResponse:
        answer = await self._post(
            integration,
            hosts.TOKEN_PATH,
            {"grant_type": "refresh_token", "refresh_token": refresh_token, "format": "json"},
        )
        if answer.status != 200:
            raise error_from_response(
                answer.status, answer.body, answer.content_type, answer.retry_after
            )
        data = decode_json_object(answer.body, answer.content_type, answer.status)
        return parse_token_response(data, answer.status)

    async def revoke(self, integration: Integration, token: str) -> None:
        answer = await self._post(integration, hosts.REVOKE_PATH, {"token": token})
        if answer.status != 200:
            raise error_from_response(
                answer.status, answer.body, answer.content_type, answer.retry_after
            )

    async def _post(self, integration: Integration, path: str, form: Mapping[str, str]) -> _Answer:
        payload = dict(form)
        payload["client_id"] = integration.client_id
        payload["client_secret"] = integration.client_secret
        url = hosts.endpoint(integration.login_url, path)
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._exchange(url, payload)
        except TimeoutError:
            raise TransientError(
                "timeout", f"no complete answer within {self._timeout:g}s"
            ) from None
        except httpx.TransportError as error:
            # The aiohttp transport maps every connection error to ConnectTimeout; the cause
            # tells a timeout from a reset.
            cause = error.__cause__ or error
            timed_out = isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__
            code = "timeout" if timed_out else "network_error"
            raise TransientError(code, type(cause).__name__) from None
        if answer.status != 200:
            # An error answer may quote what we sent; none of it may reach events or logs.
            sent = (payload.get("token"), payload.get("refresh_token"), payload["client_secret"])
            answer.body = _scrub(answer.body, sent)
        return answer

    async def _exchange(self, url: str, payload: dict[str, str]) -> _Answer:
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        async with self._http.stream("POST", url, data=payload, headers=headers) as response:
            if 300 <= response.status_code < 400:
                raise TransientError(
                    "unexpected_redirect",
                    f"HTTP {response.status_code} redirect was not followed",
                    http_status=response.status_code,
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise TransientError(
                        "oversized_response",
                        f"answer exceeded {MAX_BODY_BYTES} bytes",
                        http_status=response.status_code,
                    )
            return _Answer(
                response.status_code,
                bytes(body),
                response.headers.get("content-type", ""),
                parse_retry_after(response.headers.get("retry-after")),
            )
