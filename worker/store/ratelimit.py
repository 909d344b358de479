"""A token bucket per integration in Redis: every worker process shares one budget of
Salesforce calls per second, so a burst (a backlog after an outage, `refresh --all`) cannot
hammer Salesforce's login endpoints.

Each process takes permits a small chunk at a time (one Lua call per chunk, through the
auto-pipeline), so a check costs no extra round trip. Permits not used within a second are
dropped, so no process can save up a burst.
"""

from __future__ import annotations

import asyncio
import random
import time

from redis.asyncio import Redis

from worker.errors import Throttled
from worker.store.keys import Keys
from worker.store.pipelining import AutoPipeline, eval_script

# KEYS[1] bucket; ARGV rate (permits/s), burst (bucket size), want. Returns {granted, wait}:
# wait (a string: Lua numbers become integers in replies) is the seconds until one permit.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring((1 - tokens) / rate)}
"""

PERMIT_WAIT = 5.0  # seconds a call waits for a permit before the check is deferred
PERMIT_LIFETIME = 1.0  # seconds a process may keep permits it took but has not used
MAX_CHUNK = 50


class RateLimiter:
    """`await limiter.take(name)` before each call to Salesforce for integration `name`."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        rate: float,
        auto: AutoPipeline | None = None,
        *,
        max_wait: float = PERMIT_WAIT,
        rng: random.Random | None = None,
    ) -> None:
        self.keys = keys
        self.rate = rate
        self.burst = max(1.0, rate)  # one second's worth
        self.chunk = max(1, min(MAX_CHUNK, int(rate // 20)))
        self.max_wait = max_wait
        self.auto = auto or AutoPipeline(redis)
        self.rng = rng or random.Random()
        self._script = redis.register_script(_TAKE)
        self._permits: dict[str, tuple[int, float]] = {}  # name -> (count, taken at)

    async def take(self, integration: str) -> None:
        """One permit, waiting up to `max_wait`; Throttled (nothing sent) when none came."""
        if self.rate <= 0:
            return
        deadline = time.monotonic() + self.max_wait
        while True:
            if self._spend(integration):
                return
            reply = await eval_script(
                self.auto,
                self._script,
                [self.keys.rate(integration)],
                [repr(self.rate), repr(self.burst), self.chunk],
            )
            granted, wait = int(reply[0]), float(reply[1])
            if granted > 0:
                count, _ = self._fresh(integration)
                self._permits[integration] = (count + granted - 1, time.monotonic())
                return
            pause = wait * (1 + self.rng.random())  # jitter: waiters do not wake together
            if time.monotonic() + pause > deadline:
                raise Throttled(integration, max(wait, 0.1))
            await asyncio.sleep(pause)

    def _fresh(self, integration: str) -> tuple[int, float]:
        count, taken = self._permits.get(integration, (0, 0.0))
        if time.monotonic() - taken > PERMIT_LIFETIME:
            return 0, 0.0
        return count, taken

    def _spend(self, integration: str) -> bool:
        count, taken = self._fresh(integration)
        if count <= 0:
            return False
        self._permits[integration] = (count - 1, taken)
        return True
