"""Owner-token leases: SET NX PX to take, compare-and-delete to release.

A lease is not a fencing lock: a holder stalled past the TTL can overlap a new holder. That is
why every connection save is also a compare-and-set on the record's version.

Leases are not confirmed by WAIT on their own (that would cost a WAIT per check): one lost in
a failover at most lets a second worker check the connection. Nothing is sent on it: a refresh
first confirms its "sent" mark by WAIT, and that WAIT covers the lease written before it on the
same master (the replication stream is ordered); a worker whose lease and mark were on a master
being demoted gets no confirmation and sends nothing. An answer in hand keeps its lease (`keep`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from worker.store.clients import STORE_DOWN
from worker.store.pipelining import AutoPipeline, Queue, eval_script

log = structlog.get_logger("tokenworker.locks")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Renew, or take back a lease that is gone (a failover lost it, or it ran out): ours again
# unless another holder has it.
_KEEP = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if held then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Owner:
    """This process's random prefix for lease owner tokens, made again in a forked child."""

    prefix = secrets.token_hex(8)
    count = itertools.count()

    @classmethod
    def forked(cls) -> None:
        cls.prefix = secrets.token_hex(8)


os.register_at_fork(after_in_child=_Owner.forked)


def owner_token() -> str:
    """A lease owner token unique among every holder: a random prefix per process and a
    count. Not a secret (whoever can read the lease can delete it anyway), so it need not
    cost a call for randomness per lease."""
    return f"{_Owner.prefix}{next(_Owner.count):x}"


class Leases:
    def __init__(self, redis: Redis, ttl: float, auto: AutoPipeline | None = None) -> None:
        self.redis = redis
        self.auto = auto or AutoPipeline(redis)
        self.ttl_ms = int(ttl * 1000)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)
        self._keep = redis.register_script(_KEEP)
        self._releasing: set[asyncio.Future[Any]] = set()  # released without waiting

    async def renew(self, key: str, token: str) -> bool:
        """Reset the TTL if we still own the lease; False means it was lost (expired)."""
        return bool(await eval_script(self.auto, self._renew, [key], [token, self.ttl_ms]))

    async def keep(self, key: str, token: str) -> bool:
        """Renew the lease, or take it back if nobody holds it; False: another holder has it.

        For a holder that must not let go (an answered refresh not saved yet): a lease lost in
        a failover (leases are not confirmed by WAIT on their own) or run out during an outage
        would let another worker judge the refresh's answer lost."""
        return bool(await eval_script(self.auto, self._keep, [key], [token, self.ttl_ms]))

    async def release(self, key: str, token: str) -> bool:
        return bool(await eval_script(self.auto, self._release, [key], [token]))

    async def acquire_reading(
        self,
        key: str,
        read: Queue,
        wait: float = 0.0,
        unneeded: Callable[[Any], bool] | None = None,
    ) -> tuple[str | None, Any]:
        """(owner token, reply of `read`), or (None, None) if another holder kept the lease
        for `wait` seconds. `read` runs right behind the SET NX on the same pipeline: one round
        trip instead of two, and its reply comes after the lease was taken (Redis runs one
        connection's commands in order). While waiting, a reply for which `unneeded` is true
        ends the wait without the lease: (None, reply) (what the holder did is enough)."""
        token = owner_token()
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            taken, reply = await self.auto.run_all(
                lambda p: p.set(key, token, nx=True, px=self.ttl_ms), read
            )
            if isinstance(taken, Exception):
                raise taken
            if taken:
                if isinstance(reply, Exception):
                    await self.release(key, token)  # not held for the TTL by a failed read
                    raise reply
                return token, reply
            if unneeded is not None and not isinstance(reply, Exception) and unneeded(reply):
                return None, reply
            if time.monotonic() >= deadline:
                return None, None
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)

    @asynccontextmanager
    async def hold(
        self,
        key: str,
        read: Queue,
        wait: float = 0.0,
        unneeded: Callable[[Any], bool] | None = None,
        *,
        detach: bool = False,
    ) -> AsyncIterator[tuple[str | None, Any]]:
        """`async with leases.hold(key, read) as (token, reply):` token is None when not
        acquired; `reply` is what `read` returned once the lease was ours (or, with `unneeded`,
        the reply that made the lease unneeded).

        `detach`: the release is queued on the shared pipeline and not waited for (one round
        trip less per check: the caller's slot frees as soon as its work is done); the caller
        must await `settle()` before its event loop may stop."""
        token, reply = await self.acquire_reading(key, read, wait, unneeded)
        try:
            yield token, reply
        finally:
            if token is not None and detach:
                self._release_detached(key, token)
            elif token is not None:
                await self._release_quietly(key, token)

    def _release_detached(self, key: str, token: str) -> None:
        """The release queued on the pipeline, its reply handled by a callback: no task per
        check. A restarted store that lost the script gets it the awaited way."""
        sha = self._release.sha
        released = self.auto.queue(lambda pipe: pipe.evalsha(sha, 1, key, token))
        self._releasing.add(released)

        def done(future: asyncio.Future[Any]) -> None:
            self._releasing.discard(future)
            error = None if future.cancelled() else future.exception()
            if isinstance(error, NoScriptError):
                retry = asyncio.ensure_future(self._release_quietly(key, token))
                self._releasing.add(retry)
                retry.add_done_callback(self._releasing.discard)
            elif isinstance(error, STORE_DOWN):
                log.warning("lease.unreleased", problem=type(error).__name__, ttl_ms=self.ttl_ms)
            elif error is not None:
                log.error("lease.release_failed", problem=type(error).__name__)

        released.add_done_callback(done)

    async def settle(self) -> None:
        """Wait for every detached release (each one already logs its own failure)."""
        while self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    async def _release_quietly(self, key: str, token: str) -> None:
        """Release, or leave it to the TTL when the store is away: what ran under the lease
        is done (its result must not turn into a store error)."""
        try:
            await self.release(key, token)
        except STORE_DOWN as error:
            log.warning("lease.unreleased", problem=type(error).__name__, ttl_ms=self.ttl_ms)
