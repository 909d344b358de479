"""How many replicas must confirm a rotated refresh token before the refresh counts as saved.

Redis replicates asynchronously: a master that dies right after acknowledging a write takes the
write with it, and when that write is a rotated refresh token it is the only copy of the grant.
`TOKENWORKER_MIN_REPLICAS` says how many replicas must hold it (WAIT); `auto` asks the master
(INFO replication) and wants 1 while it has a replica, 0 when it runs alone (no WAIT at all).

A master that HAD a replica and now has none is not trusted alone for REPLICA_LOST_GRACE: that
is exactly what a master sees during a Sentinel failover (its replica was just promoted, and
it keeps acknowledging writes from the clients still connected to it until the sentinels
demote it, ~10 s later; every one of those writes is then thrown away). Measured in the
failover test: with a plain "0 replicas: no WAIT" the old master took ~9 s of rotated tokens
and refresh marks that the new master never saw, and the grants died of reuse.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

# `auto` re-asks the master this often: a lost replica stops the WAITs within 5 s; a replica
# that (re)attaches starts them within 1 s (a save without WAIT meanwhile is the exposure).
AUTO_CACHE_SECONDS = 5.0
ALONE_CACHE_SECONDS = 1.0
# Seconds `auto` keeps wanting 1 replica after the master last reported one. Longer than a
# Sentinel failover with the old master alive (promotion, then its demotion ~10 s later, then
# the clients' reconnect) with room to spare; meanwhile rotated refreshes are not sent (their
# mark is unconfirmed) and answers in hand are kept and saved again. A replica that is truly
# gone costs one minute of paused rotated refreshes (well inside REFRESH_MARGIN), after which
# the lone master is trusted as before.
REPLICA_LOST_GRACE = 60.0


@dataclass
class Replication:
    redis: Redis
    configured: int | None  # None: auto
    timeout: float  # seconds one WAIT may take (TOKENWORKER_REPLICA_WAIT)
    _wanted: int = 0
    _until: float = float("-inf")
    _replica_ever: bool = False  # INFO showed a replica at least once in this process
    _alone_since: float | None = None  # monotonic time INFO first showed none after that

    def cached(self) -> int | None:
        """Replicas a rotated token must reach now, or None when INFO must be asked again."""
        if self.configured is not None:
            return self.configured
        return self._wanted if time.monotonic() < self._until else None

    def learn(self, info: Mapping[str, Any]) -> int:
        """`auto` from the master's INFO replication: 1 while it has a replica, and for
        REPLICA_LOST_GRACE after it is first seen without one (it may be a master whose replica
        was just promoted), else 0. The grace runs from the first answer without a replica, not
        from the last with one: a process that asks rarely (the api refreshes only on reads)
        and first asks in the middle of a failover must not trust the demoted master alone."""
        now = time.monotonic()
        if int(info.get("connected_slaves", 0)) > 0:
            self._replica_ever, self._alone_since = True, None
        elif self._replica_ever and self._alone_since is None:
            self._alone_since = now
        alone = self._alone_since
        if not self._replica_ever or (alone is not None and now - alone >= REPLICA_LOST_GRACE):
            self._wanted = 0
        else:
            self._wanted = 1
        self._until = now + (AUTO_CACHE_SECONDS if self._wanted else ALONE_CACHE_SECONDS)
        return self._wanted

    async def wanted(self) -> int:
        """Replicas a rotated token must reach now (asks the master when `auto` is stale)."""
        found = self.cached()
        return found if found is not None else self.learn(await self.redis.info("replication"))
