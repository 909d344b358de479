"""Paging over the fleet's sorted sets (worker.store.fleet_index): the indexes follow every
save and remove, each order pages without repeats or gaps, filters are honoured, a page view
never SCANs nor reads a whole status, and a store counted before the indexes existed is
re-indexed once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from tests.conftest import run
from tests.tls_redis import TlsRedis
from worker.dev.embedded import EmbeddedRedis
from worker.domain.models import Connection, ConnectionStatus, LastError
from worker.engine.runtime import Runtime
from worker.errors import InputError
from worker.store import counting, fleet_index
from worker.store.fleet import Fleet
from worker.store.fleet_index import FleetIndex, Query, Sort

pytestmark = pytest.mark.integration
FAILING = ConnectionStatus.FAILING
T0 = 1_700_000_000.0


@pytest.fixture
def stats(redis_server: EmbeddedRedis | TlsRedis) -> Iterator[redis.Redis]:
    """A client that may reset and read the server's command statistics (under the TLS+ACL
    run the harness's admin: tokenworker's ACL user may not, and need not)."""
    if isinstance(redis_server, TlsRedis):
        client = redis_server.admin()
    else:
        client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def _conn(cid: str, integration: str = "acme", **fields: Any) -> Connection:
    return Connection(id=cid, integration=integration, refresh_token=f"rt-{cid}", **fields)


def _error(at: float) -> LastError:
    return LastError("invalid_grant", "expired access/refresh token", 400, at)


def _scenario(
    runtime_for: Callable[..., Runtime], body: Callable[[Runtime, FleetIndex], Awaitable[None]]
) -> None:
    async def go() -> None:
        rt = runtime_for()
        try:
            index = FleetIndex(rt.redis, rt.store.keys)
            assert await index.ready(10.0)
            await body(rt, index)
        finally:
            await rt.close()

    run(go())


async def _all(index: FleetIndex, query: Query, limit: int) -> list[str]:
    """Every page of `query`, following the cursors (bounded)."""
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = await index.page(Query(query.status, query.integration, query.prefix,
                                      query.sort, cursor), limit)  # fmt: skip
        seen += page.ids
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor
    raise AssertionError("paging did not end")


async def _fill(rt: Runtime) -> None:
    """12 connections: 2 integrations, 3 failing with errors at known times, due times known."""
    for i in range(12):
        failing = i % 4 == 0
        conn = _conn(f"c{i:02d}", "acme" if i % 2 else "zeta",
                     status=FAILING if failing else ConnectionStatus.ACTIVE,
                     last_error=_error(T0 + i) if failing else None)  # fmt: skip
        await rt.store.save_connection(conn, T0 + 100 - i)  # later ids are due sooner


def test_each_order_pages_through_everything_once(runtime_for: Callable[..., Runtime]) -> None:
    async def body(rt: Runtime, index: FleetIndex) -> None:
        await _fill(rt)
        ids = [f"c{i:02d}" for i in range(12)]
        assert await _all(index, Query(), 5) == ids
        assert await _all(index, Query(sort=Sort.NEXT_CHECK), 5) == ids[::-1]
        assert await _all(index, Query(sort=Sort.NEXT_CHECK_DESC), 5) == ids
        assert await _all(index, Query(sort=Sort.ERROR), 2) == ["c08", "c04", "c00"]
        assert await _all(index, Query(sort=Sort.ERROR_ASC), 2) == ["c00", "c04", "c08"]
        acme = [c for i, c in enumerate(ids) if i % 2]
        assert await _all(index, Query(integration="acme"), 4) == acme
        assert await _all(index, Query(integration="acme", sort=Sort.NEXT_CHECK), 4) == acme[::-1]
        assert await _all(index, Query(status="failing"), 2) == ["c00", "c04", "c08"]
        assert await _all(index, Query(status="failing", sort=Sort.ERROR), 1) == [
            "c08",
            "c04",
            "c00",
        ]
        assert await _all(index, Query(status="failing", integration="zeta"), 2) == [
            "c00", "c04", "c08"]  # fmt: skip
        assert await _all(index, Query(status="failing", integration="acme"), 2) == []
        assert await _all(index, Query(status="failing", prefix="c0"), 1) == ["c00", "c04", "c08"]
        assert await _all(index, Query(status="failing", sort=Sort.NEXT_CHECK), 2) == [
            "c08", "c04", "c00"]  # fmt: skip
        assert await _all(index, Query(status="active", integration="zeta"), 3) == [
            "c02",
            "c06",
            "c10",
        ]
        assert await _all(index, Query(prefix="c1"), 5) == ["c10", "c11"]
        assert await _all(index, Query(prefix="c1", sort=Sort.NEXT_CHECK), 5) == ["c11", "c10"]

    _scenario(runtime_for, body)


def test_every_id_merges_the_integrations_ranges_chunk_by_chunk(
    runtime_for: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every id in order is the merge of each integration's `integration|id` range: with
    chunks smaller than a range, the walk neither skips nor repeats an id where the
    integrations interleave, with or without a prefix, from any cursor."""
    monkeypatch.setattr(fleet_index, "CHUNK", 3)

    async def body(rt: Runtime, index: FleetIndex) -> None:
        await _fill(rt)
        moved = await rt.store.get_connection("c05")
        assert moved is not None
        await rt.store.save_connection(moved.evolve(integration="beta"), T0)  # a third one
        ids = [f"c{i:02d}" for i in range(12)]
        for limit in (1, 4, 7, 50):
            assert await _all(index, Query(), limit) == ids
        assert await _all(index, Query(prefix="c0"), 2) == ids[:10]
        assert await Fleet(rt.redis, rt.store.keys).ids() == ids
        assert await Fleet(rt.redis, rt.store.keys).ids(integration="beta") == ["c05"]

    _scenario(runtime_for, body)


