"""The concurrent-refresh loser (`Refresher._lost_race`), against the emulator doing what
Salesforce does (Summer '24): a second refresh of one token while the first is in flight, or
just after, is answered 400 invalid_grant / "expired authorization code" and revokes nothing.

The other refresh is made by "another writer" (another worker whose lease ran out, or the host
application): it happens between our read of the record and our send, at the rate-limit permit
the refresher takes right before sending, so the race is exact and needs no timing luck.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Emu
from tests.helpers import connect
from worker.dev.emulator.records import DEFAULT_RACE_WINDOW_MS
from worker.domain.models import Connection, ConnectionStatus
from worker.domain.outcomes import Outcome
from worker.engine.runtime import Runtime

RuntimeFor = Callable[..., Runtime]


@pytest.fixture
def wide_race_window(emu: Emu) -> Iterator[None]:
    """Our send lands seconds after the other refresh on a loaded machine: count it as
    concurrent however slow the machine is (a resend stays distinguishable by the counts)."""
    emu.post("/_admin/config", {"race_window_ms": 60_000})
    yield
    emu.post("/_admin/config", {"race_window_ms": DEFAULT_RACE_WINDOW_MS})


def _stats(emu: Emu) -> dict[str, Any]:
    stats: dict[str, Any] = emu.http.get("/_admin/stats").json()
    return stats


class _OtherWriterFirst:
    """A rate limiter stand-in whose first permit lets another writer refresh first."""

    def __init__(self, other: Callable[[], Awaitable[None]]) -> None:
        self.other: Callable[[], Awaitable[None]] | None = other

    async def take(self, integration: str) -> None:
        other, self.other = self.other, None
        if other is not None:
            await other()


async def _refresh_elsewhere(emu: Emu, client_id: str, secret: str, token: str) -> dict[str, Any]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": client_id,
        "client_secret": secret,
    }
    async with httpx.AsyncClient(base_url=emu.base_url, timeout=10) as http:
        answer = await http.post("/services/oauth2/token", data=form)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _credentials(rt: Runtime) -> tuple[str, str]:
    integration = await rt.store.get_integration("acme")
    assert integration is not None
    return integration.client_id, integration.client_secret


async def test_loser_stops_when_another_writer_stored_a_newer_token(
    runtime_for: RuntimeFor, emu: Emu, wide_race_window: None
) -> None:
    """The loser re-reads the record, finds the winner's token and stops: one send of ours,
    the winner's tokens kept, no mark of ours left on them, nothing revoked. Retrying with the
    token it read before (mutation M7) sends a consumed token again."""

    rt = runtime_for()
    try:
        [(cid, grant)] = await connect(rt, emu, rotation=True)
        client_id, secret = await _credentials(rt)
        before = _stats(emu)
        won: dict[str, Any] = {}

        async def other_worker() -> None:
            won.update(await _refresh_elsewhere(emu, client_id, secret, grant["refresh_token"]))
            current = await rt.store.get_connection(cid)
            assert current is not None
            newer = current.evolve(
                refresh_token=won["refresh_token"], access_token=won["access_token"]
            )
            await rt.store.save_connection(newer, None)

        rt.client.admission = _OtherWriterFirst(other_worker)
        result = await rt.refresher.check(cid, force=True)
        stored = await rt.store.get_connection(cid)
        after = _stats(emu)
        # The winner's send and our one send: a second one of ours resends a consumed token.
        assert emu.token_calls(grant["grant_id"]) == 2, "the consumed token was sent again"
        assert after["concurrent_refresh_rejections"] - before["concurrent_refresh_rejections"] == 1
        assert result.outcome is Outcome.SUPERSEDED, result
        assert stored is not None
        assert stored.refresh_token == won["refresh_token"] == emu.grant(grant["grant_id"])[
            "refresh_token"
        ]
        assert stored.refresh_started_at is None, "our mark was left on the winner's record"
        assert after["reuse_revocations"] == before["reuse_revocations"]
        assert emu.grant(grant["grant_id"])["revoked"] is False
    finally:
        await rt.close()


async def test_loser_never_resends_a_token_the_winner_consumed(
    runtime_for: RuntimeFor, emu: Emu, wide_race_window: None
) -> None:
    """The winner (the host application) consumed the token and stored nothing here: the
    loser asks Salesforce, hears "inactive", and does not send it again (it would be a reuse
    once the race window is over, revoking the winner's grant too). The mark stays, so the
    next attempt asks again before any send and ends in reauth_required."""

    rt = runtime_for()
    try:
        [(cid, grant)] = await connect(rt, emu, rotation=True)
        client_id, secret = await _credentials(rt)

        async def host_application() -> None:
            await _refresh_elsewhere(emu, client_id, secret, grant["refresh_token"])

        rt.client.admission = _OtherWriterFirst(host_application)
        result = await rt.refresher.check(cid, force=True)
        stored = await rt.store.get_connection(cid)
        assert result.outcome is Outcome.FAILED, result
        assert result.error is not None and result.error["error"] == "refresh_token_consumed"
        assert emu.token_calls(grant["grant_id"]) == 2, "the consumed token was sent again"
        assert stored is not None and stored.refresh_started_at is not None

        again = await rt.refresher.check(cid, force=True)
        stored = await rt.store.get_connection(cid)
        assert again.outcome is Outcome.REAUTH_REQUIRED, again
        assert stored is not None and stored.status is ConnectionStatus.REAUTH_REQUIRED
        assert emu.token_calls(grant["grant_id"]) == 2
        assert emu.grant(grant["grant_id"])["revoked"] is False
    finally:
        await rt.close()


async def test_loser_without_rotation_retries_once_and_refreshes(
    runtime_for: RuntimeFor, emu: Emu, wide_race_window: None
) -> None:
    """Without rotation the token is still good after the race (it introspects active): the
    loser sends it once more and succeeds."""

    rt = runtime_for()
    try:
        [(cid, grant)] = await connect(rt, emu, rotation=False)
        body = '{"error":"invalid_grant","error_description":"expired authorization code"}'
        emu.fault(endpoint="token", mutate="error", status=400, body=body)
        result = await rt.refresher.check(cid, force=True)
        stored: Connection | None = await rt.store.get_connection(cid)
        assert result.outcome is Outcome.REFRESHED, result
        assert stored is not None and stored.refresh_started_at is None
        assert emu.token_calls(grant["grant_id"]) == 2
    finally:
        await rt.close()
