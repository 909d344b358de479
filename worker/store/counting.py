"""Connection counts kept on every write, so reading them costs O(buckets), not O(all).

`<prefix>fleet:counts` maps a bucket, `integration|status|key id`, to how many records are in
it. The key id is the hex id of the key that sealed the refresh token (what tells a reader
whether it can open the record, without opening it), or `-` when the field holds no sealed
secret. Small id sets list the records in each non-active status and the broken ones (no
sealed refresh token, or a status nobody knows): `connections list --status failing` reads
O(failing) ids.

A counted record carries `counted` = "<generation> <bucket>": the bucket it is counted in.
The save and remove scripts (worker.store.connections) take a record out of the bucket it
says and put it in the one its fields now say, in the same script that writes, so counts
never drift from Redis's own order of writes; a record changed behind their back (an older
process during an upgrade) is put right by its next save. A record without the flag (every
record of a store written before counting existed) is counted by the backfill: SCAN in
chunks, one script per chunk that counts each uncounted record and flags it, the SCAN cursor
saved with it (resumable after a crash, from any process), one process at a time under a
lease. When the SCAN ends the generation is marked complete; until then readers wait for it
or say they are counting. `recount` starts a new generation (drops the counts; every flag of
the old one reads as uncounted) for when the counts are in doubt.

The same scripts keep sorted sets for paging through a million records without a SCAN
(worker.store.fleet_index): every counted record's `integration|id` (score 0: one
integration's ids by lexical range; every id in order is the merge of the integrations'
ranges, the integrations read from the counts' buckets), every id whose record
holds a `last_error`, scored by that error's time, and for the non-active ids only,
`status|id` and `status|integration|id` (score 0: a status's page without reading the whole
status). `meta.layout` names the layout of these
keys; a store whose counts are complete under an older layout is recounted once (a new
generation: the backfill then fills the sorted sets too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from worker.domain.models import ConnectionStatus
from worker.store.crypto import SEALED_MIN, VERSION
from worker.store.keys import Keys
from worker.store.leases import Leases

COUNTED = "counted"
PARKED = [s.value for s in ConnectionStatus if s is not ConnectionStatus.ACTIVE]
CHUNK = 1000  # keys per SCAN and per backfill script
LAYOUT = "4"  # 2: the id, integration|id and error-time sorted sets; 3: status|id and
# status|integration|id of the non-active ids; 4: no id set (~110 bytes per record: the
# integration|id set holds every id already)
LOCK_TTL = 30.0  # seconds; renewed after every chunk
Progress = Callable[[int], None]


def fleet_keys(keys: Keys) -> list[str]:
    """The keys every counting script takes after its own, in this order."""
    return [
        keys.fleet_meta,
        keys.fleet_counts,
        keys.fleet_broken,
        *(keys.fleet_ids(status) for status in PARKED),
        keys.fleet_by_integration,
        keys.fleet_by_error,
        keys.fleet_by_status,
        keys.fleet_by_status_integration,
    ]


def lua(base: int) -> str:
    """Lua functions shared by the save, remove and backfill scripts; fleet_keys() start at
    KEYS[base]. Statuses come from ConnectionStatus, the sealed-value header from crypto."""
    sets = ", ".join(f"{s} = KEYS[{base + 3 + i}]" for i, s in enumerate(PARKED))
    known = ", ".join(f"{s.value} = true" for s in ConnectionStatus)
    z = base + 3 + len(PARKED)
    return f"""
local META, COUNTS, BROKEN = KEYS[{base}], KEYS[{base + 1}], KEYS[{base + 2}]
local BY_INT, BY_ERROR = KEYS[{z}], KEYS[{z + 1}]
local BY_STATUS, BY_STATUS_INT = KEYS[{z + 2}], KEYS[{z + 3}]
local SETS = {{{sets}}}
local KNOWN = {{{known}}}
local function generation() return redis.call('HGET', META, 'gen') or '1' end
local function hex(s)
  return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
