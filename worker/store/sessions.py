"""Connect sessions: one customer's pass through the OAuth web-server flow, in Redis.

A session is a hash that lives for its TTL (TOKENWORKER_CONNECT_SESSION_TTL) plus a
tombstone, so `GET /connect-sessions/{id}` still answers `expired`, `connected` or `failed`
for a while after the flow ended. The OAuth `state` points at it (a second key with the same
life). The PKCE verifier is a secret: sealed with the store's Cipher, bound to the session.

    pending --consume--> consumed --finish--> connected | failed
       |                    |
       +--expire (TTL)--> expired <--expire (interrupted: no finish within CONSUMED_GRACE)

Every transition is one Lua script, so exactly one caller wins it: a replayed callback, a
second tab or a sweep racing a callback cannot both use a session, and exactly one of them
reports an expiry.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import cast

from redis.asyncio import Redis

from worker.store.crypto import Cipher
from worker.store.keys import Keys

TOMBSTONE = 3600.0  # seconds a finished or expired session still answers its status
# A consumed session whose callback never finished (a crash mid-exchange) counts as expired
# after this long; longer than any exchange, store and learn-expiry the callback makes.
CONSUMED_GRACE = 300.0
ID_LENGTH = 32  # token_urlsafe(24)
WON = "won"  # consume: this caller owns the session now
EXPIRED_NOW = "expired"  # consume: this caller found it past its TTL and recorded that

# KEYS: hash, pending zset. ARGV: now, id. Returns the outcome: 'won' (ours now), 'expired'
# (it just expired: the caller reports it), or the status that refused it ('missing').
_CONSUME = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'pending' then return status end
redis.call('ZREM', KEYS[2], ARGV[2])
if tonumber(ARGV[1]) >= tonumber(redis.call('HGET', KEYS[1], 'expires_at')) then
  redis.call('HSET', KEYS[1], 'status', 'expired', 'error', 'session_expired')
  return 'expired'
end
redis.call('HSET', KEYS[1], 'status', 'consumed', 'consumed_at', ARGV[1])
return 'won'
"""

