"""The api process's credentials cache (worker.service.hotreads), through real `python -m
worker.api` processes: a change anywhere seen within milliseconds while Redis reports writes
(CLIENT TRACKING), bounded age without it, 0 = off, min_ttl checked on every hit, dropped at
once on what the same process does (token rejected, refresh, delete), bounded entry count.

"Behind the api's back" below is a write to the store by this test, as a worker or another api
process would make it: the api under test cannot see it but through the store.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Emu
from tests.helpers import connect
from tests.processes import Proc
from worker.dev.embedded import free_port
from worker.domain.models import ExpirySource
from worker.engine.runtime import Runtime
from worker.service import apikeys, hotreads
from worker.service import credentials as creds
from worker.service.hotreads import RENEW_AHEAD, SPREAD, TRACKED_AGE, HotReads

ApiFor = Callable[..., str]
RuntimeFor = Callable[..., Runtime]
HostFor = Callable[..., Awaitable["Host"]]
# Slack over the 1 s bound for a loaded 2-core box: a request's latency plus a poll.
SLACK = 1.0


@pytest.fixture
def api_procs() -> dict[str, Proc]:
    """The api processes `api_for` started, by base URL."""
    return {}


@pytest.fixture
def api_for(env: dict[str, str], tmp_path: Path, api_procs: dict[str, Proc]) -> Iterator[ApiFor]:
    """`api_for(**settings)`: the base URL of a running `python -m worker.api` with those
    TOKENWORKER_ settings over the test store."""
    started: list[Proc] = []

    def start(**overrides: str) -> str:
        values = {**os.environ, **env}
        values.update({f"TOKENWORKER_{k.upper()}": v for k, v in overrides.items()})
        port = free_port()
        argv = [sys.executable, "-m", "worker.api", "--host", "127.0.0.1", "--port", str(port)]
        proc = Proc(argv, values, tmp_path / f"api-{port}.log")
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        api_procs[base] = proc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                time.sleep(0.1)
        pytest.fail(f"the api did not come up: {proc.tail()}")

    yield start
    for proc in started:
        proc.close()


class Host:
    """A host app's view of one api process, with the store open beside it."""

    def __init__(self, rt: Runtime, http: httpx.AsyncClient) -> None:
        self.rt = rt
        self.http = http

    async def __aenter__(self) -> Host:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()
        await self.rt.close()

    async def token(self, cid: str, **params: Any) -> str:
        answer = await self.http.get(f"/connections/{cid}/credentials", params=params)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    async def replace(self, cid: str, token: str, **changes: Any) -> None:
        """A new access token stored behind the api's back (as a worker's refresh would)."""
        conn = await self.rt.store.get_connection(cid)
        assert conn is not None
        await self.rt.store.save_connection(conn.evolve(access_token=token, **changes))

    async def seconds_until(self, cid: str, wanted: str, limit: float) -> float:
        """Seconds until reads of `cid` answer `wanted` (polling, at most `limit`)."""
        started = time.monotonic()
        while time.monotonic() - started < limit and await self.token(cid) != wanted:
            await asyncio.sleep(0.02)
        return time.monotonic() - started


async def host(rt: Runtime, base: str) -> Host:
    key, _ = await apikeys.create(rt, f"k{time.monotonic_ns()}", "admin")
    http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return Host(rt, http)


@pytest.fixture
def host_for(api_for: ApiFor, runtime_for: RuntimeFor) -> HostFor:
    """`async with await host_for(**settings) as h`: a Host over a new api process."""

    async def make(**overrides: str) -> Host:
        return await host(runtime_for(), api_for(**overrides))

    return make


ON = {"api_credentials_cache_age": "1"}
# The tests of the untracked age and of what the same process drops run without tracking:
# with it, Redis's report of the change would hide a rule broken here.
UNTRACKED = {**ON, "api_credentials_cache_tracking": "off"}


def stats_at_exit(proc: Proc) -> dict[str, Any]:
    """The cache's counts `proc` (an api process) logs when it stops (stopped here)."""
    proc.stop()
    for line in reversed(proc.log().splitlines()):
        if '"api.credentials_cache"' in line:
            found: dict[str, Any] = json.loads(line)
            return found
    pytest.fail(f"no api.credentials_cache line: {proc.tail()}")


