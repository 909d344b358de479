"""A save of only the changed fields (`save_connection(..., since=)`, issue 16: a check that
finds a token still fresh writes its times, not two re-sealed tokens) leaves exactly the
record a full save would, on a real Redis: each field changed, cleared and set; tokens left
alone keep their sealed bytes; a record under the long field names, a removed record and a
stale copy are handled as a full save handles them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import run
from tests.store.test_record_layout import _long_named
from worker.domain.models import Connection, ConnectionStatus, ExpirySource, LastError
from worker.engine.runtime import Runtime
from worker.errors import ConflictError
from worker.store import codec

pytestmark = pytest.mark.integration

NOW = 1_796_000_000.0


def _base() -> Connection:
    return Connection(
        id="c-1",
        integration="acme",
        refresh_token="rt-1",
        access_token="at-1",
        instance_url="https://acme.my.salesforce.com",
        identity_url="https://login.salesforce.com/id/00D/005",
        issued_at=NOW,
        expires_at=NOW + 7200,
        expiry_source=ExpirySource.INTROSPECTION,
        lifetime=7200.0,
        status=ConnectionStatus.ACTIVE,
        last_check_at=NOW + 1,
        last_refresh_at=NOW,
    )


FAILED = LastError("invalid_grant", "expired access/refresh token", 400, NOW)
CHANGES: list[dict[str, Any]] = [
    {"last_check_at": NOW + 60, "expires_at": NOW + 9000},
    {"expires_at": None, "expiry_source": None, "lifetime": None},
    {"access_token": "at-2", "issued_at": NOW + 30},
    {"access_token": None},
    {"refresh_token": "rt-2"},
    {"instance_url": "https://acme2.my.salesforce.com", "identity_url": None},
    {"status": ConnectionStatus.REAUTH_REQUIRED, "last_error": FAILED},
    {"failures": 3, "failing_since": NOW, "escalated_at": NOW + 5},
    {"attempts_day": 20_787, "attempts_today": 4},
    {"refresh_started_at": NOW + 2},
    {"integration": "other"},
]


def _names(raw: dict[bytes, bytes]) -> set[bytes]:
    return set(raw) - {b"counted"}


@pytest.mark.parametrize("change", CHANGES, ids="+".join)
def test_changed_fields_leave_the_record_a_full_save_leaves(
    runtime_for: Callable[..., Runtime], change: dict[str, Any]
) -> None:
    async def go() -> None:
        rt = runtime_for()
        try:
            stored = await rt.store.save_connection(_base(), NOW + 60)
            # Set first, then changed (or cleared) by the save under test.
            start = stored.evolve(failures=1, last_error=FAILED, attempts_day=20_786)
            start = start.evolve(attempts_today=1, refresh_started_at=NOW)
            stored = await rt.store.save_connection(start, NOW + 60)
            changed = stored.evolve(**change)
            saved = await rt.store.save_connection(changed, NOW + 90, since=stored)
            assert saved == changed.evolve(version=stored.version + 1)
            assert await rt.store.get_connection("c-1") == saved
            partial = await rt.redis.hgetall(rt.store.keys.conn("c-1"))
            assert await rt.store.next_check_at("c-1") == NOW + 90

            await rt.store.remove_connection("c-1")
            await rt.store.save_connection(start.evolve(version=0), NOW + 60)
            again = await rt.store.get_connection("c-1")
            assert again is not None
            await rt.store.save_connection(changed.evolve(version=again.version), NOW + 90)
            full = await rt.redis.hgetall(rt.store.keys.conn("c-1"))
            assert _names(partial) == _names(full)
            plain = _names(full) - {b"rt", b"at", b"version"}
            assert {k: partial[k] for k in plain} == {k: full[k] for k in plain}
        finally:
            await rt.close()

    run(go())


def test_tokens_left_alone_keep_their_sealed_bytes(runtime_for: Callable[..., Runtime]) -> None:
    async def go() -> None:
        rt = runtime_for()
        try:
            key = rt.store.keys.conn("c-1")
            stored = await rt.store.save_connection(_base(), NOW + 60)
            before = await rt.redis.hmget(key, ["rt", "at"])
            fresh = stored.healthy(NOW + 300, expires_at=NOW + 9000)
            await rt.store.save_connection(fresh, NOW + 600, since=stored)
            assert await rt.redis.hmget(key, ["rt", "at"]) == before
            full = await rt.store.save_connection(fresh.evolve(version=stored.version + 1))
            assert await rt.redis.hmget(key, ["rt", "at"]) != before  # a full save re-seals
            assert full.refresh_token == "rt-1"
        finally:
            await rt.close()

    run(go())


def test_changed_fields_on_a_long_named_record_save_every_field(
    runtime_for: Callable[..., Runtime],
) -> None:
    async def go() -> None:
        rt = runtime_for()
        try:
            want = _base()
            key = rt.store.keys.conn(want.id)
            await rt.redis.hset(key, mapping=_long_named(want, rt))  # type: ignore[arg-type]
            old = await rt.store.get_connection(want.id)
            assert old is not None
            # Clearing a field a long name still holds would read back the long name's value
            # if only the short name were written: the save must write every field instead.
            changed = old.evolve(expires_at=None, last_check_at=NOW + 5)
            saved = await rt.store.save_connection(changed, NOW + 60, since=old)
            names = {k.decode() for k in await rt.redis.hgetall(key)}
            assert not names & set(codec.LEGACY)
            assert await rt.store.get_connection(want.id) == saved
            assert saved.expires_at is None and saved.version == 2
        finally:
            await rt.close()

    run(go())


def test_changed_fields_never_recreate_a_removed_record_or_win_over_a_newer_one(
    runtime_for: Callable[..., Runtime],
) -> None:
    async def go() -> None:
        rt = runtime_for()
        try:
            stored = await rt.store.save_connection(_base(), NOW + 60)
            newer = await rt.store.save_connection(stored.evolve(access_token="at-2"))
            with pytest.raises(ConflictError):
                await rt.store.save_connection(stored.evolve(last_check_at=NOW + 9), since=stored)
            assert await rt.store.get_connection("c-1") == newer
            await rt.store.remove_connection("c-1")
            with pytest.raises(ConflictError):
                await rt.store.save_connection(newer.evolve(last_check_at=NOW + 9), since=newer)
            assert await rt.redis.exists(rt.store.keys.conn("c-1")) == 0
        finally:
            await rt.close()

    run(go())


def test_a_mark_another_holder_set_is_not_erased(runtime_for: Callable[..., Runtime]) -> None:
    """The sent mark moves no version: a holder whose lease ran out during its check's call
    may save after another holder marked a refresh in flight. A changed-fields save writes the
    mark only when it changed it, so that mark stays (a full save would erase it)."""

    async def go() -> None:
        rt = runtime_for()
        try:
            stored = await rt.store.save_connection(_base(), NOW + 60)
            assert await rt.store.mark_refreshing("c-1", NOW + 3)  # the other holder
            fresh = stored.healthy(NOW + 5, expires_at=NOW + 9000)
            await rt.store.save_connection(fresh, NOW + 600, since=stored)
            after = await rt.store.get_connection("c-1")
            assert after is not None and after.refresh_started_at == NOW + 3
            assert after.last_check_at == NOW + 5
        finally:
            await rt.close()

    run(go())
