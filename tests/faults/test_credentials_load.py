"""Credentials under load (issue 13): 20 connections whose sessions last 15 s, 50 concurrent
readers for 60 s against the real `api` process, a Celery worker and beat, rotation on.

Rules, each checked against the emulator's own truth (the org decides, not tokenworker):

* no read returns a token the org considers expired at the moment the read was sent; and,
  stronger (the API's promise, DESIGN "Serving host applications"), none the org ends within
  the default `min_ttl` (the refresh margin, 5 s) of that moment. Every distinct token is
  looked up once at the emulator (POST /_admin/tokens: its exact `exp`, no session extension)
  right when it is first seen; every read of it is then compared with that `exp`;
* refresh calls per connection during the 60 s: at most 1.2 x 60 / (15 - 5) = 7.2, hence 7
  (one refresh per lifetime-minus-margin is the rate that keeps every handed-out token
  `min_ttl` fresh; a window of 60 s can hold 7 refreshes 10 s apart, never 8), and at most
  floor(1.2 x 6 x 20) = 144 in all; at least 4 each (60 / 15: fewer, and some session would
  have ended with nobody renewing it: the readers would have seen it);
* no refresh token is ever sent twice: the emulator counts every token call whose refresh
  token an earlier call already carried (`refresh_token_resends`), and with rotation a resend
  also shows as a concurrent-refresh rejection or a reuse revocation: all three stay 0.

Reading the figures: the readers are one asyncio process (aiohttp, keep-alive) in the test
process, which also hosts the emulator thread; the api is one uvicorn process.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.conftest import Emu
from tests.faults.harness import (
    Fleet,
    Ledger,
    emulator_stats,
    read_key,
    seed,
)

CONNECTIONS = 20
LIFETIME = 15.0
MARGIN = 5.0  # TOKENWORKER_REFRESH_MARGIN, hence the default min_ttl
READERS = 50
DURATION = 60.0
PER_CONNECTION = DURATION / (LIFETIME - MARGIN)  # 6 refreshes per connection in the window
BOUND = 1.2 * PER_CONNECTION  # 7.2
MOST_EACH = math.floor(BOUND)  # 7
MOST_ALL = math.floor(BOUND * CONNECTIONS)  # 144
LEAST_EACH = math.floor(DURATION / LIFETIME)  # 4


@dataclass
class Tally:
    reads: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    expired: list[tuple[str, float]] = field(default_factory=list)  # (connection, s past exp)
    short: list[tuple[str, float]] = field(default_factory=list)  # (connection, s left)
    unknown: list[str] = field(default_factory=list)  # connections: a token the org never knew
    distinct: int = 0
    least_left: float = math.inf  # the smallest exp - sent seen, seconds
    per_connection: Counter[str] = field(default_factory=Counter)


class Truth:
    """Each distinct access token's exp at the emulator, asked once, at first sight."""

    def __init__(self, session: aiohttp.ClientSession, emulator_url: str) -> None:
        self.session = session
        self.url = emulator_url + "/_admin/tokens"
        self.known: dict[str, asyncio.Task[dict[str, Any]]] = {}

    async def of(self, token: str) -> dict[str, Any]:
        task = self.known.get(token)
        if task is None:
            task = asyncio.ensure_future(self._ask(token))
            self.known[token] = task
        return await task

    async def _ask(self, token: str) -> dict[str, Any]:
        async with self.session.post(self.url, json={"tokens": [token]}) as answer:
            answer.raise_for_status()
            body: dict[str, Any] = await answer.json()
        truth: dict[str, Any] = body["tokens"][0]
        return truth


async def _read_for(api_url: str, key: str, ids: list[str], emulator_url: str) -> Tally:
    tally = Tally()
    timeout = aiohttp.ClientTimeout(total=15)
    connector = aiohttp.TCPConnector(limit=READERS + 8)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        truth = Truth(session, emulator_url)
        end = time.monotonic() + DURATION

        async def reader(n: int) -> None:
            i = n
            while time.monotonic() < end:
                connection_id = ids[i % len(ids)]
                i += 7  # coprime with 20: every reader walks every connection
                sent = time.time()
                try:
                    async with session.get(
                        f"{api_url}/connections/{connection_id}/credentials", headers=headers
                    ) as answer:
                        status = answer.status
                        text = await answer.text()
                except (aiohttp.ClientError, TimeoutError) as error:
                    tally.errors[type(error).__name__] += 1
                    continue
                tally.reads += 1
                tally.statuses[status] += 1
                try:
                    body = json.loads(text)
                except ValueError:
                    body = {"error": f"not JSON: {text[:40]}"}
                if status != 200:
                    tally.errors[f"{status} {body.get('error')}"] += 1
                    continue
                tally.per_connection[connection_id] += 1
                fact = await truth.of(body["access_token"])
                if not fact["known"]:
                    tally.unknown.append(connection_id)
                    continue
                left = float(fact["exp"]) - sent
                tally.least_left = min(tally.least_left, left)
                if left <= 0:
                    tally.expired.append((connection_id, -left))
                elif left < MARGIN:
                    tally.short.append((connection_id, left))

        await asyncio.gather(*(reader(n) for n in range(READERS)))
        tally.distinct = len(truth.known)
    return tally