-- The bucket a record's fields put it in (nil when there is no record).
local function bucket(key)
  local f = redis.call('HMGET', key, 'integration', 'status', 'rt')
  if not f[1] and not f[2] and not f[3] and redis.call('EXISTS', key) == 0 then return nil end
  local status = f[2]
  if not status or status == '' then status = 'active' end
  local kid = '-'
  if f[3] and #f[3] >= {SEALED_MIN} and string.byte(f[3], 1) == {VERSION[0]} then
    kid = hex(string.sub(f[3], 2, 5))
  end
  return (f[1] or '') .. '|' .. status .. '|' .. kid
end
-- The bucket a record is counted in under generation `gen`, or nil.
local function counted(key, gen)
  local flag = redis.call('HGET', key, '{COUNTED}')
  if not flag then return nil end
  local g, b = string.match(flag, '^(%d+) (.*)$')
  if g == gen then return b end
  return nil
end
local function owner(b) return string.match(b, '^([^|]*)|') end
-- The status set, whether broken, and the status-index members of a non-active record.
local function sets(b, id)
  local status, kid = string.match(b, '|([^|]*)|([^|]*)$')
  local set = SETS[status]
  local by, by_int = nil, nil
  if set then by, by_int = status .. '|' .. id, status .. '|' .. owner(b) .. '|' .. id end
  return set, kid == '-' or not KNOWN[status], by, by_int
end
-- The time of the record's last error (the JSON `at` of its last_error field), or nil.
local function erred_at(key)
  local e = redis.call('HGET', key, 'last_error')
  if not e or e == '' then return nil end
  return tonumber(string.match(e, '"at":%s*([-%d.eE+]+)'))
end
local function errors(key, id)
  local at = erred_at(key)
  if at then redis.call('ZADD', BY_ERROR, at, id) else redis.call('ZREM', BY_ERROR, id) end
end
local function out(id, b)
  if redis.call('HINCRBY', COUNTS, b, -1) <= 0 then redis.call('HDEL', COUNTS, b) end
  local set, broken, by, by_int = sets(b, id)
  if set then
    redis.call('SREM', set, id)
    redis.call('ZREM', BY_STATUS, by)
    redis.call('ZREM', BY_STATUS_INT, by_int)
  end
  if broken then redis.call('SREM', BROKEN, id) end
  redis.call('ZREM', BY_INT, owner(b) .. '|' .. id)
  redis.call('ZREM', BY_ERROR, id)
end
local function into(id, b, n)
  if n then redis.call('HINCRBY', COUNTS, b, 1) end
  local set, broken, by, by_int = sets(b, id)
  if set then
    redis.call('SADD', set, id)
    redis.call('ZADD', BY_STATUS, 0, by)
    redis.call('ZADD', BY_STATUS_INT, 0, by_int)
  end
  if broken then redis.call('SADD', BROKEN, id) end
  redis.call('ZADD', BY_INT, 0, owner(b) .. '|' .. id)
end
-- Count the record at key in the bucket its fields say, leaving the one it was counted in.
local function recount(key, id, gen, before)
  local after = bucket(key)
  if before ~= after then
    if before then out(id, before) end
    if after then into(id, after, true) end
  end
  if after then
    redis.call('HSET', key, '{COUNTED}', gen .. ' ' .. after)
    errors(key, id)
  end
end
"""


_FIRST = 1 + len(fleet_keys(Keys()))  # the first connection key of a backfill chunk

# KEYS: fleet_keys(), then connection keys. ARGV: generation, next cursor, layout, the ids.
# Returns how many records it counted, or -1 when another generation started meanwhile.
BACKFILL = (
    lua(1)
    + f"""
local gen = ARGV[1]
if generation() ~= gen then return -1 end
local n, adds = 0, {{}}
for i = {_FIRST}, #KEYS do
  local key = KEYS[i]
  if redis.call('TYPE', key).ok == 'hash' and not counted(key, gen) then
    local b = bucket(key)
    adds[b] = (adds[b] or 0) + 1
    into(ARGV[i - {_FIRST} + 4], b, false)
    errors(key, ARGV[i - {_FIRST} + 4])
    redis.call('HSET', key, '{COUNTED}', gen .. ' ' .. b)
    n = n + 1
  end
end
for b, k in pairs(adds) do redis.call('HINCRBY', COUNTS, b, k) end
redis.call('HINCRBY', META, 'counted', n)
if ARGV[2] == '0' then
  redis.call('HSET', META, 'complete', gen, 'layout', ARGV[3])
  redis.call('HDEL', META, 'cursor')
