"""The Redis store: integrations, connections, the due index.

Writes of a connection are compare-and-set on its `version` (a Lua script checks, writes and
reschedules in one step), so a writer holding a stale copy can never overwrite a newer token.
The due index is a sorted set scored by the next check time: a sweep reads only what is due.
The same scripts keep the fleet's counts (worker.store.counting) as they write or remove.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from worker.domain.models import (
    Connection,
    Integration,
    IntegrationStatus,
    LastError,
)
from worker.errors import ConflictError, StoreError
from worker.store import codec, counting
from worker.store.crypto import Cipher
from worker.store.keys import Keys
from worker.store.pipelining import AutoPipeline, Queue, eval_script
from worker.store.replication import Replication

# KEYS: conn hash, due zset, then counting.fleet_keys(). ARGV: expected version, id, next check
# ("" = unschedule, "-" = leave as is), "1" when the pairs are only the changed fields (else
# "0"), then field/value pairs ("" deletes the field). Returns the new version, -1 (the version
# moved on, or the record is gone) or -2 (a changed-fields save met a record written under the
# long field names: it needs every field). The record's counts move with it
# (worker.store.counting); the long field names of a record written before codec.SHORT go:
# such a record always holds `failures` (the old codec wrote it on every save, "0" included),
# the new one never does.
_SAVE = (
    counting.lua(3)
    + """
local current = redis.call('HGET', KEYS[1], 'version') or '0'
if current ~= ARGV[1] then return -1 end
if ARGV[4] == '1' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
  if redis.call('HEXISTS', KEYS[1], 'failures') == 1 then return -2 end
end
local gen = generation()
local before = counted(KEYS[1], gen)
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if redis.call('HEXISTS', KEYS[1], 'failures') == 1 then
  redis.call('HDEL', KEYS[1], LEGACY_NAMES)
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[3] == '' then redis.call('ZREM', KEYS[2], ARGV[2])
elseif ARGV[3] ~= '-' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2]) end
recount(KEYS[1], ARGV[2], gen, before)
return version
"""
).replace("LEGACY_NAMES", ", ".join(f"'{n}'" for n in codec.LEGACY))

# KEYS: conn hash, due zset, lease, then counting.fleet_keys(). ARGV: id. Returns 1 if deleted.
_REMOVE = (
    counting.lua(4)
    + """
local before = counted(KEYS[1], generation())
if before then out(ARGV[1], before) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return redis.call('DEL', KEYS[1])
"""
)

# KEYS: due zset. ARGV: now, limit, claimed-until. Moves what it returns out of reach of
# other sweeps until claimed-until, so overlapping sweeps never hand out one id twice.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do redis.call('ZADD', KEYS[1], ARGV[3], due[i]) end
return due
"""

# KEYS: conn hash. ARGV: started-at. Marks only a record that still exists: a bare HSET after
# `connections remove` would recreate the hash with this one field and no refresh token.
_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'refresh_started_at', ARGV[1])
return 1
"""

MARK_FIELD = "refresh_started_at"
UNSCHEDULE = ""
KEEP_SCHEDULE = "-"


LONG_NAMES = -2  # the save script's answer to changed fields on a record under the long names


def _saved(conn: Connection, version: Any) -> Connection:
    """The record as saved, from the save script's reply (-1: compare-and-set lost)."""
    if int(version) < 0:
        raise ConflictError(f"connection {conn.id}: version {conn.version} is stale")
    return conn.evolve(version=int(version))


async def _confirm(single: Redis, replication: Replication) -> tuple[int, int]:
    """(replicas wanted, replicas holding this connection's last write): WAIT on `single`."""
    wanted = replication.cached()
    if wanted is None:
        wanted = replication.learn(await single.info("replication"))
    if wanted == 0:
        return 0, 0
    try:
        acked = int(await single.wait(wanted, max(1, round(replication.timeout * 1000))))
    except ResponseError:  # no longer a master: WAIT is refused, nothing is confirmed
        acked = 0
    return wanted, acked


