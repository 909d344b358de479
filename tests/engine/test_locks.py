"""Leases on a real Redis server: the SET NX and the read behind it share one round trip."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.exceptions import ResponseError

from tests.tls_redis import tls_acl_requested
from worker.engine.runtime import Runtime
from worker.store.leases import _Owner, owner_token

RuntimeFor = Callable[..., Runtime]


async def test_the_read_comes_back_only_with_the_lease(runtime_for: RuntimeFor) -> None:
    rt = runtime_for()
    try:
        lease, record = rt.store.keys.lease("c-1"), rt.store.keys.conn("c-1")
        await rt.redis.hset(record, mapping={"status": "active"})
        async with rt.leases.hold(lease, lambda p: p.hgetall(record)) as (token, reply):
            assert token is not None
            assert reply == {b"status": b"active"}
            assert await rt.redis.get(lease) == token.encode()
            async with rt.leases.hold(lease, lambda p: p.hgetall(record)) as (other, seen):
                assert (other, seen) == (None, None)  # held: no token, and no data either
        assert await rt.redis.exists(lease) == 0  # released on the way out
    finally:
        await rt.close()


async def test_a_failed_read_releases_the_lease_at_once(runtime_for: RuntimeFor) -> None:
    """A read that errors (here: HGETALL on a string) does not leave the lease held for its
    TTL; the next holder gets it straight away."""

    rt = runtime_for()
    try:
        lease, record = rt.store.keys.lease("c-2"), rt.store.keys.conn("c-2")
        await rt.redis.set(record, "not a hash")
        with pytest.raises(ResponseError):
            async with rt.leases.hold(lease, lambda p: p.hgetall(record)):
                pytest.fail("the body must not run without the read")
        assert await rt.redis.exists(lease) == 0
    finally:
        await rt.close()


async def test_a_waiter_whose_need_is_met_stops_waiting_without_the_lease(
    runtime_for: RuntimeFor,
) -> None:
    """`unneeded`: a reply read while the lease is held elsewhere that already meets the
    waiter's need ends the wait at once, lease not taken; before that, the waiter waits."""

    import asyncio  # noqa: PLC0415

    rt = runtime_for()
    try:
        lease, record = rt.store.keys.lease("c-3"), rt.store.keys.conn("c-3")
        await rt.redis.hset(record, mapping={"status": "old"})
        holder, _ = await rt.leases.acquire_reading(lease, lambda p: p.hgetall(record))
        assert holder is not None
        waiter = asyncio.create_task(
            rt.leases.acquire_reading(
                lease, lambda p: p.hgetall(record), 5.0, lambda raw: raw[b"status"] == b"new"
            )
        )
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await rt.redis.hset(record, "status", "new")
        token, reply = await asyncio.wait_for(waiter, 2.0)
        assert token is None and reply[b"status"] == b"new"
        assert await rt.redis.get(lease) == holder.encode()  # still the holder's
    finally:
        await rt.close()


@pytest.mark.parametrize("scripts_lost", [False, True], ids=["scripts", "script-flush"])
async def test_a_detached_release_is_done_by_settle(
    runtime_for: RuntimeFor, scripts_lost: bool
) -> None:
    """A check does not wait for its lease's release (queued on the pipeline, answered by a
    callback); settle() waits for them all, including one that met a store which lost its
    scripts (a restart) and had to load the release script first."""
    if scripts_lost and tls_acl_requested():
        pytest.skip("SCRIPT FLUSH is not the ACL user's to run; `make test` runs this case")
    rt = runtime_for()
    try:
        leases = [rt.store.keys.lease(f"c-{n}") for n in range(5)]
        record = rt.store.keys.conn("c-0")
        if scripts_lost:  # once, before any release: a flush racing the reload is no restart
            await rt.redis.script_flush()
        for lease in leases:
            async with rt.leases.hold(lease, lambda p: p.hgetall(record), detach=True) as held:
                assert held[0] is not None
        await rt.leases.settle()
        assert await rt.redis.exists(*leases) == 0
    finally:
        await rt.close()


def test_owner_tokens_are_unique_and_a_forked_child_makes_its_own_prefix() -> None:
    """Unique within a process; the after-fork hook (os.register_at_fork) gives a prefork
    child a prefix of its own (called directly here: forking pytest itself is not safe)."""
    tokens = {owner_token() for _ in range(10_000)}
    assert len(tokens) == 10_000
    before = owner_token()[:16]
    _Owner.forked()
    assert owner_token()[:16] != before