else
  redis.call('HSET', META, 'cursor', ARGV[2])
end
return n
"""
)

# KEYS: fleet_keys(), then the keys of older layouts. ARGV: "" or a layout. Drops every count
# (unless ARGV[1] names the layout the store has already: then nothing); returns the (new)
# generation.
RECOUNT = (
    lua(1)
    + """
if ARGV[1] ~= '' and redis.call('HGET', META, 'layout') == ARGV[1] then return generation() end
local gen = tonumber(generation()) + 1
for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HSET', META, 'gen', gen)
return gen
"""
)


@dataclass(frozen=True)
class State:
    generation: str
    complete: bool
    counted: int  # records the backfill of this generation has counted so far
    cursor: int
    layout: str | None  # LAYOUT when the sorted sets are complete too


class Counting:
    """Runs the backfill and tells whether the counts are complete."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.leases = Leases(redis, LOCK_TTL)
        self._chunk = redis.register_script(BACKFILL)
        self._recount = redis.register_script(RECOUNT)

    async def state(self) -> State:
        found: list[bytes | None] = await self.redis.hmget(
            self.keys.fleet_meta, ["gen", "complete", "counted", "cursor", "layout"]
        )  # type: ignore[assignment]
        gen, complete, counted, cursor, layout = found
        generation = (gen or b"1").decode()
        return State(
            generation,
            complete is not None and complete.decode() == generation,
            int(counted or 0),
            int(cursor or 0),
            layout.decode() if layout else None,
        )

    async def owners(self) -> list[bytes]:
        """The integrations holding counted records (names as stored), sorted: from the
        counts' buckets, O(buckets)."""
        # HGETALL, not HKEYS: the deployed ACL (deploy/redis-acl.conf) grants the former.
        buckets: dict[bytes, bytes] = await self.redis.hgetall(self.keys.fleet_counts)  # type: ignore[assignment]
        return sorted({b.split(b"|", 1)[0] for b in buckets})

    async def recount(self, unless_layout: str = "") -> str:
        """Start counting afresh: a new generation, backfilled like a store without counts
        (nothing when `unless_layout` is the store's layout already)."""
        keys = [*fleet_keys(self.keys), self.keys.fleet_by_id]  # layout 3's id set goes too
        return str(await self._recount(keys=keys, args=[unless_layout]))

    async def complete(self, progress: Progress | None = None, budget: float | None = None) -> bool:
        """Backfill until the counts are complete (True), or for `budget` seconds (False if
        not done by then). Another process backfilling is waited for, and taken over from its
        saved cursor if its lease lapses."""
        deadline = None if budget is None else time.monotonic() + budget
        while True:
            state = await self.state()
            if state.complete and state.layout != LAYOUT:
                # Counted under an older layout: recount once (atomic: one process does).
                await self.recount(unless_layout=LAYOUT)
                continue
            if state.complete:
                return True
            if progress is not None:
                progress(state.counted)
            token, _ = await self.leases.acquire_reading(
                self.keys.fleet_lock, lambda pipe: pipe.ping()
            )
            if token is not None:
                try:
                    if await self._run(token, progress, deadline):
                        return True
                finally:
                    await self.leases.release(self.keys.fleet_lock, token)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if token is None:
                await asyncio.sleep(0.2)

    async def _run(self, token: str, progress: Progress | None, deadline: float | None) -> bool:
        """Chunks from the saved cursor while the lease holds; True when the SCAN ended."""
        state = await self.state()
        if state.complete:
            return True
        cursor, counted = state.cursor, state.counted
        while True:
            cursor, found = await self.redis.scan(cursor, match=self.keys.conn_pattern, count=CHUNK)
            ids = [self.keys.connection_id(key) for key in found]
            keys = [*fleet_keys(self.keys), *found]
            args: list[str | int] = [state.generation, cursor, LAYOUT, *ids]
            n = int(await self._chunk(keys=keys, args=args))
            if n < 0:
                return False  # a recount began: start over under the new generation
            counted += n
            if progress is not None:
                progress(counted)
            if cursor == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if not await self.leases.renew(self.keys.fleet_lock, token):
                return False
