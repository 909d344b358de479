"""The lost-answer rule and the premise it rests on.

When a refresh was sent and no usable answer came back (a timeout, a reset, a broken 200), the
worker asks Salesforce about the refresh token before sending it again. It relies on a rotated-
out (consumed) refresh token introspecting as inactive; Salesforce's documentation does not
confirm that. Both answers are pinned here, through the emulator's `consumed_refresh_active`
switch, so the README can say exactly what happens either way:

- premise holds: the consumed token is never sent again, not even by a later forced refresh;
  `reauth_required` with `refresh_token_inactive`, nothing revoked (the new token was lost
  with the answer);
- premise fails: the token is sent once more, Salesforce treats it as reuse and revokes the
  grant, and the connection ends `reauth_required` with `invalid_grant`. The grant was already
  lost with the answer; what the false premise costs is one resend, the revocation of the
  access token still stored, and a reuse event at Salesforce. It is sent once: the verdict
  stops all further sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Emu
from tests.helpers import connect
from worker.dev.emulator.records import DEFAULT_RACE_WINDOW_MS
from worker.domain.models import ConnectionStatus
from worker.domain.outcomes import Outcome
from worker.engine.runtime import Runtime

RuntimeFor = Callable[..., Runtime]


@pytest.fixture
def premise(emu: Emu, request: pytest.FixtureRequest) -> Iterator[bool]:
    """Whether a consumed refresh token introspects inactive (the worker's premise)."""
    holds: bool = request.param
    # No race window: the resend below is a reuse, as it would be seconds later.
    emu.post("/_admin/config", {"race_window_ms": 0, "consumed_refresh_active": not holds})
    yield holds
    emu.post(
        "/_admin/config",
        {"race_window_ms": DEFAULT_RACE_WINDOW_MS, "consumed_refresh_active": False},
    )


def _reuse(emu: Emu) -> int:
    stats: dict[str, Any] = emu.http.get("/_admin/stats").json()
    return int(stats["reuse_revocations"])


@pytest.mark.parametrize("premise", [True, False], ids=["premise_holds", "premise_fails"],
                         indirect=True)
async def test_a_lost_answer_ends_the_same_way_whatever_introspection_says(
    runtime_for: RuntimeFor, emu: Emu, premise: bool
) -> None:
    """A 200 without access_token after the rotation: the connection ends reauth_required
    either way, with at most one resend of the consumed token, and no further sends."""

    rt = runtime_for()
    try:
        [(cid, grant)] = await connect(rt, emu, rotation=True)
        reuse_before = _reuse(emu)
        emu.fault(endpoint="token", mutate="drop_access_token")
        first = await rt.refresher.check(cid, force=True)
        assert first.outcome is Outcome.FAILED, first
        second = await rt.refresher.check(cid, force=True)
        third = await rt.refresher.check(cid)  # what the sweep does next
        stored = await rt.store.get_connection(cid)
        assert second.outcome is Outcome.REAUTH_REQUIRED, second
        assert second.error is not None
        assert stored is not None and stored.status is ConnectionStatus.REAUTH_REQUIRED
        assert third.outcome is Outcome.SKIPPED, third
        if premise:
            assert second.error["error"] == "refresh_token_inactive"
            # Even an operator's forced refresh asks again instead of sending it.
            forced = await rt.refresher.check(cid, force=True)
            assert forced.outcome is Outcome.REAUTH_REQUIRED, forced
            assert emu.token_calls(grant["grant_id"]) == 1
            assert _reuse(emu) == reuse_before
            assert emu.grant(grant["grant_id"])["revoked"] is False
        else:
            assert second.error["error"] == "invalid_grant"
            assert emu.token_calls(grant["grant_id"]) == 2  # one resend, never more
            assert _reuse(emu) == reuse_before + 1
            assert emu.grant(grant["grant_id"])["revoked"] is True
    finally:
        await rt.close()
