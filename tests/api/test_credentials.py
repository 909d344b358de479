"""worker.service.credentials: fresh tokens cost no Salesforce call; everything else refreshes
once, single-flight with the workers, over the real emulator and a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.conftest import Emu
from tests.helpers import connect, names_of
from worker.domain.models import ConnectionStatus, ExpirySource, IntegrationStatus, LastError
from worker.engine.runtime import Runtime
from worker.errors import NotFoundError, ReauthRequired, SalesforceUnavailable
from worker.service import credentials as svc

RuntimeFor = Callable[..., Runtime]


def calls(emu: Emu) -> int:
    """Every call the emulator answered as Salesforce (token, introspect, revoke)."""
    stats = emu.http.get("/_admin/stats").json()
    return int(stats["token_calls"] + stats["introspect_calls"] + stats["revoke_calls"])


async def expire_soon(rt: Runtime, cid: str, left: float) -> None:
    """Make the stored token known to expire in `left` seconds."""
    conn = await rt.store.get_connection(cid)
    assert conn is not None
    await rt.store.save_connection(
        conn.evolve(expires_at=time.time() + left, expiry_source=ExpirySource.INTROSPECTION)
    )


async def writes(rt: Runtime) -> int:
    """Writes the store has served so far (a lease is a SET, a save an EVALSHA, ...)."""
    stats = await rt.redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
        for name in ("set", "evalsha", "eval", "hset", "del", "zadd", "xadd")
    )


class TestFresh:
    async def test_a_fresh_token_costs_no_call_to_salesforce(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A token valid past the margin comes from the store alone, with its facts."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=3600)
            before = calls(emu)
            got = await svc.credentials(rt, cid)
            assert calls(emu) == before
            assert got.access_token == grant["access_token"]
            assert got.instance_url == grant["instance_url"]
            assert got.provider == "salesforce" and got.token_type == "Bearer"
            assert got.expiry_source == "assumed"
            assert got.expires_at == pytest.approx(time.time() + 3600, abs=10)
            assert grant["access_token"] not in repr(got)
        finally:
            await rt.close()

    async def test_min_ttl_beyond_the_stored_expiry_refreshes_once(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A token valid for less than min_ttl is never handed out: one refresh, a new token."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=3600)
            await expire_soon(rt, cid, 600)
            assert (await svc.credentials(rt, cid, min_ttl=500)).access_token == grant[
                "access_token"
            ]
            assert emu.token_calls(grant["grant_id"]) == 0
            got = await svc.credentials(rt, cid, min_ttl=700)
            assert got.access_token != grant["access_token"]
            assert got.expires_at - time.time() >= 700
            assert emu.token_calls(grant["grant_id"]) == 1
            assert "token.refreshed" in await names_of(rt)
        finally:
            await rt.close()

    async def test_the_default_min_ttl_is_the_workers_margin(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Within TOKENWORKER_REFRESH_MARGIN (300 s here) of expiry a default read refreshes."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=3600)
            await expire_soon(rt, cid, 310)
            await svc.credentials(rt, cid)
            assert emu.token_calls(grant["grant_id"]) == 0
            await expire_soon(rt, cid, 290)
            await svc.credentials(rt, cid)
            assert emu.token_calls(grant["grant_id"]) == 1
        finally:
            await rt.close()

    async def test_a_fresh_read_writes_nothing(self, runtime_for: RuntimeFor, emu: Emu) -> None:
        """A fresh token is a plain read: no lease taken, nothing written to the store."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=3600)
            await svc.credentials(rt, cid)  # integration cached, like any later read
            before = await writes(rt)
            for _ in range(5):
                assert (await svc.credentials(rt, cid)).access_token == grant["access_token"]
            assert await writes(rt) == before
        finally:
            await rt.close()

    async def test_the_default_never_exceeds_half_the_session_lifetime(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """15-minute sessions with a 15-minute margin: a token with 10 minutes left is handed
        out (the workers' margin is 7.5 minutes), not refreshed on every read."""

        rt = runtime_for(refresh_margin="900")
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=900)
            conn = await rt.store.get_connection(cid)
            assert conn is not None
            await rt.store.save_connection(
                conn.evolve(
                    expires_at=time.time() + 600,
                    expiry_source=ExpirySource.INTROSPECTION,
                    lifetime=900.0,
                )
            )
            assert (await svc.credentials(rt, cid)).access_token == grant["access_token"]
            assert emu.token_calls(grant["grant_id"]) == 0
        finally:
            await rt.close()

    async def test_min_ttl_above_half_the_lifetime_is_refused(
        self, runtime_for: RuntimeFor
    ) -> None:
        """No refresh could meet it for long: refused, naming the limit."""

        rt = runtime_for()
        try:
            from tests.helpers import SANDBOX_INTEGRATION  # noqa: PLC0415
            from worker.domain.models import Connection  # noqa: PLC0415

            await rt.store.save_integration(SANDBOX_INTEGRATION)
            conn = Connection("c-ttl", "acme", "rt", "at", lifetime=900.0, issued_at=time.time())
            await rt.store.save_connection(conn, None)
            with pytest.raises(svc.TtlTooLong) as refused:
                await svc.credentials(rt, "c-ttl", min_ttl=451)
            assert refused.value.limit == 450
            assert (await svc.credentials(rt, "c-ttl", min_ttl=450)).access_token == "at"
        finally:
            await rt.close()


