"""Scenario: many hosts. Two worker nodes (separate `celery worker` processes, their own `-n`
node names) share the queues with one beat and one api; SIGKILL one node while its refreshes
are in flight at a slow (1 s) token endpoint; the surviving node takes its connections over.

Unlike test_worker_killed (one worker, a new one started after the kill), the survivor here was
running all along, so this measures the takeover itself: from the kill until every connection
the dead node had claimed was checked again, which the leases (LEASE_TTL) and the sweep's claim
window bound. What must hold: no refresh token is sent twice (the emulator revokes a grant on
reuse and counts it), nothing but the answers in flight at the kill is lost (the emulator, like
Salesforce, commits a rotation when the request arrives), and afterwards every other connection
is active and the api hands out an access token the org knows and has not expired.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Emu
from tests.faults.harness import (
    CLAIM_WINDOW,
    LEASE_TTL,
    SWEEP_INTERVAL,
    Fleet,
    Ledger,
    celery_client,
    emulator_stats,
    read_key,
    seed,
    stored,
    wait_until,
)
from worker.domain.models import ConnectionStatus

pytestmark = pytest.mark.integration

COUNT = 48
# A batch of 8 checked 8 at a time by each of a node's 2 prefork children: 16 in flight per
# node, so the survivor's own share is done before the dead node's claims run out and the
# takeover measures the leases and the claim window, not the survivor's backlog.
CONCURRENCY = 8
LATENCY_MS = 1000  # every emulator answer, the token endpoint's included, takes a second
# A check once claimed: introspect + refresh + learn, a second each at the emulator.
PROCESSING = 3 * LATENCY_MS / 1000 + 2.0
TAKEOVER_BOUND = CLAIM_WINDOW + 2 * SWEEP_INTERVAL + PROCESSING


def _fresh_through_api(api_url: str, key: str, ids: list[str], emu: Emu) -> list[str]:
    """The connections whose credentials the api refused, or whose access token the org does
    not know or has let expire."""
    stale = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=15) as http:
        for cid in ids:
            answer = http.get(f"/connections/{cid}/credentials")
            if answer.status_code != 200:
                stale.append(f"{cid}: {answer.status_code}")
                continue
            token = answer.json()["access_token"]
            [fact] = emu.post("/_admin/tokens", {"tokens": [token]})["tokens"]
            if not fact["known"] or float(fact["exp"]) <= time.time():
                stale.append(f"{cid}: {fact}")
    return stale


def test_sigkill_one_of_two_nodes_the_other_takes_over_without_reuse(
    emu: Emu, fleet: Fleet, proc_env: dict[str, str], ledger: Ledger
) -> None:
    env = dict(
        proc_env,
        TOKENWORKER_BATCH_SIZE=str(CONCURRENCY),
        TOKENWORKER_CONCURRENCY=str(CONCURRENCY),
    )
    pairs = seed(env, emu, count=COUNT, rotation=True)
    ids = [cid for cid, _ in pairs]
    grant_of = {cid: grant["grant_id"] for cid, grant in pairs}

    key = read_key(ledger, env, "two")
    api_url, _ = fleet.api(env)
    doomed, survivor = fleet.worker(env), fleet.worker(env)
    assert doomed.node != survivor.node
    doomed.wait_ready()
    survivor.wait_ready()
    emu.post("/_admin/config", {"latency_ms": LATENCY_MS})
    revocations_before = int(emulator_stats(emu)["reuse_revocations"])

    for grant_id in grant_of.values():
        emu.post(f"/_admin/grants/{grant_id}/expire")
    start = emulator_stats(emu).get("token_calls_by_grant", {})
    seen = {grant: int(start.get(grant, 0)) for grant in grant_of.values()}
    fleet.beat(env)
    cid_of = {grant: cid for cid, grant in grant_of.items()}

    app = celery_client(env, results=False)

    def batch_ids(task: dict[str, object]) -> set[str]:
        """The connection ids of an active check_batch (its args, a list or their repr)."""
        args = task.get("args")
        if isinstance(args, (list, tuple)) and args and isinstance(args[0], (list, tuple)):
            return {str(cid) for cid in args[0]}
        text = str(args)
        return {cid for cid in ids if cid in text}

    def doomed_refreshing() -> bool:
        # A refresh that just arrived at the token endpoint is answered a second later. Kill
        # only when one of those belongs to a batch the doomed node is running: any token call
        # would do no good (it may be the survivor's, while the doomed node is introspecting or
        # learning, and then nothing of it is lost).
        by_grant = emulator_stats(emu).get("token_calls_by_grant", {})
        arrived = set()
        for grant in grant_of.values():
            now = int(by_grant.get(grant, 0))
            if now > seen.get(grant, 0):
                arrived.add(cid_of[grant])
            seen[grant] = now
        if not arrived:
            return False
        active = app.control.inspect(destination=[doomed.node], timeout=0.3).active() or {}
        running = set().union(
            *(
                batch_ids(task)
                for task in active.get(doomed.node, [])
                if task.get("name") == "tokenworker.check_batch"
            )
        )
        return bool(arrived & running)

    try:
        wait_until(doomed_refreshing, 60, "the doomed node refreshing, answers on the wire", 0.02)
    finally:
        app.close()
    doomed.proc.kill()
    killed_at = time.time()

    def all_checked() -> bool:
        return all(c.last_check_at is not None for c in stored(env, ids).values())

    # The dead node's connections wait for their leases and the sweep's claim window to run out.
    wait_until(
        all_checked,
        TAKEOVER_BOUND,
        f"the survivor checks every connection, the dead node's too (claim window + 2 sweeps "
        f"+ {PROCESSING:g} s = {TAKEOVER_BOUND:g} s)\n{survivor.proc.tail()}",
        0.25,
    )
    final = stored(env, ids)
    # An answer in flight at the kill is lost (the rotation was committed on arrival): only
    # those end reauth_required, all of them checked by the survivor after the kill.
    lost = [cid for cid in ids if final[cid].status is ConnectionStatus.REAUTH_REQUIRED]
    assert lost, "no refresh of the killed node was in flight: the takeover is untested"
    assert len(lost) <= 2 * CONCURRENCY, f"{len(lost)} lost: more than one node had in flight"
    taken = [final[cid].last_check_at for cid in lost]
    assert all(at is not None and at >= killed_at for at in taken), taken
    takeover = max(at for at in taken if at is not None) - killed_at
    print(
        f"takeover: {takeover:.1f} s after the SIGKILL (lease {LEASE_TTL:g} s, claim window "
        f"{CLAIM_WINDOW:g} s, sweep {SWEEP_INTERVAL:g} s); {len(lost)} answers lost in flight"
    )

    emu.post("/_admin/config", {"latency_ms": 0})
    views = {cid: emu.grant(grant_of[cid]) for cid in ids}
    reuse = int(emulator_stats(emu)["reuse_revocations"]) - revocations_before
    revoked = [cid for cid in ids if views[cid]["revoked"]]
    assert reuse == 0 and revoked == [], (
        f"{reuse} reuse revocations, {len(revoked)} grants revoked: a refresh token was sent "
        "twice after the takeover"
    )
    for cid in lost:
        last_error = final[cid].last_error
        assert last_error is not None and last_error.error == "refresh_token_inactive", cid
    kept = [cid for cid in ids if cid not in lost]
    for cid in kept:
        assert final[cid].status is ConnectionStatus.ACTIVE, (cid, final[cid].last_error)
        assert final[cid].refresh_token == views[cid]["refresh_token"], cid
    stale = _fresh_through_api(api_url, key, kept, emu)
    assert stale == [], f"the api handed out stale credentials after the takeover: {stale[:5]}"
