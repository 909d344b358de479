"""Scenario 4, duplicates: many operators (or scripts) asking at once, and two beats firing
at once, against one real worker. Rotation is on throughout: a refresh token sent twice would
revoke the grant."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import Emu
from tests.faults.harness import (
    ROOT,
    SWEEP_INTERVAL,
    Fleet,
    Ledger,
    seed,
    stored,
    wait_until,
)

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


def test_two_beats_firing_at_once_make_one_token_call_per_due_connection(
    emu: Emu, fleet: Fleet, proc_env: dict[str, str]
) -> None:
    """Two beat processes started together over 20 due connections: each connection is
    refreshed exactly once, and stays so over the following sweeps."""
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
    sent = [beat.log().count("Sending due task sweep") for beat in beats]
    assert sum(sent) >= 2, sent
