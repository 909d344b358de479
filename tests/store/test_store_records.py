"""The store's side of issue 11 (D6, 7d): the refresh mark never recreates a removed record,
writers that do not hold the lease leave a mark alone, and one unreadable record is reported
as such instead of ending a fleet-wide read."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import run
from tests.helpers import SANDBOX_INTEGRATION
from worker.domain.models import Connection
from worker.engine.runtime import Runtime
from worker.errors import ConflictError, StoreError
from worker.service.transfer import Record, import_record, iter_connections
from worker.store.connections import Store
from worker.store.crypto import Cipher, generate_key
from worker.store.rotation import rotate

pytestmark = pytest.mark.integration

MARK = b"refresh_started_at"


OLD_GRANT, NEW_GRANT = "rt-old", "rt-new"


def _conn(cid: str = "c-1", refresh_token: str = OLD_GRANT) -> Connection:
    return Connection(id=cid, integration="acme", refresh_token=refresh_token, access_token="at")


def _record(cid: str = "c-1", refresh_token: str = NEW_GRANT) -> Record:
    return Record(
        line=1,
        id=cid,
        integration="acme",
        refresh_token=refresh_token,
        access_token=None,
        instance_url=None,
        issued_at=None,
    )


async def _mark_of(rt: Runtime, cid: str) -> bytes | None:
    value = await rt.redis.hget(rt.store.keys.conn(cid), MARK)
    return value if isinstance(value, bytes) else None


def test_mark_never_recreates_a_removed_connection(runtime_for: Callable[..., Runtime]) -> None:
    """`connections remove` landing between a worker's lease renewal and its mark leaves no
    hash behind (a bare HSET used to recreate one holding only the mark, which then crashed
    every fleet-wide command with KeyError: b'rt')."""

    async def go() -> None:
        rt = runtime_for()
        try:
            await rt.store.save_connection(_conn(), time.time())
            marked = await rt.store.mark_refreshing("c-1", time.time())
            assert await _mark_of(rt, "c-1") is not None
            assert await rt.store.remove_connection("c-1")
            too_late = await rt.store.mark_refreshing("c-1", time.time())
            assert await rt.redis.exists(rt.store.keys.conn("c-1")) == 0
            assert (marked, too_late) == (True, False)
            await rt.store.clear_refreshing("c-1")
            assert await rt.redis.exists(rt.store.keys.conn("c-1")) == 0
        finally:
            await rt.close()

    run(go())


def test_key_rotation_keeps_a_mark_set_after_it_read_the_record(
    runtime_for: Callable[..., Runtime],
) -> None:
    """7d, deterministically: rotation reads the record, a worker marks a refresh in flight,
    rotation saves its copy. The mark survives (it used to be deleted: the mark does not
    change the version, so the compare-and-set passed and `refresh_started_at=""` was an
    HDEL), and the record comes out sealed under the new key."""
    old_key = generate_key()

    async def go() -> None:
        rt = runtime_for(encryption_keys=old_key)
        try:
            await rt.store.save_connection(_conn(), time.time())
        finally:
            await rt.close()
        rt = runtime_for(encryption_keys=f"{generate_key()},{old_key}")
        try:
            marked_at = time.time()
            read = rt.store.get_connection

            async def read_then_mark(cid: str) -> Connection | None:
                conn = await read(cid)
                await rt.store.mark_refreshing(cid, marked_at)  # the worker, just after
                return conn

            setattr(rt.store, "get_connection", read_then_mark)  # noqa: B010  (a test seam)
            report = await rotate(rt.store)
            setattr(rt.store, "get_connection", read)  # noqa: B010
            assert report.rotated == 1
            assert await _mark_of(rt, "c-1") == repr(marked_at).encode()
            sealed = await rt.redis.hget(rt.store.keys.conn("c-1"), "rt")
            assert isinstance(sealed, bytes) and rt.store.cipher.is_current(sealed)
        finally:
            await rt.close()

    run(go())


def test_rotation_does_not_restore_a_mark_cleared_after_it_read(
    runtime_for: Callable[..., Runtime],
) -> None:
    """The other half of 7d: rotation reads the record while a refresh is marked, the worker
    saves the answer and clears the mark, rotation saves its copy. The stale mark must not
    come back (the next check would then introspect for a lost answer that was saved)."""
    old_key = generate_key()

    async def go() -> None:
        rt = runtime_for(encryption_keys=old_key)
        try:
            await rt.store.save_connection(_conn(), time.time())
            await rt.store.mark_refreshing("c-1", time.time())
        finally:
            await rt.close()
        rt = runtime_for(encryption_keys=f"{generate_key()},{old_key}")
        try:
            read = rt.store.get_connection

            async def read_then_clear(cid: str) -> Connection | None:
                conn = await read(cid)
                assert conn is not None and conn.refresh_started_at is not None
                await rt.store.clear_refreshing(cid)  # the worker's answer was saved
                return conn

            setattr(rt.store, "get_connection", read_then_clear)  # noqa: B010
            assert (await rotate(rt.store)).rotated == 1
            setattr(rt.store, "get_connection", read)  # noqa: B010
            assert await _mark_of(rt, "c-1") is None
        finally:
            await rt.close()

    run(go())


@pytest.mark.parametrize(
    ("imported_token", "outcome", "mark_kept"),
    [("rt-new", "updated", False), ("rt-old", "unchanged", True)],
    ids=["new grant clears the mark", "same grant keeps it"],
)
def test_import_clears_the_mark_only_for_a_new_grant(
    runtime_for: Callable[..., Runtime], imported_token: str, outcome: str, mark_kept: bool
) -> None:
    """An import of a new grant while a refresh of the old one is marked clears the mark
    (it was about a token no longer stored); re-importing the same grant changes nothing."""

    async def go() -> None:
        rt = runtime_for()
        try:
            await rt.store.save_integration(SANDBOX_INTEGRATION)
            await rt.store.save_connection(_conn(), time.time())
            await rt.store.mark_refreshing("c-1", time.time())
            got = await import_record(rt.store, _record(refresh_token=imported_token), time.time())
            assert got == outcome
            assert (await _mark_of(rt, "c-1") is not None) is mark_kept
            stored = await rt.store.get_connection("c-1")
            assert stored is not None and stored.refresh_token == imported_token
        finally:
            await rt.close()

    run(go())


def test_import_retries_when_a_worker_wrote_first(runtime_for: Callable[..., Runtime]) -> None:
    """An import whose compare-and-set loses to a worker's save re-reads and saves again,
    instead of ending the whole import with a traceback-free but fatal ConflictError."""

    async def go() -> None:
        rt = runtime_for()
        try:
            await rt.store.save_connection(_conn(), time.time())
            save = rt.store.save_connection
            calls: list[int] = []

            async def worker_wins_once(conn: Connection, *args: Any, **kwargs: Any) -> Connection:
                calls.append(conn.version)
                if len(calls) == 1:
                    current = await rt.store.get_connection(conn.id)
                    assert current is not None
                    await save(current.evolve(failures=1))  # a worker's check lands first
                return await save(conn, *args, **kwargs)

            setattr(rt.store, "save_connection", worker_wins_once)  # noqa: B010
            assert await import_record(rt.store, _record(), time.time()) == "updated"
            assert calls == [1, 2]
            stored = await rt.store.get_connection("c-1")
            assert stored is not None and stored.refresh_token == "rt-new"
        finally:
            await rt.close()

    run(go())


def test_unreadable_records_are_reported_and_the_rest_read(
    runtime_for: Callable[..., Runtime],
) -> None:
    """A hash without `rt` and a record sealed under a key nobody holds come back as
    StoreErrors naming the id; every other record is still read."""

    async def go() -> None:
        rt = runtime_for()
        try:
            for cid in ("a", "b"):
                await rt.store.save_connection(_conn(cid), time.time())
            await rt.redis.hset(rt.store.keys.conn("bare"), MARK, "1")
            stranger = Store(rt.redis, Cipher((b"k" * 32,)), rt.store.keys)
            await stranger.save_connection(_conn("lost"), time.time())
            problems: dict[str, str] = {}
            read = [
                c.id
                async for c in iter_connections(
                    rt.store, unreadable=lambda cid, error: problems.__setitem__(cid, str(error))
                )
            ]
            assert sorted(read) == ["a", "b"]
            assert sorted(problems) == ["bare", "lost"]
            assert "no refresh token" in problems["bare"] and "bare" in problems["bare"]
            assert "not among TOKENWORKER_ENCRYPTION_KEYS" in problems["lost"]
            with pytest.raises(StoreError, match="bare: incomplete record"):
                await rt.store.get_connection("bare")
            with pytest.raises(StoreError):
                async for _ in iter_connections(rt.store):
                    pass
        finally:
            await rt.close()

    run(go())


def test_conflict_is_still_raised_for_a_stale_worker_save(
    runtime_for: Callable[..., Runtime],
) -> None:
    """mark=False changes only the mark: a stale version still loses the compare-and-set."""

    async def go() -> None:
        rt = runtime_for()
        try:
            saved = await rt.store.save_connection(_conn(), time.time())
            await rt.store.save_connection(saved)
            with pytest.raises(ConflictError):
                await rt.store.save_connection(saved, mark=False)
        finally:
            await rt.close()

    run(go())


@pytest.mark.parametrize("races", [1, 5])
def test_rotation_reseals_a_record_a_fresh_check_wrote_meanwhile_or_reports_it(
    runtime_for: Callable[..., Runtime], races: int
) -> None:
    """A check that finds a token fresh writes only its times (the tokens stay sealed as they
    were, under the old key): rotation, having lost the compare-and-set to it, reads the record
    again and saves it under the new key; a record that keeps changing through all five
    attempts is reported as skipped, never counted as rotated."""
    old_key = generate_key()

    async def go() -> None:
        rt = runtime_for(encryption_keys=old_key)
        try:
            await rt.store.save_connection(_conn(), time.time())
        finally:
            await rt.close()
        rt = runtime_for(encryption_keys=f"{generate_key()},{old_key}")
        try:
            read = rt.store.get_connection
            left = [races]

            async def read_then_check(cid: str) -> Connection | None:
                conn = await read(cid)
                if left[0] > 0 and conn is not None:  # a worker's fresh check, just after
                    left[0] -= 1
                    fresh = conn.healthy(time.time())
                    await rt.store.save_connection(fresh, time.time() + 60, since=conn)
                return conn

            setattr(rt.store, "get_connection", read_then_check)  # noqa: B010  (a test seam)
            report = await rotate(rt.store)
            setattr(rt.store, "get_connection", read)  # noqa: B010
            sealed = await rt.redis.hget(rt.store.keys.conn("c-1"), "rt")
            assert isinstance(sealed, bytes)
            if races < 5:
                assert (report.rotated, report.skipped) == (1, [])
                assert rt.store.cipher.is_current(sealed)
            else:
                assert report.rotated == 0 and len(report.skipped) == 1
                assert "c-1" in report.skipped[0] and "rotate again" in report.skipped[0]
                assert not rt.store.cipher.is_current(sealed)
        finally:
            await rt.close()

    run(go())
