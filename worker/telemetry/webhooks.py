"""Signed webhooks for failure, escalation and recovery events.

Delivery runs in its own Celery task (`tokenworker.deliver_webhook`), never inside the check
cycle. The body is the event's JSON; headers carry a timestamp and
`X-Tokenworker-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, so a receiver
can verify origin and reject replays (see the README for a receiver's check).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from worker.engine.events import Forward
from worker.errors import TokenworkerError

TIMESTAMP_HEADER = "X-Tokenworker-Timestamp"
SIGNATURE_HEADER = "X-Tokenworker-Signature"


class WebhookSettings(Protocol):
    """What delivery reads (`config.settings.Settings` has it)."""

    @property
    def webhook_url(self) -> str: ...

    @property
    def webhook_secret(self) -> str: ...

    @property
    def http_timeout(self) -> float: ...


class WebhookError(TokenworkerError):
    """The receiver did not accept the event; the delivery task retries."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, header: str, tolerance: float = 300) -> bool:
    """What a receiver runs: signature matches and the timestamp is recent."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= tolerance
    except ValueError:
        return False
    expected = sign(secret, timestamp, body).encode()
    return fresh and hmac.compare_digest(expected, header.encode("utf-8", "replace"))


def forwarder(
    settings: WebhookSettings, enqueue: Callable[[dict[str, Any]], object]
) -> Forward | None:
    """The EventSink hook: enqueue a delivery task per event, when a webhook URL is set."""
    if not settings.webhook_url:
        return None

    async def forward(event: dict[str, Any]) -> None:
        enqueue(event)

    return forward


async def deliver(
    settings: WebhookSettings, event: dict[str, Any], http: httpx.AsyncClient | None = None
) -> None:
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
    if settings.webhook_secret:
        headers[SIGNATURE_HEADER] = sign(settings.webhook_secret, timestamp, body)
    client = http or httpx.AsyncClient(timeout=settings.http_timeout, follow_redirects=False)
    try:
        response = await client.post(settings.webhook_url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise WebhookError(f"webhook unreachable: {type(error).__name__}") from None
    finally:
        if http is None:
            await client.aclose()
    if not 200 <= response.status_code < 300:
        raise WebhookError(f"webhook answered HTTP {response.status_code}")
