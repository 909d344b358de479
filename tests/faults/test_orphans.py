"""D1, as an operator meets it: the store is also the broker, a worker (-c 2) runs check
batches fired by sweeps every 2 s, 40 connections rotate their refresh tokens every ~10 s at
300 ms latency, and the store restarts (SIGTERM, 10 s down, back on the same port and data).

Sweeps are sent by a loop here, as a supervisor restarting beat would fire them: beat itself
exits on a store outage until its own fix lands, and what is tested is the worker.

On the code before the fix, the first check of a batch to meet a dead pooled connection
failed the whole batch and left the others suspended in the child's loop (orphans); they
resumed later without their lease, some inside a send, and sent consumed refresh tokens again
(Salesforce then revokes the grant)."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Emu
from tests.faults.harness import (
    SWEEP_INTERVAL,
    Fleet,
    Ledger,
    Worker,
    celery_client,
    process_env,
    seed,
    stored,
    wait_until,
)
from tests.faults.orphan_probe import MARK
from worker.dev.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration

CONNECTIONS = 40
LIFETIME = 20  # seconds: with a 10 s margin every connection refreshes about every 10 s
LATENCY_MS = 300
OUTAGE = 10.0
FRESH_WITHIN = 30.0  # seconds after Redis returns: claim window 10 s + a sweep + the refreshes


@contextlib.contextmanager
def sweeping(env: dict[str, str]) -> Iterator[None]:
    """Send tokenworker.sweep every SWEEP_INTERVAL, as beat would (sends fail while the
    broker is down; the next one goes out when it is back)."""
    stop = threading.Event()

    def fire() -> None:
        app = celery_client(env, results=False)
        try:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    app.send_task(
                        "tokenworker.sweep", queue="sweep", expires=SWEEP_INTERVAL, retry=False
                    )
                stop.wait(SWEEP_INTERVAL)
        finally:
            app.close()

    thread = threading.Thread(target=fire, name="sweeping", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def _probed_worker(fleet: Fleet, env: dict[str, str]) -> Worker:
    node = "orphans"
    argv = [
        sys.executable, "-m", "celery", "-A", "config.celery", "worker",
        "-Q", "sweep,refresh,ops", "-c", "2", "--loglevel", "INFO",
        "--without-mingle", "--without-gossip", "-n", f"{node}@%h",
        "--include", "tests.faults.orphan_probe",
    ]  # fmt: skip
    proc = fleet.start("worker", argv, env)
    return Worker(proc, f"{node}@{socket.gethostname()}", env)


def _stale(env: dict[str, str], emu: Emu, pairs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Connections whose stored access token is not the grant's latest, or has expired."""
    now = time.time()
    records = stored(env, [cid for cid, _ in pairs])
    stale = []
    for cid, grant in pairs:
        view = emu.grant(grant["grant_id"])
        conn = records[cid]
        if conn is None or conn.access_token != view["access_token"] or view["exp"] <= now:
            stale.append(cid)
    return stale


def test_a_store_restart_under_sweeps_orphans_no_check_and_resends_no_token(
    emu: Emu,
    fleet: Fleet,
    ledger: Ledger,
    redis_factory: Callable[[], EmbeddedRedis],
    prefix: str,
) -> None:
    store = redis_factory()
    broker = f"redis://127.0.0.1:{store.port}/1"  # the same Redis: it restarts with the store
    env = process_env(
        store.url, broker, prefix,
        default_lifetime=str(LIFETIME), refresh_margin="10", retry_base="2", retry_max="30",
    )  # fmt: skip
    ledger.prefixes.add(prefix)
    pairs = seed(env, emu, count=CONNECTIONS, rotation=True, lifetime=LIFETIME)
    reuse_before = emu.http.get("/_admin/stats").json()["reuse_revocations"]
    emu.post("/_admin/config", {"latency_ms": LATENCY_MS})
    worker = _probed_worker(fleet, env)
    worker.wait_ready()
    with sweeping(env):
        refreshed = sum(emu.token_calls(grant["grant_id"]) for _, grant in pairs)
        wait_until(
            lambda: sum(emu.token_calls(g["grant_id"]) for _, g in pairs) >= refreshed + 40,
            60, "rotating refreshes flowing",
        )  # fmt: skip
        store.stop(remove=False)  # SIGTERM
        time.sleep(OUTAGE)  # the outage itself is the scenario, not a wait for a condition
        store.start()
        back = time.monotonic()
        wait_until(
            lambda: not _stale(env, emu, pairs),
            FRESH_WITHIN + 30, f"every connection fresh\n{worker.proc.tail()}", interval=1.0,
        )  # fmt: skip
        fresh_after = time.monotonic() - back
        time.sleep(15)  # orphans resume at a child's next task: give them the chance
    emu.post("/_admin/config", {"latency_ms": 0})
    reuse = emu.http.get("/_admin/stats").json()["reuse_revocations"] - reuse_before
    revoked = [cid for cid, g in pairs if emu.grant(g["grant_id"])["revoked"]]
    orphans = [line for line in worker.proc.log().splitlines() if MARK in line]
    assert (reuse, revoked) == (0, []), f"consumed refresh tokens sent again: {revoked}"
    assert orphans == [], orphans[:5]
    assert fresh_after <= FRESH_WITHIN, f"every connection fresh only {fresh_after:.1f}s after"
