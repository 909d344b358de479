"""The CLI with records it cannot read (D6, 7c), plaintext exports (D5), undecodable or
mis-shaped imports (D4, 3f) and an unreachable store or broker behind commands that enqueue
(D7). Each runs `python -m worker.cli` as an operator does."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Emu
from tests.helpers import SANDBOX_INTEGRATION, connect
from tests.processes import cli, with_runtime
from worker.domain.models import Connection
from worker.engine.runtime import Runtime
from worker.store.connections import Store
from worker.store.crypto import Cipher

pytestmark = pytest.mark.integration


def _seed_with_unreadable(env: dict[str, str], emu: Emu) -> list[str]:
    """Two good connections, a hash holding only the refresh mark (what a bare HSET after
    `connections remove` used to leave) and a record sealed under a key nobody holds."""

    async def go(rt: Runtime) -> list[str]:
        pairs = await connect(rt, emu, count=2)
        await rt.redis.hset(rt.store.keys.conn("bare"), "refresh_started_at", "1.5")
        stranger = Store(rt.redis, Cipher((b"k" * 32,)), rt.store.keys)
        lost = Connection(id="lost", integration="acme", refresh_token="rt-lost")
        await stranger.save_connection(lost, time.time())
        return sorted(cid for cid, _ in pairs)

    return with_runtime(env, go)


def test_fleet_commands_report_unreadable_records_and_go_on(env: dict[str, str], emu: Emu) -> None:
    """status, list and export name each unreadable record on stderr, report every other
    one and exit 1; `show` of one is a one-line error. Before: KeyError b'rt' tracebacks (or
    the decryption error) and nothing at all about the rest of the fleet."""
    good = _seed_with_unreadable(env, emu)
    status = cli(env, "status", "--json")
    data = json.loads(status.stdout)
    assert (status.returncode, data["connections"], data["unreadable"]) == (1, 2, 2), status.stderr
    assert sorted(r["id"] for r in data["unreadable_records"]) == ["bare", "lost"]
    listed = cli(env, "connections", "list", "--json")
    assert listed.returncode == 1
    assert sorted(row["id"] for row in json.loads(listed.stdout)) == good
    exported = cli(env, "connections", "export")
    assert exported.returncode == 1
    assert sorted(json.loads(line)["id"] for line in exported.stdout.splitlines()) == good
    assert "export: skipped 2 unreadable connections" in exported.stderr
    for done in (status, listed, exported):
        assert "Traceback" not in done.stderr
        assert "unreadable: bare: incomplete record: no refresh token" in done.stderr
        assert "unreadable: lost:rt: sealed under key id" in done.stderr
    shown = cli(env, "connections", "show", "bare")
    assert shown.returncode == 1
    assert shown.stderr.strip().splitlines() == [
        "tokenworker: connection 'bare' is unreadable: bare: incomplete record: no refresh "
        "token (field 'rt'; fields present: refresh_started_at); remove it with "
        "`tokenworker connections remove bare`"
    ]


def test_export_with_secrets_is_owner_only_and_never_overwrites(
    env: dict[str, str], emu: Emu, tmp_path: Path
) -> None:
    """--with-secrets FILE is created 0600 whatever the umask; an existing FILE is refused
    (exit 2, untouched) unless --force, which replaces it with a new 0600 file. Before: 0644
    and silently overwritten in place."""
    with_runtime(env, lambda rt: connect(rt, emu, count=1))
    target = tmp_path / "backup.jsonl"
    first = cli(env, "connections", "export", "--with-secrets", str(target))
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "refresh_token" in target.read_text()
    target.write_text("keep me\n")
    target.chmod(0o644)
    again = cli(env, "connections", "export", "--with-secrets", str(target))
    assert again.returncode == 2
    assert "already exists; pass --force" in again.stderr
    assert target.read_text() == "keep me\n"
    forced = cli(env, "connections", "export", "--with-secrets", "--force", str(target))
    assert forced.returncode == 0, forced.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "refresh_token" in target.read_text()
    plain = cli(env, "connections", "export", str(target))  # no secrets: overwrites as before
    assert plain.returncode == 0 and "refresh_token" not in target.read_text()


def _import_stdin(env: dict[str, str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "connections", "import", "-"],
        env=env,
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )


def _lines(count: int) -> list[bytes]:
    return [
        json.dumps({"id": f"s-{n}", "integration": "acme", "refresh_token": f"rt-{n}"}).encode()
        for n in range(count)
    ]


def test_import_from_stdin_with_undecodable_bytes_imports_nothing(env: dict[str, str]) -> None:
    """D4: ten good lines then one with a 0xff byte, through stdin: exit 2, a message naming
    line 11, nothing imported, no traceback. Before: UnicodeEncodeError traceback, exit 1, and
    the ten lines before it saved."""
    with_runtime(env, lambda rt: rt.store.save_integration(SANDBOX_INTEGRATION))
    bad = b'{"id": "s-x", "integration": "acme", "refresh_token": "rt-\xff"}'
    done = _import_stdin(env, b"\n".join([*_lines(10), bad]) + b"\n")
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "stdin: line 11: not valid UTF-8 (byte 0xff" in stderr
    assert "Traceback" not in stderr
    assert with_runtime(env, lambda rt: rt.store.get_connection("s-0")) is None


def test_a_json_array_is_named_as_such(env: dict[str, str]) -> None:
    """3f: a pretty-printed JSON array is one problem on line 1 saying JSON Lines is expected,
    not one "not valid JSON" per line; nothing is imported."""
    with_runtime(env, lambda rt: rt.store.save_integration(SANDBOX_INTEGRATION))
    rows = [json.loads(line) for line in _lines(3)]
    done = _import_stdin(env, json.dumps(rows, indent=2).encode())
    stderr = done.stderr.decode()
    assert done.returncode == 1
    problems = [line for line in stderr.splitlines() if line.startswith("invalid: ")]
    assert problems == [
        "invalid: line 1: expected JSON Lines (one object per line), got a JSON array; "
        "convert it with e.g. `jq -c '.[]' FILE`"
    ]
    assert with_runtime(env, lambda rt: rt.store.get_connection("s-0")) is None


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


ENQUEUING = [
    ("check", "c-1"),
    ("check", "c-1", "--wait"),
    ("refresh", "c-1"),
    ("refresh", "c-1", "--wait"),
    ("sweep",),
    ("sweep", "--wait"),
]


@pytest.mark.parametrize("place", ["store", "broker"])
def test_enqueuing_commands_fail_fast_when_redis_is_unreachable(
    env: dict[str, str], place: str
) -> None:
    """D7: every command that enqueues, with and without --wait, exits 3 within seconds with
    one line naming the unreachable Redis, its password masked. Before: a Celery traceback
    after ~20 s and exit 1."""
    dead = f"redis://:hunter2@127.0.0.1:{_closed_port()}/0"
    key = "TOKENWORKER_REDIS_URL" if place == "store" else "TOKENWORKER_BROKER_URL"
    bad = dict(env, **{key: dead}, PATH=os.environ.get("PATH", ""))
    for command in ENQUEUING:
        started = time.monotonic()
        done = cli(bad, *command, timeout=15)
        took = time.monotonic() - started
        assert done.returncode == 3, (command, done.returncode, done.stderr[-500:])
        assert took < 10, (command, took)
        line = f"tokenworker: cannot reach Redis: {place} Redis unreachable at redis://:***@"
        assert done.stderr.startswith(line), (command, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "hunter2" not in done.stdout + done.stderr
