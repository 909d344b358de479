"""Just enough HTTP/1.1 server for the emulator, as an asyncio Protocol.

Keep-alive, pipelining (answered strictly in order, one at a time), partial reads,
Content-Length bodies up to 1 MiB and `Expect: 100-continue`. No chunked request bodies:
no client of the emulator sends them. A frame layer this thin costs a few microseconds per
request, which is what lets the benchmark measure the worker rather than the emulator.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_HEAD = 64 * 1024
# Past this much unread input while a response is pending, stop reading from the socket.
_READ_HIGH_WATER = MAX_BODY + MAX_HEAD

REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering at all


Handler = Callable[[Request], Response]


def json_response(
    status: int, payload: object, content_type: str = "application/json;charset=UTF-8"
) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status, body, content_type)


class HttpError(Exception):
    """The bytes on the wire are not a request we will answer normally."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class _Head:
    method: str
    target: str
    headers: dict[str, str]
    body_start: int
    length: int
    keep_alive: bool
    expect_continue: bool


def parse_head(buf: bytearray) -> _Head | None:
    """The request head at the start of `buf`, or None until it has fully arrived."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise HttpError(431, "request head too large")
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    method, target, version = _request_line(lines[0])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name[-1] in " \t":
            raise HttpError(400, "malformed header line")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(411, "only Content-Length bodies are supported")
    length = _content_length(headers.get("content-length"))
    connection = headers.get("connection", "").lower()
    # HTTP/1.1 keeps connections open unless told otherwise; HTTP/1.0 only when asked.
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    expect = headers.get("expect", "").lower() == "100-continue"
    return _Head(method, target, headers, end + 4, length, keep_alive, expect)


def _request_line(line: str) -> tuple[str, str, str]:
    parts = line.split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not method.isalpha() or not method.isupper() or not target.startswith("/"):
        raise HttpError(400, "malformed request line")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "unsupported HTTP version")
    return method, target, version


def _content_length(raw: str | None) -> int:
    if raw is None:
        return 0
    if not raw.isdigit() or not raw.isascii():
        raise HttpError(400, "invalid Content-Length")
    length = int(raw)
    if length > MAX_BODY:
        raise HttpError(413, "body larger than 1 MiB")
    return length


def serialize(response: Response, keep_alive: bool) -> bytes:
    head = [
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
        f"Content-Length: {len(response.body)}",
    ]
    if response.content_type:
        head.append(f"Content-Type: {response.content_type}")
    head.extend(f"{name}: {value}" for name, value in response.headers)
    if not keep_alive:
        head.append("Connection: close")
    head.append("\r\n")
    return "\r\n".join(head).encode("latin-1") + response.body


class HttpProtocol(asyncio.Protocol):
    """One connection. Requests are handled one at a time so answers leave in order."""

    def __init__(self, handler: Handler, connections: set[HttpProtocol]) -> None:
        self._handler = handler
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._head: _Head | None = None
        self._busy = False  # a response is pending (latency or delay timer)
        self._write_paused = False
        self._read_paused = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._busy or self._write_paused:
            if len(self._buf) > _READ_HIGH_WATER and self._transport and not self._read_paused:
                self._transport.pause_reading()
                self._read_paused = True
            return
        self._drain()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._drain()

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def _drain(self) -> None:
        while not (self._busy or self._write_paused or self._closing):
            try:
                request = self._next_request()
            except HttpError as exc:
                self._send(Response(exc.status, str(exc).encode(), "text/plain"), False)
                return
            if request is None:
                break
            self._dispatch(request)
        if self._read_paused and not self._busy and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()

    def _next_request(self) -> Request | None:
        head = self._head
        if head is None:
            head = parse_head(self._buf)
            if head is None:
                return None
            self._head = head
            if head.expect_continue and len(self._buf) < head.body_start + head.length:
                assert self._transport is not None
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        end = head.body_start + head.length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[head.body_start : end])
        del self._buf[:end]
        self._head = None
        path, _, query = head.target.partition("?")
        return Request(head.method, path, query, head.headers, body, head.keep_alive)

    def _dispatch(self, request: Request) -> None:
        try:
            response = self._handler(request)
        except Exception:
            # A bug in a route must not take the whole emulator down mid-benchmark.
            log.exception("emulator handler failed for %s %s", request.method, request.path)
            response = Response(500, b"internal error", "text/plain")
        keep_alive = request.keep_alive
        if response.delay > 0:
            self._busy = True
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(response.delay, self._finish, response, keep_alive)
        else:
            self._send(response, keep_alive)

    def _finish(self, response: Response, keep_alive: bool) -> None:
        self._timer = None
        self._busy = False
        self._send(response, keep_alive)
        self._drain()

    def _send(self, response: Response, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        if response.drop:
            self.close()
            return
        transport.write(serialize(response, keep_alive))
        if not keep_alive:
            self.close()
