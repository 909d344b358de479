"""Ops console sessions: `<prefix>console:session:<sha256 of the session id>` -> a hash of
{name, scope, key_digest, csrf, created_at}, expiring after the session TTL.

The session id lives only in the browser's cookie (Redis holds its hash, so a store dump signs
nobody in). The session keeps the API key's name and scope and the digest under which
`worker.store.apikeys` files the key (never the key): revoking the key ends its sessions at
the next request. The CSRF token is per session, random, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from worker.store.apikeys import ApiKey, Scope

SESSION_TTL = 8 * 3600
MAX_ID_CHARS = 128
Raw = dict[bytes, bytes]


@dataclass(frozen=True)
class ConsoleSession:
    name: str  #: the API key's name (who acts)
    scope: Scope
    key_digest: str
    csrf: str
    created_at: float

    def csrf_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf.encode())


class ConsoleSessions:
    def __init__(self, redis: Redis, prefix: str, ttl: int = SESSION_TTL) -> None:
        self._redis = redis
        self._prefix = f"{prefix}console:session:"
        self._apikey_prefix = f"{prefix}apikey:"
        self.ttl = ttl

    def _key(self, session_id: str) -> str:
        return self._prefix + hashlib.sha256(session_id.encode()).hexdigest()

    async def create(self, key: ApiKey, key_digest: str) -> tuple[str, ConsoleSession]:
        """A new session for `key` (filed under `key_digest`): its id (for the cookie only)."""
        session_id = secrets.token_urlsafe(32)
        session = ConsoleSession(
            key.name, key.scope, key_digest, secrets.token_urlsafe(32), time.time()
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._key(session_id),
                mapping={
                    "name": session.name,
                    "scope": session.scope.value,
                    "key_digest": key_digest,
                    "csrf": session.csrf,
                    "created_at": repr(session.created_at),
                },
            )
            pipe.expire(self._key(session_id), self.ttl)
            await pipe.execute()
        return session_id, session

    async def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of this id: None when unknown, expired, or its key was revoked."""
        if not session_id or len(session_id) > MAX_ID_CHARS:
            return None
        raw = cast(Raw, await self._redis.hgetall(self._key(session_id)))
        if not raw:
            return None
        digest = raw[b"key_digest"].decode()
        if not await self._redis.exists(self._apikey_prefix + digest):
            await self.delete(session_id)
            return None
        return ConsoleSession(
            raw[b"name"].decode(),
            Scope(raw[b"scope"].decode()),
            digest,
            raw[b"csrf"].decode(),
            float(raw[b"created_at"]),
        )

    async def delete(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= MAX_ID_CHARS:
            await self._redis.delete(self._key(session_id))