class TestTracked:
    """While Redis reports every write to a connection record, an entry is served until its
    record is written (worker.store.tracking), not for the 1 s of the untracked age."""

    async def test_a_change_behind_its_back_is_seen_at_once(
        self, host_for: HostFor, emu: Emu
    ) -> None:
        async with await host_for(**ON) as h:
            [(cid, grant)] = await connect(h.rt, emu, lifetime=3600)
            await asyncio.sleep(0.5)  # the api's tracking session is up by now
            assert await h.token(cid) == grant["access_token"]
            await h.replace(cid, "NEW-TOKEN")
            took = await h.seconds_until(cid, "NEW-TOKEN", 2.0)
            assert took <= 0.25, f"the old token was served {took:.2f}s after the change"

    async def test_an_unwritten_entry_outlives_the_untracked_age(
        self, api_for: ApiFor, api_procs: dict[str, Proc], runtime_for: RuntimeFor, emu: Emu
    ) -> None:
        """Reads over 2.5 s (the untracked age is 1 s) come from one store read; with
        tracking off the same reads go back to the store."""
        for tracking, most_misses in (("on", 1), ("off", 3)):
            base = api_for(**ON, api_credentials_cache_tracking=tracking)
            async with await host(runtime_for(), base) as h:
                [(cid, grant)] = await connect(h.rt, emu, lifetime=3600)
                await asyncio.sleep(0.5)
                for _ in range(11):
                    assert await h.token(cid) == grant["access_token"]
                    await asyncio.sleep(0.25)
            stats = stats_at_exit(api_procs[base])
            assert stats["tracked"] is (tracking == "on"), stats
            if tracking == "on":
                assert stats["misses"] <= most_misses, stats
            else:
                assert stats["misses"] >= most_misses, stats


class TestAge:
    async def test_a_change_behind_its_back_is_served_within_the_age(
        self, host_for: HostFor, emu: Emu
    ) -> None:
        async with await host_for(**UNTRACKED) as h:
            [(cid, grant)] = await connect(h.rt, emu, lifetime=3600)
            assert await h.token(cid) == grant["access_token"]
            await h.replace(cid, "NEW-TOKEN")
            # Cached: the next read still answers the old token (the cache is on)...
            assert await h.token(cid) == grant["access_token"]
            # ...but never for longer than the age.
            took = await h.seconds_until(cid, "NEW-TOKEN", 1.0 + SLACK + 2.0)
            assert took <= 1.0 + SLACK, f"the old token was served {took:.2f}s after the change"

    async def test_zero_turns_it_off(self, host_for: HostFor, emu: Emu) -> None:
        async with await host_for(api_credentials_cache_age="0") as h:
            [(cid, grant)] = await connect(h.rt, emu, lifetime=3600)
            assert await h.token(cid) == grant["access_token"]
            await h.replace(cid, "NEW-TOKEN")
            assert await h.token(cid) == "NEW-TOKEN"


class TestMinTtl:
    async def test_a_hit_too_short_for_min_ttl_is_never_handed_out(
        self, host_for: HostFor, emu: Emu
    ) -> None:
        """Cached with 600 s left: min_ttl 500 is a hit, min_ttl 700 refreshes instead."""
        async with await host_for(**UNTRACKED) as h:
            [(cid, grant)] = await connect(h.rt, emu, lifetime=3600)
            old = grant["access_token"]
            soon = {"expires_at": time.time() + 600, "expiry_source": ExpirySource.INTROSPECTION}
            await h.replace(cid, old, **soon)
            assert await h.token(cid, min_ttl=500) == old
            answer = (await h.http.get(f"/connections/{cid}/credentials?min_ttl=700")).json()
            assert answer["access_token"] != old
            assert answer["expires_at"] - time.time() >= 700
            assert emu.token_calls(grant["grant_id"]) == 1


