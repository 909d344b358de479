"""The api process's API-key cache: revocation elsewhere takes effect within API_CACHE_TTL.

Against real Redis: two `ApiKeys` (two api processes) on a controlled clock, and a real
`python -m worker.api` whose key is revoked by `python -m worker.cli api-keys revoke`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from tests.api.test_server import free_port, wait_up
from tests.conftest import run
from tests.processes import cli
from worker.engine.runtime import Runtime
from worker.store import apikeys
from worker.store.apikeys import API_CACHE_TTL, ApiKeys, Scope

RuntimeFor = Callable[..., Runtime]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_revoked_by_another_process_stops_after_the_ttl(
    runtime_for: RuntimeFor,
) -> None:
    rt = runtime_for()
    try:
        clock = Clock()
        prefix = rt.settings.key_prefix
        serving = ApiKeys(rt.redis, prefix, cache_ttl=1.0, clock=clock)
        other = ApiKeys(rt.redis, prefix)
        key, _ = await other.create("app", Scope.READ)
        assert (await serving.lookup(key)) is not None
        assert await other.revoke("app")
        clock.now += 0.9  # inside the bound: the cached record still answers
        assert (await serving.lookup(key)) is not None
        clock.now += 0.2  # past it: Redis is asked again, and the key is gone
        assert await serving.lookup(key) is None
        clock.now += 5.0
        assert await serving.lookup(key) is None
    finally:
        await rt.close()


async def test_revoking_through_the_same_keys_is_immediate_and_unknown_keys_not_cached(
    runtime_for: RuntimeFor,
) -> None:
    rt = runtime_for()
    try:
        serving = ApiKeys(rt.redis, rt.settings.key_prefix, cache_ttl=60.0, clock=Clock())
        key, _ = await serving.create("app", Scope.ADMIN)
        assert (await serving.lookup(key)) is not None
        assert await serving.revoke("app")
        assert await serving.lookup(key) is None
        # A key unknown when first seen and created afterwards works at once.
        early = apikeys.PREFIX + "x" * 43
        assert await serving.lookup(early) is None
        await rt.redis.hset(
            f"{rt.settings.key_prefix}apikey:{apikeys.digest(early)}",
            mapping={"name": "late", "scope": "read", "created_at": "1.0"},
        )
        found = await serving.lookup(early)
        assert found is not None and found.name == "late"
    finally:
        await rt.close()


async def test_the_cache_is_bounded(runtime_for: RuntimeFor) -> None:
    rt = runtime_for()
    try:
        serving = ApiKeys(rt.redis, rt.settings.key_prefix, cache_ttl=60.0, clock=Clock())
        keys = [(await serving.create(f"k{n}", Scope.READ))[0] for n in range(5)]
        apikeys_max, apikeys.CACHE_MAX = apikeys.CACHE_MAX, 3
        try:
            for key in keys:
                assert await serving.lookup(key) is not None
            assert len(serving._cache) == 3
        finally:
            apikeys.CACHE_MAX = apikeys_max
    finally:
        await rt.close()


def test_a_cli_revoke_stops_a_running_api_within_the_bound(
    env: dict[str, str], runtime_for: RuntimeFor
) -> None:
    async def arrange() -> str:
        rt = runtime_for()
        try:
            key, _ = await ApiKeys(rt.redis, rt.settings.key_prefix).create("host", Scope.READ)
            return key
        finally:
            await rt.close()

    key = run(arrange())
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.api", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base)
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=auth, timeout=5) as http:
            assert http.get("/connections").status_code == 200  # now cached in the api
            done = cli({**os.environ, **env}, "api-keys", "revoke", "host")
            assert done.returncode == 0, done.stderr
            revoked = time.monotonic()
            # Slack over the bound for a loaded 2-core box (one request's latency).
            deadline = revoked + API_CACHE_TTL + 2.0
            status = 200
            while status == 200 and time.monotonic() < deadline:
                status = http.get("/connections").status_code
                time.sleep(0.05)
            assert status == 401, f"still accepted {time.monotonic() - revoked:.1f}s after"
    finally:
        process.terminate()
        process.wait(15)


async def test_a_key_in_use_is_renewed_in_the_background_and_dropped_once_revoked(
    runtime_for: RuntimeFor,
) -> None:
    """A read in the last half of its entry's life is served from it and renews it behind
    the scenes (no request waits on Redis for a key in use); the renewal that finds the key
    gone drops it before its end."""
    rt = runtime_for()
    try:
        clock = Clock()
        serving = ApiKeys(rt.redis, rt.settings.key_prefix, cache_ttl=1.0, clock=clock)
        key, _ = await ApiKeys(rt.redis, rt.settings.key_prefix).create("app", Scope.READ)
        assert await serving.lookup(key) is not None  # cached until 1001.0
        clock.now += 0.6  # in its last half: served, and renewed from now (1001.6)
        assert await serving.lookup(key) is not None
        await serving._loading[apikeys.digest(key)]
        await rt.redis.delete(f"{rt.settings.key_prefix}apikey:{apikeys.digest(key)}")
        clock.now += 0.7  # 1001.3: past the first entry's end, inside the renewed one
        assert await serving.lookup(key) is not None
        await serving._loading[apikeys.digest(key)]  # this renewal finds the key gone
        assert await serving.lookup(key) is None
    finally:
        await rt.close()


class CountingRedis:
    """The real client, counting HGETALLs (and holding their answers at a gate)."""

    def __init__(self, redis: object) -> None:
        self.redis = redis
        self.hgetalls = 0
        self.gate: asyncio.Event | None = None  # when set up: answers wait for it

    async def hgetall(self, name: str) -> object:
        self.hgetalls += 1
        answer = await self.redis.hgetall(name)  # type: ignore[attr-defined]
        if self.gate is not None:
            await self.gate.wait()
        return answer


async def test_lookups_of_one_key_at_once_are_one_read_and_a_revoke_here_wins(
    runtime_for: RuntimeFor,
) -> None:
    rt = runtime_for()
    try:
        clock = Clock()
        serving = ApiKeys(rt.redis, rt.settings.key_prefix, cache_ttl=1.0, clock=clock)
        key, _ = await serving.create("app", Scope.READ)
        counting = CountingRedis(rt.redis)
        serving._redis = counting  # type: ignore[assignment]
        found = await asyncio.gather(*(serving.lookup(key) for _ in range(20)))
        assert all(f is not None for f in found) and counting.hgetalls == 1
        # A renewal reads the key, and its answer is handled only after a revoke here.
        counting.gate = asyncio.Event()
        clock.now += 0.6
        assert await serving.lookup(key) is not None
        renewal = serving._loading[apikeys.digest(key)]
        other = ApiKeys(rt.redis, rt.settings.key_prefix)
        await asyncio.sleep(0.05)  # the renewal's HGETALL has its answer, held at the gate
        serving._redis = rt.redis
        assert await serving.revoke("app")
        counting.gate.set()
        assert await renewal is not None  # it read the key before the revoke...
        assert serving._cache == {}  # ...and did not bring it back
        assert await serving.lookup(key) is None
        assert await other.lookup(key) is None
    finally:
        await rt.close()
