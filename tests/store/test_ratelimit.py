"""The per-integration token bucket on a real Redis server, and the check cycle under it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from tests.conftest import Emu
from tests.helpers import connect
from worker.domain.outcomes import Outcome
from worker.engine.runtime import Runtime
from worker.errors import Throttled
from worker.store.ratelimit import RateLimiter

RuntimeFor = Callable[..., Runtime]


async def test_two_processes_share_one_budget(runtime_for: RuntimeFor) -> None:
    """Two limiters (two worker processes) at 20/s: 60 calls need the burst of 20 plus
    about 2 s; another integration's bucket is untouched."""

    a, b = runtime_for(), runtime_for()
    try:
        first = RateLimiter(a.redis, a.store.keys, 20.0)
        second = RateLimiter(b.redis, b.store.keys, 20.0)
        started = time.monotonic()
        await asyncio.gather(
            *(first.take("acme") for _ in range(30)), *(second.take("acme") for _ in range(30))
        )
        elapsed = time.monotonic() - started
        assert elapsed >= 1.7, elapsed
        other = RateLimiter(a.redis, a.store.keys, 20.0, max_wait=0.0)
        for _ in range(20):  # a full bucket of its own: none of these waits
            await other.take("globex")
    finally:
        await a.close()
        await b.close()


async def test_no_permit_in_time_is_throttled_with_a_retry_hint(runtime_for: RuntimeFor) -> None:
    rt = runtime_for()
    try:
        limiter = RateLimiter(rt.redis, rt.store.keys, 1.0, max_wait=0.2)
        await limiter.take("acme")
        with pytest.raises(Throttled) as caught:
            await limiter.take("acme")
        assert caught.value.integration == "acme"
        assert 0.1 <= caught.value.retry_in <= 1.0
    finally:
        await rt.close()


async def test_unused_permits_expire_so_a_process_cannot_save_up_a_burst(
    runtime_for: RuntimeFor,
) -> None:
    """At 100/s a process takes 5 permits at once; after a second idle the 4 it did not use
    are gone, and the bucket (not the process) decides."""

    rt = runtime_for()
    try:
        limiter = RateLimiter(rt.redis, rt.store.keys, 100.0, max_wait=0.0)
        await limiter.take("acme")
        await asyncio.sleep(1.1)
        await rt.redis.hset(rt.store.keys.rate("acme"), mapping={"tokens": "0", "at": "9e12"})
        with pytest.raises(Throttled):
            await limiter.take("acme")  # the 4 left over were dropped
    finally:
        await rt.close()


async def test_zero_means_no_limit_and_no_redis_call(runtime_for: RuntimeFor) -> None:
    rt = runtime_for()
    try:
        limiter = RateLimiter(rt.redis, rt.store.keys, 0.0, max_wait=0.0)
        for _ in range(100):
            await limiter.take("acme")
        assert await rt.redis.exists(rt.store.keys.rate("acme")) == 0
    finally:
        await rt.close()


async def test_a_throttled_refresh_is_deferred_unsent_and_unmarked(
    runtime_for: RuntimeFor, emu: Emu
) -> None:
    """Out of permits, a refresh is not sent and not marked as sent (which would make the next
    check treat it as a lost answer); the connection is due again within the retry hint."""

    rt = runtime_for(rate_limit="1")
    try:
        assert isinstance(rt.client.admission, RateLimiter)
        rt.client.admission.max_wait = 0.0
        [(fresh, _), (due, grant)] = await connect(rt, emu, count=2)
        first = await rt.refresher.check(fresh)  # its introspection takes this second's permit
        second = await rt.refresher.check(due, force=True)
        stored = await rt.store.get_connection(due)
        next_at = await rt.store.next_check_at(due)
        assert first.outcome is Outcome.FRESH
        assert second.outcome is Outcome.DEFERRED, second
        assert "TOKENWORKER_RATE_LIMIT" in second.reason
        assert emu.token_calls(grant["grant_id"]) == 0
        assert stored is not None and stored.refresh_started_at is None
        assert next_at is not None and next_at <= time.time() + 1.5
        await asyncio.sleep(1.1)
        third = await rt.refresher.check(due, force=True)
        # Refreshed and saved; introspecting the new token (no permit left this second) is
        # skipped, not reported as a deferral of a refresh that happened.
        assert third.outcome is Outcome.REFRESHED, third
        assert emu.token_calls(grant["grant_id"]) == 1
    finally:
        await rt.close()


async def test_a_throttled_retry_clears_the_mark_of_the_answered_send(
    runtime_for: RuntimeFor, emu: Emu
) -> None:
    """The concurrent-refresh loser ('expired authorization code') retries; when the retry
    gets no permit, the first send was answered, so nothing is in flight: the mark goes, and
    the next check refreshes instead of asking whether an answer was lost."""

    rt = runtime_for(rate_limit="0.1")  # one permit, the next in 10 s
    try:
        assert isinstance(rt.client.admission, RateLimiter)
        rt.client.admission.max_wait = 0.0
        [(cid, grant)] = await connect(rt, emu)
        body = json.dumps(
            {"error": "invalid_grant", "error_description": "expired authorization code"}
        )
        emu.fault(endpoint="token", mutate="error", status=400, body=body)
        result = await rt.refresher.check(cid, force=True)
        stored = await rt.store.get_connection(cid)
        assert result.outcome is Outcome.DEFERRED, result
        assert stored is not None and stored.refresh_started_at is None
        assert emu.token_calls(grant["grant_id"]) <= 1
        await rt.redis.delete(rt.store.keys.rate("acme"))  # a fresh second: permits again
        again = await rt.refresher.check(cid, force=True)
        assert again.outcome is Outcome.REFRESHED, again
    finally:
        await rt.close()
