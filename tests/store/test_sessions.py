"""worker/store/sessions.py: connect sessions are single-use, expire once, keep a tombstone,
and hold their PKCE verifier sealed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tests.conftest import run
from worker.engine.runtime import Runtime
from worker.salesforce.oauth import new_verifier
from worker.store.sessions import (
    CONSUMED_GRACE,
    TOMBSTONE,
    WON,
    ConnectSession,
    Sessions,
    SessionStatus,
    is_session_id,
)

T = TypeVar("T")
NOW = 1_800_000_000.0
TTL = 600.0


def with_sessions(
    runtime_for: Callable[..., Runtime], body: Callable[[Sessions, Runtime], Awaitable[T]]
) -> T:
    async def go() -> T:
        rt = runtime_for()
        try:
            return await body(Sessions(rt.redis, rt.store.cipher, rt.store.keys), rt)
        finally:
            await rt.close()

    return run(go())


async def _new(
    sessions: Sessions, now: float = NOW, return_to: str | None = None
) -> ConnectSession:
    return await sessions.create("acme", "cust-1", return_to, new_verifier(), now, TTL)


def test_a_session_round_trips_with_its_verifier_sealed(
    runtime_for: Callable[..., Runtime],
) -> None:
    """What is created reads back the same; Redis holds the verifier only sealed."""

    async def body(
        sessions: Sessions, rt: Runtime
    ) -> tuple[ConnectSession, ConnectSession | None, bytes]:
        created = await _new(sessions, return_to="https://app.example/done")
        raw = await rt.redis.hgetall(rt.store.keys.connect_session(created.id))
        dump = b"".join(k + v for k, v in raw.items())
        return created, await sessions.get(created.id), dump

    created, read, dump = with_sessions(runtime_for, body)
    assert read == created
    assert is_session_id(created.id)
    assert created.code_verifier.encode() not in dump
    assert created.state.encode() in dump  # the state is no secret: the browser carries it


def test_ids_and_states_are_unguessable_and_unique(runtime_for: Callable[..., Runtime]) -> None:
    """Each session gets a new random id (32 URL-safe characters) and a new state."""

    async def body(sessions: Sessions, _: Runtime) -> list[ConnectSession]:
        return [await _new(sessions) for _ in range(20)]

    made = with_sessions(runtime_for, body)
    assert len({s.id for s in made}) == len({s.state for s in made}) == 20
    assert all(is_session_id(s.id) and len(s.state) >= 43 for s in made)


def test_the_state_finds_its_session_and_nothing_else(runtime_for: Callable[..., Runtime]) -> None:
    """by_state answers the session for its own state; a forged or empty state finds none."""

    async def body(sessions: Sessions, _: Runtime) -> list[object]:
        created = await _new(sessions)
        found = await sessions.by_state(created.state)
        return [found and found.id == created.id, await sessions.by_state("forged"),
                await sessions.by_state(""), await sessions.get("../etc/passwd")]  # fmt: skip

    assert with_sessions(runtime_for, body) == [True, None, None, None]


def test_only_one_of_many_concurrent_consumers_wins(runtime_for: Callable[..., Runtime]) -> None:
    """A replayed callback, a second tab: twenty simultaneous consumes, exactly one owner."""

    async def body(sessions: Sessions, _: Runtime) -> list[str]:
        created = await _new(sessions)
        return await asyncio.gather(*(sessions.consume(created.id, NOW + 1) for _ in range(20)))

    outcomes = with_sessions(runtime_for, body)
    assert outcomes.count(WON) == 1
    assert outcomes.count("consumed") == 19  # the losers see it taken


def test_a_finished_session_cannot_be_consumed_again(runtime_for: Callable[..., Runtime]) -> None:
    """connected and failed are final: a later consume reports the status, finish is refused."""

    async def body(sessions: Sessions, _: Runtime) -> list[object]:
        created = await _new(sessions)
        assert await sessions.consume(created.id, NOW) == WON
        assert await sessions.finish(created, SessionStatus.CONNECTED)
        again = await sessions.finish(created, SessionStatus.FAILED, "late", "a late failure")
        read = await sessions.get(created.id)
        return [await sessions.consume(created.id, NOW), again, read and read.status]

    assert with_sessions(runtime_for, body) == ["connected", False, SessionStatus.CONNECTED]


def test_a_session_past_its_ttl_expires_exactly_once(runtime_for: Callable[..., Runtime]) -> None:
    """Seen as expired as soon as the TTL passed; the expiry is recorded by one caller only,
    and a callback that comes later cannot consume it."""

    async def body(sessions: Sessions, _: Runtime) -> list[object]:
        created = await _new(sessions)
        before = await sessions.expire(created.id, NOW + TTL - 1)
        seen = created.seen_status(NOW + TTL)
        due = await sessions.due(NOW + TTL)
        winners = await asyncio.gather(*(sessions.expire(created.id, NOW + TTL) for _ in range(5)))
        late = await sessions.consume(created.id, NOW + TTL + 1)
        read = await sessions.get(created.id)
        return [before, seen, created.id in due, sum(winners), late, read and read.error,
                await sessions.due(NOW + TTL)]  # fmt: skip

    assert with_sessions(runtime_for, body) == [
        False, SessionStatus.EXPIRED, True, 1, "expired", "session_expired", [],
    ]  # fmt: skip


def test_a_callback_at_the_deadline_records_the_expiry_itself(
    runtime_for: Callable[..., Runtime],
) -> None:
    """consume after the TTL answers 'expired' once (that caller reports it), then 'expired'
    as a status, and a sweep finds nothing left to report."""

    async def body(sessions: Sessions, _: Runtime) -> list[object]:
        created = await _new(sessions)
        first = await sessions.consume(created.id, NOW + TTL)
        return [first, await sessions.expire(created.id, NOW + TTL + 1)]

    assert with_sessions(runtime_for, body) == ["expired", False]


def test_an_interrupted_callback_ends_expired(runtime_for: Callable[..., Runtime]) -> None:
    """A session consumed by a callback that never finished (a crash) shows `pending`, then
    `expired` with error `interrupted` once the grace has passed."""

    async def body(sessions: Sessions, _: Runtime) -> list[object]:
        created = await _new(sessions)
        await sessions.consume(created.id, NOW)
        consumed = await sessions.get(created.id)
        early = await sessions.expire(created.id, NOW + CONSUMED_GRACE - 1)
        late = await sessions.expire(created.id, NOW + CONSUMED_GRACE)
        read = await sessions.get(created.id)
        assert consumed is not None
        seen = [consumed.seen_status(NOW), consumed.seen_status(NOW + CONSUMED_GRACE)]
        return [*seen, early, late, read and read.error]

    assert with_sessions(runtime_for, body) == [
        SessionStatus.PENDING, SessionStatus.EXPIRED, False, True, "interrupted",
    ]  # fmt: skip


def test_sessions_keep_a_tombstone_then_vanish(runtime_for: Callable[..., Runtime]) -> None:
    """Both keys live until the TTL plus the tombstone (so status still answers), no longer."""

    async def body(sessions: Sessions, rt: Runtime) -> tuple[float, int, int]:
        import time  # noqa: PLC0415

        now = time.time()
        created = await _new(sessions, now=now)
        keys = rt.store.keys
        session_ttl = await rt.redis.pttl(keys.connect_session(created.id))
        state_ttl = await rt.redis.pttl(keys.connect_state(created.state))
        return now, session_ttl, state_ttl

    _, session_ttl, state_ttl = with_sessions(runtime_for, body)
    expected = (TTL + TOMBSTONE) * 1000
    assert expected - 5000 < session_ttl <= expected
    assert expected - 5000 < state_ttl <= expected


def test_a_login_url_is_chosen_only_while_pending(runtime_for: Callable[..., Runtime]) -> None:
    """The My Domain sticks to a live pending session; not after use or expiry."""

    async def body(sessions: Sessions, _: Runtime) -> list[object]:
        live, used = await _new(sessions), await _new(sessions)
        await sessions.consume(used.id, NOW)
        results = [
            await sessions.choose_login(live.id, "https://acme.my.salesforce.com", NOW),
            await sessions.choose_login(used.id, "https://evil.my.salesforce.com", NOW),
            await sessions.choose_login(live.id, "https://late.my.salesforce.com", NOW + TTL),
        ]
        read = await sessions.get(live.id)
        return [*results, read and read.login_url]

    assert with_sessions(runtime_for, body) == [
        True, False, False, "https://acme.my.salesforce.com",
    ]  # fmt: skip
