"""Scenario 2, broker restart: the Celery broker is its own Redis server (as it may be in
production), restarted while beat's sweeps and operator checks are flowing and one check is
in progress (its message delivered, not yet acknowledged: tasks are acks_late)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
import redis

from tests.conftest import Emu
from tests.faults.harness import (
    Fleet,
    Ledger,
    Proc,
    celery_client,
    cli,
    process_env,
    seed,
    sending,
    wait_until,
)
from worker.dev.embedded import EmbeddedRedis
from worker.store.keys import Keys

pytestmark = pytest.mark.integration

RECONNECT_BOUND = 30.0


def flowing(env: dict[str, str], ids: list[str]) -> contextlib.AbstractContextManager[list[int]]:
    """Publish a check of one of `ids` every 50 ms until the block ends; yields [sent]."""
    return sending(env, ids, "tokenworker.check_connection", 0.05)


def test_workers_consume_again_within_30s_of_a_broker_restart(
    emu: Emu,
    fleet: Fleet,
    ledger: Ledger,
    redis_server: EmbeddedRedis,
    redis_factory: Callable[[], EmbeddedRedis],
    prefix: str,
) -> None:
    """After the broker Redis restarts mid-task, a `check --wait` is consumed within 30 s."""
    broker = redis_factory()
    env = process_env(redis_server.url, broker.url, prefix)
    ledger.prefixes.add(prefix)
    pairs = seed(env, emu, count=4)
    [(slow, _)] = seed(env, emu)
    flow = [cid for cid, _ in pairs[1:]]  # pairs[0] is checked by the probe alone
    store = redis.Redis.from_url(redis_server.url)
    worker = fleet.worker(env)
    worker.wait_ready()
    beat = fleet.beat(env)
    with flowing(env, flow) as sent:
        wait_until(lambda: sent[0] >= 10, 20, "checks flowing to the broker")
        before = cli(ledger, env, "check", flow[0], "--wait", "--json", "--timeout", "20")
        assert before.returncode == 0, before.stderr + worker.proc.tail()
        # Beat has sent before, so the restart cuts its live broker connections.
        wait_until(lambda: _sweeps_sent(beat) > 0, 10, "beat sends a sweep before the restart")
        # One check in progress across the restart: Salesforce answers its introspection late.
        integration = json.loads(cli(ledger, env, "connections", "show", slow, "--json").stdout)
        client_id = _client_id(ledger, env, integration["integration"])
        emu.fault(endpoint="introspect", client_id=client_id, delay_s=1.5)
        celery_client(env, results=False).send_task(
            "tokenworker.check_connection", args=[slow], queue="ops"
        )
        lease = Keys(prefix).lease(slow)
        wait_until(lambda: store.exists(lease), 10, "the slow check holds its lease", 0.02)
        broker.restart()
        restarted_at = time.monotonic()
        sweeps_before = _sweeps_sent(beat)
        target, grant = pairs[0]
        emu.post(f"/_admin/grants/{grant['grant_id']}/expire")

        def consumed() -> bool:
            done = cli(ledger, env, "check", target, "--wait", "--json", "--timeout", "5")
            return done.returncode == 0 and json.loads(done.stdout)["outcome"] in (
                "fresh",
                "refreshed",
            )

        left = RECONNECT_BOUND - (time.monotonic() - restarted_at)
        try:
            wait_until(consumed, left, "a check consumed after the broker restart", 0.2)
        except AssertionError as failure:
            probe = _liveness(ledger, env, worker.node)
            raise AssertionError(
                f"{failure}\nthe liveness probe said (exit {probe.returncode}): "
                f"{probe.stdout.strip()}\nworker log and stacks:\n{worker.stacks()}"
            ) from None
        # Beat lives through the broker outage and sends again (its one bounded reconnect
        # per tick; the sweep stays due while a send fails).
        try:
            wait_until(
                lambda: _sweeps_sent(beat) > sweeps_before,
                max(0.0, RECONNECT_BOUND - (time.monotonic() - restarted_at)),
                "beat sends a sweep after the broker restart",
            )
        except AssertionError as failure:
            raise AssertionError(f"{failure}\nbeat log:\n{beat.tail(8000)}") from None
    store.close()
    assert emu.token_calls(grant["grant_id"]) == 1, "the expired token was not refreshed once"
    assert worker.proc.popen.poll() is None, "the worker exited instead of reconnecting"
    assert beat.popen.poll() is None, beat.tail()


def _sweeps_sent(beat: Proc) -> int:
    return beat.log().count("Sending due task sweep")


MAX_AGE = 3.0  # seconds; workers ping themselves every TOKENWORKER_PING_INTERVAL=1 s


def _liveness(ledger: Ledger, env: dict[str, str], node: str) -> subprocess.CompletedProcess[str]:
    return cli(
        ledger, env, "health", "--liveness", "--worker", node, "--max-age", f"{MAX_AGE:g}", "--json"
    )


def test_liveness_fails_while_a_live_worker_consumes_nothing(
    fleet: Fleet, ledger: Ledger, proc_env: dict[str, str]
) -> None:
    """`health --liveness` fails once a worker whose process is alive stops consuming
    (SIGSTOP), and passes again when it consumes again (SIGCONT)."""
    worker = fleet.worker(proc_env)
    worker.wait_ready()

    def verdict() -> int:
        return _liveness(ledger, proc_env, worker.node).returncode

    wait_until(lambda: verdict() == 0, 20, "liveness passes for a consuming worker", 0.2)
    worker.proc.signal_group(signal.SIGSTOP)
    try:
        wait_until(lambda: verdict() == 1, MAX_AGE + 10, "liveness fails for a stopped worker")
        assert worker.proc.popen.poll() is None, "the process is gone: not the case under test"
    finally:
        worker.proc.signal_group(signal.SIGCONT)
    wait_until(lambda: verdict() == 0, 20, "liveness passes again after SIGCONT", 0.2)


def _client_id(ledger: Ledger, env: dict[str, str], integration: str) -> str:
    rows = json.loads(cli(ledger, env, "integrations", "list", "--json").stdout)
    return str(next(row["client_id"] for row in rows if row["name"] == integration))
