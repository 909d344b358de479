"""Scenario 5, a hostile or broken Salesforce, through the real worker process: every broken
answer is classified, reported by exactly one event, leaves the stored token as it was (a
rotated refresh token excepted, see below), and no credential reaches a host it was not meant
for (the emulator's redirect points at 127.0.0.2:9, where a tripwire listens).

Rotation is on for every case, so "untouched" is checked against the emulator too. The two
tampering cases run the real refresh: its refresh token is already consumed at Salesforce, so
the rotated one must be kept (bad signature: access token discarded; foreign instance_url: the
token is good, only the URL is refused).

The broken 200s (truncated, oversized, without access_token) also come after the real refresh,
as at Salesforce: the token sent is consumed and the new one is lost with the answer. Like an
answer that never came (slow drip), they keep the "refresh sent" mark, and the next attempt
asks Salesforce about the old token instead of sending it again (a resend would be a reuse,
which revokes the grant). Only a maintenance page (503) proves the token was not consumed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Emu
from tests.faults.harness import (
    HTTP_TIMEOUT,
    Fleet,
    Ledger,
    Tripwire,
    celery_client,
    events_for,
    process_env,
    seed,
    stored,
    with_runtime,
)
from worker.dev.embedded import EmbeddedRedis
from worker.dev.emulator.salesforce import REDIRECT_TARGET
from worker.engine.runtime import Runtime

pytestmark = pytest.mark.integration

FAILED = "token.refresh_failed"
# case: (fault at the token endpoint, outcome, the one alert event, its `error`)
CASES: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "html_error_page": ({"mutate": "html_503"}, "failed", FAILED, "unexpected_response"),
    "truncated_json": ({"mutate": "truncated_json"}, "failed", FAILED, "unexpected_response"),
    "200_without_access_token": (
        {"mutate": "drop_access_token"},
        "failed",
        FAILED,
        "unexpected_response",
    ),
    "10_mb_body": ({"mutate": "huge_body"}, "failed", FAILED, "oversized_response"),
    "slow_drip": ({"delay_s": HTTP_TIMEOUT + 1.5}, "failed", FAILED, "timeout"),
    "redirect_to_another_host": ({"mutate": "redirect"}, "failed", FAILED, "unexpected_redirect"),
    "connection_reset": ({"mutate": "close_connection"}, "failed", FAILED, "network_error"),
    "foreign_instance_url": (
        {"mutate": "foreign_instance_url"},
        "refreshed",
        "connection.instance_url_rejected",
        "invalid_instance_url",
    ),
    "bad_signature": (
        {"mutate": "bad_signature"},
        "failed",
        "token.signature_invalid",
        "signature_invalid",
    ),
}
TAMPERING = {"foreign_instance_url", "bad_signature"}
# Salesforce rotated the token and the answer carrying the new one is lost to every client.
CONSUMED = {"truncated_json", "200_without_access_token", "10_mb_body", "slow_drip"}
# The answer proves the token was not consumed: the mark is cleared.
UNCONSUMED = {"html_error_page"}


@pytest.fixture(scope="module")
def tripwire() -> Iterator[Tripwire]:
    host, port = REDIRECT_TARGET.split("//")[1].split("/")[0].split(":")
    wire = Tripwire(host, int(port))
    yield wire
    wire.close()


@pytest.fixture(scope="module")
def hostile_env(
    redis_server: EmbeddedRedis, redis_factory: Callable[[], EmbeddedRedis], ledger: Ledger
) -> Iterator[dict[str, str]]:
    """One real worker for the module, on its own prefix and broker."""
    prefix = f"h{uuid.uuid4().hex[:8]}:"
    ledger.prefixes.add(prefix)
    env = process_env(redis_server.url, redis_factory().url, prefix)
    crew = Fleet(ledger)
    try:
        crew.worker(env).wait_ready()
        yield env
    finally:
        crew.stop_all()


def _refresh_on_the_worker(env: dict[str, str], connection_id: str) -> dict[str, Any]:
    app = celery_client(env)
    try:
        result = app.send_task("tokenworker.refresh_connection", args=[connection_id], queue="ops")
        outcome: dict[str, Any] = result.get(timeout=60)
        return outcome
    finally:
        app.close()


def _reuse_revocations(emu: Emu) -> int:
    return int(emu.http.get("/_admin/stats").json()["reuse_revocations"])


def _client_secret(env: dict[str, str], integration: str) -> str:
    async def read(rt: Runtime) -> str:
        found = await rt.store.get_integration(integration)
        assert found is not None
        return found.client_secret

    return with_runtime(env, read)


@pytest.mark.parametrize("case", list(CASES))
def test_broken_answer_is_classified_once_and_changes_no_token(
    emu: Emu, hostile_env: dict[str, str], tripwire: Tripwire, case: str
) -> None:
    """One broken token answer: its outcome, exactly one alert event with the right error,
    the stored tokens as they must be, nothing sent elsewhere; the next refresh works, or,
    when Salesforce consumed the token, the next attempt never sends it again."""
    fault, outcome, alert, error = CASES[case]
    reuse_before = _reuse_revocations(emu)
    [(cid, grant)] = seed(hostile_env, emu, rotation=True)
    before = stored(hostile_env, [cid])[cid]
    client_id = emu.grant(grant["grant_id"])["client_id"]
    emu.fault(endpoint="token", client_id=client_id, **fault)

    result = _refresh_on_the_worker(hostile_env, cid)

    after = stored(hostile_env, [cid])[cid]
    view = emu.grant(grant["grant_id"])
    events = events_for(hostile_env, cid)
    names = [e["event"] for e in events]
    assert result["outcome"] == outcome, result
    assert names.count(alert) == 1, names
    [event] = [e for e in events if e["event"] == alert]
    assert event["error"] == error, event
    expected = [alert, "token.refreshed"] if case == "foreign_instance_url" else [alert]
    assert names == expected, names
    assert after.instance_url == before.instance_url
    if case in TAMPERING:
        assert after.refresh_token == view["refresh_token"] != before.refresh_token
    else:
        assert after.refresh_token == before.refresh_token
    if case != "foreign_instance_url":
        assert after.access_token == before.access_token
    if case in UNCONSUMED or case in TAMPERING:
        assert after.refresh_started_at is None, "a settled refresh left its sent mark"
    else:
        assert after.refresh_started_at is not None, (
            f"the {case} answer cleared the sent mark, but it does not prove the refresh "
            "token was not consumed"
        )
    assert tripwire.connections == 0 and tripwire.received == [], tripwire.received

    again = _refresh_on_the_worker(hostile_env, cid)
    view = emu.grant(grant["grant_id"])
    assert view["revoked"] is False, (
        f"the refresh after the {case} answer revoked the grant: Salesforce had consumed the "
        "refresh token sent before its answer was given up on, and it was sent again"
    )
    assert _reuse_revocations(emu) == reuse_before, "a consumed refresh token was sent again"
    if case in CONSUMED:
        # Salesforce rotated on arrival and the answer with the new token is lost (it never
        # came, or came broken): no client can have it. The worker asks about the old token
        # instead of sending it again, and says the customer must re-authorize.
        assert again["outcome"] == "reauth_required", again
        assert again["error"]["error"] == "refresh_token_inactive", again
        assert emu.token_calls(grant["grant_id"]) == 1
        return
    assert again["outcome"] == "refreshed", again
    assert stored(hostile_env, [cid])[cid].refresh_token == view["refresh_token"]


def test_error_answer_echoing_secrets_does_not_spread_them(
    emu: Emu, hostile_env: dict[str, str], ledger: Ledger, tripwire: Tripwire
) -> None:
    """An error answer quoting the refresh token and client secret back: classified as
    transient with one event, and neither secret reaches the event, the stored record's
    last_error or the task result."""
    [(cid, grant)] = seed(hostile_env, emu, rotation=True)
    before = stored(hostile_env, [cid])[cid]
    view = emu.grant(grant["grant_id"])
    secret = _client_secret(hostile_env, before.integration)
    body = json.dumps(
        {
            "error": "server_error",
            "error_description": (
                f"cannot refresh refresh_token={before.refresh_token} for client_secret={secret}"
            ),
        }
    )
    emu.fault(endpoint="token", client_id=view["client_id"], mutate="error", status=500, body=body)

    result = _refresh_on_the_worker(hostile_env, cid)

    after = stored(hostile_env, [cid])[cid]
    events = events_for(hostile_env, cid)
    ledger.text(f"task result of {cid}", json.dumps(result))
    assert result["outcome"] == "failed"
    assert [e["event"] for e in events] == [FAILED]
    assert events[0]["error"] == "server_error"
    assert (
        after.refresh_token == before.refresh_token == emu.grant(grant["grant_id"])["refresh_token"]
    )
    places = {
        "event": json.dumps(events),
        "last_error": json.dumps(after.last_error.as_dict() if after.last_error else None),
        "task result": json.dumps(result),
    }
    leaked = [
        f"{what} in the {where}"
        for where, text in places.items()
        for what, value in (("refresh token", before.refresh_token), ("client secret", secret))
        if value in text
    ]
    assert leaked == [], leaked
    assert tripwire.connections == 0
