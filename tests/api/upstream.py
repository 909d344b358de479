"""A tiny Salesforce-shaped upstream for the proxy tests, and raw ASGI calls into the app.

The upstream (aiohttp, its own thread and loop) records every request as it arrived and
answers like Salesforce's REST API: 401 `INVALID_SESSION_ID` unless the Bearer token is live,
the policy 401 when told to, `Sforce-Limit-Info` on a success.

`asgi()` calls the app with a raw request target: httpx (and so TestClient) would normalise
`..` away before the app ever saw it, and buffers answers, so neither escapes nor streaming
could be tested through it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from starlette.testclient import TestClient

INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
WRONG_API = [
    {
        "message": "This session is not valid for use with the REST API",
        "errorCode": "INVALID_SESSION_ID",
    }
]


@dataclass
class Seen:
    method: str
    target: str  # path and query exactly as sent
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Upstream:
    live: set[str] = field(default_factory=lambda: {"tok-1"})
    policy: bool = False
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    first_bytes: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def start(self) -> Upstream:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = b""
        async for chunk in request.content.iter_any():
            self.first_bytes.set()
            body += chunk
        headers = [(k.decode(), v.decode()) for k, v in request.raw_headers]
        self.seen.append(Seen(request.method, request.raw_path, headers, body))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.live:
            return web.json_response(INVALID_SESSION, status=401)
        if self.policy:
            return web.json_response(WRONG_API, status=401)
        if request.path.endswith("/stream"):
            return await self._stream(request)
        answer = web.json_response({"method": request.method, "body": body.decode()})
        answer.headers.update(
            {
                "Sforce-Limit-Info": "api-usage=7/15000",
                "X-Kept": "yes",
                "Keep-Alive": "timeout=5",
                "X-Upstream-Hop": "1",
                "Proxy-Authenticate": "Basic",
                "Set-Cookie": "BrowserId=abc; Domain=.salesforce.com",
            }
        )
        answer.headers.add("Connection", "X-Upstream-Hop")
        return answer

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await answer.prepare(request)
        await answer.write(b"first,")
        released = await asyncio.to_thread(self.release.wait, 10)
        await answer.write(b"second" if released else b"buffered")
        await answer.write_eof()
        return answer


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


Hook = Callable[[], Awaitable[None]]


def asgi(
    client: TestClient,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    chunks: list[bytes] | None = None,
    *,
    before_last_chunk: Hook | None = None,
    on_first_body: Callable[[], None] | None = None,
) -> Answer:
    """One request to the app with `target` sent exactly as written."""
    path, _, query = target.partition("?")
    parts = list(chunks or [b""])

    async def go() -> Answer:
        done = asyncio.Event()
        status: list[int] = []
        out_headers: list[tuple[str, str]] = []
        body = bytearray()

        async def receive() -> dict[str, Any]:
            if parts:
                if len(parts) == 1 and before_last_chunk is not None and chunks:
                    await before_last_chunk()
                chunk = parts.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                out_headers.extend((k.decode(), v.decode()) for k, v in message["headers"])
            elif message["type"] == "http.response.body":
                if message.get("body") and not body and on_first_body is not None:
                    on_first_body()
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    done.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"testserver")]
            + [(k.lower().encode(), v.encode()) for k, v in headers or []],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await client.app(scope, receive, send)  # type: ignore[arg-type]
        return Answer(status[0], out_headers, bytes(body))

    return client.portal.call(go)  # type: ignore[union-attr]