def test_the_indexes_follow_saves_and_removes(runtime_for: Callable[..., Runtime]) -> None:
    """A recovered connection keeps its last error (its time stays sortable); a moved one
    leaves its old integration's range; a removed one leaves every index."""

    async def body(rt: Runtime, index: FleetIndex) -> None:
        await _fill(rt)
        moved = await rt.store.get_connection("c01")
        assert moved is not None
        await rt.store.save_connection(moved.evolve(integration="zeta", last_error=_error(T0 + 50)))
        assert "c01" not in await _all(index, Query(integration="acme"), 50)
        assert "c01" in await _all(index, Query(integration="zeta"), 50)
        assert (await index.page(Query(sort=Sort.ERROR), 1)).ids == ["c01"]
        cleared = await rt.store.get_connection("c01")
        assert cleared is not None
        await rt.store.save_connection(cleared.evolve(last_error=None))
        assert "c01" not in await _all(index, Query(sort=Sort.ERROR), 50)
        assert await rt.store.remove_connection("c08")
        assert "c08" not in await _all(index, Query(), 50)
        assert "c08" not in await _all(index, Query(sort=Sort.ERROR), 50)
        assert "c08" not in await _all(index, Query(integration="zeta"), 50)

    _scenario(runtime_for, body)


async def _status_index(rt: Runtime) -> tuple[list[str], list[str]]:
    keys = rt.store.keys
    found = [await rt.redis.zrange(k, 0, -1) for k in
             (keys.fleet_by_status, keys.fleet_by_status_integration)]  # fmt: skip
    by_status, by_both = ([m.decode() for m in members] for members in found)
    return by_status, by_both


def test_the_status_indexes_follow_status_changes_moves_and_removes(
    runtime_for: Callable[..., Runtime],
) -> None:
    """Only non-active ids are in `status|id` and `status|integration|id`, each once, under
    the status and integration their record says now."""

    async def body(rt: Runtime, index: FleetIndex) -> None:
        await _fill(rt)
        assert await _status_index(rt) == (
            ["failing|c00", "failing|c04", "failing|c08"],
            ["failing|zeta|c00", "failing|zeta|c04", "failing|zeta|c08"],
        )
        recovered = await rt.store.get_connection("c04")
        assert recovered is not None
        await rt.store.save_connection(recovered.evolve(status=ConnectionStatus.ACTIVE))
        parked = await rt.store.get_connection("c01")
        assert parked is not None
        await rt.store.save_connection(parked.evolve(status=ConnectionStatus.REAUTH_REQUIRED))
        moved = await rt.store.get_connection("c08")
        assert moved is not None
        await rt.store.save_connection(moved.evolve(integration="acme"))
        assert await rt.store.remove_connection("c00")
        assert await _status_index(rt) == (
            ["failing|c08", "reauth_required|c01"],
            ["failing|acme|c08", "reauth_required|acme|c01"],
        )
        assert await _all(index, Query(status="failing"), 5) == ["c08"]
        assert await _all(index, Query(status="failing", integration="zeta"), 5) == []
        assert await _all(index, Query(status="reauth_required", integration="acme"), 5) == ["c01"]

    _scenario(runtime_for, body)