class TestDroppedBySameProcess:
    async def test_a_rejected_token_already_replaced_is_not_served_again(
        self, host_for: HostFor, emu: Emu
    ) -> None:
        async with await host_for(**UNTRACKED) as h:
            [(cid, grant)] = await connect(h.rt, emu, lifetime=3600)
            old = grant["access_token"]
            assert await h.token(cid) == old  # cached
            await h.replace(cid, "NEW-TOKEN")  # a worker refreshed meanwhile
            report = {"access_token": old}
            answer = await h.http.post(f"/connections/{cid}/token-rejected", json=report)
            assert answer.json()["access_token"] == "NEW-TOKEN"
            assert await h.token(cid) == "NEW-TOKEN"

    async def test_a_rejected_token_still_stored_is_refreshed_and_not_served_again(
        self, host_for: HostFor, emu: Emu
    ) -> None:
        async with await host_for(**UNTRACKED) as h:
            [(cid, grant)] = await connect(h.rt, emu, lifetime=3600)
            old = grant["access_token"]
            assert await h.token(cid) == old
            report = {"access_token": old}
            fresh = (await h.http.post(f"/connections/{cid}/token-rejected", json=report)).json()
            assert fresh["access_token"] != old
            assert await h.token(cid) == fresh["access_token"]

    async def test_a_refresh_that_ends_reauth_required_is_seen_at_once(
        self, host_for: HostFor, emu: Emu
    ) -> None:
        async with await host_for(**UNTRACKED) as h:
            [(cid, grant)] = await connect(h.rt, emu, lifetime=3600)
            assert await h.token(cid) == grant["access_token"]
            emu.post(f"/_admin/grants/{grant['grant_id']}/revoke")
            await h.http.post(f"/connections/{cid}/refresh")
            answer = await h.http.get(f"/connections/{cid}/credentials")
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"] == "reauth_required"

    async def test_a_delete_is_seen_at_once(self, host_for: HostFor, emu: Emu) -> None:
        async with await host_for(**UNTRACKED) as h:
            [(cid, grant)] = await connect(h.rt, emu, lifetime=3600)
            assert await h.token(cid) == grant["access_token"]
            removed = await h.http.delete(f"/connections/{cid}", params={"revoke": "false"})
            assert removed.status_code == 200
            assert (await h.http.get(f"/connections/{cid}/credentials")).status_code == 404


class TestEntries:
    async def test_the_oldest_entry_makes_room(self, host_for: HostFor, emu: Emu) -> None:
        """At most 2 entries: reading a, b, c leaves b and c cached, a read from the store."""
        async with await host_for(**UNTRACKED, api_credentials_cache_entries="2") as h:
            (a, _), (b, grant_b), (c, _) = await connect(h.rt, emu, 3, lifetime=3600)
            for cid in (a, b, c):
                await h.token(cid)
            await h.replace(a, "NEW-A")
            await h.replace(b, "NEW-B")
            assert await h.token(b) == grant_b["access_token"]  # still cached
            assert await h.token(a) == "NEW-A"  # made room for c: from the store


class TestBurst:
    async def test_a_burst_of_misses_reads_the_record_once(
        self, host_for: HostFor, emu: Emu
    ) -> None:
        """20 callers ask for one uncached connection at once: one store read serves them."""
        async with await host_for(**UNTRACKED) as h:
            [(warm, _), (cid, grant)] = await connect(h.rt, emu, 2, lifetime=3600)
            await h.token(warm)  # the API key is cached now: only record reads remain
            before = await record_reads(h.rt)
            answers = await burst(h, f"/connections/{cid}/credentials", 20)
            assert all(grant["access_token"] in answer for answer in answers)
            assert await record_reads(h.rt) - before == 1


async def burst(h: Host, path: str, count: int) -> list[str]:
    """`count` GETs written at once on their own connections (httpx would space them out by
    its own overhead, longer than a store read takes); the answers."""
    url = httpx.URL(str(h.http.base_url))
    head = (
        f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\n"
        f"Authorization: {h.http.headers['Authorization']}\r\nConnection: close\r\n\r\n"
    ).encode()
    opened = [await asyncio.open_connection(url.host, url.port) for _ in range(count)]
    for _, writer in opened:
        writer.write(head)
    answers = [(await reader.read()).decode() for reader, _ in opened]
    for _, writer in opened:
        writer.close()
    return answers


async def record_reads(rt: Runtime) -> int:
    stats = await rt.redis.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


def test_a_read_begun_before_a_drop_does_not_put_what_it_read() -> None:
    """The race a single process can lose: a read fetched the old token, the token was
    rejected (dropped) meanwhile; the read's put must not bring the old token back."""
    cache: HotReads[str] = HotReads(1.0, 10, clock=lambda: 0.0)
    began = cache.generation
    cache.drop("c1")
    cache.put("c1", "old", None, began, 0.0)
    assert cache.get("c1") is None
    cache.put("c1", "new", None, cache.generation, 0.0)
    assert cache.get("c1") is not None


