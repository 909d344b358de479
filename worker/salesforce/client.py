"""The three calls tokenworker makes to Salesforce: introspect, refresh, revoke.

All I/O goes through one seam, `Exchange.post`: production uses `AiohttpExchange` (plain
httpx async collapses at hundreds of requests in flight, and even over aiohttp httpx's own
objects doubled the CPU of a call; see the README's benchmark section); tests may pass any
`httpx.AsyncClient`, `httpx.MockTransport` included, which is wrapped in `HttpxExchange`.
Both are held to the same rules by the same tests.

Credentials go only to the integration's login URL, redirects are never followed, each call
has one overall deadline (a slow drip cannot hold it open), and bodies are capped.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote_plus, urlencode, urlsplit

import httpx
import structlog

from config.redaction import REDACTED
from worker.domain.answers import IntrospectionResult, TokenResponse
from worker.domain.models import Integration
from worker.errors import ConfigurationError, TransientError
from worker.salesforce import hosts
from worker.salesforce.responses import (
    MAX_BODY_BYTES,
    decode_json_object,
    error_from_response,
    parse_introspection,
    parse_retry_after,
    parse_token_response,
)

if TYPE_CHECKING:
    import aiohttp

USER_AGENT = "tokenworker/0.1"
_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "identity",
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": USER_AGENT,
}

log = structlog.get_logger("tokenworker.salesforce")
CREDENTIALS_KEPT = 256  # encoded client credentials kept; more integrations than this re-encode
# quote_plus for ASCII with one regex pass: quote_plus walks a token's bytes in Python when
# any needs quoting (a Salesforce token's "!" does): 9.8 -> 2.4 us for a 112-character token.
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
_FORM_QUOTED = {
    chr(code): "+" if code == 0x20 else chr(code) if code in _UNRESERVED else f"%{code:02X}"
    for code in range(128)
}
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9_.~-]")


def form_quote(value: str) -> str:
    """quote_plus(value): the same string, faster for ASCII (every token and secret)."""
    if not value.isascii():
        return quote_plus(value)
    return _NEEDS_QUOTING.sub(lambda found: _FORM_QUOTED[found.group()], value)


# What we send that an error answer must never quote back into an event or a log.
_SECRET_FORM_FIELDS = ("token", "refresh_token", "client_secret", "code", "code_verifier")


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


def _redirect(status: int) -> TransientError:
    return TransientError(
        "unexpected_redirect", f"HTTP {status} redirect was not followed", http_status=status
    )


def _oversized(status: int) -> TransientError:
    return TransientError(
        "oversized_response", f"answer exceeded {MAX_BODY_BYTES} bytes", http_status=status
    )


def _network_error(cause: BaseException) -> TransientError:
    timed_out = isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__
    return TransientError("timeout" if timed_out else "network_error", type(cause).__name__)


class Exchange(Protocol):
    """One form POST and its whole answer: the only I/O the client does."""

    async def post(self, url: str, body: bytes) -> _Answer: ...

    async def aclose(self) -> None: ...


class HttpxExchange:
    """Over any `httpx.AsyncClient`: tests pass `httpx.MockTransport`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, url: str, body: bytes) -> _Answer:
        try:
            async with self.http.stream("POST", url, content=body, headers=_HEADERS) as response:
                return await _read(response.status_code, response.aiter_bytes(), response.headers)
        except httpx.TransportError as error:
            raise _network_error(error.__cause__ or error) from None

    async def aclose(self) -> None:
        await self.http.aclose()


async def _read(status: int, chunks: AsyncIterator[bytes], headers: Mapping[str, str]) -> _Answer:
    """What both exchanges return: a redirect refused, the body capped while it streams in.
    `headers` is case-insensitive (httpx.Headers, aiohttp's CIMultiDictProxy)."""
    if 300 <= status < 400:
        raise _redirect(status)
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > MAX_BODY_BYTES:
            raise _oversized(status)
    return _Answer(
        status,
        bytes(received),
        headers.get("content-type", ""),
        parse_retry_after(headers.get("retry-after")),
    )


