"""`ANY /proxy/{id}/{path}`: a request forwarded to the connection's instance_url with its token.

The host app calls Salesforce's REST API through us without ever holding a token. The answer
streams back as Salesforce sent it (status, headers such as `Sforce-Limit-Info`, the bytes still
compressed), minus hop-by-hop headers. Where a request may go and which headers cross is
decided in `worker.api.proxy_rules`, before the credentials are even read.

On Salesforce's 401 `INVALID_SESSION_ID` the token is reported through the rejected-token path
(one refresh however many callers report it) and the request is sent once more with the new
token, when its body can be replayed: bodies up to REPLAY_CAP are buffered for that, larger ones
stream through and their 401 is passed back after the report. The 401 that says the session is
not valid for this API is a policy problem a refresh cannot fix: passed back and logged, never
retried. The second answer is always the last: no refresh loop.

aiohttp, one ClientSession per process (on `app.state.proxy_http`, closed by `shutdown`): the
project measured httpx's async pool collapsing at high concurrency. Redirects are never
followed; timeouts bound the connect and each read (HTTP_TIMEOUT), not the whole transfer, so a
large export can stream for as long as it keeps moving.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import aiohttp
import httpx
import structlog
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Scope as AsgiScope
from yarl import URL

from worker.api import proxy_rules as rules
from worker.api import spec
from worker.api.auth import require
from worker.api.errors import ApiError
from worker.engine.runtime import Runtime
from worker.salesforce.sessions import Rejection, classify_401
from worker.store.apikeys import Scope

log = structlog.get_logger("tokenworker.api.proxy")

REPLAY_CAP = 1 << 20  # bodies up to 1 MiB are buffered, so a rejected token can be retried
_REJECTION_CAP = 64 << 10  # how much of a 401 body is read to tell expired from policy
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class Token(Protocol):
    @property
    def access_token(self) -> str: ...
    @property
    def instance_url(self) -> str | None: ...


class TokenSource(Protocol):
    """`worker.service.credentials` (the module satisfies this); tests pass fakes."""

    async def credentials(
        self, rt: Runtime, connection_id: str, min_ttl: float | None = None
    ) -> Token: ...
    async def token_rejected(self, rt: Runtime, connection_id: str, access_token: str) -> Token: ...


class _AnyPath(Convertor[str]):
    """Starlette's `path` convertor with newlines too (`.` stops at them): a path with an
    encoded CR/LF must reach `check_path` and get its 400, not fall through to a 404."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("proxy_path", _AnyPath())


def routes(tokens: TokenSource | None = None, replay_cap: int = REPLAY_CAP) -> list[BaseRoute]:
    if tokens is None:
        from worker.service import credentials  # noqa: PLC0415  (the service, at mount time)

        tokens = credentials
    proxy = Proxy(tokens, replay_cap)
    return [Route("/proxy/{id}/{path:proxy_path}", proxy.handle, methods=METHODS, name="proxy")]


def openapi() -> dict[str, Any]:
    path = spec.param(
        "path",
        "path",
        "The Salesforce path after the instance_url, e.g. services/data/v62.0/limits; the query "
        "string is forwarded as is.",
        spec.STRING,
    )
    errors = {
        400: "a path that could leave the instance_url (`..`, `//`, `@`, a scheme, ...)",
        404: "no such connection",
        409: "the connection needs re-authorization",
        502: "Salesforce could not be reached",
        503: "no usable token and Salesforce unavailable",
        504: "Salesforce did not answer in time",
    }
    operation = spec.operation(
        "Call Salesforce with the connection's token",
        "read",
        (200, "Salesforce's answer, streamed with its status and headers", None),
        tag="proxy",
        description=(
            "Forwarded to the connection's stored instance_url + `/` + path with its Bearer "
            "token; hop-by-hop headers, Cookie and Authorization are not forwarded. On "
            "Salesforce's 401 INVALID_SESSION_ID the token is refreshed and the request sent "
            "once more (bodies up to 1 MiB); the policy 401 (session not valid for this API) "
            "is returned as it is."
        ),
        params=(spec.ID, path),
        errors=errors,
    )
    methods = [m.lower() for m in METHODS if m != "HEAD"]
    return {"paths": {"/proxy/{id}/{path}": dict.fromkeys(methods, operation)}}


async def shutdown(app: object) -> None:
    """Close the process's ClientSession (called by `make_app`'s lifespan)."""
    session: aiohttp.ClientSession | None = getattr(getattr(app, "state", None), "proxy_http", None)
    if session is not None:
        await session.close()


@dataclass(frozen=True)
class Body:
    """What the caller sent: whole (replayable) or a stream that can be sent only once."""

    whole: bytes | None
    stream: AsyncIterator[bytes] | None = None

    @property
    def replayable(self) -> bool:
        return self.whole is not None

    def payload(self) -> bytes | AsyncIterator[bytes] | None:
        return self.stream if self.whole is None else (self.whole or None)


