"""API keys, stored hashed: `<prefix>apikey:<sha256 hex>` -> {name, scope, created_at}, and
`<prefix>apikeys` -> {name: sha256 hex} so a key can be listed and revoked by name.

A key is 32 random bytes (URL-safe base64, `tw_` prefix so scanners and people recognise it);
with that much entropy a plain SHA-256 is the right hash (a slow password hash buys nothing
and costs every request). The key itself is shown once, at creation, and never stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
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
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._names = f"{prefix}apikeys"
        self._prefix = f"{prefix}apikey:"

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
        raw = cast(Raw, await self._redis.hgetall(self._prefix + digest(key)))
        if not raw:
            return None
        return _record(raw)

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
        return True


def _record(raw: Raw) -> ApiKey:
    return ApiKey(raw[b"name"].decode(), Scope(raw[b"scope"].decode()), float(raw[b"created_at"]))
