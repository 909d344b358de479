"""The real thing: a Celery worker and beat as separate processes, the real Redis server as
broker and store, the emulator as Salesforce, and the `tokenworker` CLI as ops use it."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from config.settings import Settings
from tests.conftest import FAST, TEST_KEYS, Emu, run
from tests.helpers import connect
from tests.processes import celery_app
from tests.tls_redis import db_url, flush_db, server_env
from worker.dev.embedded import EmbeddedRedis
from worker.engine.runtime import Runtime

pytestmark = pytest.mark.integration
WEBHOOK_SECRET = "whsec-test"


def _env(redis_server: EmbeddedRedis, prefix: str, broker_db: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FAST)
    env.update(
        {
            "TOKENWORKER_REDIS_URL": redis_server.url,
            "TOKENWORKER_BROKER_URL": db_url(redis_server, broker_db),
            **server_env(redis_server),
            "TOKENWORKER_ENCRYPTION_KEYS": TEST_KEYS,
            "TOKENWORKER_KEY_PREFIX": prefix,
            "TOKENWORKER_LOG_FORMAT": "json",
            "TOKENWORKER_SWEEP_INTERVAL": "1",
            "TOKENWORKER_REFRESH_MARGIN": "300",
        }
    )
    return env


class Pool:
    """A Celery worker (prefork, 2 children) started for this module, stopped after it."""

    def __init__(self, env: dict[str, str], log_path: str) -> None:
        self.env = env
        self.log_path = log_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.log_path, "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config.celery", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()


def _wait_ready(env: dict[str, str], timeout: float = 45.0) -> None:
    app = celery_app(env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
    raise RuntimeError("the Celery worker did not answer a ping")


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that keeps what it was sent."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()


@pytest.fixture(scope="module")
def pool(redis_server: EmbeddedRedis, receiver: str) -> Iterator[Pool]:
    prefix = f"c{uuid.uuid4().hex[:8]}:"
    env = _env(redis_server, prefix, broker_db=1)
    env["TOKENWORKER_WEBHOOK_URL"] = receiver
    env["TOKENWORKER_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    env["TOKENWORKER_WORKER_NICE"] = "5"
    flush_db(redis_server, 1)
    with tempfile.NamedTemporaryFile(prefix="celery-", suffix=".log", delete=False) as log:
        path = log.name
    pool = Pool(env, path)
    pool.start(
        "worker",
        "-Q",
        "sweep,refresh,ops",
        "-c",
        "2",
        "--loglevel",
        "INFO",
        "--without-mingle",
        "--without-gossip",
        "-n",
        f"test-{prefix}@%h",
    )
    try:
        _wait_ready(env)
        yield pool
    finally:
        pool.stop()
        os.unlink(path)


def _cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _runtime(env: dict[str, str]) -> Runtime:
    return Runtime.open(Settings.from_env(env))


def _seed(env: dict[str, str], emu: Emu, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    kwargs.setdefault("name", f"acme-{uuid.uuid4().hex[:6]}")  # workers cache integrations

    async def go() -> list[tuple[str, dict[str, Any]]]:
        rt = _runtime(env)
        try:
            return await connect(rt, emu, **kwargs)
        finally:
            await rt.close()

    return run(go())


def _read(env: dict[str, str], fn: Callable[[Runtime], Any]) -> Any:
    async def go() -> Any:
        rt = _runtime(env)
        try:
            return await fn(rt)
        finally:
            await rt.close()

    return run(go())


def test_worker_children_lower_their_cpu_priority_by_worker_nice(pool: Pool) -> None:
    """TOKENWORKER_WORKER_NICE=5: both prefork children run 5 steps below the main process,
    which keeps the priority it was started with."""
    main = pool.procs[0].pid
    started = os.getpriority(os.PRIO_PROCESS, 0)  # this test's own: what the main inherited
    wanted = min(started + 5, 19)

    def children() -> list[int]:
        pgrep = ["pgrep", "-P", str(main)]
        found = subprocess.run(pgrep, capture_output=True, text=True, check=False)
        return [os.getpriority(os.PRIO_PROCESS, int(pid)) for pid in found.stdout.split()]

    # A child lowers itself at the end of its start-up, which may still be running.
    deadline = time.monotonic() + 10
    while children() != [wanted] * 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children() == [wanted] * 2
    assert os.getpriority(os.PRIO_PROCESS, main) == started


def test_cli_check_wait_prints_the_workers_outcome_as_json(pool: Pool, emu: Emu) -> None:
    """`tokenworker check ID --wait --json` runs on the worker and prints one JSON object."""
    [(cid, grant)] = _seed(pool.env, emu)
    emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
    done = _cli(pool.env, "check", cid, "--wait", "--json", "--timeout", "60")
    assert done.returncode == 0, done.stderr + pool.log()[-3000:]
    outcome = json.loads(done.stdout)
    assert outcome["connection_id"] == cid
    assert outcome["outcome"] == "refreshed"
    assert emu.token_calls(grant["grant_id"]) == 1


def test_cli_refresh_wait_revives_a_reauth_required_connection(pool: Pool, emu: Emu) -> None:
    """An explicit refresh ignores the reauth_required pause and clears it on success."""
    [(cid, _grant)] = _seed(pool.env, emu)

    async def mark_dead(rt: Runtime) -> None:
        from worker.domain.models import ConnectionStatus  # noqa: PLC0415

        conn = await rt.store.get_connection(cid)
        assert conn is not None
        await rt.store.save_connection(conn.evolve(status=ConnectionStatus.REAUTH_REQUIRED), None)

    _read(pool.env, mark_dead)
    done = _cli(pool.env, "refresh", cid, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "refreshed"
    shown = json.loads(_cli(pool.env, "connections", "show", cid, "--json").stdout)
    assert shown["status"] == "active"
    assert shown["integration_status"] == "active"


def test_beat_sweeps_and_the_pool_refreshes_due_connections(pool: Pool, emu: Emu) -> None:
    """With beat running, every connection with an expired token is refreshed within seconds."""
    pairs = _seed(pool.env, emu, count=12, rotation=True)
    for _, grant in pairs:
        emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
    beat_dir = tempfile.mkdtemp(prefix="beat-")
    beat = pool.start("beat", "-s", os.path.join(beat_dir, "schedule"), "--loglevel", "INFO")
    try:
        deadline = time.monotonic() + 40
        refreshed: list[str] = []
        while time.monotonic() < deadline:
            refreshed = [cid for cid, grant in pairs if emu.token_calls(grant["grant_id"]) >= 1]
            if len(refreshed) == len(pairs):
                break
            time.sleep(0.5)
    finally:
        beat.terminate()
        beat.wait(20)
    assert len(refreshed) == len(pairs), pool.log()[-4000:]
    for cid, grant in pairs:
        view = emu.grant(grant["grant_id"])
        assert view["revoked"] is False
        assert emu.token_calls(grant["grant_id"]) == 1
        stored = _read(pool.env, lambda rt, cid=cid: rt.store.get_connection(cid))
        assert stored.refresh_token == view["refresh_token"]


def test_duplicate_deliveries_of_one_batch_make_one_token_call_each(pool: Pool, emu: Emu) -> None:
    """The same check_batch delivered three times at once refreshes each connection once."""
    pairs = _seed(pool.env, emu, count=6, rotation=True)
    for _, grant in pairs:
        emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
    ids = [cid for cid, _ in pairs]
    app = celery_app(pool.env)
    for _ in range(3):
        app.send_task("tokenworker.check_batch", args=[ids], queue="refresh")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(emu.token_calls(g["grant_id"]) >= 1 for _, g in pairs):
            break
        time.sleep(0.3)
    time.sleep(1.0)
    for _, grant in pairs:
        assert emu.token_calls(grant["grant_id"]) == 1
        assert emu.grant(grant["grant_id"])["revoked"] is False


def test_failures_reach_the_webhook_signed(pool: Pool, emu: Emu) -> None:
    """A reauth_required verdict is POSTed once to the webhook, signed and verifiable."""
    from worker.telemetry.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify  # noqa: PLC0415

    [(cid, grant)] = _seed(pool.env, emu)
    emu.post(f"/_admin/grants/{grant['grant_id']}/revoke")
    done = _cli(pool.env, "check", cid, "--wait", "--json")
    assert json.loads(done.stdout)["outcome"] == "reauth_required"
    deadline = time.monotonic() + 20
    mine: list[tuple[dict[str, str], bytes]] = []
    while time.monotonic() < deadline and not mine:
        mine = [(h, b) for h, b in Receiver.received if json.loads(b).get("connection_id") == cid]
        time.sleep(0.2)
    assert len(mine) == 1, pool.log()[-3000:]
    headers, body = mine[0]
    event = json.loads(body)
    assert event["event"] == "connection.reauth_required"
    assert event["error"] == "invalid_grant"
    assert verify(WEBHOOK_SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert grant["refresh_token"].encode() not in body