class Proxy:
    def __init__(self, tokens: TokenSource, replay_cap: int) -> None:
        self._tokens = tokens
        self._replay_cap = replay_cap

    async def handle(self, request: Request) -> Response:
        await require(request, Scope.READ)
        connection_id, raw_path = split_raw_path(request.scope)
        path = rules.check_path(raw_path)
        query = _query(request)
        body = await read_body(request, self._replay_cap)
        rt: Runtime = request.app.state.runtime
        token = await self._tokens.credentials(rt, connection_id)
        answer = await _send(request, token, path, query, body)
        if answer.status != 401:
            return _relay(answer)
        try:
            return await self._rejected(request, connection_id, token, answer, body, (path, query))
        except BaseException:
            answer.release()  # a refresh that failed (409, 503) must not leak the connection
            raise

    async def _rejected(
        self,
        request: Request,
        connection_id: str,
        token: Token,
        answer: aiohttp.ClientResponse,
        body: Body,
        where: tuple[str, str],
    ) -> Response:
        """Salesforce's 401: report and retry once, or pass it back (see the module docstring)."""
        head = await _read_up_to(answer, _REJECTION_CAP)
        verdict = classify_401(head)
        if verdict is Rejection.POLICY:
            log.warning("proxy.session_not_valid_for_api", connection_id=connection_id)
        if verdict is not Rejection.EXPIRED:
            return _relay(answer, head)
        rt: Runtime = request.app.state.runtime
        fresh = await self._tokens.token_rejected(rt, connection_id, token.access_token)
        if not body.replayable:
            log.info("proxy.token_rejected", connection_id=connection_id, retried=False)
            return _relay(answer, head)
        answer.release()
        log.info("proxy.token_rejected", connection_id=connection_id, retried=True)
        return _relay(await _send(request, fresh, *where, body))


def _query(request: Request) -> str:
    query: bytes = request.scope.get("query_string", b"")
    return query.decode("latin-1")


def split_raw_path(scope: AsgiScope) -> tuple[str, str]:
    """(connection id, path still percent-encoded) from the request target as it was sent.

    The raw form is what Salesforce gets, so `%2F` in a record id stays `%2F`; the decoded path
    Starlette routes on would turn it into a separator."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    root = scope.get("root_path", "").encode()
    if root and raw.startswith(root):
        raw = raw[len(root) :]
    text = raw.split(b"?", 1)[0].decode("latin-1")
    prefix = "/proxy/"
    if not text.startswith(prefix) or "/" not in text[len(prefix) :]:
        raise ApiError(400, "invalid_request", "path: expected /proxy/{id}/{path}", field="path")
    raw_id, _, path = text[len(prefix) :].partition("/")
    return unquote(raw_id), path


async def read_body(request: Request, cap: int) -> Body:
    """The whole body when it fits in `cap` (so it can be sent twice), else a stream."""
    declared = request.headers.get("content-length", "")
    stream = request.stream().__aiter__()
    if declared.isdigit() and int(declared) > cap:
        return Body(None, stream)
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return Body(None, _chain(chunks, stream))
    return Body(b"".join(chunks))


async def _chain(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


def _session(request: Request) -> aiohttp.ClientSession:
    state = request.app.state
    session: aiohttp.ClientSession | None = getattr(state, "proxy_http", None)
    if session is None or session.closed:
        timeout: float = state.settings.http_timeout
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=1_000, keepalive_timeout=30, ssl=httpx.create_ssl_context()
            ),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
            auto_decompress=False,  # bytes pass through as sent, Content-Encoding with them
            trust_env=False,  # no ~/.netrc credentials; HTTPS_PROXY is read below
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        state.proxy_http = session
    return session


def _egress_proxy(url: URL) -> str | None:
    """HTTPS_PROXY / NO_PROXY as the token calls honour them (https targets only)."""
    proxy = urllib.request.getproxies().get("https")
    if proxy is None or url.scheme != "https" or urllib.request.proxy_bypass(url.host or ""):
        return None
    return proxy


async def _send(
    request: Request, token: Token, path: str, query: str, body: Body
) -> aiohttp.ClientResponse:
    url = rules.target(token.instance_url, path, query)
    api_key = request.headers.get("authorization", "").partition(" ")[2].strip()
    headers = rules.request_headers(
        request.headers.raw, token.access_token, api_key, buffered=body.replayable
    )
    try:
        return await _session(request).request(
            request.method,
            url,
            headers=headers,
            data=body.payload(),
            allow_redirects=False,
            proxy=_egress_proxy(url),
        )
    except TimeoutError:
        raise ApiError(504, "salesforce_timeout", "Salesforce did not answer in time") from None
    except aiohttp.ClientError as error:
        problem = f"Salesforce could not be reached ({type(error).__name__})"
        raise ApiError(502, "salesforce_unreachable", problem) from None


async def _read_up_to(answer: aiohttp.ClientResponse, cap: int) -> bytes:
    head = b""
    while len(head) < cap:
        chunk = await answer.content.read(cap - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _relay(answer: aiohttp.ClientResponse, head: bytes = b"") -> Response:
    response = StreamingResponse(_stream(answer, head), status_code=answer.status)
    response.raw_headers = rules.response_headers(answer.raw_headers)
    return response


async def _stream(answer: aiohttp.ClientResponse, head: bytes) -> AsyncIterator[bytes]:
    try:
        if head:
            yield head
        async for chunk in answer.content.iter_any():
            yield chunk
    except (TimeoutError, aiohttp.ClientError) as error:
        # Headers are sent: the only honest signal left is a cut connection.
        log.warning("proxy.upstream_cut", problem=type(error).__name__)
        raise
    finally:
        answer.release()
