"""Scenario 1, worker killed: SIGKILL a whole worker (parent and prefork children) while it
refreshes rotating tokens through a 300 ms Salesforce, then let a new worker recover.

What can and cannot hold: the emulator, like Salesforce, commits a rotation when the request
arrives and answers 300 ms later, so a refresh whose answer was still on the wire when the
worker died has lost its new refresh token; no client can keep it. Everything else must hold:
nothing but those in-flight answers is lost, no grant is ever revoked for reuse (the consumed
token must never be sent again), those in-flight connections end `reauth_required` with
`refresh_token_inactive`, and every due connection is checked within two sweep intervals plus
the claim window (+ PROCESSING: 19 s here) once a new worker runs. Not within two sweep
intervals alone: ids claimed by the killed worker's batches stay out of reach until their
claim runs out.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import Emu
from tests.faults.harness import (
    CLAIM_WINDOW,
    SWEEP_INTERVAL,
    Fleet,
    emulator_stats,
    seed,
    stored,
    token_calls,
    wait_until,
)
from worker.domain.models import ConnectionStatus

pytestmark = pytest.mark.integration

COUNT = 40
CONCURRENCY = 4  # per prefork child of the first worker: 8 refreshes in flight at most
LATENCY_MS = 300
# Time for the checks themselves once claimed: introspect + refresh + learn, 300 ms each.
PROCESSING = 5.0


def test_sigkill_mid_refresh_loses_only_in_flight_answers_and_revokes_nothing(
    emu: Emu, fleet: Fleet, proc_env: dict[str, str]
) -> None:
    """A SIGKILLed worker loses at most its in-flight answers (and at least one is in flight),
    never causes a reuse revocation, and a new worker checks every due connection within two
    sweep intervals + the claim window + PROCESSING."""
    env = dict(proc_env, TOKENWORKER_BATCH_SIZE="4", TOKENWORKER_CONCURRENCY=str(CONCURRENCY))
    pairs = seed(env, emu, count=COUNT, rotation=True)
    ids = [cid for cid, _ in pairs]
    grant_of = {cid: grant["grant_id"] for cid, grant in pairs}
    for grant_id in grant_of.values():
        emu.post(f"/_admin/grants/{grant_id}/expire")
    emu.post("/_admin/config", {"latency_ms": LATENCY_MS})
    revocations_before = int(emulator_stats(emu)["reuse_revocations"])

    fleet.beat(env)
    first = fleet.worker(env)
    first.wait_ready()
    seen = [0]

    def a_token_call_just_arrived() -> bool:
        # Its answer is then ~300 ms away: the kill lands in the middle of a refresh.
        now = token_calls(emu, grant_of.values())
        arrived, seen[0] = now > seen[0], now
        return arrived and now >= COUNT // 3

    wait_until(a_token_call_just_arrived, 60, "a third of the refreshes under way", 0.02)
    first.proc.kill()
    killed_at = time.time()
    # Requests already on the wire still land at the emulator: wait until none arrives.
    last = [token_calls(emu, grant_of.values())]

    def settled() -> bool:
        now = token_calls(emu, grant_of.values())
        quiet, last[0] = now == last[0], now
        return quiet

    wait_until(settled, 10, "the emulator sees no more token calls", 0.6)

    after_kill = stored(env, ids)
    views = {cid: emu.grant(grant_of[cid]) for cid in ids}
    lost = [cid for cid in ids if after_kill[cid].refresh_token != views[cid]["refresh_token"]]
    for cid in lost:  # only an answer in flight: one refresh at the emulator, none stored
        original = dict(pairs)[cid]["refresh_token"]
        assert after_kill[cid].refresh_token == original, cid
        assert views[cid]["refresh_count"] == 1, (cid, views[cid])
    assert lost, "no refresh answer was in flight at the kill: the lost-answer path is untested"
    assert len(lost) <= 2 * CONCURRENCY, f"{len(lost)} lost: more than were in flight"
    due = [cid for cid in ids if after_kill[cid].last_check_at is None]
    assert due, "the kill came after every connection was done; nothing left to recover"

    second = fleet.worker(dict(env, TOKENWORKER_BATCH_SIZE="25", TOKENWORKER_CONCURRENCY="50"))
    ready_at = second.wait_ready()
    bound = 2 * SWEEP_INTERVAL + CLAIM_WINDOW + PROCESSING

    def every_due_one_checked() -> bool:
        now = stored(env, due)
        return all(
            c.last_check_at is not None and c.last_check_at >= killed_at for c in now.values()
        )

    wait_until(
        every_due_one_checked,
        max(0.0, ready_at + bound - time.time()),
        f"{len(due)} due connections checked by the new worker "
        f"(2 x sweep interval + claim window + {PROCESSING:g} s = {bound:g} s)\n"
        f"{second.proc.tail()}",
        0.25,
    )

    final = stored(env, ids)
    views = {cid: emu.grant(grant_of[cid]) for cid in ids}
    for cid in ids:
        if cid in lost:
            assert final[cid].status is ConnectionStatus.REAUTH_REQUIRED, cid
            last_error = final[cid].last_error
            assert last_error is not None and last_error.error == "refresh_token_inactive", cid
            continue
        assert final[cid].refresh_token == views[cid]["refresh_token"], cid
        assert final[cid].status is ConnectionStatus.ACTIVE, (cid, final[cid].last_error)
    revoked = [cid for cid in ids if views[cid]["revoked"]]
    reuse = int(emulator_stats(emu)["reuse_revocations"]) - revocations_before
    assert revoked == [] and reuse == 0, (
        f"{len(revoked)} grants revoked ({reuse} reuse revocations): after the kill the new "
        f"worker sent the consumed refresh token of {len(lost)} connection(s) whose rotated "
        f"answer was lost in flight ({sorted(lost)}); it must find out without sending it"
    )
