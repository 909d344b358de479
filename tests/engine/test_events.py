"""worker/engine/events.py: event objects, the capped stream, and what reaches the webhook."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
import structlog

from config.logging import SECRET_KEYS
from tests.helpers import SANDBOX_INTEGRATION
from worker.domain.models import Connection
from worker.engine import events
from worker.engine.events import SECRET_FIELDS, EventSink, build, read_events
from worker.store.keys import Keys

now = 1_800_000_000.0
CONN = Connection(id="c-1", integration="acme", refresh_token="5Aep861-refresh")
INTEGRATION = SANDBOX_INTEGRATION


class TestBuild:
    @pytest.mark.parametrize("name", sorted(SECRET_FIELDS))
    def test_refuses_secret_named_fields(self, name: str) -> None:
        """A field with a secret's name is refused outright, whatever its value."""
        with pytest.raises(ValueError, match=name):
            build(events.TOKEN_REFRESHED, CONN, INTEGRATION, now, **{name: "x"})
        with pytest.raises(ValueError, match=name):
            build(events.TOKEN_REFRESHED, CONN, INTEGRATION, now, **{name: None})

    def test_refuses_every_name_the_log_redactor_masks(self) -> None:
        """Every name the logs treat as secret is also kept out of events (stream, webhook)."""
        accepted = []
        for name in sorted(SECRET_KEYS):
            try:
                build(events.TOKEN_REFRESHED, CONN, INTEGRATION, now, **{name: "x"})
            except ValueError:
                continue
            accepted.append(name)
        assert accepted == []

    def test_drops_none_values(self) -> None:
        """Fields passed as None are left out, the others kept."""
        event = build(events.TOKEN_REFRESH_FAILED, CONN, INTEGRATION, now,
                      error="unknown_error", http_status=None, attempt=2)
        assert event["error"] == "unknown_error"
        assert event["attempt"] == 2
        assert "http_status" not in event

    def test_includes_connection_integration_and_provider(self) -> None:
        """A connection event names the connection, its integration and the provider."""
        event = build(events.REAUTH_REQUIRED, CONN, INTEGRATION, now)
        assert event == {
            "event": "connection.reauth_required",
            "ts": "2027-01-15T08:00:00.000Z",
            "connection_id": "c-1",
            "integration": "acme",
            "provider": "salesforce-sandbox",
        }

    def test_connection_alone_names_its_integration(self) -> None:
        """Without the Integration object the connection's integration name is used."""
        event = build(events.RECOVERED, CONN, None, now)
        assert event["integration"] == "acme"
        assert "provider" not in event

    def test_integration_alone(self) -> None:
        """An integration event has no connection_id."""
        event = build(events.INTEGRATION_MISCONFIGURED, None, INTEGRATION, now)
        assert (event["integration"], event["provider"]) == ("acme", "salesforce-sandbox")
        assert "connection_id" not in event

    def test_ts_is_iso_utc_with_z(self) -> None:
        """ts is ISO 8601 in UTC with milliseconds, ending in Z."""
        ts = build(events.TOKEN_REFRESHED, None, None, now + 0.25)["ts"]
        assert ts == "2027-01-15T08:00:00.250Z"
        assert ts.endswith("Z")

    def test_task_id_comes_from_the_bound_context(self) -> None:
        """A Celery task id bound in structlog's context is carried on the event."""
        with structlog.contextvars.bound_contextvars(task_id="task-42"):
            event = build(events.TOKEN_REFRESHED, CONN, None, now)
        assert event["task_id"] == "task-42"
        assert "task_id" not in build(events.TOKEN_REFRESHED, CONN, None, now)


class Clock:
    def __init__(self) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


async def emit_all(
    names: list[str], forward: list[dict[str, Any]] | None = None
) -> tuple[fakeredis.FakeAsyncRedis, Keys]:
    """A fresh fake Redis with `names` emitted in order, one second apart."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    keys = Keys("t:")

    async def collect(event: dict[str, Any]) -> None:
        assert forward is not None
        forward.append(event)

    sink = EventSink(redis, keys, collect if forward is not None else None, clock=Clock())
    for name in names:
        await sink.emit(name, CONN, INTEGRATION, detail=name)
    return redis, keys


class TestEventSink:
    async def test_emit_returns_and_stores_the_event(self) -> None:
        """emit() stores the built event on the stream, stamped by the sink's clock."""
        redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        keys = Keys("t:")
        sink = EventSink(redis, keys, clock=lambda: now)
        event = await sink.emit(events.TOKEN_REFRESHED, CONN, INTEGRATION, attempt=1)
        stored = await read_events(redis, keys, limit=10)
        assert [item for _, item in stored] == [event]
        assert event["ts"] == "2027-01-15T08:00:00.000Z"

    async def test_read_events_oldest_first(self) -> None:
        """Events come back in the order they were emitted."""
        names = [events.TOKEN_REFRESHED, events.TOKEN_REFRESH_FAILED, events.RECOVERED]
        redis, keys = await emit_all(names)
        rows = await read_events(redis, keys, limit=10)
        assert [event["event"] for _, event in rows] == names

    async def test_limit_keeps_the_newest(self) -> None:
        """limit=N returns the newest N events, still oldest first."""
        names = [f"test.event{n}" for n in range(5)]
        redis, keys = await emit_all(names)
        rows = await read_events(redis, keys, limit=2)
        assert [event["event"] for _, event in rows] == names[-2:]

    async def test_after_returns_only_later_events(self) -> None:
        """after=<stream id> continues from that event, exclusive, oldest first."""
        names = [f"test.event{n}" for n in range(4)]
        redis, keys = await emit_all(names)
        first = await read_events(redis, keys, limit=4)
        rows = await read_events(redis, keys, limit=10, after=first[1][0])
        assert [event["event"] for _, event in rows] == names[2:]

    async def test_empty_stream(self) -> None:
        """No events yet: an empty list."""
        redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        assert await read_events(redis, Keys("t:"), limit=10) == []

    def test_only_webhook_events_are_forwarded(self) -> None:
        """Failures and recoveries go to the webhook; routine refreshes do not."""
        forwarded: list[dict[str, Any]] = []
        names = [events.TOKEN_REFRESHED, events.REAUTH_REQUIRED, events.RECOVERED]
        asyncio.run(emit_all(names, forwarded))
        assert [event["event"] for event in forwarded] == names[1:]
