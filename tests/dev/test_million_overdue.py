"""worker/dev/bench/millionprobe.Overdue: how late each check started against its due time,
for ids a sweep claims before they come due (a real Redis server)."""

from __future__ import annotations

import uuid

import redis

from worker.dev.bench.millionprobe import WAIT_S, Overdue
from worker.store import codec
from worker.store.keys import Keys

NOW = 1_800_000_000.0
CHECKED = codec.name("last_check_at")


def test_a_check_claimed_ahead_of_its_due_time_is_measured_from_that_time(
    redis_server: object,
) -> None:
    store = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    keys = Keys(f"od-{uuid.uuid4().hex[:6]}:")
    try:
        due = {"soon": NOW + 30, "lost": NOW + 5, "far": NOW + 100}
        store.zadd(keys.due, due)
        for cid in due:
            store.hset(keys.conn(cid), CHECKED, NOW - 3600)  # the previous check
        overdue = Overdue(store, keys, ahead=70.0)
        overdue.take(NOW)
        assert set(overdue.watching) == {b"soon", b"lost"}  # not yet due, but claimable
        store.zadd(keys.due, {"soon": NOW + 300, "lost": NOW + 300})  # a sweep claims both
        overdue.take(NOW + 2)
        assert overdue.late == [] and set(overdue.watching) == {b"soon", b"lost"}
        store.hset(keys.conn("soon"), CHECKED, NOW + 30.4)  # its paced batch started
        overdue.take(NOW + 32)
        assert [round(late, 3) for late in overdue.late] == [0.4]
        overdue.take(NOW + 5 + WAIT_S + 1)  # "lost" never got its check
        assert (overdue.unresolved, set(overdue.watching)) == (1, {b"far"})  # far: now near
    finally:
        store.delete(keys.due, *(keys.conn(cid) for cid in ("soon", "lost", "far")))
        store.close()


def test_a_check_that_started_early_counts_as_on_time(redis_server: object) -> None:
    store = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    keys = Keys(f"od-{uuid.uuid4().hex[:6]}:")
    try:
        store.zadd(keys.due, {"a": NOW + 10})
        overdue = Overdue(store, keys, ahead=70.0)
        overdue.take(NOW)
        store.zadd(keys.due, {"a": NOW + 7200})  # checked and rescheduled
        store.hset(keys.conn("a"), CHECKED, NOW + 9.5)  # in a batch that began at NOW + 9.5
        overdue.take(NOW + 12)
        assert overdue.late == [0.0]
    finally:
        store.delete(keys.due, keys.conn("a"))
        store.close()


def test_each_sample_reads_only_the_ids_that_came_near_since_the_last(
    redis_server: object,
) -> None:
    """Re-reading every id within `ahead` at each sample held the store for 15-32 ms every
    2 s at a million, beside the reads being measured; a sample reads the new slice only."""
    store = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    keys = Keys(f"od-{uuid.uuid4().hex[:6]}:")
    try:
        store.zadd(keys.due, {f"c{n}": NOW + 10 + n * 0.01 for n in range(1000)})
        store.zadd(keys.due, {"next": NOW + 71})
        overdue = Overdue(store, keys, ahead=70.0)
        overdue.take(NOW)
        assert overdue.read == 1000
        overdue.take(NOW + 2)  # only "next" came within 70 s since
        assert overdue.read == 1001 and b"next" in overdue.watching
    finally:
        store.delete(keys.due)
        store.close()
