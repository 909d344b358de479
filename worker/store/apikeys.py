"""API keys, stored hashed: `<prefix>apikey:<sha256 hex>` -> {name, scope, created_at}, and
`<prefix>apikeys` -> {name: sha256 hex} so a key can be listed and revoked by name.

A key is 32 random bytes (URL-safe base64, `tw_` prefix so scanners and people recognise it);
with that much entropy a plain SHA-256 is the right hash (a slow password hash buys nothing
and costs every request). The key itself is shown once, at creation, and never stored.

The api process keeps what it looked up for `cache_ttl` seconds (`API_CACHE_TTL`), at most
`CACHE_MAX` keys: a hot route then costs no Redis round trip for its caller (a third of a
credentials read's CPU). The bound: a key revoked elsewhere (the CLI, another api process)
keeps working in a process that looked it up for at most `cache_ttl` seconds more (counted from
the moment the lookup that saw it was sent); one revoked through the same `ApiKeys` stops at
once. Unknown keys are never cached (a new key works at once, and random keys cannot fill the
cache).

A key in use never waits on Redis: once its entry is in the last REFRESH_AHEAD of its life, a
request still served from it starts one lookup in the background, which renews the entry (or
drops it: the key was revoked). Lookups of one key in flight at once are one HGETALL. Before,
each entry expired every second in each api process and every request arriving until the next
answer asked Redis itself: when the store was held (a slow command, its thread preempted on a
busy box), every read in that moment waited behind it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import cast

from redis.asyncio import Redis

from worker.errors import InputError


class Scope(str, Enum):
    READ = "read"  #: read credentials, use the proxy, read connections and events
    CONNECT = "connect"  #: also create connect sessions and report rejected tokens
    ADMIN = "admin"  #: everything: integrations, refreshes, deletes, the console's actions

    def allows(self, needed: Scope) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Scope.READ: 0, Scope.CONNECT: 1, Scope.ADMIN: 2}
PREFIX = "tw_"
API_CACHE_TTL = 1.0  # seconds: how long an api process may go on accepting a revoked key
CACHE_MAX = 1024  # keys one process remembers; the oldest lookup makes room
REFRESH_AHEAD = 0.5  # share of cache_ttl before an entry's end when a read renews it
Raw = dict[bytes, bytes]


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: Scope
    created_at: float

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "scope": self.scope.value, "created_at": self.created_at}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        cache_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._names = f"{prefix}apikeys"
        self._prefix = f"{prefix}apikey:"
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._cache: dict[str, tuple[ApiKey, float]] = {}  # sha256 hex -> (record, good until)
        self._loading: dict[str, asyncio.Task[ApiKey | None]] = {}  # sha256 hex -> its lookup
        self._revocations = 0  # a lookup sent before a revoke here must not cache its answer

    async def create(self, name: str, scope: Scope, now: float | None = None) -> tuple[str, ApiKey]:
        """A new key (returned once, with its record); a name already in use is refused."""
        key = PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(name, scope, time.time() if now is None else now)
        hashed = digest(key)
        if not await self._redis.hsetnx(self._names, name, hashed):
            raise InputError(f"--name: an API key named {name!r} exists (revoke it first)")
        await self._redis.hset(
            self._prefix + hashed,
            mapping={"name": name, "scope": scope.value, "created_at": repr(record.created_at)},
        )
        return key, record

    async def lookup(self, key: str) -> ApiKey | None:
        if not key.startswith(PREFIX) or len(key) > 128:
            return None
        hashed = digest(key)
        cached = self._cache.get(hashed)
        now = self._clock()
        if cached is not None and cached[1] > now:
            if cached[1] - now <= self._cache_ttl * REFRESH_AHEAD:
                self._load(hashed)  # in the background; this request is served as it is
            return cached[0]
        self._cache.pop(hashed, None)
        return await asyncio.shield(self._load(hashed))

    def _load(self, hashed: str) -> asyncio.Task[ApiKey | None]:
        """The lookup of `hashed` in flight, started if there is none."""
        task = self._loading.get(hashed)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(hashed))
            self._loading[hashed] = task
            task.add_done_callback(lambda done: self._loaded(hashed, done))
        return task

    def _loaded(self, hashed: str, task: asyncio.Task[ApiKey | None]) -> None:
        if self._loading.get(hashed) is task:
            del self._loading[hashed]
        if not task.cancelled():
            task.exception()  # a failed background renewal is retried by the next read

    async def _read(self, hashed: str) -> ApiKey | None:
        sent, revocations = self._clock(), self._revocations
        raw = cast(Raw, await self._redis.hgetall(self._prefix + hashed))
        if not raw:
            self._cache.pop(hashed, None)
            return None
        record = _record(raw)
        if self._cache_ttl > 0 and revocations == self._revocations:
            self._cache.pop(hashed, None)
            if len(self._cache) >= CACHE_MAX:
                del self._cache[next(iter(self._cache))]
            self._cache[hashed] = (record, sent + self._cache_ttl)
        return record

    async def list(self) -> list[ApiKey]:
        names = cast(Raw, await self._redis.hgetall(self._names))
        found = []
        for hashed in names.values():
            raw = cast(Raw, await self._redis.hgetall(self._prefix + hashed.decode()))
            if raw:
                found.append(_record(raw))
        return sorted(found, key=lambda k: k.name)

    async def revoke(self, name: str) -> bool:
        hashed = cast(bytes | None, await self._redis.hget(self._names, name))
        if hashed is None:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._prefix + hashed.decode())
            pipe.hdel(self._names, name)
            await pipe.execute()
        self._revocations += 1
        self._cache.pop(hashed.decode(), None)
        return True


def _record(raw: Raw) -> ApiKey:
    return ApiKey(raw[b"name"].decode(), Scope(raw[b"scope"].decode()), float(raw[b"created_at"]))
