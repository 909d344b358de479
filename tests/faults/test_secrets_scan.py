"""Scenario 7, secrets: after every other test of the session (conftest moves this module
last), scan everything the faults suite produced for any plaintext token, client secret or
encryption key it ever created: every value of every key of every database of every Redis
server it started (Celery message bodies decoded), every worker, beat and Redis log line,
every CLI stdout/stderr, every event of every store prefix, and the task results and
exception texts the tests captured. Secrets come from the ledger: every token the suite's
emulator issued, every client secret it knows, every key and synthetic token tests made.

Run alone, it first makes its own workload (a worker refreshing rotating connections, an
operator inspecting them), so the scan always has something to look through.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import Emu
from tests.faults.harness import (
    Fleet,
    Ledger,
    cli,
    dump_server,
    events_for,
    find_secrets,
    kombu_bodies,
    needles,
    process_env,
    seed,
)
from worker.dev.emulator.server import EmulatorThread

pytestmark = pytest.mark.integration


def _workload(emu: Emu, fleet: Fleet, ledger: Ledger, env: dict[str, str]) -> None:
    pairs = seed(env, emu, count=3, rotation=True)
    for _, grant in pairs:
        emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
    fleet.worker(env).wait_ready()
    for cid, _ in pairs:
        done = cli(ledger, env, "check", cid, "--wait", "--json", "--timeout", "60")
        assert done.returncode == 0, done.stderr
    for command in (
        ("connections", "show", pairs[0][0], "--json"),
        ("connections", "show", pairs[0][0]),
        ("connections", "list", "--json"),
        ("connections", "export"),
        ("status", "--json"),
        ("events", "--json", "--limit", "100"),
        ("integrations", "list", "--json"),
    ):
        assert cli(ledger, env, *command).returncode == 0, command


def test_no_plaintext_secret_anywhere_the_suite_wrote(
    emu: Emu,
    emulator: EmulatorThread,
    fleet: Fleet,
    ledger: Ledger,
    proc_env: dict[str, str],
) -> None:
    """No token, client secret or key of the suite appears in Redis, logs, outputs or events."""
    _workload(emu, fleet, ledger, proc_env)
    fleet.stop_all()  # every log complete before it is read
    ledger.secret(*(client.client_secret for client in emulator.emulator.state.clients.values()))
    assert len(ledger.secrets) > 10, "the ledger is empty: nothing would be found"

    haystacks: list[tuple[str, bytes]] = []
    for server in ledger.servers:
        if server.process is None or server.process.poll() is not None:
            continue
        for value in dump_server(server.port):
            haystacks.append((f"redis :{server.port}", value))
            haystacks.extend(
                (f"redis :{server.port} (message body)", b) for b in kombu_bodies(value)
            )
    for label, values in ledger.snapshots:
        haystacks.extend((label, value) for value in values)
    haystacks.extend((path.name, path.read_bytes()) for path in ledger.files if path.exists())
    haystacks.extend((label, text.encode()) for label, text in ledger.texts)
    for prefix in sorted(ledger.prefixes):
        env = process_env(
            proc_env["TOKENWORKER_REDIS_URL"], proc_env["TOKENWORKER_BROKER_URL"], prefix
        )
        haystacks.append((f"events of {prefix}", json.dumps(events_for(env)).encode()))

    found = find_secrets(haystacks, needles(ledger.secrets))
    raw_keys = [
        base64.urlsafe_b64decode(value.encode())
        for value in ledger.secrets
        if len(value) == 44 and value.endswith("=")
    ]
    found += [
        (where, "a raw encryption key")
        for where, data in haystacks
        for key in raw_keys
        if key in data
    ]
    where = sorted({w for w, _ in found})
    assert found == [], (
        f"{len(found)} secrets found in {len(where)} places: {where[:20]}\n{found[:20]}"
    )
