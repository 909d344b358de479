"""The fleet read model (worker.store.fleet, worker.store.counting): counts kept exactly by
every save and remove, a store written before counts existed backfilled once by itself
(resumable), the non-active id sets, and `status` reading all of it without decrypting."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import run
from worker.domain.models import Connection, ConnectionStatus
from worker.engine.runtime import Runtime
from worker.errors import DecryptionError, StoreError
from worker.service.status import status
from worker.store import codec, counting
from worker.store.connections import Store
from worker.store.crypto import Cipher
from worker.store.fleet import Fleet

pytestmark = pytest.mark.integration

FAILING, REAUTH = ConnectionStatus.FAILING, ConnectionStatus.REAUTH_REQUIRED


def _conn(cid: str, integration: str = "acme", **fields: Any) -> Connection:
    return Connection(id=cid, integration=integration, refresh_token=f"rt-{cid}", **fields)


def _scenario(
    runtime_for: Callable[..., Runtime], body: Callable[[Runtime, Fleet], Awaitable[None]]
) -> None:
    async def go() -> None:
        rt = runtime_for()
        try:
            await body(rt, Fleet(rt.redis, rt.store.keys))
        finally:
            await rt.close()

    run(go())


async def _by_status(fleet: Fleet) -> Counter[tuple[str, str]]:
    return (await fleet.counts()).by_integration()


async def _old_format(rt: Runtime, conn: Connection) -> None:
    """A record as every store held it before counts existed: fields only, no flag."""
    fields = {k: v for k, v in codec.connection_fields(conn, rt.store.cipher).items() if v}
    await rt.redis.hset(rt.store.keys.conn(conn.id), mapping={**fields, "version": "1"})


def test_every_save_and_remove_moves_the_counts(runtime_for: Callable[..., Runtime]) -> None:
    """Create, change status, change integration, remove: the counts and the failing set
    follow each write exactly."""

    async def body(rt: Runtime, fleet: Fleet) -> None:
        a = await rt.store.save_connection(_conn("a"), time.time())
        b = await rt.store.save_connection(_conn("b"), time.time())
        assert await _by_status(fleet) == {("acme", "active"): 2}
        a = await rt.store.save_connection(a.evolve(status=FAILING))
        assert await _by_status(fleet) == {("acme", "active"): 1, ("acme", "failing"): 1}
        assert await fleet.ids("failing") == ["a"]
        a = await rt.store.save_connection(a.evolve(status=REAUTH, integration="zeta"))
        assert await _by_status(fleet) == {("acme", "active"): 1, ("zeta", "reauth_required"): 1}
        assert (await fleet.ids("failing"), await fleet.ids("reauth_required")) == ([], ["a"])
        await rt.store.save_connection(b.evolve(status=FAILING))
        assert await rt.store.remove_connection("a")
        assert not await rt.store.remove_connection("a")
        assert await _by_status(fleet) == {("acme", "failing"): 1}
        assert await fleet.ids("reauth_required") == []
        [key_id] = rt.store.cipher.key_ids
        cell = f"acme|failing|{key_id.hex()}".encode()
        assert await rt.redis.hgetall(rt.store.keys.fleet_counts) == {cell: b"1"}

    _scenario(runtime_for, body)


def test_the_counted_flag_is_invisible_to_records(runtime_for: Callable[..., Runtime]) -> None:
    """The codec ignores `counted`: the record reads back equal, and an incomplete record's
    message names only its own fields."""

    async def body(rt: Runtime, fleet: Fleet) -> None:
        saved = await rt.store.save_connection(
            _conn("a", instance_url="https://x.my.salesforce.com")
        )
        assert await rt.redis.hget(rt.store.keys.conn("a"), counting.COUNTED)
        assert await rt.store.get_connection("a") == saved
        raw = {b"refresh_started_at": b"1.5", counting.COUNTED.encode(): b"1 |active|-"}
        with pytest.raises(StoreError, match=r"fields present: refresh_started_at\)"):
            codec.connection_from_raw("bare", raw, rt.store.cipher)
        assert (await fleet.counts()).cells

    _scenario(runtime_for, body)


def test_an_old_store_is_backfilled_once_by_the_first_reader(
    runtime_for: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records without the flag are counted by the backfill, chunk by chunk from the saved
    cursor (an interrupted run resumes), records saved meanwhile are not counted twice, and
    the generation is marked complete so the next reader reads the counts only."""
    monkeypatch.setattr(counting, "CHUNK", 4)

    async def body(rt: Runtime, fleet: Fleet) -> None:
        for i in range(30):
            status = FAILING if i % 10 == 0 else ConnectionStatus.ACTIVE
            await _old_format(rt, _conn(f"c{i:02d}", status=status))
        assert await fleet.counts_within(budget=0) is None  # one chunk, then out of time
        state = await fleet.counting.state()
        assert (state.complete, state.cursor > 0) == (False, True)
        assert state.counted < 30  # (a chunk of a SCAN over a shared server may hold none)
        await rt.store.save_connection(_conn("new"), time.time())  # counted by its save
        failing = await rt.store.get_connection("c10")
        assert failing is not None
        await rt.store.save_connection(failing.evolve(status=REAUTH))  # counted or not yet
        assert await _by_status(fleet) == {
            ("acme", "active"): 28,
            ("acme", "failing"): 2,
            ("acme", "reauth_required"): 1,
        }
        assert (await fleet.counting.state()).complete
        assert await fleet.ids("failing") == ["c00", "c20"]
        assert await fleet.ids("reauth_required", "acme") == ["c10"]

    _scenario(runtime_for, body)