class TestSingleFlight:
    async def test_a_refresh_done_by_the_lease_holder_is_not_repeated(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A read that finds the lease taken waits, re-reads under it, and uses what the
        holder stored: no refresh token is sent."""

        rt = runtime_for()
        try:
            [(cid, grant), (_, other)] = await connect(rt, emu, count=2, lifetime=3600)
            await expire_soon(rt, cid, 10)
            lease = rt.store.keys.lease(cid)
            token, _ = await rt.leases.acquire_reading(lease, rt.store.connection_read(cid))
            assert token is not None
            reader = asyncio.create_task(svc.credentials(rt, cid))
            await asyncio.sleep(0.3)
            assert not reader.done()  # waiting for the lease, not refreshing
            conn = await rt.store.get_connection(cid)
            assert conn is not None
            await rt.store.save_connection(
                conn.evolve(access_token=other["access_token"], expires_at=time.time() + 3600)
            )
            await rt.leases.release(lease, token)
            got = await asyncio.wait_for(reader, 5)
            assert got.access_token == other["access_token"]
            assert emu.token_calls(grant["grant_id"]) == 0
        finally:
            await rt.close()

    async def test_a_hundred_reports_of_one_rejected_token_cause_one_refresh(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """100 concurrent token_rejected calls with the stored token: exactly one token call,
        and every caller gets the one new token."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=3600, rotation=True)
            old = grant["access_token"]
            answers = await asyncio.wait_for(
                asyncio.gather(*(svc.token_rejected(rt, cid, old) for _ in range(100))), 30
            )
            assert emu.token_calls(grant["grant_id"]) == 1
            assert {a.access_token for a in answers} != {old}
            assert len({a.access_token for a in answers}) == 1
        finally:
            await rt.close()

    async def test_a_token_already_replaced_returns_the_current_one_without_a_call(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Reporting an old token answers with the stored one; Salesforce is not asked."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=3600)
            fresh = await svc.token_rejected(rt, cid, grant["access_token"])
            before = calls(emu)
            again = await svc.token_rejected(rt, cid, grant["access_token"])
            assert again.access_token == fresh.access_token
            assert calls(emu) == before
            assert emu.token_calls(grant["grant_id"]) == 1
        finally:
            await rt.close()


class TestUnusable:
    async def test_unknown_connection_is_not_found(self, runtime_for: RuntimeFor) -> None:
        rt = runtime_for()
        try:
            with pytest.raises(NotFoundError):
                await svc.credentials(rt, "nobody")
            with pytest.raises(NotFoundError):
                await svc.token_rejected(rt, "nobody", "x")
        finally:
            await rt.close()

    async def test_reauth_required_carries_salesforces_verdict(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A dead grant: ReauthRequired with last_error, no call to Salesforce, no lease."""

        rt = runtime_for()
        try:
            [(cid, _)] = await connect(rt, emu)
            conn = await rt.store.get_connection(cid)
            assert conn is not None
            last = LastError("invalid_grant", "expired access/refresh token", 400, time.time())
            await rt.store.save_connection(
                conn.evolve(status=ConnectionStatus.REAUTH_REQUIRED, last_error=last)
            )
            before, wrote = calls(emu), await writes(rt)
            with pytest.raises(ReauthRequired) as dead:
                await svc.credentials(rt, cid)
            assert await writes(rt) == wrote  # refused from the read alone: no lease taken
            assert dead.value.last_error is not None
            assert dead.value.last_error["error"] == "invalid_grant"
            assert calls(emu) == before
        finally:
            await rt.close()

    async def test_a_revoked_grant_found_by_the_read_is_reauth_required(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """The refresh the read makes learns the grant is dead: 409, not 503."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu)
            emu.post(f"/_admin/grants/{grant['grant_id']}/revoke")
            await expire_soon(rt, cid, 10)
            with pytest.raises(ReauthRequired):
                await svc.credentials(rt, cid)
        finally:
            await rt.close()

    async def test_salesforce_down_is_unavailable_and_not_retried_before_the_backoff(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A failed refresh: SalesforceUnavailable with retry_after; the next read inside the
        backoff answers the same without sending the refresh token again."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu)
            await expire_soon(rt, cid, 10)
            emu.fault(endpoint="token", mutate="html_503", count=None)
            with pytest.raises(SalesforceUnavailable) as first:
                await svc.credentials(rt, cid)
            assert first.value.retry_after >= 1
            assert emu.token_calls(grant["grant_id"]) == 1
            with pytest.raises(SalesforceUnavailable) as second:
                await svc.credentials(rt, cid)
            assert 0 < second.value.retry_after <= first.value.retry_after
            assert emu.token_calls(grant["grant_id"]) == 1
        finally:
            await rt.close()

    async def test_a_misconfigured_integration_is_unavailable_without_a_call(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Its connections are paused for the workers; reads do not hammer Salesforce."""

        rt = runtime_for()
        try:
            [(cid, _)] = await connect(rt, emu)
            await expire_soon(rt, cid, 10)
            last = LastError("invalid_client", "invalid client credentials", 400, time.time())
            await rt.store.set_integration_status("acme", IntegrationStatus.MISCONFIGURED, last)
            before = calls(emu)
            with pytest.raises(SalesforceUnavailable) as paused:
                await svc.credentials(rt, cid)
            assert paused.value.error is not None and paused.value.error.error == "invalid_client"
            assert calls(emu) == before
        finally:
            await rt.close()
