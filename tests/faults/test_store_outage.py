"""A store outage longer than the old save budget (~36 s) while rotating refreshes are in
flight: every answer that arrives during it is saved once the store is back (save_refresh
retries for 120 s), no grant is lost and nothing is sent twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.conftest import Emu
from tests.faults.harness import Ledger, process_env, seed
from tests.processes import open_runtime
from worker.dev.embedded import EmbeddedRedis
from worker.domain.outcomes import Outcome

pytestmark = pytest.mark.integration

OUTAGE = 40.0  # seconds: beyond the 36 s the old fixed attempt count covered
LATENCY_MS = 1000


def test_a_40s_store_outage_loses_no_answered_rotation(
    emu: Emu, ledger: Ledger, redis_factory: Callable[[], EmbeddedRedis], prefix: str
) -> None:
    store = redis_factory()
    # A 6 s HTTP timeout against 1 s of latency: on a busy box the answers still arrive in time,
    # so what the test measures is the store outage, not a timeout after the rotation.
    env = process_env(
        store.url,
        f"redis://127.0.0.1:{store.port}/1",
        prefix,
        http_timeout="6",
        lease_ttl="13",
    )
    ledger.prefixes.add(prefix)
    pairs = seed(env, emu, count=5, rotation=True)
    ids = [cid for cid, _ in pairs]
    grants = [grant["grant_id"] for _, grant in pairs]

    async def scenario() -> list[Outcome]:
        rt = open_runtime(env)
        try:
            emu.post("/_admin/config", {"latency_ms": LATENCY_MS})
            flight = asyncio.create_task(rt.refresher.check_many(ids, force=True))
            deadline = time.monotonic() + 15
            while sum(emu.token_calls(g) for g in grants) < len(grants):
                assert time.monotonic() < deadline, "the refreshes never reached the emulator"
                await asyncio.sleep(0.02)
            # Every refresh is marked as sent and on the wire; the answers come back to a
            # store that is down, and stays down for the whole outage.
            await asyncio.to_thread(store.stop, remove=False)
            await asyncio.sleep(OUTAGE)  # the outage is the scenario, not a wait for a state
            await asyncio.to_thread(store.start)
            results = await asyncio.wait_for(flight, 60)
            return [result.outcome for result in results]
        finally:
            emu.post("/_admin/config", {"latency_ms": 0})
            await rt.close()

    outcomes = asyncio.run(scenario())
    assert outcomes == [Outcome.REFRESHED] * len(ids), outcomes

    async def stored() -> dict[str, str]:
        rt = open_runtime(env)
        try:
            found = await rt.store.get_connections(ids)
            return {c.id: c.refresh_token for c in found if c is not None}
        finally:
            await rt.close()

    tokens = asyncio.run(stored())
    for cid, grant_id in zip(ids, grants, strict=True):
        view = emu.grant(grant_id)
        assert not view["revoked"], f"{cid}: grant revoked"
        assert emu.token_calls(grant_id) == 1, f"{cid}: the refresh token was sent again"
        assert tokens[cid] == view["refresh_token"], f"{cid}: the rotated token was lost"