def test_a_rare_filter_ends_the_page_at_the_window(
    runtime_for: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter the walked index does not serve looks at most WINDOW candidates per page: the
    page is short, says so, and its cursor continues the walk."""
    monkeypatch.setattr("worker.store.fleet_index.WINDOW", 3)
    monkeypatch.setattr("worker.store.fleet_index.CHUNK", 2)

    async def body(rt: Runtime, index: FleetIndex) -> None:
        await _fill(rt)
        first = await index.page(Query(integration="acme", sort=Sort.NEXT_CHECK), 6)
        assert first.short and first.next_cursor is not None
        assert len(first.ids) < 6
        assert await _all(index, Query(integration="acme", sort=Sort.NEXT_CHECK), 6) == [
            "c11", "c09", "c07", "c05", "c03", "c01"]  # fmt: skip
        failing = await index.page(Query(status="failing", sort=Sort.NEXT_CHECK), 3)
        assert failing.short and failing.ids == ["c08"]  # c11..c06 looked at (window + page)
        assert await _all(index, Query(status="failing", sort=Sort.NEXT_CHECK), 3) == [
            "c08", "c04", "c00"]  # fmt: skip

    _scenario(runtime_for, body)


def test_a_page_view_never_scans(runtime_for: Callable[..., Runtime], stats: redis.Redis) -> None:
    """Every order and filter is served without SCAN or KEYS (the server's own command
    statistics say), and so are Fleet.ids' selections."""

    async def body(rt: Runtime, index: FleetIndex) -> None:
        await _fill(rt)
        stats.config_resetstat()
        for sort in Sort:
            queries = (
                Query(sort=sort),
                Query(status="active", integration="acme", sort=sort),
                Query(status="failing", sort=sort),
                Query(prefix="c0", sort=sort),
            )
            for query in queries:
                await index.page(query, 3)
        fleet = Fleet(rt.redis, rt.store.keys)  # `connections list`, `refresh --integration`
        assert len(await fleet.ids()) == 12
        assert await fleet.ids("active", "zeta") == ["c02", "c06", "c10"]
        seen = stats.info("commandstats")
        assert "cmdstat_scan" not in seen and "cmdstat_keys" not in seen, sorted(seen)

    _scenario(runtime_for, body)


def test_a_status_page_never_reads_the_whole_status(
    runtime_for: Callable[..., Runtime], stats: redis.Redis
) -> None:
    """A failing or reauth_required page, in every order and with every filter, reads a range
    of an index: never the status's set (SMEMBERS, SSCAN, SORT), whose size is O(status)."""

    async def body(rt: Runtime, index: FleetIndex) -> None:
        await _fill(rt)
        stats.config_resetstat()
        for status in ("failing", "reauth_required"):
            for sort in Sort:
                for integration in (None, "zeta"):
                    for prefix in (None, "c0"):
                        await index.page(Query(status, integration, prefix, sort), 2)
        await index.page(Query("failing", cursor="c04"), 2)
        seen = stats.info("commandstats")
        read_whole = {"cmdstat_smembers", "cmdstat_sscan", "cmdstat_sort", "cmdstat_scan"}
        assert not read_whole & set(seen), sorted(seen)
        assert "cmdstat_zrangebylex" in seen

    _scenario(runtime_for, body)


def test_a_status_on_a_score_order_tests_membership_not_records(
    runtime_for: Callable[..., Runtime], stats: redis.Redis
) -> None:
    """By next check or last error, a status's window asks its set about each candidate
    (SMISMEMBER, one command per chunk) instead of reading every candidate's record."""

    async def body(rt: Runtime, index: FleetIndex) -> None:
        await _fill(rt)
        stats.config_resetstat()
        for sort in (Sort.NEXT_CHECK, Sort.NEXT_CHECK_DESC, Sort.ERROR, Sort.ERROR_ASC):
            assert sorted((await index.page(Query("failing", sort=sort), 5)).ids) == [
                "c00", "c04", "c08"]  # fmt: skip
        seen = stats.info("commandstats")
        assert "cmdstat_smismember" in seen and "cmdstat_hmget" not in seen, sorted(seen)

    _scenario(runtime_for, body)


def test_a_store_counted_before_the_indexes_is_reindexed_once(
    runtime_for: Callable[..., Runtime],
) -> None:
    async def body(rt: Runtime, index: FleetIndex) -> None:
        await _fill(rt)
        keys = rt.store.keys
        await rt.redis.delete(*counting.fleet_keys(keys)[-4:])  # every sorted set
        await rt.redis.hset(keys.fleet_meta, "layout", "3")  # as the previous layout left it
        await rt.redis.zadd(keys.fleet_by_id, {"c00": 0, "c01": 0})  # layout 3's id set
        generation = (await index.counting.state()).generation
        assert await index.ready(10.0)
        state = await index.counting.state()
        assert state.layout == counting.LAYOUT and state.generation != generation
        assert not await rt.redis.exists(keys.fleet_by_id)  # its bytes are given back
        assert len(await _all(index, Query(), 50)) == 12
        assert await _all(index, Query(sort=Sort.ERROR), 50) == ["c08", "c04", "c00"]
        assert await _all(index, Query(status="failing"), 50) == ["c00", "c04", "c08"]
        assert await _all(index, Query(status="failing", integration="zeta"), 50) == [
            "c00", "c04", "c08"]  # fmt: skip
        assert await index.ready(0.0)
        assert (await index.counting.state()).generation == state.generation  # once only

    _scenario(runtime_for, body)


def test_cursors_are_checked(runtime_for: Callable[..., Runtime]) -> None:
    async def body(rt: Runtime, index: FleetIndex) -> None:
        with pytest.raises(InputError, match="cursor"):
            await index.page(Query(sort=Sort.NEXT_CHECK, cursor="soon,c1"), 5)
        with pytest.raises(InputError, match="cursor"):
            await index.page(Query(cursor="<script>"), 5)

    _scenario(runtime_for, body)
