"""The store phase's bulk writer: records from spawned writer processes are whole, readable
records in the store's format (field for field the hash `seed.write` stores for the same
steady connection), each id once, none of them due."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from config.settings import Settings
from worker.dev.bench import seed, storage
from worker.dev.bench.population import cipher_of
from worker.dev.embedded import EmbeddedRedis
from worker.engine.runtime import redis_client
from worker.store.connections import Store
from worker.store.keys import Keys

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("parallel_from", [10, 10_000], ids=["spawned", "in-process"])
def test_populate_writes_each_record_once_readable_and_not_due(
    redis_server: EmbeddedRedis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    parallel_from: int,
) -> None:
    monkeypatch.setattr(storage, "PARALLEL_FROM", parallel_from)
    settings = Settings(
        redis_url=redis_server.url,
        key_prefix=prefix,
        encryption_keys=(b"k" * 32,),
    )
    now = time.time()
    assert storage.populate(settings, 5, 305, now) == 300
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(prefix)
    due = dict(client.zrange(keys.due, 0, -1, withscores=True))
    ids = [f"s{n:07d}" for n in range(5, 305)]
    assert sorted(due) == [i.encode() for i in ids]
    assert all(now + 3600 <= at <= now + 3600 + 86400 for at in due.values())

    async def read() -> list[object]:
        r = redis_client(settings.store_endpoint)
        try:
            return list(await Store(r, cipher_of(settings), keys).get_connections(ids))
        finally:
            await r.aclose()

    records = asyncio.run(read())
    assert [getattr(c, "id", None) for c in records] == ids
    assert len({getattr(c, "access_token", None) for c in records}) == 300
    written = seed.checked("w0000001", "bench", now, 7200.0)
    seed.write(client, keys, cipher_of(settings), [(written, now + 3600)])
    bulk, single = client.hgetall(keys.conn(ids[0])), client.hgetall(keys.conn(written.id))
    assert {f: v for f, v in bulk.items() if f not in (b"rt", b"at")} == {
        f: v for f, v in single.items() if f not in (b"rt", b"at")
    }
    assert bulk.keys() == single.keys()
    client.close()
