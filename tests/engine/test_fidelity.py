"""Salesforce fidelity over real HTTP: every failure mode classified right, integrity checks,
rotation safety, keep-alive. Each test asserts the final status, the stored state and the
exact events emitted."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Emu
from tests.helpers import connect, events_of, names_of
from worker.domain.models import ConnectionStatus, IntegrationStatus
from worker.domain.outcomes import Outcome
from worker.engine.runtime import Runtime
from worker.service import integrations

RuntimeFor = Callable[..., Runtime]


def _oauth_error(emu: Emu, error: str, description: str, status: int = 400, **extra: Any) -> None:
    body = json.dumps({"error": error, "error_description": description})
    emu.fault(endpoint="token", mutate="error", status=status, body=body, **extra)


class TestPermanent:
    @pytest.mark.parametrize(
        "description",
        [
            "expired access/refresh token",
            "authentication failure",
            "inactive user",
            "inactive organization",
        ],
    )
    async def test_dead_grant_is_reauth_required_without_retry(
        self, runtime_for: RuntimeFor, emu: Emu, description: str
    ) -> None:
        """invalid_grant with a dead-grant description: reauth_required, unscheduled, one event."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu)
            _oauth_error(emu, "invalid_grant", description)
            result = await rt.refresher.check(cid, force=True)
            conn = await rt.store.get_connection(cid)
            events = await events_of(rt)
            assert result.outcome is Outcome.REAUTH_REQUIRED
            assert conn is not None and conn.status is ConnectionStatus.REAUTH_REQUIRED
            assert conn.refresh_token == grant["refresh_token"]
            assert await rt.store.next_check_at(cid) is None
            assert [e["event"] for e in events] == ["connection.reauth_required"]
            assert events[0]["error_description"] == description
        finally:
            await rt.close()


