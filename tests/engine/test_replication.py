"""A rotated refresh token waits for replicas (WAIT) before the refresh counts as saved; when
they fall short the answer is kept and saved again, on the new master after a failover. The
"refresh sent" mark is confirmed the same way before anything is sent, the lease is kept while
an answer waits to be saved, and `auto` does not trust a master that just lost its replica.

The test Redis has no replica, so a WAIT for one always falls short: exactly the moment a
master acknowledged a write it may not have replicated. The failover is simulated where it
bites: right after that acknowledged save, the record reverts to what it was (the new master
never got the write) and the new master runs alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from tests.conftest import Emu
from tests.helpers import connect
from worker.domain.models import Connection
from worker.domain.outcomes import Outcome
from worker.engine.refresher import STORE_DOWN_RETRY
from worker.engine.runtime import Runtime
from worker.engine.saving import save_refresh
from worker.store import replication as replication_module
from worker.store.replication import REPLICA_LOST_GRACE, Replication

RuntimeFor = Callable[..., Runtime]


async def _arranged(rt: Runtime, emu: Emu) -> tuple[Connection, Connection]:
    """(the stored record, marked "refresh sent"; the answer to save: a rotated token)."""
    [(connection_id, _)] = await connect(rt, emu, rotation=True)
    assert await rt.store.mark_refreshing(connection_id, 1.0)
    stored = await rt.store.get_connection(connection_id)
    assert stored is not None and stored.refresh_started_at is not None
    answer = stored.evolve(
        refresh_token="rotated-token", access_token="new-access", refresh_started_at=None
    )
    return stored, answer


async def test_a_shortfall_keeps_the_answer_and_saves_it_again_on_the_new_master(
    runtime_for: RuntimeFor, emu: Emu
) -> None:
    rt = runtime_for()
    try:
        stored, answer = await _arranged(rt, emu)
        key = rt.store.keys.conn(stored.id)
        before: dict[Any, Any] = await rt.redis.hgetall(key)  # type: ignore[misc]
        replication = Replication(rt.redis, configured=1, timeout=0.05)
        real = rt.store.save_replicated
        saves: list[int] = []

        async def acknowledged_then_lost(*args: Any, **kwargs: Any) -> tuple[Connection, int, int]:
            result = await real(*args, **kwargs)
            saves.append(result[2])
            # The master that acknowledged it dies; the new master has the record as before.
            await rt.redis.delete(key)
            await rt.redis.hset(key, mapping=before)  # type: ignore[misc]
            replication.configured = 0  # the new master runs alone
            return result

        rt.store.save_replicated = acknowledged_then_lost  # type: ignore[method-assign]
        with structlog.testing.capture_logs() as logs:
            saved = await save_refresh(
                rt.store,
                answer,
                2e9,
                sent=stored.refresh_token,
                window=10.0,
                replication=replication,
            )
        assert saves == [0]  # one WAIT, confirmed by no replica
        assert [e for e in logs if e["event"] == "replication.short"], logs
        again = await rt.store.get_connection(stored.id)
        assert again is not None and again.refresh_token == "rotated-token"
        assert again.access_token == "new-access" and saved.refresh_token == "rotated-token"
        assert again.refresh_started_at is None  # the answer is saved: the mark goes with it
        assert again.version == stored.version + 1  # compare-and-set onto the new master's
    finally:
        await rt.close()


async def test_only_a_rotated_token_waits_for_replicas(runtime_for: RuntimeFor, emu: Emu) -> None:
    rt = runtime_for()
    try:
        stored, answer = await _arranged(rt, emu)
        waits: list[int] = []
        real = rt.store.save_replicated

        async def counted(*args: Any, **kwargs: Any) -> tuple[Connection, int, int]:
            waits.append(1)
            return await real(*args, **kwargs)

        rt.store.save_replicated = counted  # type: ignore[method-assign]
        replication = Replication(rt.redis, configured=1, timeout=0.05)
        same = answer.evolve(refresh_token=stored.refresh_token)
        await save_refresh(
            rt.store, same, 2e9, sent=stored.refresh_token, window=5.0, replication=replication
        )
        assert waits == []
    finally:
        await rt.close()


async def test_a_token_no_replica_ever_confirms_stays_saved_past_the_window(
    runtime_for: RuntimeFor, emu: Emu
) -> None:
    rt = runtime_for()
    try:
        stored, answer = await _arranged(rt, emu)
        replication = Replication(rt.redis, configured=1, timeout=0.05)
        with structlog.testing.capture_logs() as logs:
            saved = await save_refresh(
                rt.store,
                answer,
                2e9,
                sent=stored.refresh_token,
                window=0.5,
                replication=replication,
            )
        assert saved.refresh_token == "rotated-token"
        assert [e for e in logs if e["event"] == "replication.unconfirmed"], logs
        assert len([e for e in logs if e["event"] == "replication.short"]) >= 2  # saved again
    finally:
        await rt.close()


async def test_auto_wants_no_replica_from_a_master_that_has_none(runtime_for: RuntimeFor) -> None:
    rt = runtime_for()
    try:
        assert rt.refresher.replication is not None
        assert rt.refresher.replication.configured is None  # the default: auto
        assert await rt.refresher.replication.wanted() == 0
        assert await Replication(rt.redis, configured=2, timeout=0.1).wanted() == 2
    finally:
        await rt.close()


async def test_a_mark_no_replica_confirms_sends_nothing(runtime_for: RuntimeFor, emu: Emu) -> None:
    """The "refresh sent" mark is confirmed (WAIT) before the refresh token leaves: a failover
    that lost it would hand the new master a record that looks idle while the token is being
    consumed. A shortfall sends nothing, takes the mark back and is due again soon."""
    rt = runtime_for()
    try:
        [(cid, grant)] = await connect(rt, emu, rotation=True)
        rt.refresher.replication = Replication(rt.redis, configured=1, timeout=0.05)
        with structlog.testing.capture_logs() as logs:
            result = await rt.refresher.check(cid, force=True)
        assert result.outcome is Outcome.ERROR, result
        assert emu.token_calls(grant["grant_id"]) == 0  # nothing sent
        assert [e for e in logs if e["event"] == "replication.short" and e["stage"] == "mark"]
        after = await rt.store.get_connection(cid)
        assert after is not None and after.refresh_started_at is None  # taken back
        due = await rt.store.next_check_at(cid)
        assert due is not None and due - time.time() < STORE_DOWN_RETRY + 1
        # Confirmed (the master is alone for good): sent, once.
        rt.refresher.replication = Replication(rt.redis, configured=0, timeout=0.05)
        assert (await rt.refresher.check(cid, force=True)).outcome is Outcome.REFRESHED
        assert emu.token_calls(grant["grant_id"]) == 1
    finally:
        await rt.close()


async def test_the_lease_is_kept_while_an_answer_waits_to_be_saved(
    runtime_for: RuntimeFor, emu: Emu
) -> None:
    """A failover can lose the lease (it is not WAITed on its own) while save_refresh holds an
    answer: it is taken back each time the store answers, so no other worker reads the
    record (mark set, token consumed) as a lost answer meanwhile."""
    rt = runtime_for()
    try:
        stored, answer = await _arranged(rt, emu)
        lease = rt.store.keys.lease(stored.id)
        token, _ = await rt.leases.acquire_reading(lease, rt.store.connection_read(stored.id))
        assert token is not None
        replication = Replication(rt.redis, configured=1, timeout=0.05)
        real = rt.store.save_replicated

        async def lost_with_the_lease(*args: Any, **kwargs: Any) -> tuple[Connection, int, int]:
            result = await real(*args, **kwargs)
            await rt.redis.delete(lease)  # the new master never had it
            replication.configured = 0
            return result

        rt.store.save_replicated = lost_with_the_lease  # type: ignore[method-assign]
        await save_refresh(
            rt.store,
            answer,
            2e9,
            sent=stored.refresh_token,
            window=10.0,
            replication=replication,
            keep=lambda: rt.leases.keep(lease, token),
        )
        assert await rt.redis.get(lease) == token.encode()
        assert 0 < await rt.redis.pttl(lease) <= rt.leases.ttl_ms
        # Another holder's lease is never taken: keep says so.
        await rt.redis.set(lease, "someone-else")
        assert not await rt.leases.keep(lease, token)
        assert await rt.redis.get(lease) == b"someone-else"
    finally:
        await rt.close()


def test_auto_keeps_wanting_a_replica_for_a_while_after_it_vanished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A master whose replica was just promoted reports none, and goes on acknowledging writes
    until the sentinels demote it: `auto` does not trust it alone for REPLICA_LOST_GRACE."""
    now = [1000.0]
    monkeypatch.setattr(replication_module.time, "monotonic", lambda: now[0])
    auto = Replication(None, configured=None, timeout=1.0)  # type: ignore[arg-type]
    assert auto.learn({"connected_slaves": 0}) == 0  # alone from the start: no WAIT
    assert auto.learn({"connected_slaves": 1}) == 1
    # A process that asks rarely: its next question comes long after it last saw the replica,
    # in the middle of a failover. The grace runs from this first answer without a replica.
    now[0] += 10 * REPLICA_LOST_GRACE
    assert auto.learn({"connected_slaves": 0}) == 1  # vanished: maybe promoted
    now[0] += REPLICA_LOST_GRACE - 1
    assert auto.learn({"connected_slaves": 0}) == 1
    now[0] += 2
    assert auto.learn({"connected_slaves": 0}) == 0  # gone for good: trusted alone
    assert auto.learn({"connected_slaves": 1}) == 1  # back: the next loss starts a new grace
    now[0] += 5 * REPLICA_LOST_GRACE
    assert auto.learn({"connected_slaves": 0}) == 1