# KEYS: hash, state key. ARGV: status, error, error_description, tombstone ms. Only a
# consumed session finishes; both keys then live for the tombstone.
_FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'consumed' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'error', ARGV[2], 'error_description', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: hash, pending zset. ARGV: now, id, consumed grace. 1 when this call expired it.
_EXPIRE = """
local status = redis.call('HGET', KEYS[1], 'status')
local now = tonumber(ARGV[1])
if status == 'pending' and now >= tonumber(redis.call('HGET', KEYS[1], 'expires_at')) then
  redis.call('HSET', KEYS[1], 'status', 'expired', 'error', 'session_expired')
elseif status == 'consumed'
    and now >= tonumber(redis.call('HGET', KEYS[1], 'consumed_at')) + tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'status', 'expired', 'error', 'interrupted')
else
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

# KEYS: hash. ARGV: now, login URL. Only a live pending session takes a login URL.
_CHOOSE_LOGIN = """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
if tonumber(ARGV[1]) >= tonumber(redis.call('HGET', KEYS[1], 'expires_at')) then return 0 end
redis.call('HSET', KEYS[1], 'login_url', ARGV[2])
return 1
"""


class SessionStatus(str, Enum):
    PENDING = "pending"  #: waiting for the customer
    CONSUMED = "consumed"  #: a callback took it and is exchanging the code
    CONNECTED = "connected"  #: the connection is stored
    FAILED = "failed"  #: denied, refused or the exchange failed; `error` says why
    EXPIRED = "expired"  #: nobody came back in time (or the callback was interrupted)


@dataclass(frozen=True)
class ConnectSession:
    id: str
    integration: str
    connection_id: str
    return_to: str | None
    state: str = field(repr=False)
    code_verifier: str = field(repr=False)
    status: SessionStatus
    created_at: float
    expires_at: float
    force: bool = False
    login_url: str | None = None  # the My Domain the customer chose (ask_domain)
    consumed_at: float | None = None
    error: str | None = None
    error_description: str | None = None

    def overdue(self, now: float) -> bool:
        """Pending past its TTL, or consumed by a callback that never finished in time."""
        if self.status is SessionStatus.PENDING:
            return now >= self.expires_at
        if self.status is SessionStatus.CONSUMED and self.consumed_at is not None:
            return now >= self.consumed_at + CONSUMED_GRACE
        return False

    def seen_status(self, now: float) -> SessionStatus:
        """The status a host application sees: a callback in progress is still `pending`, and
        an overdue session is `expired` even before anyone recorded it."""
        if self.overdue(now):
            return SessionStatus.EXPIRED
        if self.status is SessionStatus.CONSUMED:
            return SessionStatus.PENDING
        return self.status


def is_session_id(value: str) -> bool:
    return len(value) == ID_LENGTH and all(ch.isalnum() or ch in "-_" for ch in value)


class Sessions:
    def __init__(self, redis: Redis, cipher: Cipher, keys: Keys) -> None:
        self.redis = redis
        self.cipher = cipher
        self.keys = keys
        self._consume = redis.register_script(_CONSUME)
        self._finish = redis.register_script(_FINISH)
        self._expire = redis.register_script(_EXPIRE)
        self._choose = redis.register_script(_CHOOSE_LOGIN)

    async def create(
        self,
        integration: str,
        connection_id: str,
        return_to: str | None,
        verifier: str,
        now: float,
        ttl: float,
        *,
        force: bool = False,
    ) -> ConnectSession:
        session = ConnectSession(
            id=secrets.token_urlsafe(24),
            integration=integration,
            connection_id=connection_id,
            return_to=return_to,
            state=secrets.token_urlsafe(32),
            code_verifier=verifier,
            status=SessionStatus.PENDING,
            created_at=now,
            expires_at=now + ttl,
            force=force,
        )
        fields = {
            "integration": integration,
            "connection_id": connection_id,
            "return_to": return_to or "",
            "state": session.state,
            "verifier": self.cipher.seal(verifier, self._context(session.id)),
            "status": session.status.value,
            "created_at": repr(now),
            "expires_at": repr(session.expires_at),
            "force": "1" if force else "0",
        }
        gone_at = int((session.expires_at + TOMBSTONE) * 1000)
        session_key, state_key = (
            self.keys.connect_session(session.id),
            self.keys.connect_state(session.state),
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(session_key, mapping=fields)  # type: ignore[arg-type]
            pipe.pexpireat(session_key, gone_at)
            pipe.set(state_key, session.id, pxat=gone_at)
            pipe.zadd(self.keys.connect_pending, {session.id: session.expires_at})
            await pipe.execute()
        return session

    async def get(self, session_id: str) -> ConnectSession | None:
        if not is_session_id(session_id):
            return None
        raw = cast(
            dict[bytes, bytes], await self.redis.hgetall(self.keys.connect_session(session_id))
        )
        return self._decode(session_id, raw) if raw else None

    async def by_state(self, state: str) -> ConnectSession | None:
        if not state or len(state) > 128:
            return None
        session_id = cast(bytes | None, await self.redis.get(self.keys.connect_state(state)))
        if session_id is None:
            return None
        session = await self.get(session_id.decode())
        # The index is only a pointer: the session's own state must match as well.
        if session is None or not secrets.compare_digest(session.state, state):
            return None
        return session

    async def consume(self, session_id: str, now: float) -> str:
        """WON when this caller now owns the session, EXPIRED_NOW when this call found it past
        its TTL (and recorded that, so it reports it), else the status that refused it
        ('consumed', 'connected', 'failed', 'expired' or 'missing')."""
        keys = [self.keys.connect_session(session_id), self.keys.connect_pending]
        outcome = await self._consume(keys=keys, args=[repr(now), session_id])
        return outcome.decode() if isinstance(outcome, bytes) else str(outcome)

    async def finish(
        self,
        session: ConnectSession,
        status: SessionStatus,
        error: str | None = None,
        error_description: str | None = None,
    ) -> bool:
        keys = [self.keys.connect_session(session.id), self.keys.connect_state(session.state)]
        args = [status.value, error or "", error_description or "", int(TOMBSTONE * 1000)]
        return bool(await self._finish(keys=keys, args=args))

    async def expire(self, session_id: str, now: float) -> bool:
        """Record that the session expired; True for exactly one caller (it reports it)."""
        keys = [self.keys.connect_session(session_id), self.keys.connect_pending]
        return bool(await self._expire(keys=keys, args=[repr(now), session_id, CONSUMED_GRACE]))

    async def choose_login(self, session_id: str, login_url: str, now: float) -> bool:
        keys = [self.keys.connect_session(session_id)]
        return bool(await self._choose(keys=keys, args=[repr(now), login_url]))

    async def due(self, now: float, limit: int = 100) -> list[str]:
        """Ids of pending sessions past their TTL, for the sweep that reports them."""
        found: list[bytes] = await self.redis.zrangebyscore(  # type: ignore[assignment]
            self.keys.connect_pending, "-inf", now, start=0, num=limit
        )
        return [item.decode() for item in found]

    async def drop_due(self, session_id: str) -> None:
        """Forget a due id whose session is gone (its tombstone outlived: no sweep for an
        hour), so it cannot take a place in `due` forever."""
        await self.redis.zrem(self.keys.connect_pending, session_id)

    def _context(self, session_id: str) -> str:
        return f"connect:{session_id}:verifier"

    def _decode(self, session_id: str, raw: dict[bytes, bytes]) -> ConnectSession:
        def text(name: str) -> str | None:
            value = raw.get(name.encode())
            return value.decode() if value else None

        consumed = text("consumed_at")
        return ConnectSession(
            id=session_id,
            integration=text("integration") or "",
            connection_id=text("connection_id") or "",
            return_to=text("return_to"),
            state=text("state") or "",
            code_verifier=self.cipher.open(raw[b"verifier"], self._context(session_id)),
            status=SessionStatus(text("status")),
            created_at=float(text("created_at") or 0),
            expires_at=float(text("expires_at") or 0),
            force=raw.get(b"force") == b"1",
            login_url=text("login_url"),
            consumed_at=float(consumed) if consumed else None,
            error=text("error"),
            error_description=text("error_description"),
        )
