"""The check cycle over real HTTP (the emulator) and a real Redis server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from config.settings import Settings
from tests.conftest import TEST_KEYS, Emu
from tests.helpers import connect, events_of, names_of
from worker.domain.models import ConnectionStatus, ExpirySource
from worker.domain.outcomes import Outcome
from worker.engine.runtime import Runtime
from worker.store.connections import Store
from worker.store.crypto import Cipher

RuntimeFor = Callable[..., Runtime]


class TestDecisions:
    async def test_near_expiry_is_refreshed_exactly_once(
        self, settings_for: Callable[..., Settings], emu: Emu
    ) -> None:
        """A token with less than the margin left is refreshed once; the next check leaves it."""
        offset = [3400.0]  # the first check happens "3400 s later": 200 s of 3600 left

        rt = Runtime.open(settings_for(refresh_margin="300"), clock=lambda: time.time() + offset[0])
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=3600)
            first = await rt.refresher.check(cid)
            offset[0] = 0.0
            second = await rt.refresher.check(cid)
            assert first.outcome is Outcome.REFRESHED, first
            assert first.reason == "near_expiry"
            assert second.outcome is Outcome.FRESH, second
            assert emu.token_calls(grant["grant_id"]) == 1
        finally:
            await rt.close()

    async def test_due_by_the_stored_expiry_refreshes_without_introspecting(
        self, settings_for: Callable[..., Settings], emu: Emu
    ) -> None:
        """Once the expiry is known, the check that finds it due sends one call: the refresh
        (an introspection first could only save it when activity extended the session, and
        costs the same one call)."""
        offset = [0.0]
        rt = Runtime.open(settings_for(refresh_margin="300"), clock=lambda: time.time() + offset[0])
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=3600)
            assert (await rt.refresher.check(cid)).outcome is Outcome.FRESH  # learns exp
            looked = emu.http.get("/_admin/stats").json()["introspect_calls"]
            offset[0] = 3600.0 - 300.0
            result = await rt.refresher.check(cid)
            assert (result.outcome, result.reason) == (Outcome.REFRESHED, "near_expiry")
            assert emu.token_calls(grant["grant_id"]) == 1
            # one introspection, of the new token, to learn its lifetime: none before it
            assert emu.http.get("/_admin/stats").json()["introspect_calls"] == looked + 1
        finally:
            await rt.close()

    async def test_a_learned_lifetime_is_checked_again_at_the_days_first_refresh(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A direct refresh reuses the learned lifetime (no introspection) when the last
        refresh was today; the first refresh of a UTC day introspects the new token again, so
        an org that cut its session timeout is noticed within a day."""
        rt = runtime_for(refresh_margin="300")
        try:
            [(cid, _)] = await connect(rt, emu, lifetime=3600)
            looked = [emu.http.get("/_admin/stats").json()["introspect_calls"]]

            async def refresh_after(last_refresh_at: float) -> int:
                conn = await rt.store.get_connection(cid)
                assert conn is not None
                due = conn.evolve(
                    expires_at=time.time() + 100.0,
                    expiry_source=ExpirySource.INTROSPECTION,
                    lifetime=7200.0,  # learned earlier; the org now says 3600
                    last_refresh_at=last_refresh_at,
                )
                await rt.store.save_connection(due, time.time())
                result = await rt.refresher.check(cid)
                assert (result.outcome, result.reason) == (Outcome.REFRESHED, "near_expiry")
                calls = emu.http.get("/_admin/stats").json()["introspect_calls"] - looked[0]
                looked[0] += calls
                return int(calls)

            assert await refresh_after(time.time() - 60.0) == 0  # same day: lifetime reused
            assert await refresh_after(time.time() - 2 * 86400.0) == 1  # a new day: re-learned
            learned = await rt.store.get_connection(cid)
            assert learned is not None and learned.lifetime is not None
            assert abs(learned.lifetime - 3600.0) < 5.0
        finally:
            await rt.close()

    async def test_margin_never_exceeds_half_the_session_lifetime(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """15-minute sessions with a 15-minute margin are not refreshed at every check."""

        rt = runtime_for(refresh_margin="900")
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=900)
            result = await rt.refresher.check(cid)
            assert result.outcome is Outcome.FRESH
            assert result.next_check_at is not None
            assert result.next_check_at >= time.time() + 400
            assert emu.token_calls(grant["grant_id"]) == 0
        finally:
            await rt.close()

    async def test_fresh_token_is_left_alone_and_rescheduled_at_exp_minus_margin(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """An active token far from expiry is not refreshed; the next check is exp - margin."""

        rt = runtime_for(refresh_margin="300")
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=3600)
            result = await rt.refresher.check(cid)
            conn = await rt.store.get_connection(cid)
            assert result.outcome is Outcome.FRESH
            assert emu.token_calls(grant["grant_id"]) == 0
            assert conn is not None and conn.expires_at is not None
            assert conn.expiry_source is ExpirySource.INTROSPECTION
            due = await rt.store.next_check_at(cid)
            assert due is not None
            target = conn.expires_at - 300
            assert target - 60 <= due <= target
            assert await names_of(rt) == []
        finally:
            await rt.close()

    async def test_session_extended_by_activity_reschedules_without_refresh(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """When activity moved exp later, the check reschedules to the new exp, no refresh."""

        rt = runtime_for(refresh_margin="60")
        try:
            [(cid, grant)] = await connect(rt, emu, lifetime=600)
            await rt.refresher.check(cid)
            before = await rt.store.get_connection(cid)
            await asyncio.sleep(1.1)
            emu.post(f"/_admin/grants/{grant['grant_id']}/activity")
            result = await rt.refresher.check(cid)
            after = await rt.store.get_connection(cid)
            assert result.outcome is Outcome.FRESH
            assert before is not None and after is not None
            assert after.expires_at is not None and before.expires_at is not None
            assert after.expires_at > before.expires_at
            assert emu.token_calls(grant["grant_id"]) == 0
        finally:
            await rt.close()


class TestFailures:
    async def test_revoked_refresh_token_ends_reauth_required_with_one_event(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A revoked grant: status reauth_required, unscheduled, one event with invalid_grant."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu)
            emu.post(f"/_admin/grants/{grant['grant_id']}/revoke")
            result = await rt.refresher.check(cid)
            again = await rt.refresher.check(cid)
            conn = await rt.store.get_connection(cid)
            events = await events_of(rt)
            assert result.outcome is Outcome.REAUTH_REQUIRED
            assert again.outcome is Outcome.SKIPPED
            assert conn is not None and conn.status is ConnectionStatus.REAUTH_REQUIRED
            assert conn.last_error is not None and conn.last_error.error == "invalid_grant"
            assert await rt.store.next_check_at(cid) is None
            assert [e["event"] for e in events] == ["connection.reauth_required"]
            assert events[0]["error"] == "invalid_grant"
            assert events[0]["error_description"] == "expired access/refresh token"
            assert events[0]["http_status"] == 400
        finally:
            await rt.close()

    async def test_transient_failure_marks_failing_and_schedules_backoff(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A 503 on refresh: failing, one token.refresh_failed event, retry after backoff."""

        rt = runtime_for(retry_base="10", retry_max="60")
        try:
            [(cid, grant)] = await connect(rt, emu)
            emu.fault(endpoint="token", mutate="html_503", count=1)
            started = time.time()
            result = await rt.refresher.check(cid, force=True)
            conn = await rt.store.get_connection(cid)
            events = await events_of(rt)
            assert result.outcome is Outcome.FAILED
            assert conn is not None and conn.status is ConnectionStatus.FAILING
            assert conn.refresh_token == grant["refresh_token"]
            due = await rt.store.next_check_at(cid)
            assert due is not None and started + 5 <= due <= time.time() + 10
            assert [e["event"] for e in events] == ["token.refresh_failed"]
            assert events[0]["http_status"] == 503 and events[0]["attempt"] == 1
            recovered = await rt.refresher.check(cid, force=True)
            assert recovered.outcome is Outcome.REFRESHED
            assert (await names_of(rt))[-1] == "connection.recovered"
        finally:
            await rt.close()

    async def test_bad_client_secret_misconfigures_the_integration_once(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """invalid_client on refresh pauses the integration with exactly one event."""

        rt = runtime_for()
        try:
            pairs = await connect(rt, emu, count=3)
            integration = await rt.store.get_integration("acme")
            assert integration is not None
            from worker.service import integrations  # noqa: PLC0415

            await integrations.add(
                rt, "acme", "salesforce", integration.client_id, "wrong-secret", emu.base_url
            )
            results = [await rt.refresher.check(cid, force=False) for cid, _ in pairs]
            names = await names_of(rt)
            stored = await rt.store.get_integration("acme")
            assert results[0].outcome is Outcome.MISCONFIGURED
            assert stored is not None and stored.status.value == "misconfigured"
            assert names.count("integration.misconfigured") == 1
            assert all(r.outcome in (Outcome.MISCONFIGURED, Outcome.SKIPPED) for r in results)
            for cid, _ in pairs:
                conn = await rt.store.get_connection(cid)
                assert conn is not None and conn.status is ConnectionStatus.ACTIVE
        finally:
            await rt.close()


class TestConcurrency:
    async def test_two_concurrent_refreshes_make_one_token_call(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Two workers checking one due connection at once: one refresh, one contended."""

        first, second = runtime_for(), runtime_for()
        try:
            emu.post("/_admin/config", {"latency_ms": 200})
            try:
                [(cid, grant)] = await connect(first, emu, rotation=True)
                emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
                results = await asyncio.gather(
                    first.refresher.check(cid), second.refresher.check(cid)
                )
            finally:
                emu.post("/_admin/config", {"latency_ms": 0})
            outcomes = sorted(r.outcome.value for r in results)
            assert outcomes == ["contended", "refreshed"]
            assert emu.token_calls(grant["grant_id"]) == 1
            assert emu.grant(grant["grant_id"])["revoked"] is False
        finally:
            await first.close()
            await second.close()

    async def test_rotation_grant_survives_many_cycles(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """With rotation on, 25 refreshes keep the grant alive and the newest token stored."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu, rotation=True)
            for _ in range(25):
                result = await rt.refresher.check(cid, force=True)
                assert result.outcome is Outcome.REFRESHED
            view = emu.grant(grant["grant_id"])
            conn = await rt.store.get_connection(cid)
            assert view["revoked"] is False and view["refresh_count"] == 25
            assert conn is not None and conn.refresh_token == view["refresh_token"]
            assert conn.refresh_token != grant["refresh_token"]
        finally:
            await rt.close()

    async def test_a_batch_past_its_budget_gives_the_rest_back_due_at_once(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A slow Salesforce: checks started within the budget finish; the others are not
        sent, and go back to the due index due now instead of waiting out their claim."""

        rt = runtime_for(concurrency="2")
        try:
            ids = [cid for cid, _ in await connect(rt, emu, count=6)]
            claimed_until = time.time() + 3600  # what a sweep's claim does to the score
            await rt.redis.zadd(rt.store.keys.due, dict.fromkeys(ids, claimed_until))
            before = emu.http.get("/_admin/stats").json()["introspect_calls"]
            emu.post("/_admin/config", {"latency_ms": 400})
            try:
                results = await rt.refresher.check_many(ids, budget=0.2)
            finally:
                emu.post("/_admin/config", {"latency_ms": 0})
            after = emu.http.get("/_admin/stats").json()["introspect_calls"]
            by_id = {r.connection_id: r.outcome for r in results}
            checked = [cid for cid in ids if by_id[cid] is Outcome.FRESH]
            deferred = [cid for cid in ids if by_id[cid] is Outcome.DEFERRED]
            assert (len(checked), len(deferred)) == (2, 4), by_id
            assert after - before == 2  # nothing was sent for the deferred ones
            now = time.time()
            for cid in deferred:
                due = await rt.store.next_check_at(cid)
                assert due is not None and due <= now
            for cid in checked:
                due = await rt.store.next_check_at(cid)
                assert due is not None and now < due < claimed_until
        finally:
            await rt.close()

    async def test_a_deleted_connection_is_not_given_back(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Giving back only touches ids still in the due index: a deleted one stays deleted."""

        rt = runtime_for()
        try:
            [(cid, _)] = await connect(rt, emu)
            assert await rt.store.remove_connection(cid)
            await rt.store.give_back([cid], time.time())
            assert await rt.store.next_check_at(cid) is None
        finally:
            await rt.close()

    async def test_a_connection_removed_before_the_mark_is_never_refreshed(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """`connections remove` landing between the lease and the "sent" mark: the mark does
        not recreate the record and the removed grant's refresh token is never sent."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu)
            mark, mark_replicated = rt.store.mark_refreshing, rt.store.mark_replicated

            async def removed_first(connection_id: str, now: float) -> bool:
                await rt.store.remove_connection(connection_id)
                return await mark(connection_id, now)

            async def removed_before(connection_id: str, now: float, *args: Any) -> Any:
                await rt.store.remove_connection(connection_id)
                return await mark_replicated(connection_id, now, *args)

            # The mark is confirmed by WAIT (mark_replicated) when `auto` must ask, or not.
            rt.store.mark_refreshing = removed_first  # type: ignore[method-assign]
            rt.store.mark_replicated = removed_before  # type: ignore[method-assign]
            result = await rt.refresher.check(cid, force=True)
            assert result.outcome is Outcome.NOT_FOUND, result
            assert emu.token_calls(grant["grant_id"]) == 0
            assert await rt.store.get_connection(cid) is None
        finally:
            await rt.close()


class TestSecrecy:
    async def test_raw_redis_values_hold_no_plaintext_secret(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """After import and refreshes, no Redis value contains a token or the client secret."""

        rt = runtime_for()
        try:
            pairs = await connect(rt, emu, count=3, rotation=True)
            for cid, _ in pairs:
                await rt.refresher.check(cid, force=True)
            secrets: set[str] = set()
            integration = await rt.store.get_integration("acme")
            assert integration is not None
            secrets.add(integration.client_secret)
            for cid, grant in pairs:
                conn = await rt.store.get_connection(cid)
                assert conn is not None and conn.access_token is not None
                secrets |= {
                    grant["refresh_token"],
                    grant["access_token"],
                    conn.refresh_token,
                    conn.access_token,
                }
            dump = await _dump_prefix(rt)
            assert dump, "the scenario stored nothing"
            for secret in secrets:
                assert secret.encode() not in dump
        finally:
            await rt.close()


async def _dump_prefix(rt: Runtime) -> bytes:
    chunks: list[bytes] = []
    async for key in rt.redis.scan_iter(match=f"{rt.store.keys.prefix}*"):
        kind = (await rt.redis.type(key)).decode()
        value: Any
        if kind == "hash":
            value = await rt.redis.hgetall(key)
            chunks.extend(k + v for k, v in value.items())
        elif kind == "string":
            chunks.append(await rt.redis.get(key))
        elif kind == "zset":
            chunks.extend(m for m, _ in await rt.redis.zrange(key, 0, -1, withscores=True))
        elif kind == "stream":
            for _, fields in await rt.redis.xrange(key):
                chunks.extend(fields.values())
        elif kind == "set":
            chunks.extend(await rt.redis.smembers(key))
    return b"\n".join(chunks)


async def _await_token_call(emu: Emu, grant_id: str, timeout: float = 10.0) -> None:
    """Until the emulator has counted a token call of `grant_id` (its answer is then on the
    way back, `latency_ms` later)."""
    deadline = time.monotonic() + timeout
    while emu.token_calls(grant_id) < 1:
        assert time.monotonic() < deadline, "no token call reached the emulator"
        await asyncio.sleep(0.02)


class TestRotationSaved:
    async def test_a_rotated_token_is_saved_before_anything_else_is_awaited(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Between the refresh answer and its save the check awaits nothing: a callback
        queued the moment the answer returns runs only after the save has started."""

        rt = runtime_for()
        try:
            [(cid, _)] = await connect(rt, emu, rotation=True)
            order: list[str] = []
            answered = [False]
            refresh, save = rt.client.refresh, rt.store.save_connection

            async def refresh_then_probe(*args: Any, **kwargs: Any) -> Any:
                response = await refresh(*args, **kwargs)
                answered[0] = True
                asyncio.get_running_loop().call_soon(order.append, "next loop step")
                return response

            def recorded(save: Any) -> Any:
                async def recorded_save(*args: Any, **kwargs: Any) -> Any:
                    if answered[0]:
                        order.append("save")
                    return await save(*args, **kwargs)

                return recorded_save

            rt.client.refresh = refresh_then_probe  # type: ignore[method-assign]
            # A rotated token is saved with WAIT for replicas (save_replicated) or without.
            rt.store.save_connection = recorded(save)  # type: ignore[method-assign]
            rt.store.save_replicated = recorded(rt.store.save_replicated)  # type: ignore[method-assign]
            result = await rt.refresher.check(cid, force=True)
            assert result.outcome is Outcome.REFRESHED, result
            assert order[:2] == ["save", "next loop step"], order
        finally:
            await rt.close()

    async def test_a_reimport_during_a_refresh_keeps_the_imported_grant(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """D2: a customer's new grant imported while the old grant's refresh is in flight
        stays stored; the old grant's rotated token is not written over it."""

        from worker.service import connections  # noqa: PLC0415

        rt = runtime_for()
        try:
            [(cid, old)] = await connect(rt, emu, rotation=True)
            integration = await rt.store.get_integration("acme")
            assert integration is not None
            [new] = emu.grants(integration.client_id)
            line = {"id": cid, "integration": "acme", "refresh_token": new["refresh_token"]}
            emu.post("/_admin/config", {"latency_ms": 1500})
            try:
                flight = asyncio.create_task(rt.refresher.check(cid, force=True))
                await _await_token_call(emu, old["grant_id"])
                report = await connections.import_lines(rt, [json.dumps(line)], skip_invalid=False)
                assert report.updated == 1, report
                result = await flight
            finally:
                emu.post("/_admin/config", {"latency_ms": 0})
            stored = await rt.store.get_connection(cid)
            assert stored is not None
            assert stored.refresh_token == new["refresh_token"], "the imported grant was undone"
            assert emu.grant(old["grant_id"])["refresh_token"] != stored.refresh_token
            assert result.outcome is Outcome.SUPERSEDED, result
            assert "token.refreshed" not in await names_of(rt)
        finally:
            await rt.close()

    async def test_a_write_that_keeps_the_grant_does_not_cost_the_rotated_token(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Another writer bumps the version during the flight but keeps the refresh token we
        sent: our answer is applied onto its version (the rotated token is not dropped)."""

        rt = runtime_for()
        try:
            [(cid, grant)] = await connect(rt, emu, rotation=True)
            emu.post("/_admin/config", {"latency_ms": 500})
            try:
                flight = asyncio.create_task(rt.refresher.check(cid, force=True))
                await _await_token_call(emu, grant["grant_id"])
                current = await rt.store.get_connection(cid)
                assert current is not None
                await rt.store.save_connection(current.evolve(status=ConnectionStatus.FAILING))
                result = await flight
            finally:
                emu.post("/_admin/config", {"latency_ms": 0})
            stored = await rt.store.get_connection(cid)
            assert result.outcome is Outcome.REFRESHED, result
            assert stored is not None and stored.status is ConnectionStatus.ACTIVE
            assert stored.refresh_token == emu.grant(grant["grant_id"])["refresh_token"]
        finally:
            await rt.close()

    def test_the_save_window_fits_inside_the_task_time_limits(
        self, settings_for: Callable[..., Settings]
    ) -> None:
        """The figures the README gives: a 120 s save window, time limits 272/302 s with the
        defaults; a save may start as late as a check's last answer and still use it all."""
        from worker.engine.limits import check_window, save_window  # noqa: PLC0415

        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWORKER_")}
        env["TOKENWORKER_ENCRYPTION_KEYS"] = TEST_KEYS
        shown = "from config.celery import app; print(app.conf.task_soft_time_limit, "
        shown += "app.conf.task_time_limit)"
        done = subprocess.run(
            [sys.executable, "-c", shown], env=env, capture_output=True, text=True, check=True
        )
        defaults = Settings.from_env({"TOKENWORKER_ENCRYPTION_KEYS": TEST_KEYS})
        soft, hard = (float(part) for part in done.stdout.split())
        assert (save_window(defaults), soft, hard) == (120.0, 272.0, 302.0)
        assert soft >= check_window(defaults) + save_window(defaults)
        slow = settings_for(http_timeout="60", lease_ttl="300")
        assert check_window(slow) > check_window(defaults)  # the limits follow the settings


class TestBatchLeases:
    async def test_check_many_releases_every_lease_before_it_returns(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A batch's checks do not wait for their lease's release (one round trip less each),
        but check_many returns only once every release is done: no lease outlives the batch,
        and nothing is left running in the loop (a worker's loop stops between tasks)."""
        rt = runtime_for()
        try:
            ids = [cid for cid, _ in await connect(rt, emu, count=5)]
            results = await rt.refresher.check_many(ids)
            assert [r.outcome for r in results] == [Outcome.FRESH] * 5, results
            leases = [rt.store.keys.lease(cid) for cid in ids]
            assert await rt.redis.exists(*leases) == 0
            assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        finally:
            await rt.close()

    async def test_check_many_runs_at_most_concurrency_checks_and_answers_in_id_order(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """`concurrency` lanes each take the next id: never more checks in flight than that,
        the slots kept full, and the results in the order of the ids whatever order the
        checks end in."""
        rt = runtime_for(concurrency="2")
        try:
            ids = [cid for cid, _ in await connect(rt, emu, count=5)]
            check = rt.refresher.check
            running, most = [0], [0]

            async def slow_first(connection_id: str, **kwargs: Any) -> Any:
                running[0] += 1
                most[0] = max(most[0], running[0])
                try:
                    await asyncio.sleep(0.03 * (5 - ids.index(connection_id)))
                    return await check(connection_id, **kwargs)
                finally:
                    running[0] -= 1

            rt.refresher.check = slow_first  # type: ignore[method-assign]
            results = await rt.refresher.check_many(ids)
            assert most[0] == 2
            assert [r.connection_id for r in results] == ids
            assert [r.outcome for r in results] == [Outcome.FRESH] * 5, results
        finally:
            await rt.close()


class TestStoreBlips:
    async def test_a_store_error_in_one_check_is_that_checks_outcome(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """D1: a dead pooled connection met by one check fails that check only; the batch
        returns every result and leaves no coroutine behind in the loop."""

        rt = runtime_for()
        try:
            pairs = await connect(rt, emu, count=4, rotation=True)
            ids = [cid for cid, _ in pairs]
            broken = rt.store.keys.lease(ids[1])
            acquire = rt.leases.acquire_reading

            async def flaky(key: str, *args: Any, **kwargs: Any) -> Any:
                if key == broken:
                    await asyncio.sleep(0.05)  # the others are in flight by then
                    raise RedisConnectionError("Connection lost.")
                return await acquire(key, *args, **kwargs)

            rt.leases.acquire_reading = flaky  # type: ignore[method-assign]
            emu.post("/_admin/config", {"latency_ms": 300})
            try:
                results = await rt.refresher.check_many(ids, force=True)
            finally:
                emu.post("/_admin/config", {"latency_ms": 0})
            leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            by_id = {r.connection_id: r.outcome for r in results}
            assert by_id[ids[1]] is Outcome.ERROR, by_id
            assert [by_id[c] for c in ids if c != ids[1]] == [Outcome.REFRESHED] * 3, by_id
            assert leftovers == []
            due = await rt.store.next_check_at(ids[1])
            assert due is not None and due <= time.time() + 5  # due again soon
        finally:
            await rt.close()


class TestIntrospectionVerdicts:
    async def test_a_grant_revoked_right_after_its_refresh_is_not_an_integration_problem(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A fresh token reading inactive because the grant was revoked a moment later (the
        customer; a reuse revocation): no introspection.unavailable while tokens of the
        integration read active, nor for a single connection; the integration keeps
        introspecting and the dead connections are looked at again soon."""

        rt = runtime_for()
        try:
            *pairs, (working, _) = await connect(rt, emu, count=3)
            assert (await rt.refresher.check(working)).outcome is Outcome.FRESH
            grant_of = {cid: grant["grant_id"] for cid, grant in pairs}
            refresh = rt.client.refresh
            current: list[str] = []

            async def refresh_then_revoke(*args: Any, **kwargs: Any) -> Any:
                response = await refresh(*args, **kwargs)
                emu.post(f"/_admin/grants/{grant_of[current[0]]}/revoke")
                return response

            rt.client.refresh = refresh_then_revoke  # type: ignore[method-assign]
            for cid, _ in pairs:
                current[:] = [cid]
                result = await rt.refresher.check(cid, force=True)
                assert result.outcome is Outcome.REFRESHED, result
            integration = await rt.store.get_integration("acme")
            assert integration is not None and integration.introspection_available
            assert "introspection.unavailable" not in await names_of(rt)
            for cid, _ in pairs:
                due = await rt.store.next_check_at(cid)
                assert due is not None and due <= time.time() + 10  # looked at again soon
        finally:
            await rt.close()

    async def test_a_record_under_a_missing_key_is_reported_once(
        self, runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """A record sealed under a key the worker lacks: one connection.unreadable event
        (the problem, no secret) however often it is checked; the worker goes on."""

        rt = runtime_for()
        try:
            [(fine, grant), (sealed, _)] = await connect(rt, emu, count=2)
            record = await rt.store.get_connection(sealed)
            assert record is not None
            # Re-sealed under a key this worker does not have (a key removed too early).
            foreign = Store(rt.redis, Cipher((os.urandom(32),)), rt.store.keys)
            await foreign.save_connection(record, time.time())
            for _ in range(3):
                results = await rt.refresher.check_many([sealed, fine])
                outcomes = {r.connection_id: r.outcome for r in results}
                assert outcomes == {sealed: Outcome.ERROR, fine: Outcome.FRESH}, outcomes
            events = [e for e in await events_of(rt) if e["event"] == "connection.unreadable"]
            assert len(events) == 1, events
            assert events[0]["connection_id"] == sealed
            assert "not among TOKENWORKER_ENCRYPTION_KEYS" in events[0]["error_description"]
            assert grant["refresh_token"] not in json.dumps(events[0])
            assert record.refresh_token not in json.dumps(events[0])
        finally:
            await rt.close()