class TestConfiguration:
    @pytest.mark.parametrize(
        ("error", "description"),
        [
            ("invalid_client_id", "client identifier invalid"),
            ("invalid_client", "invalid client credentials"),
            ("invalid_grant", "ip restricted"),
        ],
    )
    async def test_integration_misconfigured_once_and_connections_pause(
        self, runtime_for: RuntimeFor, emu: Emu, error: str, description: str
    ) -> None:
        """A configuration error: one integration.misconfigured, connections keep their status
        and are skipped until the integration is updated, then resume by themselves."""

        rt = runtime_for()
        try:
            pairs = await connect(rt, emu, count=3, name="cfg")
            _oauth_error(emu, error, description, count=None)
            first = await rt.refresher.check(pairs[0][0], force=True)
            rest = [await rt.refresher.check(cid) for cid, _ in pairs[1:]]
            assert first.outcome is Outcome.MISCONFIGURED
            assert {r.outcome for r in rest} == {Outcome.SKIPPED}
            integration = await rt.store.get_integration("cfg")
            assert integration is not None
            assert integration.status is IntegrationStatus.MISCONFIGURED
            assert integration.last_error is not None and integration.last_error.error == error
            assert (await names_of(rt)).count("integration.misconfigured") == 1
            for cid, _ in pairs:
                conn = await rt.store.get_connection(cid)
                assert conn is not None and conn.status is ConnectionStatus.ACTIVE
            emu.clear_faults()
            added = await integrations.add(
                rt,
                "cfg",
                "salesforce",
                integration.client_id,
                integration.client_secret,
                emu.base_url,
            )
            assert added.resumed == 3
            assert await rt.store.due_count(time.time() + 1) >= 3
            after = await rt.refresher.check(pairs[0][0])
            assert after.outcome in (Outcome.FRESH, Outcome.REFRESHED)
        finally:
            await rt.close()

    async def test_introspection_401_is_a_configuration_error(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Introspection answering 401 invalid_client misconfigures the integration."""

        rt = runtime_for()
        try:
            [(cid, _)] = await connect(rt, emu, name="intro401")
            await rt.refresher.check(cid)  # learns the expiry
            emu.fault(
                endpoint="introspect",
                mutate="error",
                status=401,
                body='{"error":"invalid_client","error_description":"invalid client credentials"}',
            )
            result = await rt.refresher.check(cid)
            assert result.outcome is Outcome.MISCONFIGURED
            assert result.reason == "introspect"
            assert (await names_of(rt)).count("integration.misconfigured") == 1
        finally:
            await rt.close()


class TestTransient:
    @pytest.mark.parametrize(
        ("fault", "expected_error"),
        [
            ({"mutate": "html_503"}, "unexpected_response"),
            (
                {
                    "mutate": "error",
                    "status": 500,
                    "body": '{"error":"unknown_error","error_description":"retry your request"}',
                },
                "unknown_error",
            ),
            ({"mutate": "close_connection"}, "network_error"),
            ({"mutate": "truncated_json"}, "unexpected_response"),
            ({"mutate": "drop_access_token"}, "unexpected_response"),
            ({"mutate": "huge_body"}, "oversized_response"),
            ({"mutate": "redirect"}, "unexpected_redirect"),
            ({"delay_s": 3.0}, "timeout"),
        ],
    )
    async def test_transient_failure_leaves_the_stored_token_untouched(
        self, runtime_for: RuntimeFor, emu: Emu, fault: dict[str, Any], expected_error: str
    ) -> None:
        """Each broken answer is transient: failing, one token.refresh_failed, token untouched."""

        rt = runtime_for(http_timeout="1", lease_ttl="5")
        try:
            [(cid, _)] = await connect(rt, emu, rotation=True)
            before = await rt.store.get_connection(cid)
            emu.fault(endpoint="token", **fault)
            result = await rt.refresher.check(cid, force=True)
            conn = await rt.store.get_connection(cid)
            events = await events_of(rt)
            assert result.outcome is Outcome.FAILED
            assert before is not None and conn is not None
            assert conn.status is ConnectionStatus.FAILING
            assert conn.refresh_token == before.refresh_token
            assert conn.access_token == before.access_token
            assert [e["event"] for e in events] == ["token.refresh_failed"]
            assert events[0]["error"] == expected_error
            assert events[0]["stage"] == "refresh"
        finally:
            await rt.close()

    async def test_retry_after_is_honoured(self, runtime_for: RuntimeFor, emu: Emu) -> None:
        """A 503 with Retry-After: 120 schedules the retry no sooner than 120 s."""

        rt = runtime_for(retry_base="2", retry_max="60")
        try:
            [(cid, _)] = await connect(rt, emu)
            emu.fault(
                endpoint="token",
                mutate="error",
                status=503,
                retry_after=120,
                body='{"error":"server_error","error_description":"down"}',
            )
            started = time.time()
            result = await rt.refresher.check(cid, force=True)
            assert result.outcome is Outcome.FAILED
            assert result.next_check_at is not None and result.next_check_at >= started + 120
        finally:
            await rt.close()

    async def test_rate_limit_backs_off_at_least_an_hour(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """rate_limit_exceeded: failing, next attempt at least an hour away."""

        rt = runtime_for()
        try:
            [(cid, _)] = await connect(rt, emu)
            _oauth_error(emu, "rate_limit_exceeded", "number of logins exceeded")
            started = time.time()
            result = await rt.refresher.check(cid, force=True)
            due = await rt.store.next_check_at(cid)
            assert result.outcome is Outcome.FAILED
            assert due is not None and due >= started + 3600
            assert await names_of(rt) == ["token.refresh_failed"]
        finally:
            await rt.close()

    async def test_concurrent_refresh_loser_retries_and_is_never_reauth(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """'expired authorization code' re-reads the store and retries; it succeeds."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu)
            _oauth_error(emu, "invalid_grant", "expired authorization code")
            result = await rt.refresher.check(cid, force=True)
            conn = await rt.store.get_connection(cid)
            assert result.outcome is Outcome.REFRESHED
            assert conn is not None and conn.status is ConnectionStatus.ACTIVE
            assert emu.token_calls(grant["grant_id"]) == 2
            assert await names_of(rt) == ["token.refreshed"]
        finally:
            await rt.close()

    async def test_introspection_outage_far_from_expiry_is_retried_without_refresh(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A 503 from introspection with a known, distant expiry: failing, no refresh."""

        rt = runtime_for(refresh_margin="60")
        try:
            [(cid, grant)] = await connect(rt, emu)
            await rt.refresher.check(cid)  # learns exp (an hour away)
            calls = emu.token_calls(grant["grant_id"])
            emu.fault(endpoint="introspect", mutate="html_503")
            result = await rt.refresher.check(cid)
            assert result.outcome is Outcome.FAILED
            assert result.reason == "introspect"
            assert emu.token_calls(grant["grant_id"]) == calls
            assert (await names_of(rt))[-1] == "token.refresh_failed"
        finally:
            await rt.close()


class TestEscalation:
    async def test_escalates_once_and_recovers_once(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Three failures with ESCALATE_AFTER=2: one escalation; the success after: one recovery."""

        rt = runtime_for(escalate_after="2")
        try:
            [(cid, _)] = await connect(rt, emu)
            emu.fault(endpoint="token", mutate="html_503", count=3)
            for _ in range(3):
                await rt.refresher.check(cid, force=True)
            await rt.refresher.check(cid, force=True)
            await rt.refresher.check(cid, force=True)
            names = await names_of(rt)
            assert names.count("token.refresh_failed") == 3
            assert names.count("connection.escalated") == 1
            assert names.count("connection.recovered") == 1
            assert names.index("connection.escalated") == 2  # right after the 2nd failure
            conn = await rt.store.get_connection(cid)
            assert conn is not None and conn.failures == 0 and conn.escalated_at is None
        finally:
            await rt.close()

    async def test_daily_cap_defers_to_the_next_utc_day(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """After DAILY_ATTEMPT_CAP failures today, the next attempt is tomorrow (UTC)."""

        rt = runtime_for(daily_attempt_cap="2")
        try:
            [(cid, _)] = await connect(rt, emu)
            emu.fault(endpoint="token", mutate="html_503", count=2)
            first = await rt.refresher.check(cid, force=True)
            second = await rt.refresher.check(cid, force=True)
            tomorrow = (int(time.time() // 86400) + 1) * 86400
            assert first.next_check_at is not None and first.next_check_at < tomorrow
            assert second.next_check_at is not None and second.next_check_at >= tomorrow
        finally:
            await rt.close()


class TestIntrospection:
    async def test_app_without_introspect_all_tokens_falls_back_to_age(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A just-issued token reading inactive: introspection.unavailable once, age-based
        schedule; when introspection works again: introspection.restored."""

        rt = runtime_for(default_lifetime="1800", refresh_margin="300")
        try:
            pairs = await connect(rt, emu, count=2, introspect=False, name="nointro")
            for cid, _ in pairs:
                await rt.refresher.check(cid)
            integration = await rt.store.get_integration("nointro")
            assert integration is not None and integration.introspection_available is False
            names = await names_of(rt)
            assert names.count("introspection.unavailable") == 1
            conn = await rt.store.get_connection(pairs[0][0])
            assert conn is not None and conn.expiry_source is not None
            assert conn.expiry_source.value == "assumed"
            assert conn.expires_at is not None and conn.issued_at is not None
            assert conn.expires_at == pytest.approx(conn.issued_at + 1800, abs=1)
            rt.refresher.forget_integration("nointro")
            emu.post("/_admin/clients", {"client_id": integration.client_id, "introspect": True})
            await rt.refresher.check(pairs[0][0], force=True)
            assert (await names_of(rt)).count("introspection.restored") == 1
            restored = await rt.store.get_integration("nointro")
            assert restored is not None and restored.introspection_available is True
        finally:
            await rt.close()


class TestIntegrity:
    async def test_bad_signature_keeps_only_the_rotated_refresh_token(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A signature mismatch: token.signature_invalid, the response's access token unused,
        the rotated refresh token kept (the old one is already dead), the grant alive."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu, rotation=True)
            before = await rt.store.get_connection(cid)
            emu.fault(endpoint="token", mutate="bad_signature")
            result = await rt.refresher.check(cid, force=True)
            conn = await rt.store.get_connection(cid)
            view = emu.grant(grant["grant_id"])
            assert result.outcome is Outcome.FAILED
            assert before is not None and conn is not None
            assert conn.access_token == before.access_token
            assert conn.refresh_token == view["refresh_token"] != grant["refresh_token"]
            assert await names_of(rt) == ["token.signature_invalid"]
            again = await rt.refresher.check(cid, force=True)
            assert again.outcome is Outcome.REFRESHED
            assert emu.grant(grant["grant_id"])["revoked"] is False
        finally:
            await rt.close()

    async def test_foreign_instance_url_is_not_stored(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """An instance_url off Salesforce's domains is rejected and reported; the old one stays."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu)
            emu.fault(endpoint="token", mutate="foreign_instance_url")
            result = await rt.refresher.check(cid, force=True)
            conn = await rt.store.get_connection(cid)
            names = await names_of(rt)
            assert result.outcome is Outcome.REFRESHED
            assert conn is not None and conn.instance_url == grant["instance_url"].rstrip("/")
            assert names == ["connection.instance_url_rejected", "token.refreshed"]
        finally:
            await rt.close()

    async def test_changed_instance_url_is_stored_and_reported(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A refresh returning a new valid instance_url stores it and emits instance_url_changed."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu)
            conn = await rt.store.get_connection(cid)
            assert conn is not None
            moved = conn.evolve(instance_url="http://localhost:1")
            await rt.store.save_connection(moved)
            await rt.refresher.check(cid, force=True)
            after = await rt.store.get_connection(cid)
            events = await events_of(rt)
            assert after is not None and after.instance_url == grant["instance_url"].rstrip("/")
            assert [e["event"] for e in events] == [
                "connection.instance_url_changed",
                "token.refreshed",
            ]
            assert events[0]["previous"] == "http://localhost:1"
        finally:
            await rt.close()


class TestRotationSafety:
    async def test_a_writer_that_lost_its_lease_never_sends_the_token(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Worker A stalls past its lease; B refreshes; A's refresh is aborted, the grant lives."""

        a, b = runtime_for(), runtime_for()
        try:
            [(cid, grant)] = await connect(a, emu, rotation=True)
            emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
            emu.fault(endpoint="introspect", delay_s=1.0)
            slow = asyncio.create_task(a.refresher.check(cid))
            await asyncio.sleep(0.3)  # A holds the lease and waits on introspection
            await a.redis.delete(a.store.keys.lease(cid))  # A's lease "expires"
            b_result = await b.refresher.check(cid, force=True)
            a_result = await slow
            view = emu.grant(grant["grant_id"])
            stored = await b.store.get_connection(cid)
            assert b_result.outcome is Outcome.REFRESHED
            assert a_result.outcome is Outcome.CONTENDED
            assert a_result.reason == "lease lost before refresh"
            assert view["revoked"] is False and view["refresh_count"] == 1
            assert stored is not None and stored.refresh_token == view["refresh_token"]
        finally:
            await a.close()
            await b.close()


class TestKeepAlive:
    async def test_fresh_token_is_refreshed_when_keepalive_is_due(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A token with an hour left is still refreshed once the keep-alive interval passed."""

        rt = runtime_for(keepalive_interval="30", refresh_margin="60")
        try:
            [(cid, grant)] = await connect(rt, emu)
            conn = await rt.store.get_connection(cid)
            assert conn is not None
            await rt.store.save_connection(conn.evolve(last_refresh_at=time.time() - 31))
            result = await rt.refresher.check(cid)
            assert result.outcome is Outcome.REFRESHED
            assert result.reason == "keepalive"
            assert emu.token_calls(grant["grant_id"]) == 1
            fresh = await rt.refresher.check(cid)
            assert fresh.outcome is Outcome.FRESH
            assert fresh.next_check_at is not None and fresh.next_check_at <= time.time() + 31
        finally:
            await rt.close()