class AiohttpExchange:
    """Production: aiohttp directly, one keep-alive pool per host.

    httpx's own request and header objects cost about as much CPU as the whole aiohttp call
    (profile in the README's benchmark section), and this loop makes every call to
    Salesforce. Redirects are never followed; aiohttp never resends a POST by itself.
    The session is made on first use, inside the event loop that will use it."""

    def __init__(self, max_connections: int = 1_000) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        # HTTPS_PROXY / NO_PROXY as httpx honours them (read once; no ~/.netrc credentials).
        self._proxy = urllib.request.getproxies().get("https")
        self._proxy_for: dict[str, str | None] = {}  # host -> proxy URL or None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp  # noqa: PLC0415  (heavy to import; only worker processes need it)

        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=30,
            ssl=httpx.create_ssl_context(),  # certifi, or SSL_CERT_FILE: same trust as httpx
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # No timer of aiohttp's own: SalesforceClient._post bounds each whole call (connect,
            # send, the body read to its end) with one asyncio.timeout, the same for httpx.
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            trust_env=False,  # no proxy or ~/.netrc credentials picked up behind our back
            skip_auto_headers=("User-Agent",),
        )
        return self._session

    async def post(self, url: str, body: bytes) -> _Answer:
        import aiohttp  # noqa: PLC0415

        session = self._session or self._open()
        try:
            async with session.post(
                url, data=body, headers=_HEADERS, allow_redirects=False, proxy=self._proxy_of(url)
            ) as response:
                return await _read(response.status, response.content.iter_any(), response.headers)
        except aiohttp.ClientError as error:
            raise _network_error(error) from None

    def _proxy_of(self, url: str) -> str | None:
        if self._proxy is None:
            return None
        host = urlsplit(url).hostname or ""
        if host not in self._proxy_for:
            bypass = urllib.request.proxy_bypass(host)
            self._proxy_for[host] = None if bypass else self._proxy
        return self._proxy_for[host]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


Observer = Callable[[str, float, int], None]  # (call, seconds, HTTP status)


class Admission(Protocol):
    """Permits to call Salesforce for an integration (worker.store.ratelimit.RateLimiter)."""

    async def take(self, integration: str) -> None: ...


class SalesforceClient:
    """Salesforce's OAuth endpoints for one process; share it across connections."""

    def __init__(self, http: httpx.AsyncClient | Exchange, timeout: float) -> None:
        self.exchange: Exchange = (
            HttpxExchange(http) if isinstance(http, httpx.AsyncClient) else http
        )
        self._timeout = timeout
        self.observers: list[Observer] = []
        self.admission: Admission | None = None  # every call takes a permit first
        self._credentials: dict[tuple[str, str], bytes] = {}  # (id, secret) -> encoded

    async def admit(self, integration: Integration) -> None:
        """Take the permit for a call now (Throttled when none comes); pass `admitted=True`
        to that call. For callers that must know before they commit to sending."""
        if self.admission is not None:
            await self.admission.take(integration.name)

    async def aclose(self) -> None:
        await self.exchange.aclose()

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

    async def refresh(
        self, integration: Integration, refresh_token: str, *, admitted: bool = False
    ) -> TokenResponse:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "format": "json"}
        return await self.token_grant(integration, form, admitted=admitted)

    async def token_grant(
        self, integration: Integration, form: Mapping[str, str], *, admitted: bool = False
    ) -> TokenResponse:
        """POST a grant to the token endpoint of `integration.login_url`: the parsed token
        response, or the classified error. Refreshes and the connect flow's code exchange
        (`worker.salesforce.oauth`) both come through here."""
        answer = await self._post(integration, hosts.TOKEN_PATH, form, admitted=admitted)
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

    def _form_body(self, form: Mapping[str, str], integration: Integration) -> bytes:
        """`form` and the client credentials, form-encoded as urlencode does (the
        credentials' part once per client, not once per call)."""
        pair = (integration.client_id, integration.client_secret)
        credentials = self._credentials.get(pair)
        if credentials is None:
            if len(self._credentials) >= CREDENTIALS_KEPT:
                self._credentials.clear()
            credentials = urlencode({"client_id": pair[0], "client_secret": pair[1]}).encode()
            self._credentials[pair] = credentials
        fields = "&".join([f"{key}={form_quote(value)}" for key, value in form.items()])
        return fields.encode() + b"&" + credentials if fields else credentials

    async def _post(
        self,
        integration: Integration,
        path: str,
        form: Mapping[str, str],
        *,
        admitted: bool = False,
    ) -> _Answer:
        if not admitted:
            await self.admit(integration)
        url = hosts.endpoint(integration.login_url, path)
        body = self._form_body(form, integration)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self.exchange.post(url, body)
        except TimeoutError:
            raise TransientError(
                "timeout", f"no complete answer within {self._timeout:g}s"
            ) from None
        for observe in self.observers:
            try:
                observe(path, time.perf_counter() - started, answer.status)
            except Exception:
                log.exception("observer.failed", call=path)
        if answer.status != 200:
            # An error answer may quote what we sent; none of it may reach events or logs.
            sent = (*(form.get(name) for name in _SECRET_FORM_FIELDS), integration.client_secret)
            answer.body = _scrub(answer.body, sent)
        return answer