def test_credentials_under_load(
    proc_env: dict[str, str], emu: Emu, fleet: Fleet, ledger: Ledger
) -> None:
    env = {
        **proc_env,
        "TOKENWORKER_REFRESH_MARGIN": f"{MARGIN:g}",
        "TOKENWORKER_DEFAULT_LIFETIME": f"{LIFETIME:g}",
    }
    seeded = seed(env, emu, count=CONNECTIONS, rotation=True, lifetime=LIFETIME)
    ids = [connection_id for connection_id, _ in seeded]
    grant_of = {connection_id: grant["grant_id"] for connection_id, grant in seeded}

    key = read_key(ledger, env, "load")
    worker = fleet.worker(env)
    fleet.beat(env)
    worker.wait_ready()
    api_url, api = fleet.api(env)

    before = emulator_stats(emu)
    started = time.monotonic()
    tally = asyncio.run(_read_for(api_url, key, ids, emu.base_url))
    seconds = time.monotonic() - started
    after = emulator_stats(emu)

    def delta(name: str) -> int:
        return int(after[name]) - int(before[name])

    by_grant_before = before.get("token_calls_by_grant", {})
    by_grant_after = after.get("token_calls_by_grant", {})
    refreshes = {
        connection_id: int(by_grant_after.get(grant, 0)) - int(by_grant_before.get(grant, 0))
        for connection_id, grant in grant_of.items()
    }
    summary = (
        f"{tally.reads} reads in {seconds:.1f}s ({tally.reads / seconds:.0f}/s), "
        f"{tally.distinct} distinct tokens, least left {tally.least_left:.2f}s, "
        f"statuses {dict(tally.statuses)}, errors {dict(tally.errors)}, "
        f"refreshes per connection {sorted(refreshes.values())} "
        f"(total {sum(refreshes.values())}), token calls {delta('token_calls')}, "
        f"resends {delta('refresh_token_resends')}, reuse revocations "
        f"{delta('reuse_revocations')}, concurrent rejections "
        f"{delta('concurrent_refresh_rejections')}"
    )
    print(summary)
    if tally.errors:
        print(api.tail(3000))
    ledger.text("load summary", summary)

    broken = []
    # The load was real: every reader ran the whole minute, every connection was read.
    if seconds < DURATION or set(tally.per_connection) != set(ids) or tally.reads < 10 * READERS:
        broken.append("the load: not every connection read for the whole minute")
    if tally.statuses != Counter({200: tally.reads}) or tally.errors:
        broken.append(f"every read answered 200: {dict(tally.errors)}")
    # Rule 1: never an expired token, nor one ending within min_ttl of the read.
    if tally.unknown:
        broken.append(f"tokens the org does not know: {tally.unknown[:5]}")
    if tally.expired:
        broken.append(f"expired tokens handed out (connection, s past exp): {tally.expired[:5]}")
    if tally.short:
        broken.append(f"tokens with < {MARGIN:g}s left (connection, s left): {tally.short[:5]}")
    # Rule 2: refreshes within 1.2x of one per (lifetime - margin) per connection.
    if max(refreshes.values()) > MOST_EACH or sum(refreshes.values()) > MOST_ALL:
        broken.append(f"refreshes: at most {MOST_EACH} each and {MOST_ALL} in all")
    if min(refreshes.values()) < LEAST_EACH:
        broken.append(f"refreshes: at least {LEAST_EACH} each")
    # Rule 3: no refresh token sent twice.
    resent = [
        name
        for name in ("refresh_token_resends", "reuse_revocations", "concurrent_refresh_rejections")
        if delta(name)
    ]
    if resent:
        broken.append(f"a refresh token was sent twice: {resent}")
    assert not broken, "; ".join(broken) + "\n" + summary
