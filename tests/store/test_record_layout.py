"""The record hash's short field names (issue 16, memory): a record written under the long
names still reads, its next save leaves only the short ones, and a zero failure count is not
stored at all."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import run
from worker.domain.models import Connection, ConnectionStatus, ExpirySource
from worker.engine.runtime import Runtime
from worker.store import codec

pytestmark = pytest.mark.integration

NOW = 1_796_000_000.0


def _checked(cid: str = "c-1", failures: int = 0) -> Connection:
    return Connection(
        id=cid,
        integration="acme",
        refresh_token="rt",
        access_token="at",
        instance_url="https://acme.my.salesforce.com",
        identity_url="https://login.salesforce.com/id/00D/005",
        issued_at=NOW,
        expires_at=NOW + 7200,
        expiry_source=ExpirySource.INTROSPECTION,
        lifetime=7200.0,
        status=ConnectionStatus.ACTIVE,
        failures=failures,
        last_check_at=NOW + 1,
        last_refresh_at=NOW,
        version=0,
    )


def _long_named(conn: Connection, rt: Runtime) -> dict[str, bytes | str]:
    """The hash the code before codec.SHORT wrote for `conn`: every field under its long
    name, a zero failure count included."""
    fields = codec.connection_fields(conn, rt.store.cipher)
    long = {codec.name(f): f for f in codec.LEGACY}
    found = {long.get(k, k): v for k, v in fields.items() if v != ""}
    found["failures"] = str(conn.failures)
    found["version"] = "1"
    return found


@pytest.mark.parametrize("failures", [0, 2])
def test_a_record_under_the_long_names_reads_and_its_save_drops_them(
    runtime_for: Callable[..., Runtime], failures: int
) -> None:
    async def go() -> None:
        rt = runtime_for()
        try:
            want = _checked(failures=failures)
            key = rt.store.keys.conn(want.id)
            await rt.redis.hset(key, mapping=_long_named(want, rt))  # type: ignore[arg-type]
            old = await rt.store.get_connection(want.id)
            assert old == want.evolve(version=1)
            await rt.store.save_connection(old.evolve(last_check_at=NOW + 5), NOW + 60)
            names = {k.decode() for k in await rt.redis.hgetall(key)}
            assert not names & set(codec.LEGACY)
            assert {"iu", "idu", "xs", "ia", "xa", "lt", "lc", "lr"} <= names
            assert ("f" in names) == bool(failures)
            again = await rt.store.get_connection(want.id)
            assert again == want.evolve(version=2, last_check_at=NOW + 5)
        finally:
            await rt.close()

    run(go())


def test_a_fresh_record_stores_short_names_and_no_zero_failures(
    runtime_for: Callable[..., Runtime],
) -> None:
    async def go() -> None:
        rt = runtime_for()
        try:
            conn = _checked()
            await rt.store.save_connection(conn, time.time() + 60)
            names = {k.decode() for k in await rt.redis.hgetall(rt.store.keys.conn(conn.id))}
            assert not names & {*codec.LEGACY, "f"}
            assert await rt.store.get_connection(conn.id) == conn.evolve(version=1)
        finally:
            await rt.close()

    run(go())
