"""Scenario 4, duplicates: many operators (or scripts) asking at once, and two beats firing
at once, against one real worker. Rotation is on throughout: a refresh token sent twice would
revoke the grant."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from config.settings import Settings
from tests.conftest import Emu
from tests.faults.harness import SWEEP_INTERVAL, Fleet, Ledger, seed, stored, wait_until
from tests.processes import ROOT, open_runtime
from worker.engine.sweep import SweepResult, claimed_ids, collect, sweep
from worker.store.keys import Keys

pytestmark = pytest.mark.integration

CALLERS = 20


def _at_once(ledger: Ledger, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """Start CALLERS `tokenworker ARGS` processes together; their JSON outcomes."""
    argv = [sys.executable, "-m", "worker.cli", *args]
    procs = [
        subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(CALLERS)
    ]
    outcomes = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            ledger.text(f"cli {' '.join(args)} (stdout)", out)
            ledger.text(f"cli {' '.join(args)} (stderr)", err)
            assert proc.returncode in (0, 1), err
            outcomes.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outcomes


def test_twenty_concurrent_refreshes_never_revoke_the_grant(
    emu: Emu, fleet: Fleet, ledger: Ledger, proc_env: dict[str, str]
) -> None:
    """20 simultaneous `refresh --wait` of one rotating connection: each refresh sends the
    newest token exactly once, the grant lives and the store holds its current token."""
    [(cid, grant)] = seed(proc_env, emu, rotation=True)
    fleet.worker(proc_env).wait_ready()
    outcomes = _at_once(ledger, proc_env, "refresh", cid, "--wait", "--json", "--timeout", "90")
    names = [o["outcome"] for o in outcomes]
    view = emu.grant(grant["grant_id"])
    assert set(names) <= {"refreshed", "contended"}, outcomes
    assert view["revoked"] is False, outcomes
    assert stored(proc_env, [cid])[cid].refresh_token == view["refresh_token"]
    assert emu.token_calls(grant["grant_id"]) == names.count("refreshed") == view["refresh_count"]


def test_twenty_concurrent_checks_of_a_due_connection_make_one_token_call(
    emu: Emu, fleet: Fleet, ledger: Ledger, proc_env: dict[str, str]
) -> None:
    """20 simultaneous `check --wait` of one expired connection: one refresh, the other
    checks find the new token fresh (or the lease held)."""
    [(cid, grant)] = seed(proc_env, emu, rotation=True)
    emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
    fleet.worker(proc_env).wait_ready()
    outcomes = _at_once(ledger, proc_env, "check", cid, "--wait", "--json", "--timeout", "90")
    names = [o["outcome"] for o in outcomes]
    assert names.count("refreshed") == 1, outcomes
    assert set(names) <= {"refreshed", "fresh", "contended"}, outcomes
    assert emu.token_calls(grant["grant_id"]) == 1
    view = emu.grant(grant["grant_id"])
    assert view["revoked"] is False
    assert stored(proc_env, [cid])[cid].refresh_token == view["refresh_token"]


def test_two_beat_processes_make_one_token_call_per_due_connection(
    emu: Emu, fleet: Fleet, proc_env: dict[str, str]
) -> None:
    """Two beat processes started together over 20 due connections: one holds the lease and
    sends, the other waits; each connection is refreshed exactly once, and stays so over the
    following sweeps. (Two sweeps really overlapping is tested below, without beat.)"""
    pairs = seed(proc_env, emu, count=20, rotation=True)
    grants = [grant["grant_id"] for _, grant in pairs]
    for grant_id in grants:
        emu.post(f"/_admin/grants/{grant_id}/expire")
    fleet.worker(proc_env).wait_ready()
    beats = [fleet.beat(proc_env), fleet.beat(proc_env)]

    def calls() -> list[int]:
        by_grant = emu.http.get("/_admin/stats", params={"by_grant": "1"}).json()
        counts = by_grant.get("token_calls_by_grant", {})
        return [int(counts.get(g, 0)) for g in grants]

    wait_until(lambda: min(calls()) >= 1, 40, "every due connection refreshed")
    # A second sweep handing the same ids out again would show within two intervals.
    watch_until = time.monotonic() + 2 * SWEEP_INTERVAL + 1
    while time.monotonic() < watch_until:
        assert max(calls()) == 1, calls()
        time.sleep(0.25)
    final = stored(proc_env, [cid for cid, _ in pairs])
    for cid, grant in pairs:
        view = emu.grant(grant["grant_id"])
        assert view["revoked"] is False, cid
        assert final[cid].refresh_token == view["refresh_token"], cid
    sent = sorted(beat.log().count("Sending due task sweep") for beat in beats)
    assert sent[0] == 0 and sent[1] >= 2, sent


# -- two sweeps at once (what two beats firing together would run) ------------------------

DUE = 300


def _due_ids(env: dict[str, str]) -> set[str]:
    """DUE ids due a second ago in a fresh prefix's due index (the sweep reads nothing else)."""
    client = redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"])
    ids = {f"c{n:04d}" for n in range(DUE)}
    client.zadd(Keys(env["TOKENWORKER_KEY_PREFIX"]).due, dict.fromkeys(ids, time.time() - 1))
    client.close()
    return ids