def test_a_write_behind_the_scripts_back_is_put_right_by_the_next_save(
    runtime_for: Callable[..., Runtime],
) -> None:
    """The flag remembers the bucket a record is counted in, so a change made without the
    counts (an older process during an upgrade) is corrected when the record is next saved,
    and `recount` rebuilds the counts from scratch."""

    async def body(rt: Runtime, fleet: Fleet) -> None:
        conn = await rt.store.save_connection(_conn("a"), time.time())
        await rt.redis.hset(rt.store.keys.conn("a"), "status", "failing")
        assert await _by_status(fleet) == {("acme", "active"): 1}  # not seen yet
        await rt.store.save_connection(conn.evolve(status=REAUTH))
        assert await _by_status(fleet) == {("acme", "reauth_required"): 1}
        await rt.redis.hset(rt.store.keys.conn("a"), "integration", "zeta")
        await fleet.counting.recount()
        assert await _by_status(fleet) == {("zeta", "reauth_required"): 1}

    _scenario(runtime_for, body)


def test_a_backfill_in_another_process_is_waited_for(runtime_for: Callable[..., Runtime]) -> None:
    """While another process holds the backfill lease a scrape-like reader answers None
    (still counting) and a waiting reader takes over once the lease lapses."""

    async def body(rt: Runtime, fleet: Fleet) -> None:
        await _old_format(rt, _conn("a"))
        await rt.redis.set(rt.store.keys.fleet_lock, "someone", px=600)
        assert await fleet.counts_within(budget=0.1) is None
        assert await _by_status(fleet) == {("acme", "active"): 1}

    _scenario(runtime_for, body)


def test_failing_ids_come_from_the_kept_set_not_a_scan(
    runtime_for: Callable[..., Runtime],
) -> None:
    """`connections list --status failing` reads O(failing): no SCAN of the store."""

    async def body(rt: Runtime, fleet: Fleet) -> None:
        for cid in ("a", "b", "c"):
            status = ConnectionStatus.ACTIVE if cid == "b" else FAILING
            await rt.store.save_connection(_conn(cid, status=status))
        await rt.store.save_connection(_conn("d", integration="zeta", status=FAILING))
        await fleet.counts()

        def no_scan() -> Any:
            raise AssertionError("scanned the whole store")

        setattr(fleet, "_conn_keys", no_scan)  # noqa: B010  (a test seam)
        assert await fleet.ids("failing") == ["a", "c", "d"]
        assert await fleet.ids("failing", "acme") == ["a", "c"]

    _scenario(runtime_for, body)


def test_status_counts_without_decrypting_and_names_what_it_cannot_read(
    runtime_for: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status` opens no connection secret; a record sealed under a key we lack and one with
    no refresh token are counted as unreadable and named, the rest counted by status."""
    opened: list[str] = []
    real_open = Cipher.open

    def spy(self: Cipher, sealed: bytes, context: str) -> str:
        opened.append(context)
        return real_open(self, sealed, context)

    async def body(rt: Runtime, fleet: Fleet) -> None:
        await rt.store.save_connection(_conn("a"), time.time())
        await _old_format(rt, _conn("b", status=FAILING))
        stranger = Store(rt.redis, Cipher((b"k" * 32,)), rt.store.keys)
        await stranger.save_connection(_conn("lost"), time.time())
        await rt.redis.hset(rt.store.keys.conn("bare"), "refresh_started_at", "1.5")
        monkeypatch.setattr(Cipher, "open", spy)
        named: list[str] = []
        found = (await status(rt, unreadable=lambda cid, _error: named.append(cid))).as_dict()
        assert [c for c in opened if not c.startswith("int:")] == []
        assert (found["connections"], found["unreadable"]) == (2, 2)
        assert found["by_status"] == {"active": 1, "failing": 1, "reauth_required": 0}
        assert sorted(named) == ["bare", "lost"]
        problems = {r["id"]: r["problem"] for r in found["unreadable_records"]}
        assert "sealed under key id" in problems["lost"]
        assert "no refresh token" in problems["bare"]
        with pytest.raises(DecryptionError):
            await rt.store.get_connection("lost")

    _scenario(runtime_for, body)