async def test_a_read_in_flight_when_redis_reports_its_key_written_does_not_put() -> None:
    """Redis may answer a read, then report a write of the same record on the other
    connection before this process sees the answer: that read must not put. A read of
    another record in flight meanwhile still may (a busy fleet's writes must not starve
    the cache)."""
    cache: HotReads[str] = HotReads(1.0, 10, clock=lambda: 0.0, key_prefix="tw:conn:")
    cache.tracking_started()
    began = cache.generation
    flight, other = cache.take_off("c1"), cache.take_off("c2")
    cache.invalidated(["tw:conn:c1"])
    assert cache.put("c1", "old", None, began, 0.0) is None
    assert cache.put("c2", "two", None, began, 0.0) is not None
    cache.land("c1", flight, None)
    cache.land("c2", other, None)
    assert cache.put("c1", "new", None, cache.generation, 0.0) is not None  # a later read may


def test_losing_tracking_forgets_everything_and_falls_back_to_the_short_age() -> None:
    now = [0.0]
    cache: HotReads[str] = HotReads(1.0, 10, clock=lambda: now[0], key_prefix="tw:conn:")
    cache.tracking_started()
    cache.put("c1", "kept", None, cache.generation, 0.0)
    now[0] = 30.0
    assert cache.get("c1") is not None  # tracked: served past the 1 s age
    cache.tracking_lost()
    assert cache.get("c1") is None
    cache.put("c1", "again", None, cache.generation, 30.0)
    now[0] = 31.5
    assert cache.get("c1") is None  # untracked: 1 s at most
    cache.tracking_started()
    assert len(cache) == 0  # what was kept while untracked is not trusted either


def test_each_entry_is_served_for_its_own_drawn_share_of_the_tracked_age() -> None:
    """Between (1 - SPREAD) and all of tracked_age, as drawn when it was put; never longer."""
    now = [0.0]
    draws = iter([0.0, 0.999])
    cache: HotReads[str] = HotReads(1.0, 10, clock=lambda: now[0], draw=lambda: next(draws))
    cache.tracking_started()
    cache.put("longest", "a", None, cache.generation, 0.0)
    cache.put("shortest", "b", None, cache.generation, 0.0)
    now[0] = TRACKED_AGE * (1 - SPREAD) - 0.1
    assert cache.get("shortest") is not None
    now[0] = TRACKED_AGE * (1 - SPREAD) + 0.1
    assert cache.get("shortest") is None
    now[0] = TRACKED_AGE - 0.1
    assert cache.get("longest") is not None
    now[0] = TRACKED_AGE
    assert cache.get("longest") is None


def test_entries_read_together_are_not_all_read_again_together() -> None:
    """A crowd put in the same second (an api restart, a tracking session begun again) is
    renewed over the spread, not in one burst: halfway through it, about half remain."""
    now = [0.0]
    cache: HotReads[str] = HotReads(1.0, 1_000, clock=lambda: now[0])
    cache.tracking_started()
    for n in range(1_000):
        cache.put(f"c{n}", "token", None, cache.generation, 0.0)
    now[0] = TRACKED_AGE * (1 - SPREAD / 2)
    left = sum(cache.get(f"c{n}") is not None for n in range(1_000))
    assert 350 <= left <= 650, left


def due_after_reads(cache: HotReads[str], now: list[float], *keys: str) -> list[Any]:
    """Put `keys` (at version 3), read each once, move the clock to 1 s before their age ends:
    the renewals then due."""
    for key in keys:
        cache.put(key, "token", None, cache.generation, now[0], version=3)
        assert cache.get(key) is not None
    now[0] += TRACKED_AGE - 1.0
    return cache.due_renewals(now[0])


def tracked_cache(now: list[float]) -> HotReads[str]:
    cache: HotReads[str] = HotReads(
        1.0, 100, clock=lambda: now[0], key_prefix="tw:conn:", draw=lambda: 0.0
    )
    cache.tracking_started()
    return cache


def test_an_entry_read_since_it_was_put_is_renewed_by_a_version_check() -> None:
    """Before its age runs out, a read entry whose record has not moved is served for a new
    age from the check, without reading the record again."""
    now = [0.0]
    cache = tracked_cache(now)
    cache.put("c1", "token", None, cache.generation, 0.0, version=3)
    assert cache.get("c1") is not None
    now[0] = TRACKED_AGE - RENEW_AHEAD / 2
    due = cache.due_renewals(now[0])
    assert [key for key, _ in due] == ["c1"]
    cache.renew(due, [3], now[0])
    now[0] = TRACKED_AGE + 1.0  # past the age it was put with
    assert cache.get("c1") is not None
    assert cache.stats()["renewed"] == 1


