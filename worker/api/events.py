"""The event stream over HTTP: a page of events, or server-sent events as they happen.

    GET /events?after=ID&limit=N   read   {items: [{id, event, ts, ...}], next_after}
    GET /events/stream             read   text/event-stream, `Last-Event-ID` (or ?after=) honoured

A stream tails the Redis stream with XREAD BLOCK on its own connection (a blocked read must
never hold one of the pool's connections that credential reads need), blocking at most
POLL_SECONDS at a time so it notices a server shutdown promptly; a comment line every
HEARTBEAT_SECONDS keeps proxies from closing an idle stream. A client that goes away cancels it
(Starlette listens for the disconnect) and its connection is closed. At most MAX_STREAMS run
at once per process; more are refused with 503 and Retry-After.
"""

from __future__ import annotations

import json as jsonlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from worker.api import spec
from worker.api.app import json
from worker.api.auth import require
from worker.api.errors import ApiError, invalid
from worker.api.inputs import query, whole
from worker.engine.events import read_events
from worker.engine.runtime import Runtime
from worker.store import clients
from worker.store.apikeys import Scope

STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
MAX_PAGE = 1000
MAX_STREAMS = 100
POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 15.0


def stop_streams(app: Starlette) -> None:
    """Ask every open stream of `app` to end (the server is shutting down)."""
    app.state.streams_stopping = True


def _stream_id(value: str | None, field: str) -> str | None:
    if value is not None and not STREAM_ID.match(value):
        raise invalid(field, "an event id such as 1700000000000-0")
    return value


async def page(request: Request) -> Response:
    await require(request, Scope.READ)
    params = query(request, {"after", "limit"})
    after = _stream_id(params.get("after"), "after")
    limit = whole(params.get("limit"), "limit", 1, MAX_PAGE, 100)
    rt: Runtime = request.app.state.runtime
    rows = await read_events(rt.redis, rt.store.keys, limit, after)
    items = [{"id": row_id, **event} for row_id, event in rows]
    return json({"items": items, "next_after": rows[-1][0] if rows else after})


async def stream(request: Request) -> Response:
    await require(request, Scope.READ)
    params = query(request, {"after"})
    after = _stream_id(request.headers.get("last-event-id"), "Last-Event-ID")
    after = _stream_id(params.get("after"), "after") or after
    return sse_response(request, after)


def sse_response(request: Request, after: str | None, named: bool = True) -> Response:
    """The event stream from `after` (None: from now on), refused with 503 past MAX_STREAMS.
    `named=False` leaves out the `event:` line, so a browser's `onmessage` sees every event
    (the ops console)."""
    state = request.app.state
    if getattr(state, "open_streams", 0) >= MAX_STREAMS:
        raise ApiError(
            503,
            "too_many_streams",
            f"at most {MAX_STREAMS} event streams per api process",
            headers={"Retry-After": "5"},
        )
    return StreamingResponse(
        _tail(request, after, named),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _last_id(client: Redis, key: str) -> str:
    """Where "from now on" starts: the newest id (a later `$` would skip events that arrive
    between two reads)."""
    newest: Any = await client.xrevrange(key, count=1)
    if not newest:
        return "0-0"
    row_id = newest[0][0]
    return row_id.decode() if isinstance(row_id, bytes) else str(row_id)


async def _tail(request: Request, after: str | None, named: bool) -> AsyncIterator[str]:
    rt: Runtime = request.app.state.runtime
    state = request.app.state
    state.open_streams = getattr(state, "open_streams", 0) + 1
    client = clients.async_client(
        rt.settings.store_endpoint, socket_timeout=10, socket_connect_timeout=5
    )
    try:
        position = after or await _last_id(client, rt.store.keys.events)
        yield "retry: 2000\n\n"
        quiet_since = time.monotonic()
        while not getattr(state, "streams_stopping", False):
            rows = await read_events(
                client, rt.store.keys, 100, position, block_ms=int(POLL_SECONDS * 1000)
            )
            for row_id, event in rows:
                position = row_id
                yield _frame(row_id, event, named)
            if rows:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                quiet_since = time.monotonic()
                yield ": heartbeat\n\n"
    finally:
        state.open_streams -= 1
        with anyio.CancelScope(shield=True):  # a disconnect cancels us; still close the socket
            await client.aclose()


def _frame(row_id: str, event: dict[str, Any], named: bool = True) -> str:
    data = jsonlib.dumps(event, separators=(",", ":"))
    name = f"event: {event.get('event', 'message')}\n" if named else ""
    return f"id: {row_id}\n{name}data: {data}\n\n"


def routes() -> list[BaseRoute]:
    return [
        Route("/events", page, methods=["GET"]),
        Route("/events/stream", stream, methods=["GET"]),
    ]


def openapi() -> dict[str, Any]:
    event = {"type": "object", "additionalProperties": True}
    after = spec.param(
        "after", "query", "Only events after this id (a previous item's `id`).", spec.STRING
    )
    return {
        "paths": {
            "/events": {
                "get": spec.operation(
                    "Events, oldest first: the newest `limit`, or those after `after`",
                    "read",
                    (
                        200,
                        "a page of events",
                        spec.obj(
                            {
                                "items": {"type": "array", "items": event},
                                "next_after": spec.NULLABLE_STRING,
                            }
                        ),
                    ),
                    tag="events",
                    params=(
                        after,
                        spec.param("limit", "query", "1-1000, default 100", {"type": "integer"}),
                    ),
                    errors={422: "a bad after or limit"},
                )
            },
            "/events/stream": {
                "get": spec.operation(
                    "Server-sent events as they happen (`Last-Event-ID` resumes)",
                    "read",
                    (200, "text/event-stream: `id`, `event` (the name), `data` (JSON)", None),
                    tag="events",
                    params=(
                        after,
                        spec.param(
                            "Last-Event-ID", "header", "Resume after this event id.", spec.STRING
                        ),
                    ),
                    errors={422: "a bad event id", 503: "too many open streams"},
                )
            },
        }
    }