class Store:
    def __init__(
        self, redis: Redis, cipher: Cipher, keys: Keys, auto: AutoPipeline | None = None
    ) -> None:
        self.redis = redis
        self.auto = auto or AutoPipeline(redis)
        self.cipher = cipher
        self.keys = keys
        self._save = redis.register_script(_SAVE)
        self._claim = redis.register_script(_CLAIM)
        self._mark = redis.register_script(_MARK)
        self._remove = redis.register_script(_REMOVE)

    # -- integrations -------------------------------------------------------------------

    async def save_integration(self, integration: Integration) -> None:
        fields = codec.integration_fields(integration, self.cipher)
        key = self.keys.integration(integration.name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={k: v for k, v in fields.items() if v != ""})
            pipe.hdel(key, *[k for k, v in fields.items() if v == ""] or ["-"])
            pipe.hincrby(key, "version", 1)
            pipe.sadd(self.keys.integrations, integration.name)
            await pipe.execute()

    async def get_integration(self, name: str) -> Integration | None:
        raw: codec.Raw = await self.redis.hgetall(self.keys.integration(name))  # type: ignore[assignment]
        return codec.integration_from_raw(name, raw, self.cipher) if raw else None

    async def list_integrations(self) -> list[Integration]:
        members: set[bytes] = await self.redis.smembers(self.keys.integrations)  # type: ignore[assignment]
        names = sorted(n.decode() for n in members)
        found = [await self.get_integration(name) for name in names]
        return [integration for integration in found if integration is not None]

    async def set_integration_status(
        self, name: str, status: IntegrationStatus, last_error: LastError | None
    ) -> bool:
        """Set the status; True when it changed (so exactly one caller reports it)."""
        key = self.keys.integration(name)
        previous = await self.redis.hget(key, "status")
        if previous is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, "status")
            pipe.hset(key, "status", status.value)
            if last_error is not None:
                pipe.hset(key, "last_error", json.dumps(last_error.as_dict()))
            result = await pipe.execute()
        return bool(result[0] != status.value.encode())

    async def set_introspection(self, name: str, available: bool) -> bool:
        """Record whether introspection works for an integration; True when it changed."""
        key = self.keys.integration(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, "introspection")
            pipe.hset(key, "introspection", "1" if available else "0")
            before, _ = await pipe.execute()
        return (before or b"1") != (b"1" if available else b"0")

    # -- connections --------------------------------------------------------------------

    async def get_connection(self, connection_id: str) -> Connection | None:
        return self.decode_connection(
            connection_id, await self.auto.run(self.connection_read(connection_id))
        )

    def connection_read(self, connection_id: str) -> Queue:
        """The command that reads a connection, to queue on a shared pipeline."""
        key = self.keys.conn(connection_id)
        return lambda pipe: pipe.hgetall(key)

    def decode_connection(self, connection_id: str, raw: codec.Raw) -> Connection | None:
        return codec.connection_from_raw(connection_id, raw, self.cipher) if raw else None

    async def read_connections(self, ids: Iterable[str]) -> list[Connection | StoreError | None]:
        """Many connections in one round trip; an unreadable record comes back as its error,
        so one bad record never hides the others (ops commands report it and go on)."""
        ids = list(ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for connection_id in ids:
                pipe.hgetall(self.keys.conn(connection_id))
            raws = await pipe.execute()
        found: list[Connection | StoreError | None] = []
        for connection_id, raw in zip(ids, raws, strict=True):
            try:
                found.append(self.decode_connection(connection_id, raw))
            except StoreError as error:
                found.append(error)
        return found

    async def versions(self, ids: Sequence[str]) -> list[int | None]:
        """The stored `version` of each connection in one round trip (None: no record)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for connection_id in ids:
                pipe.hget(self.keys.conn(connection_id), "version")
            found = await pipe.execute()
        return [None if raw is None else int(raw) for raw in found]

    async def get_connections(self, ids: Iterable[str]) -> list[Connection | None]:
        """Many connections in one round trip; raises the first unreadable record's error."""
        found = await self.read_connections(ids)
        for item in found:
            if isinstance(item, StoreError):
                raise item
        return [item for item in found if not isinstance(item, StoreError)]

    async def save_connection(
        self,
        conn: Connection,
        next_check_at: float | str | None = KEEP_SCHEDULE,
        *,
        mark: bool = True,
        since: Connection | None = None,
    ) -> Connection:
        """Compare-and-set on `conn.version`; returns the saved record (version + 1).

        `next_check_at`: a time reschedules, None unschedules, KEEP_SCHEDULE leaves it.
        `mark=False` leaves `refresh_started_at` as stored: the mark is written outside the
        version (mark_refreshing), so a writer that does not hold the lease (key rotation, an
        import) may hold a copy read before a worker marked a refresh in flight, and must
        neither erase that mark nor restore an old one. The worker's own saves own the mark.
        `since`: the record `conn` was made from, as read at `conn.version`: only the fields
        that differ are written (the compare-and-set makes that the same record as a full save
        would leave), the mark too only when it differs (so a mark another holder set after
        our lease ran out, which moves no version, is not erased).
        """
        keys, args = self._save_args(conn, next_check_at, mark, since)
        version = await eval_script(self.auto, self._save, keys, args)
        if since is not None and int(version) == LONG_NAMES:
            keys, args = self._save_args(conn, next_check_at, mark)
            version = await eval_script(self.auto, self._save, keys, args)
        return _saved(conn, version)

    async def save_replicated(
        self, conn: Connection, next_check_at: float | str | None, replication: Replication
    ) -> tuple[Connection, int, int]:
        """save_connection, then WAIT for the replicas `replication` wants: (the saved record,
        replicas wanted, replicas that confirmed it). One connection for all of it, outside the
        shared pipeline: WAIT counts the replicas holding that connection's last write, and a
        WAIT that runs out must not hold up the other commands of a batch. The save goes first,
        before anything else is awaited (`auto` asks INFO on the same connection after it)."""
        keys, args = self._save_args(conn, next_check_at, mark=True)
        async with self.redis.client() as single:
            saved = _saved(conn, await self._save(keys=keys, args=args, client=single))
            wanted, acked = await _confirm(single, replication)
        return saved, wanted, acked

    def _save_args(
        self,
        conn: Connection,
        next_check_at: float | str | None,
        mark: bool,
        since: Connection | None = None,
    ) -> tuple[list[str], list[bytes | str | float]]:
        fields = codec.connection_fields(conn, self.cipher, since)
        if not mark:
            fields.pop(MARK_FIELD, None)
        schedule = UNSCHEDULE if next_check_at is None else next_check_at
        partial = "0" if since is None else "1"
        args: list[bytes | str | float] = [str(conn.version), conn.id, schedule, partial]
        for name, value in fields.items():
            args.extend((name, value))
        keys = [self.keys.conn(conn.id), self.keys.due, *counting.fleet_keys(self.keys)]
        return keys, args

    async def mark_refreshing(self, connection_id: str, now: float) -> bool:
        """Record that a refresh token is about to be sent (outside the version: a flag).

        False when the record is gone (removed meanwhile): nothing is written then.
        """
        keys = [self.keys.conn(connection_id)]
        return bool(await eval_script(self.auto, self._mark, keys, [repr(now)]))

    async def mark_replicated(
        self, connection_id: str, now: float, replication: Replication
    ) -> tuple[bool, int, int]:
        """mark_refreshing, then WAIT as for a rotated token: (marked, replicas wanted,
        replicas that confirmed it), on the mark's own connection (see save_replicated).

        A mark a failover can lose lets the new master's next check send the refresh token
        this refresh is about to consume (a reuse: Salesforce revokes the grant). The WAIT
        also covers every earlier write on that master: the record read under the lease (a
        rotated token someone saved unconfirmed) and the lease itself."""
        keys = [self.keys.conn(connection_id)]
        async with self.redis.client() as single:
            if not await self._mark(keys=keys, args=[repr(now)], client=single):
                return False, 0, 0
            wanted, acked = await _confirm(single, replication)
        return True, wanted, acked

    async def clear_refreshing(self, connection_id: str) -> None:
        """Undo mark_refreshing once the refresh it marked was answered (lease held).

        HDEL never creates a hash (and Redis drops a hash left empty), so unlike the mark
        this needs no existence guard."""
        key = self.keys.conn(connection_id)
        await self.auto.run(lambda pipe: pipe.hdel(key, MARK_FIELD))

    async def remove_connection(self, connection_id: str) -> bool:
        keys = [
            self.keys.conn(connection_id),
            self.keys.due,
            self.keys.lease(connection_id),
            *counting.fleet_keys(self.keys),
        ]
        return bool(await eval_script(self.auto, self._remove, keys, [connection_id]))

    async def iter_connection_ids(self, batch: int = 1000) -> AsyncIterator[str]:
        """Every stored connection id (SCAN: for ops commands, never for the sweep)."""
        async for key in self.redis.scan_iter(match=self.keys.conn_pattern, count=batch):
            yield self.keys.connection_id(key)

    # -- the due index ------------------------------------------------------------------

    async def claim_due(self, now: float, limit: int, claim_for: float) -> list[tuple[str, float]]:
        """Up to `limit` ids due by `now`, earliest first, each with the time it was due; their
        scores pushed to `now + claim_for` (out of the next sweeps' reach), atomically."""
        due = await self._claim(keys=[self.keys.due], args=[now, limit, now + claim_for])
        return [(due[i].decode(), float(due[i + 1])) for i in range(0, len(due), 2)]

    async def schedule(self, connection_id: str, at: float) -> None:
        await self.auto.run(lambda pipe: pipe.zadd(self.keys.due, {connection_id: at}))

    async def give_back(self, connection_ids: list[str], at: float) -> None:
        """Make claimed ids due at `at`; ids no longer in the due index (deleted) stay out."""
        if connection_ids:
            mapping = dict.fromkeys(connection_ids, at)
            await self.auto.run(lambda pipe: pipe.zadd(self.keys.due, mapping, xx=True))

    async def next_check_at(self, connection_id: str) -> float | None:
        score = await self.auto.run(lambda pipe: pipe.zscore(self.keys.due, connection_id))
        return float(score) if score is not None else None

    async def due_count(self, now: float) -> int:
        return int(await self.redis.zcount(self.keys.due, "-inf", now))

    async def oldest_due(self) -> float | None:
        first = await self.redis.zrange(self.keys.due, 0, 0, withscores=True)
        return float(first[0][1]) if first else None
