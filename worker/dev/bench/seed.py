"""Writing connections straight into the store, pipelined, in the store's own record format.

`connections import` checks and writes one record at a time (right for operators, too slow
for a million). Here each record is still built by `worker.store.codec.connection_fields` and sealed
by `worker.store.crypto.Cipher`, exactly as `Store.save_connection` would store it, but thousands go
per round trip.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

import redis
from redis.typing import EncodableT

from worker.dev.bench.emuadmin import Grant
from worker.domain.models import Connection, ConnectionStatus, ExpirySource
from worker.salesforce.responses import epoch_seconds
from worker.store import codec
from worker.store.crypto import Cipher
from worker.store.keys import Keys

CHUNK = 2_000  # records per round trip; `_WRITE_STEADY` unpacks 2 values per record into one
# ZADD, and Redis's Lua takes at most ~8,000 values per unpack: keep CHUNK under 4,000


def imported(connection_id: str, integration: str, grant: Grant) -> Connection:
    """The record `tokenworker connections import` makes from an emulator grant."""
    issued = epoch_seconds(grant.issued_at_ms)
    return Connection(
        id=connection_id,
        integration=integration,
        refresh_token=grant.refresh_token,
        access_token=grant.access_token,
        instance_url=grant.instance_url,
        issued_at=issued,
        last_refresh_at=issued,
        status=ConnectionStatus.ACTIVE,
        version=1,
    )


NOISE = 132  # random bytes behind a steady record's two tokens
TEXT = NOISE * 4 // 3  # their base64 characters: 176


def _tokens(text: str) -> tuple[str, str]:
    """(refresh, access) tokens shaped like Salesforce's, from TEXT characters of noise."""
    return "5Aep861" + text[:80], "00D5g000004XyZa!AQ" + text[80:TEXT]


def checked(connection_id: str, integration: str, now: float, lifetime: float) -> Connection:
    """A steady connection as the worker leaves it after a check: every field set."""
    refresh, access = _tokens(base64.urlsafe_b64encode(os.urandom(NOISE)).decode())
    return Connection(
        id=connection_id,
        integration=integration,
        refresh_token=refresh,
        access_token=access,
        instance_url="https://acme-corp.my.salesforce.com",
        identity_url="https://login.salesforce.com/id/00D5g000004XyZaEAK/0055g00000AbCdEAAZ",
        issued_at=now,
        expires_at=now + lifetime,
        expiry_source=ExpirySource.INTROSPECTION,
        lifetime=lifetime,
        status=ConnectionStatus.ACTIVE,
        version=3,
        last_check_at=now,
        last_refresh_at=now,
    )


def _mapping(conn: Connection, cipher: Cipher) -> dict[EncodableT, EncodableT]:
    fields: dict[EncodableT, EncodableT] = {
        k: v for k, v in codec.connection_fields(conn, cipher).items() if v != ""
    }
    fields["version"] = str(conn.version)
    return fields


def write(
    client: redis.Redis,
    keys: Keys,
    cipher: Cipher,
    records: Iterable[tuple[Connection, float]],
) -> int:
    """Store (connection, next check) pairs; returns how many were written."""
    written = 0
    for chunk in _chunks(records, CHUNK):
        pipe = client.pipeline(transaction=False)
        scores: dict[str, float] = {}
        for conn, at in chunk:
            pipe.hset(keys.conn(conn.id), mapping=_mapping(conn, cipher))
            scores[conn.id] = at
        pipe.zadd(keys.due, dict(scores))
        pipe.execute()
        written += len(chunk)
    return written


# One EVALSHA per chunk of steady records: every field but the two sealed tokens is the same
# for the whole chunk (one `checked` record's, encoded by the codec), so Python seals two
# tokens per record and Redis writes the hashes; pipelined HSETs spent ~60 us per record in
# redis-py's argument packing and the codec.
_WRITE_STEADY = """
local nstatic = tonumber(ARGV[2])
local args = {}
for i = 1, nstatic do args[i] = ARGV[2 + i] end
args[nstatic + 1] = 'rt'
args[nstatic + 3] = 'at'
local scores = {}
for i = 3 + nstatic, #ARGV, 4 do
  args[nstatic + 2] = ARGV[i + 1]
  args[nstatic + 4] = ARGV[i + 2]
  redis.call('HSET', ARGV[1] .. ARGV[i], unpack(args))
  scores[#scores + 1] = ARGV[i + 3]
  scores[#scores + 1] = ARGV[i]
end
redis.call('ZADD', KEYS[1], unpack(scores))
return #scores / 2
"""


def write_steady(
    client: redis.Redis,
    keys: Keys,
    cipher: Cipher,
    integration: str,
    records: Iterable[tuple[str, float]],
    now: float,
    lifetime: float,
) -> int:
    """Store (connection id, next check) pairs as `checked` records at `now`, each with its
    own tokens sealed for it, exactly the hashes `write` makes of them, thousands per call."""
    fields = _mapping(checked("-", integration, now, lifetime), cipher)
    del fields["rt"], fields["at"]
    static = [item for pair in fields.items() for item in pair]
    script = client.register_script(_WRITE_STEADY)
    written = 0
    for chunk in _chunks(records, CHUNK):
        args: list[EncodableT] = [keys.conn(""), len(static), *static]
        noise = base64.urlsafe_b64encode(os.urandom(NOISE * len(chunk))).decode()
        for n, (connection_id, at) in enumerate(chunk):
            refresh, access = _tokens(noise[TEXT * n : TEXT * (n + 1)])
            args += (
                connection_id,
                cipher.seal(refresh, f"{connection_id}:rt"),
                cipher.seal(access, f"{connection_id}:at"),
                at,
            )
        written += int(script(keys=[keys.due], args=args))
    return written


def reschedule(client: redis.Redis, keys: Keys, ids: list[str], at: float) -> None:
    """Make connections due at `at` (the benchmark's "everything is due now")."""
    for start in range(0, len(ids), 10 * CHUNK):
        client.zadd(keys.due, dict.fromkeys(ids[start : start + 10 * CHUNK], at))


T = TypeVar("T")


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