def test_an_entry_nobody_read_is_left_to_age_out() -> None:
    now = [0.0]
    cache = tracked_cache(now)
    cache.put("read", "a", None, cache.generation, 0.0, version=1)
    cache.put("unread", "b", None, cache.generation, 0.0, version=1)
    assert cache.get("read") is not None
    due = cache.due_renewals(TRACKED_AGE - 1.0)
    assert [key for key, _ in due] == ["read"]


def test_an_entry_is_not_renewed_before_its_end_is_near() -> None:
    now = [0.0]
    cache = tracked_cache(now)
    cache.put("c1", "token", None, cache.generation, 0.0, version=1)
    assert cache.get("c1") is not None
    assert cache.due_renewals(TRACKED_AGE - RENEW_AHEAD - 1.0) == []
    assert len(cache.due_renewals(TRACKED_AGE - RENEW_AHEAD + 1.0)) == 1


def test_a_record_that_moved_or_went_drops_its_entry() -> None:
    now = [0.0]
    cache = tracked_cache(now)
    due = due_after_reads(cache, now, "moved", "gone")
    cache.renew(due, [4, None], now[0])
    assert cache.get("moved") is None
    assert cache.get("gone") is None
    assert cache.stats()["renewals_refused"] == 2


def test_a_renewal_does_not_bring_back_an_entry_written_or_dropped_meanwhile() -> None:
    """Redis reports a write (or this process drops the entry) while the versions are being
    read: the renewal's answer is older than that news and must not revive the entry."""
    now = [0.0]
    cache = tracked_cache(now)
    due = due_after_reads(cache, now, "written", "dropped")
    cache.invalidated(["tw:conn:written"])
    cache.drop("dropped")
    cache.renew(due, [3, 3], now[0])
    assert cache.get("written") is None
    assert cache.get("dropped") is None
    # Written, then read again at its new version while the old version was being read:
    # the renewal's stale answer must not put the old token back over the new one.
    due = due_after_reads(cache, now, "written")
    cache.invalidated(["tw:conn:written"])
    cache.put("written", "new", None, cache.generation, now[0], version=4)
    cache.renew(due, [3], now[0])
    entry = cache.get("written")
    assert entry is not None and entry.value == "new"


def test_untracked_entries_are_never_renewed() -> None:
    now = [0.0]
    cache: HotReads[str] = HotReads(1.0, 100, clock=lambda: now[0])
    cache.put("c1", "token", None, cache.generation, 0.0, version=1)
    assert cache.get("c1") is not None
    assert cache.due_renewals(0.9) == []


async def test_the_renewal_task_keeps_a_read_entry_and_drops_one_whose_record_moved(
    runtime_for: RuntimeFor, emu: Emu
) -> None:
    """Real Redis: the api's renewal loop (`hotreads.renew` over `Store.versions`) serves a
    read entry past its age without reading the record again, and drops an entry whose
    record was saved (here with nobody reporting the write: no tracking session)."""
    rt = runtime_for()
    try:
        [(kept, grant), (moved, _)] = await connect(rt, emu, count=2, lifetime=3600)
        age = RENEW_AHEAD + 3.0  # due for renewal 3 s after the read, renewed until 2 x 3 + 5
        cache: HotReads[Any] = HotReads(1.0, 100, tracked_age=age, draw=lambda: 0.0)
        cache.tracked = True  # as tracking_started, without a session that would report
        hotreads.attach(rt, cache)
        renewing = asyncio.ensure_future(hotreads.renew(cache, rt.store.versions, every=0.1))
        try:
            for cid in (kept, moved):
                await creds.credentials(rt, cid)
                await creds.credentials(rt, cid)  # a hit: read since it was put
            reads = await record_reads(rt)
            conn = await rt.store.get_connection(moved)
            assert conn is not None
            await rt.store.save_connection(conn.evolve(access_token="NEW-TOKEN"))
            await asyncio.sleep(age + 1.0)  # past the age both entries were put with
            assert await record_reads(rt) == reads + 1  # only this test's own read above
            assert cache.get(kept) is not None
            assert cache.get(moved) is None
            assert (await creds.credentials(rt, kept)).access_token == grant["access_token"]
            assert (await creds.credentials(rt, moved)).access_token == "NEW-TOKEN"
            assert cache.stats()["renewed"] >= 1
            assert cache.stats()["renewals_refused"] == 1
        finally:
            renewing.cancel()
    finally:
        await rt.close()