def _sweeps_at_once(env: dict[str, str], guard: bool) -> list[tuple[SweepResult, list[str]]]:
    """Two sweeps started together from two threads, each with its own runtime and Redis
    connections (as two worker processes would); each returns what it dispatched."""
    settings = Settings.from_env(env)
    start = threading.Barrier(2)

    async def one() -> tuple[SweepResult, list[str]]:
        rt = open_runtime(env)
        batches: list[tuple[list[str], float]] = []
        try:
            await rt.redis.ping()  # connected before the start line: both claim at once
            start.wait(10)
            result = await sweep(rt.store, settings, time.time(), collect(batches),
                                 window_guard=guard)  # fmt: skip
            dispatched = claimed_ids(batches)
            return result, dispatched
        finally:
            await rt.close()

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(asyncio.run, one()) for _ in range(2)]
        return [f.result(timeout=60) for f in futures]


def test_two_concurrent_sweeps_claim_disjoint_ids(proc_env: dict[str, str]) -> None:
    """Without the window guard, two sweeps at once on one store (7 ids per claim, so their
    claims interleave) hand out every due id exactly once between them."""
    env = dict(proc_env, TOKENWORKER_BATCH_SIZE="7")
    ids = _due_ids(env)
    (first, a), (second, b) = _sweeps_at_once(env, guard=False)
    assert set(a).isdisjoint(b), f"{len(set(a) & set(b))} ids handed out twice"
    assert sorted(a + b) == sorted(ids)
    assert first.claimed + second.claimed == DUE
    assert first.claimed and second.claimed, "the sweeps did not overlap: nothing was tested"


def test_the_window_guard_lets_one_of_two_scheduled_sweeps_run(proc_env: dict[str, str]) -> None:
    """Two scheduled sweeps at once: one claims everything due, the other is skipped, and
    the guard that skipped it lasts at most half a sweep interval."""
    env = dict(proc_env, TOKENWORKER_BATCH_SIZE="7")
    ids = _due_ids(env)
    results = _sweeps_at_once(env, guard=True)
    skipped = [r for r, _ in results if r.skipped]
    ran = [(r, d) for r, d in results if not r.skipped]
    assert len(ran) == 1, f"{len(ran)} of 2 scheduled sweeps ran"
    assert len(skipped) == 1 and skipped[0].claimed == 0
    [(ran_one, dispatched)] = ran
    assert ran_one.claimed == DUE and sorted(dispatched) == sorted(ids)
    client = redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"])
    guard_ms = client.pttl(Keys(env["TOKENWORKER_KEY_PREFIX"]).sweep_guard)
    client.close()
    assert 0 < guard_ms <= SWEEP_INTERVAL * 500
