"""worker/telemetry/webhooks.py: signed webhook bodies, verified the way a receiver would."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest

from config.settings import Settings
from worker.telemetry.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookError,
    deliver,
    forwarder,
    sign,
    verify,
)

SECRET = "whsec-test"
URL = "https://hooks.example.com/tokenworker"
BODY = b'{"event":"token.refresh_failed","connection_id":"c-1"}'
EVENT = {"event": "connection.reauth_required", "connection_id": "c-1", "error": "invalid_grant"}


def fresh_timestamp() -> str:
    return str(int(time.time()))


def webhook_settings(secret: str = SECRET) -> Settings:
    env = {"TOKENWORKER_WEBHOOK_URL": URL}
    if secret:
        env["TOKENWORKER_WEBHOOK_SECRET"] = secret
    return Settings.from_env(env, require_keys=False)


class TestSign:
    def test_known_vector(self) -> None:
        """The signature is v1= + hex HMAC-SHA256(secret, "<timestamp>.<body>")."""
        expected = hmac.new(SECRET.encode(), b"1800000000." + BODY, hashlib.sha256).hexdigest()
        assert sign(SECRET, "1800000000", BODY) == "v1=" + expected


class TestVerify:
    def test_good_signature(self) -> None:
        """A fresh timestamp with the matching signature verifies."""
        timestamp = fresh_timestamp()
        assert verify(SECRET, timestamp, BODY, sign(SECRET, timestamp, BODY))

    def test_tampered_body(self) -> None:
        """A body changed after signing fails."""
        timestamp = fresh_timestamp()
        header = sign(SECRET, timestamp, BODY)
        assert not verify(SECRET, timestamp, BODY.replace(b"c-1", b"c-2"), header)

    def test_wrong_secret(self) -> None:
        """A body signed with another secret fails."""
        timestamp = fresh_timestamp()
        assert not verify(SECRET, timestamp, BODY, sign("other", timestamp, BODY))

    def test_replayed_timestamp_is_part_of_the_signature(self) -> None:
        """Swapping in a fresh timestamp on an old signature fails."""
        old = str(int(time.time()) - 10)
        assert not verify(SECRET, fresh_timestamp(), BODY, sign(SECRET, old, BODY))

    @pytest.mark.parametrize("offset", [-301, 301, -86_400])
    def test_stale_timestamp(self, offset: int) -> None:
        """A correctly signed body outside the 300 s tolerance is rejected (replay)."""
        timestamp = str(int(time.time()) + offset)
        assert not verify(SECRET, timestamp, BODY, sign(SECRET, timestamp, BODY))

    @pytest.mark.parametrize("timestamp", ["", "yesterday", "nan", "inf"])
    def test_non_numeric_timestamp(self, timestamp: str) -> None:
        """A timestamp that is not a finite number is rejected, not raised."""
        assert not verify(SECRET, timestamp, BODY, sign(SECRET, timestamp, BODY))

    def test_non_ascii_signature_header(self) -> None:
        """A forged header with non-ASCII characters is rejected, not a TypeError."""
        assert not verify(SECRET, fresh_timestamp(), BODY, "v1=ünicode")


def capture(
    status: int = 200, seen: list[httpx.Request] | None = None
) -> httpx.AsyncClient:
    """A client whose transport records each request and answers `status`."""

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def deliver_with(settings: Settings, http: httpx.AsyncClient) -> None:
    async with http:
        await deliver(settings, EVENT, http)


class TestDeliver:
    def test_posts_the_event_as_json(self) -> None:
        """The event is POSTed to the webhook URL as compact, key-sorted JSON."""
        seen: list[httpx.Request] = []
        asyncio.run(deliver_with(webhook_settings(), capture(200, seen)))
        (request,) = seen
        assert request.method == "POST"
        assert str(request.url) == URL
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.content) == EVENT
        assert request.content == json.dumps(EVENT, separators=(",", ":"), sort_keys=True).encode()

    def test_signature_verifies(self) -> None:
        """The timestamp and signature headers verify with the shared secret."""
        seen: list[httpx.Request] = []
        asyncio.run(deliver_with(webhook_settings(), capture(204, seen)))
        (request,) = seen
        timestamp = request.headers[TIMESTAMP_HEADER]
        assert abs(int(timestamp) - time.time()) < 60
        assert verify(SECRET, timestamp, request.content, request.headers[SIGNATURE_HEADER])

    def test_unsigned_without_a_secret(self) -> None:
        """Without a webhook secret the timestamp is sent but no signature."""
        seen: list[httpx.Request] = []
        asyncio.run(deliver_with(webhook_settings(secret=""), capture(200, seen)))
        (request,) = seen
        assert TIMESTAMP_HEADER in request.headers
        assert SIGNATURE_HEADER not in request.headers

    @pytest.mark.parametrize("status", [301, 400, 404, 500, 503])
    def test_non_2xx_raises(self, status: int) -> None:
        """Any answer outside 2xx (redirects included) raises WebhookError with the status."""
        with pytest.raises(WebhookError, match=f"HTTP {status}"):
            asyncio.run(deliver_with(webhook_settings(), capture(status)))

    def test_unreachable_raises(self) -> None:
        """A connection failure raises WebhookError naming the kind of failure only."""

        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

        http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
        with pytest.raises(WebhookError, match="unreachable: ConnectError"):
            asyncio.run(deliver_with(webhook_settings(), http))


class TestForwarder:
    def test_none_without_a_webhook_url(self) -> None:
        """No webhook URL, no forwarding hook."""
        settings = Settings.from_env({}, require_keys=False)
        assert forwarder(settings, lambda event: None) is None

    async def test_enqueues_each_event(self) -> None:
        """With a webhook URL each forwarded event is handed to the enqueue function."""
        queued: list[dict[str, Any]] = []
        forward = forwarder(webhook_settings(), queued.append)
        assert forward is not None

        await forward(EVENT)

        assert queued == [EVENT]
