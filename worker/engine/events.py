"""Structured events: one JSON object each, to the log, a capped Redis stream and a webhook.

Names are stable; other tools match on them. Fields: `event`, `ts` (ISO 8601 UTC),
`connection_id`, `integration`, `provider`, and where known `error`, `error_description`,
`http_status`, `attempt`, `next_attempt_at`, `task_id`. Never a token or a secret: fields with
secret names are refused here, whatever the caller passes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.asyncio import Redis

from config.redaction import SECRET_NAMES
from worker.domain.models import Connection, Integration
from worker.store.keys import Keys
from worker.store.pipelining import AutoPipeline

TOKEN_REFRESHED = "token.refreshed"
TOKEN_REFRESH_FAILED = "token.refresh_failed"
REAUTH_REQUIRED = "connection.reauth_required"
RECOVERED = "connection.recovered"
ESCALATED = "connection.escalated"
INSTANCE_URL_CHANGED = "connection.instance_url_changed"
INTEGRATION_MISCONFIGURED = "integration.misconfigured"
INTEGRATION_RECOVERED = "integration.recovered"
INTROSPECTION_UNAVAILABLE = "introspection.unavailable"
INTROSPECTION_RESTORED = "introspection.restored"
SIGNATURE_INVALID = "token.signature_invalid"
INSTANCE_URL_REJECTED = "connection.instance_url_rejected"
# A stored record no configured key opens (TOKENWORKER_ENCRYPTION_KEYS lacks its key).
CONNECTION_UNREADABLE = "connection.unreadable"
# The connect flow (worker.service.connect).
CONNECTION_CREATED = "connection.created"
CONNECTION_RECONNECTED = "connection.reconnected"  # re-authorized: same id, reauth cleared
CONNECT_FAILED = "connection.connect_failed"  # denied, refused, expired or exchange failed
# The same Salesforce user approved the same app under another connection id too: Salesforce
# keeps at most 5 approvals per user and app and silently revokes the oldest.
DUPLICATE_USER = "connection.duplicate_user"
# An operator or host application removed the connection (revoked at Salesforce first).
CONNECTION_REMOVED = "connection.removed"
# Someone pressed a button in the ops console: `action`, `actor` (the API key's name), `outcome`.
CONSOLE_ACTION = "console.action"

# Events worth waking someone for; the rest are informational.
ALERTS = frozenset(
    {
        TOKEN_REFRESH_FAILED,
        REAUTH_REQUIRED,
        ESCALATED,
        INTEGRATION_MISCONFIGURED,
        INTROSPECTION_UNAVAILABLE,
        SIGNATURE_INVALID,
        INSTANCE_URL_REJECTED,
        CONNECTION_UNREADABLE,
        DUPLICATE_USER,
    }
)
WEBHOOK_EVENTS = ALERTS | {RECOVERED, INTEGRATION_RECOVERED, INTROSPECTION_RESTORED}

SECRET_FIELDS = SECRET_NAMES
STREAM_MAXLEN = 100_000

Forward = Callable[[dict[str, Any]], Awaitable[None]]
log = structlog.get_logger("tokenworker.events")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build(
    name: str,
    conn: Connection | None,
    integration: Integration | None,
    now: float,
    **fields: Any,
) -> dict[str, Any]:
    """The event object; secret-named fields are refused, None values dropped."""
    leaked = SECRET_FIELDS.intersection(fields)
    if leaked:
        raise ValueError(f"event {name} must not carry {sorted(leaked)}")
    event: dict[str, Any] = {"event": name, "ts": iso(now)}
    if conn is not None:
        event["connection_id"] = conn.id
    if integration is not None or conn is not None:
        event["integration"] = integration.name if integration else conn.integration  # type: ignore[union-attr]
    if integration is not None:
        event["provider"] = integration.provider.value
    task_id = structlog.contextvars.get_contextvars().get("task_id")
    if task_id:
        event["task_id"] = task_id
    event.update({key: value for key, value in fields.items() if value is not None})
    return event


class EventSink:
    """Where events go. `forward` (the webhook) is only called for WEBHOOK_EVENTS."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        forward: Forward | None = None,
        clock: Callable[[], float] = time.time,
        auto: AutoPipeline | None = None,
    ) -> None:
        self.redis = redis
        self.auto = auto or AutoPipeline(redis)
        self.keys = keys
        self.forward = forward
        self.clock = clock

    async def emit(
        self,
        name: str,
        conn: Connection | None = None,
        integration: Integration | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        event = build(name, conn, integration, self.clock(), **fields)
        level = "warning" if name in ALERTS else "info"
        log.log(_LEVELS[level], name, **{k: v for k, v in event.items() if k != "event"})
        data: dict[Any, Any] = {"data": json.dumps(event, separators=(",", ":"))}
        await self.auto.run(
            lambda pipe: pipe.xadd(self.keys.events, data, maxlen=STREAM_MAXLEN, approximate=True)
        )
        if self.forward is not None and name in WEBHOOK_EVENTS:
            await self.forward(event)
        return event


_LEVELS = {"info": 20, "warning": 30}


async def read_events(
    redis: Redis, keys: Keys, limit: int, after: str | None = None, block_ms: int | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(stream id, event) pairs, oldest first: the newest `limit`, or up to `limit` after
    `after` (waiting up to `block_ms` for the first when given)."""
    rows: list[Any]
    if after is None:
        newest: Any = await redis.xrevrange(keys.events, count=limit)
        rows = list(reversed(newest or []))
    elif block_ms is not None:
        found: Any = await redis.xread({keys.events: after}, block=block_ms, count=limit)
        rows = [row for _, entries in found or [] for row in entries]
    else:
        following: Any = await redis.xrange(keys.events, min=f"({after}", count=limit)
        rows = list(following or [])
    return [(_text(row_id), json.loads(data[b"data"])) for row_id, data in rows]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
