"""Scenario 6, bad operator input through the CLI as operators run it (`python -m
worker.cli.main ...` subprocesses): malformed imports, unknown integrations, duplicate ids, plain
http:// login URLs, a wrong or malformed encryption key, and a key rotation killed midway."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import TEST_KEYS, Emu
from tests.faults.harness import Ledger, cli, seed, stored, wait_until, with_runtime
from tests.processes import ROOT
from worker.domain.models import Connection, Integration, Provider
from worker.engine.runtime import Runtime
from worker.salesforce.responses import epoch_seconds
from worker.store.crypto import generate_key, key_id
from worker.store.keys import Keys

pytestmark = pytest.mark.integration

WRONG_KEY = "not among TOKENWORKER_ENCRYPTION_KEYS"


def _add_integration(ledger: Ledger, env: dict[str, str], emu: Emu, name: str) -> None:
    client_id, secret = emu.client(rotation=True)
    done = cli(
        ledger,
        dict(env, SF_SECRET=secret),
        "integrations", "add", name, "--provider", "salesforce", "--client-id", client_id,
        "--client-secret-env", "SF_SECRET", "--login-url", emu.base_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    emu.post("/_admin/clients", {"client_id": client_id, "client_secret": secret})


def _line(cid: str, integration: str, grant: dict[str, Any], **changes: Any) -> str:
    data: dict[str, Any] = {
        "id": cid,
        "integration": integration,
        "refresh_token": grant["refresh_token"],
        "access_token": grant["access_token"],
        "instance_url": grant["instance_url"],
        "issued_at": grant["issued_at"],
    }
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None})


def _listed(ledger: Ledger, env: dict[str, str]) -> list[str]:
    done = cli(ledger, env, "connections", "list", "--json")
    assert done.returncode == 0, done.stderr
    return sorted(row["id"] for row in json.loads(done.stdout))


def _no_token_in(outputs: list[str], tokens: list[str]) -> None:
    echoed = [t[:12] + "..." for t in tokens if any(t in out for out in outputs)]
    assert echoed == [], f"the CLI echoed tokens: {echoed}"


def test_malformed_import_names_line_and_field_and_imports_nothing_or_the_valid_lines(
    emu: Emu, ledger: Ledger, proc_env: dict[str, str], tmp_path: Path
) -> None:
    """An import with broken lines reports each by line and field and imports nothing;
    --skip-invalid imports exactly the valid lines; a re-import changes nothing."""
    _add_integration(ledger, proc_env, emu, "acme")
    client_id = json.loads(cli(ledger, proc_env, "integrations", "list", "--json").stdout)[0][
        "client_id"
    ]
    grants = emu.grants(client_id, 9)
    lines = [
        _line("c-1", "acme", grants[0]),
        '{"id": "c-2", "integration": "acme", "refresh_token": "' + grants[1]["refresh_token"],
        _line("c-3", "acme", grants[2], refresh_token=None),
        _line("c-4", "nobody", grants[3]),
        _line("c-1", "acme", grants[4]),
        _line("c-6", "acme", grants[5], issued_at="yesterday"),
        _line("c-7", "acme", grants[6], instance_url="https://evil.example.com"),
        _line("c-8", "acme", grants[7]),
        "",
        _line("c-10", "acme", grants[8], refresh_token="5Aep861 has spaces"),
    ]
    expected = {
        2: r"not valid JSON",
        3: r"field 'refresh_token'",
        4: r"field 'integration': no integration named 'nobody'",
        5: r"field 'id': 'c-1' already on line 1",
        6: r"field 'issued_at'",
        7: r"field 'instance_url'",
        10: r"field 'refresh_token'",
    }
    path = tmp_path / "connections.jsonl"
    path.write_text("\n".join(lines) + "\n")

    refused = cli(ledger, proc_env, "connections", "import", str(path))
    assert refused.returncode == 1, refused.stderr
    for number, pattern in expected.items():
        assert re.search(rf"line {number}: .*{pattern}", refused.stderr), (number, refused.stderr)
    reported = {int(n) for n in re.findall(r"^invalid: line (\d+):", refused.stderr, re.M)}
    assert reported == set(expected), refused.stderr
    assert "nothing imported" in refused.stderr
    assert _listed(ledger, proc_env) == []

    partial = cli(ledger, proc_env, "connections", "import", str(path), "--skip-invalid", "--json")
    report = json.loads(partial.stdout)
    assert partial.returncode == 1, partial.stderr
    assert (report["created"], report["invalid"]) == (2, len(expected)), report
    assert _listed(ledger, proc_env) == ["c-1", "c-8"]
    records = stored(proc_env, ["c-1", "c-8"])
    assert records["c-1"].refresh_token == grants[0]["refresh_token"]
    assert records["c-8"].refresh_token == grants[7]["refresh_token"]
    assert records["c-1"].issued_at == epoch_seconds(grants[0]["issued_at"])

    again = cli(ledger, proc_env, "connections", "import", str(path), "--skip-invalid", "--json")
    assert json.loads(again.stdout)["unchanged"] == 2
    tokens = [g["refresh_token"] for g in grants] + [g["access_token"] for g in grants]
    _no_token_in([refused.stdout, refused.stderr, partial.stdout, partial.stderr], tokens)


@pytest.mark.parametrize(
    ("login_url", "message"),
    [
        ("http://acme.my.salesforce.com", "plain http:// is only allowed for loopback"),
        ("http://10.0.0.8:8080", "plain http:// is only allowed for loopback"),
        ("https://login.evil.example.com", "expected https:// on a Salesforce domain"),
        ("https://user:pw@login.salesforce.com", "must not carry credentials"),
    ],
)
def test_login_url_off_salesforce_or_in_plain_http_is_refused(
    ledger: Ledger, proc_env: dict[str, str], login_url: str, message: str
) -> None:
    """`integrations add` with a login URL credentials must not go to: exit 2, nothing stored."""
    done = cli(
        ledger,
        dict(proc_env, SF_SECRET=secrets.token_hex(16)),
        "integrations", "add", "evil", "--provider", "salesforce", "--client-id", "3MVG9x",
        "--client-secret-env", "SF_SECRET", "--login-url", login_url,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    listed = cli(ledger, proc_env, "integrations", "list", "--json")
    assert json.loads(listed.stdout) == []


def _records(env: dict[str, str], ids: list[str]) -> dict[str, Connection]:
    return {cid: conn for cid, conn in stored(env, ids).items() if conn is not None}


def test_wrong_encryption_key_is_a_clear_error_and_destroys_nothing(
    emu: Emu, ledger: Ledger, proc_env: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    """Every command run with a key that opens nothing fails saying so, prints no secret,
    and afterwards every record still opens, unchanged, with the right key."""
    pairs = seed(proc_env, emu, count=3, rotation=True, name="acme")
    ids = [cid for cid, _ in pairs]
    before = _records(proc_env, ids)
    store = redis.Redis.from_url(proc_env["TOKENWORKER_REDIS_URL"])
    hashes = {
        key: store.hgetall(key)
        for key in store.scan_iter(match=f"{prefix}*")
        if store.type(key) == b"hash"
    }
    wrong_key = generate_key()
    ledger.secret(wrong_key)
    wrong = dict(proc_env, TOKENWORKER_ENCRYPTION_KEYS=wrong_key, SF_SECRET="other-secret")
    line = tmp_path / "reimport.jsonl"
    line.write_text(
        _line(ids[0], "acme", emu.grants(emu.grant(pairs[0][1]["grant_id"])["client_id"])[0])
    )
    commands = [
        ("connections", "show", ids[0]),
        ("connections", "list"),
        ("connections", "export"),
        ("status",),
        ("check", ids[0], "--inline"),
        ("refresh", ids[1], "--inline"),
        ("connections", "import", str(line)),
        ("integrations", "add", "acme", "--provider", "salesforce", "--client-id", "x",
         "--client-secret-env", "SF_SECRET", "--login-url", emu.base_url),
        ("keys", "rotate"),
    ]  # fmt: skip
    outputs = []
    for command in commands:
        done = cli(ledger, wrong, *command)
        outputs += [done.stdout, done.stderr]
        assert done.returncode not in (0, 3, 4), (command, done.returncode, done.stdout)
        assert WRONG_KEY in done.stdout + done.stderr, (command, done.stdout, done.stderr)

    after_hashes = {key: store.hgetall(key) for key in hashes}
    store.close()
    assert after_hashes == hashes, "a command run with the wrong key changed a stored record"
    assert _records(proc_env, ids) == before
    tokens = [c.refresh_token for c in before.values()] + [
        c.access_token or "" for c in before.values()
    ]
    _no_token_in(outputs, tokens)

    malformed = cli(ledger, dict(proc_env, TOKENWORKER_ENCRYPTION_KEYS="not-a-key"), "status")
    assert malformed.returncode == 2, malformed.stderr
    assert "TOKENWORKER_ENCRYPTION_KEYS" in malformed.stderr


ROTATION_COUNT = 2000


async def _seed_many(rt: Runtime, ledger: Ledger, count: int) -> dict[str, tuple[str, str]]:
    """`count` connections with synthetic tokens (in the ledger), saved concurrently."""
    secret = secrets.token_hex(16)
    ledger.secret(secret)
    await rt.store.save_integration(
        Integration(
            "bulk", Provider.SALESFORCE, "3MVG9bulk", secret, "https://login.salesforce.com"
        )
    )
    tokens = {
        f"r-{n:05d}": (
            "5Aep861" + secrets.token_urlsafe(60),
            "00Dbulk!AQ" + secrets.token_urlsafe(72),
        )
        for n in range(count)
    }
    for pair in tokens.values():
        ledger.secret(*pair)
    conns = [Connection(cid, "bulk", rt_, at) for cid, (rt_, at) in tokens.items()]
    for start in range(0, count, 500):
        await asyncio.gather(
            *(rt.store.save_connection(c, None) for c in conns[start : start + 500])
        )
    return tokens


def test_key_rotation_killed_midway_resumes_and_leaves_everything_readable_under_the_new_key(
    ledger: Ledger, proc_env: dict[str, str], prefix: str
) -> None:
    """SIGKILL `keys rotate` after its first batch, rerun it, then drop the old key: every
    secret opens under the new key alone and equals what was stored."""
    tokens = with_runtime(proc_env, lambda rt: _seed_many(rt, ledger, ROTATION_COUNT))
    new_key = generate_key()
    ledger.secret(new_key)
    both = dict(proc_env, TOKENWORKER_ENCRYPTION_KEYS=f"{new_key},{TEST_KEYS}")
    keys = Keys(prefix)
    store = redis.Redis.from_url(proc_env["TOKENWORKER_REDIS_URL"])
    rotation = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "keys", "rotate"],
        env=both,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: store.exists(keys.rotation), 30, "rotation saved a cursor", 0.002)
        rotation.send_signal(signal.SIGKILL)
    finally:
        out, err = rotation.communicate(timeout=30)
        ledger.text("keys rotate (killed) stdout", out)
        ledger.text("keys rotate (killed) stderr", err)
    assert rotation.returncode == -signal.SIGKILL, "rotation finished before it could be killed"

    new_id = key_id(_raw_key(new_key))
    sealed = [store.hget(keys.conn(cid), "rt") or b"" for cid in tokens]
    rotated = sum(1 for value in sealed if value[1:5] == new_id)
    assert 0 < rotated < ROTATION_COUNT, rotated

    rerun = cli(ledger, both, "keys", "rotate")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "unreadable 0" in rerun.stdout, rerun.stdout
    assert not store.exists(keys.rotation)
    store.close()

    only_new = dict(proc_env, TOKENWORKER_ENCRYPTION_KEYS=new_key)
    records = stored(only_new, list(tokens))
    assert {cid: (c.refresh_token, c.access_token) for cid, c in records.items()} == tokens

    async def integration(rt: Runtime) -> Integration | None:
        return await rt.store.get_integration("bulk")

    assert with_runtime(only_new, integration) is not None
    listed = cli(ledger, only_new, "connections", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == ROTATION_COUNT


def _raw_key(text: str) -> bytes:
    import base64  # noqa: PLC0415

    return base64.urlsafe_b64decode(text.encode())
