"""Scenario 3, store restart: the store Redis (AOF on, deploy/redis.conf) restarts while idle
and while rotating refreshes flow through a worker; and the worker's start-up check of the
store's durability (warn, or refuse with TOKENWORKER_REQUIRE_PERSISTENCE=true)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.conftest import Emu
from tests.faults.harness import (
    Fleet,
    Ledger,
    cli,
    dump_server,
    process_env,
    redis_values,
    seed,
    sending,
    start_redis_with,
    stored,
    wait_until,
    with_runtime,
)
from worker.dev.embedded import EmbeddedRedis
from worker.engine.runtime import Runtime
from worker.store.keys import Keys

pytestmark = pytest.mark.integration


def _tokens(env: dict[str, str], ids: list[str]) -> dict[str, tuple[str, str | None]]:
    return {cid: (c.refresh_token, c.access_token) for cid, c in stored(env, ids).items()}


def test_idle_store_restart_keeps_every_key_and_token(
    emu: Emu, ledger: Ledger, redis_factory: Callable[[], EmbeddedRedis], prefix: str
) -> None:
    """Every key, value and decrypted token is identical after an idle store restart."""
    store = redis_factory()
    env = process_env(store.url, f"redis://127.0.0.1:{store.port}/1", prefix)
    ledger.prefixes.add(prefix)
    pairs = seed(env, emu, count=20, rotation=True)
    ids = [cid for cid, _ in pairs]

    async def refresh_half(rt: Runtime) -> list[Any]:
        return await rt.refresher.check_many(ids[:10], force=True)

    with_runtime(env, refresh_half)  # rotated tokens, learned expiries, events
    client = redis.Redis(port=store.port)
    before, tokens_before = redis_values(client), _tokens(env, ids)
    client.close()
    store.restart()
    client = redis.Redis(port=store.port)
    after, tokens_after = redis_values(client), _tokens(env, ids)
    client.close()
    assert len(before) > len(ids)
    assert after == before
    assert tokens_after == tokens_before
    for cid, grant in pairs:
        assert tokens_after[cid][0] == emu.grant(grant["grant_id"])["refresh_token"], cid


def refreshing(env: dict[str, str], ids: list[str]) -> contextlib.AbstractContextManager[list[int]]:
    """Publish a forced (rotating) refresh of one of `ids` every 100 ms; yields [sent]."""
    return sending(env, ids, "tokenworker.refresh_connection", 0.1)


LATENCY_MS = 300
OUTAGE = 1.0  # seconds the store is down: longer than one answer is on the wire


def test_store_restart_under_rotating_refreshes_loses_no_token(
    emu: Emu,
    fleet: Fleet,
    ledger: Ledger,
    redis_factory: Callable[[], EmbeddedRedis],
    broker_url: str,
    prefix: str,
) -> None:
    """A store restart while a rotated token is on its way back from Salesforce loses no
    token, revokes no grant, and the worker goes on refreshing afterwards."""
    store = redis_factory()
    env = process_env(store.url, broker_url, prefix)
    ledger.prefixes.add(prefix)
    pairs = seed(env, emu, count=8, rotation=True)
    ids = [cid for cid, _ in pairs]
    grants = [grant["grant_id"] for _, grant in pairs]
    emu.post("/_admin/config", {"latency_ms": LATENCY_MS})
    worker = fleet.worker(env)
    worker.wait_ready()
    broker = redis.Redis.from_url(broker_url)
    client = redis.Redis(port=store.port)
    keys_before = sorted(client.scan_iter(match=f"{prefix}conn:*"))

    def calls() -> int:
        return sum(emu.token_calls(g) for g in grants)

    with refreshing(env, ids):
        wait_until(lambda: calls() >= 6, 30, "rotating refreshes flowing")
        seen = calls()
        # A refresh just reached Salesforce: its answer (and the save) is 300 ms away.
        wait_until(lambda: calls() > seen, 10, "a refresh on the wire", 0.005)
        store.stop(remove=False)
        time.sleep(OUTAGE)  # the outage itself is the scenario, not a wait for a condition
        store.start()
        restarted_calls = calls()
        wait_until(lambda: calls() >= restarted_calls + 6, 40, "refreshes go on after it")
    emu.post("/_admin/config", {"latency_ms": 0})

    def drained() -> bool:
        queued = sum(int(broker.llen(q)) for q in ("ops", "refresh", "sweep"))
        leases = list(client.scan_iter(match=f"{prefix}lease:*"))
        return queued == 0 and not leases and not broker.hlen("unacked")

    wait_until(drained, 60, f"the queue drained\n{worker.proc.tail()}", 0.2)
    assert sorted(client.scan_iter(match=f"{prefix}conn:*")) == keys_before
    final = stored(env, ids)
    problems = []
    for cid, grant_id in zip(ids, grants, strict=True):
        view = emu.grant(grant_id)
        if view["revoked"]:
            problems.append(f"{cid}: grant revoked (its consumed refresh token was sent again)")
        elif final[cid].refresh_token != view["refresh_token"]:
            problems.append(f"{cid}: the stored refresh token is not the current one")
    assert problems == [], problems
    done = cli(ledger, env, "refresh", ids[0], "--wait", "--json", "--timeout", "30")
    assert done.returncode == 0, done.stdout + done.stderr + worker.proc.tail()
    broker.close()
    client.close()


def _json(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@pytest.fixture
def volatile_store(ledger: Ledger) -> Iterator[str]:
    """A Redis without AOF or RDB that may evict: everything deploy/redis.conf forbids."""
    directory = tempfile.mkdtemp(prefix="tokenworker-volatile-")
    proc, port = start_redis_with(
        directory, "--appendonly", "no", "--save", "", "--maxmemory-policy", "allkeys-lru"
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        ledger.snapshots.append((f"volatile redis :{port}", dump_server(port)))
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def test_worker_warns_loudly_about_a_store_that_can_lose_tokens(
    fleet: Fleet, volatile_store: str, broker_url: str, prefix: str
) -> None:
    """Without REQUIRE_PERSISTENCE a worker on a non-durable store starts, logging store.unsafe
    for both the missing AOF and the evicting policy."""
    worker = fleet.worker(process_env(volatile_store, broker_url, prefix))
    worker.wait_ready()
    unsafe = [line for line in worker.proc.log().splitlines() if "store.unsafe" in line]
    assert any("appendonly is off" in line for line in unsafe), worker.proc.tail()
    assert any("allkeys-lru" in line for line in unsafe), worker.proc.tail()
    records = [_json(line) for line in unsafe]
    assert all(r is not None and r.get("level") == "warning" for r in records), (
        f"store.unsafe is not a JSON warning although TOKENWORKER_LOG_FORMAT=json: {unsafe}"
    )


def test_worker_refuses_a_store_that_can_lose_tokens_when_persistence_is_required(
    fleet: Fleet, volatile_store: str, broker_url: str, prefix: str
) -> None:
    """With REQUIRE_PERSISTENCE=true the worker exits non-zero, saying why, and consumes nothing."""
    env = process_env(volatile_store, broker_url, prefix, require_persistence="true")
    worker = fleet.worker(env)
    wait_until(lambda: worker.proc.popen.poll() is not None, 45, "the worker exits", 0.1)
    log = worker.proc.log()
    assert worker.proc.popen.returncode != 0, log[-3000:]
    assert "refusing to start" in log and "appendonly is off" in log, log[-3000:]
    assert not redis.Redis.from_url(volatile_store).exists(Keys(prefix).heartbeat)
