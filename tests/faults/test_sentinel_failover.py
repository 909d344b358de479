"""Sentinel failover under rotating refreshes: a worker and a beat on a redis+sentinel:// URL
(store and broker) ride out a graceful SENTINEL FAILOVER, then a SIGKILL of the new master
while refreshes are in flight, without losing a grant or sending a refresh token twice.

A publisher sends a forced refresh of one of the connections every 100 ms, and the emulator
rotates the refresh token at each refresh: at any moment some answer is on its way back
(300 ms latency) to a master that may die before replicating it.

What must hold (issue 15): worker and beat carry on by themselves; every grant survives (the
emulator's count); no refresh token is ever sent twice (the emulator counts every resend,
including concurrent ones it forgives); every stored access token is live within one sweep
interval of the new master being up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from config.celery import broker_config
from config.settings import Settings
from tests.conftest import Emu
from tests.faults.harness import SWEEP_INTERVAL, Fleet, Ledger, process_env, seed, stored
from tests.processes import wait_until
from tests.sentinel_group import SKIP_REASON, SentinelGroup, available, replicas_online
from worker.domain.models import ConnectionStatus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason=SKIP_REASON),
]

LATENCY_MS = 300
COUNT = 8
LEASE_TTL = 30.0  # the product's default (the suite's 5 s: a lease no deployment runs)
# Seconds from the last promotion to every connection refreshed again on the new master: the
# restarted node must attach as a replica first (until then `auto` wants one and no rotated
# refresh is sent: worker.store.replication.REPLICA_LOST_GRACE). Measured 8.6-10.4 s on a
# quiet box; one CI run on a box also running a benchmark took over 20 s (each forced refresh
# 0.3-0.8 s, two at a time), so the bound is 45 s. This is a progress check of the publisher's
# forced refreshes; the freshness rule (every stored token live within one sweep
# interval of the new master) is asserted separately, before it, with its own bound.
RECOVERY = 45.0


@contextlib.contextmanager
def refreshing(env: dict[str, str], ids: list[str]) -> Iterator[Callable[[], None]]:
    """Publish a forced (rotating) refresh of one of `ids` every 100 ms, through Sentinel;
    yields the function that stops publishing (again at the exit)."""
    from celery import Celery  # noqa: PLC0415

    app = Celery("sentinel-client")
    # No result backend: a pending result left behind reconnects at garbage collection, to
    # sentinels that are gone by then (the session hung in its teardown).
    config = dict(broker_config(Settings.from_env(env)), result_backend=None)
    app.conf.update(config, task_serializer="json")
    stop = threading.Event()

    def publish() -> None:
        sent = 0
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the broker fails over too
                app.send_task(
                    "tokenworker.refresh_connection", args=[ids[sent % len(ids)]], queue="ops"
                )
                sent += 1
            stop.wait(0.1)

    def halt() -> None:
        stop.set()
        thread.join(30)

    thread = threading.Thread(target=publish, name="refreshing", daemon=True)
    thread.start()
    try:
        yield halt
    finally:
        halt()
        app.close()


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    started = SentinelGroup().start()
    try:
        yield started
    finally:
        started.stop()


def _versions(port: int, prefix: str, ids: list[str]) -> list[int]:
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        return [int(client.hget(f"{prefix}conn:{cid}", "version") or 0) for cid in ids]
    finally:
        client.close()


def _takeover(group: SentinelGroup, old: int, prefix: str, ids: list[str]) -> tuple[int, float]:
    """(the new master, seconds from now to the first save it took)."""
    start = time.monotonic()
    new = wait_until(lambda: group.master() not in (None, old) and group.master(), 30, "promotion")
    before = _versions(new, prefix, ids)
    wait_until(
        lambda: any(a > b for a, b in zip(_versions(new, prefix, ids), before, strict=True)),
        30,
        "a save on the new master",
        0.02,
    )
    return int(new), time.monotonic() - start


def test_failover_under_rotating_refreshes_loses_no_grant(
    emu: Emu, fleet: Fleet, ledger: Ledger, group: SentinelGroup, prefix: str
) -> None:
    env = process_env(group.url, group.url, prefix, lease_ttl=f"{LEASE_TTL:g}")
    ledger.prefixes.add(prefix)
    pairs = seed(env, emu, count=COUNT, rotation=True)
    ids = [cid for cid, _ in pairs]
    grants = [grant["grant_id"] for _, grant in pairs]
    stats_before = emu.http.get("/_admin/stats").json()
    emu.post("/_admin/config", {"latency_ms": LATENCY_MS})

    def calls() -> int:
        return sum(emu.token_calls(g) for g in grants)

    worker = fleet.worker(env)
    beat = fleet.beat(env)
    publisher = refreshing(env, ids)
    halt = publisher.__enter__()
    try:
        flowing = calls() + COUNT
        wait_until(lambda: calls() >= flowing, 60, "refreshes flowing")
        first = group.master()
        assert first is not None
        group.failover()
        second, graceful = _takeover(group, first, prefix, ids)
        # The new master runs: kill it just as a refresh reaches Salesforce (answer 300 ms out).
        # Refreshes resume once the old master is back, in sync, as its replica (WAIT confirms).
        wait_until(lambda: replicas_online(second) == 1, 30, "the old master in sync as a replica")
        seen = calls()
        # Up to LEASE_TTL: leases taken just before the promotion reached the new master, and
        # their releases went to the old one (lost): explicit checks wait LEASE_TTL for them.
        wait_until(lambda: calls() > seen, LEASE_TTL + 10, "a refresh on the wire", 0.005)
        killed_at = time.time()
        group.kill(second)
        third, takeover = _takeover(group, second, prefix, ids)
        up_at = time.time()
        group.start_node(second, replica_of=third)
        print(f"takeover: graceful {graceful:.2f} s, after SIGKILL {takeover:.2f} s")

        def every_token_live() -> bool:
            read = stored(env, ids)
            found = [read[cid] for cid in ids]
            truth = emu.post("/_admin/tokens", {"tokens": [c.access_token for c in found]})
            return all(t["active"] for t in truth["tokens"]) and all(
                c.status is ConnectionStatus.ACTIVE for c in found
            )

        wait_until(
            every_token_live,
            max(0.0, up_at + SWEEP_INTERVAL - time.time()),
            "every stored access token live within one sweep interval of the new master",
            0.1,
        )

        def all_refreshed_since_up() -> bool:
            found = stored(env, ids)
            return all(c is not None and (c.last_refresh_at or 0) > up_at for c in found.values())

        try:
            wait_until(all_refreshed_since_up, RECOVERY, f"every token refreshed after {third}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{worker.proc.tail(6000)}") from None
        fresh_after = time.time() - up_at
        print(f"every access token refreshed {fresh_after:.1f} s after the promotion")
        assert worker.proc.popen.poll() is None and beat.popen.poll() is None
        sends = beat.log().count("Sending due task sweep")
        wait_until(
            lambda: beat.log().count("Sending due task sweep") > sends,
            3 * SWEEP_INTERVAL,
            "beat still sending sweeps",
        )
        # Judge a settled state: stopping the worker (SIGTERM to its children) would lose
        # whatever answer is in flight then, which is the test's doing, not the failover's.
        halt()
        emu.post("/_admin/config", {"latency_ms": 0})  # the queued forced refreshes drain fast
        last = [-1]

        def settled() -> bool:
            now = calls()
            quiet, last[0] = now == last[0], now
            return quiet

        wait_until(settled, 60, "the emulator sees no more token calls", 1.0)
        final = stored(env, ids)
    finally:
        publisher.__exit__(None, None, None)
        emu.post("/_admin/config", {"latency_ms": 0})
        beat.stop()
        worker.proc.stop()
    problems = []
    for cid, grant_id in zip(ids, grants, strict=True):
        view = emu.grant(grant_id)
        if view["revoked"]:
            problems.append(f"{cid}: grant revoked (a consumed refresh token was sent again)")
        elif final[cid].refresh_token != view["refresh_token"]:
            problems.append(f"{cid}: the stored refresh token is not the one the emulator honours")
    stats = emu.http.get("/_admin/stats").json()
    sent_twice = {
        name: int(stats[name]) - int(stats_before[name])
        for name in ("reuse_revocations", "refresh_token_resends")
    }
    assert problems == [] and sent_twice == dict.fromkeys(sent_twice, 0), (
        problems,
        sent_twice,
        killed_at,
    )
