"""The CLI for the HTTP API: keys shown once and stored hashed, connect-flow options on
integrations, and `connections remove` revoking at Salesforce first."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import Emu
from tests.helpers import connect
from tests.processes import cli, with_runtime

pytestmark = pytest.mark.integration


def test_an_api_key_is_printed_once_listed_without_it_and_revoked(env: dict[str, str]) -> None:
    """`create` prints the key alone (or JSON with `key`); `list` never shows it."""
    created = cli(env, "api-keys", "create", "--name", "billing", "--scope", "read")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("tw_") and "\n" not in key
    as_json = json.loads(
        cli(env, "api-keys", "create", "--name", "ops", "--scope", "admin", "--json").stdout
    )
    assert as_json["name"] == "ops" and as_json["scope"] == "admin" and as_json["key"]
    listed = cli(env, "api-keys", "list", "--json")
    assert [k["name"] for k in json.loads(listed.stdout)] == ["billing", "ops"]
    assert key not in listed.stdout and as_json["key"] not in listed.stdout
    assert cli(env, "api-keys", "create", "--name", "ops", "--scope", "read").returncode == 2
    assert cli(env, "api-keys", "revoke", "billing").returncode == 0
    assert cli(env, "api-keys", "revoke", "billing").returncode == 4


def test_integration_options_are_validated_before_anything_is_saved(
    env: dict[str, str], emu: Emu
) -> None:
    """--scopes without a refresh scope is refused (exit 2); valid options are kept on update."""
    name = f"acme-{uuid.uuid4().hex[:6]}"
    base = ["integrations", "add", name, "--provider", "salesforce", "--client-id", "cid"]
    env = {**env, "SF_SECRET": "s3cret"}
    secret = ["--client-secret-env", "SF_SECRET", "--login-url", emu.base_url]
    refused = cli(env, *base, *secret, "--scopes", "api")
    assert refused.returncode == 2 and "refresh_token" in refused.stderr
    assert name not in cli(env, "integrations", "list").stdout
    ok = cli(env, *base, *secret, "--scopes", "api refresh_token id", "--ask-domain")
    assert ok.returncode == 0, ok.stderr
    again = cli(env, *base, *secret)  # an update without options keeps them
    assert again.returncode == 0, again.stderr
    [row] = [i for i in json.loads(cli(env, "integrations", "list", "--json").stdout)
             if i["name"] == name]
    assert row["scopes"] == "api refresh_token id" and row["ask_domain"] is True


def test_remove_revokes_the_grant_at_salesforce_then_forgets_it(
    env: dict[str, str], emu: Emu
) -> None:
    """The emulator sees the grant revoked; `--no-revoke` leaves a grant alone."""
    seeded: list[tuple[str, dict[str, Any]]] = with_runtime(
        env, lambda rt: connect(rt, emu, name=f"acme-{uuid.uuid4().hex[:6]}", count=2)
    )
    (first, grant), (second, kept) = seeded
    removed = cli(env, "connections", "remove", first)
    assert removed.returncode == 0, removed.stderr
    assert "revoked" in removed.stdout
    assert emu.grant(grant["grant_id"])["revoked"] is True
    assert cli(env, "connections", "show", first).returncode == 4
    assert cli(env, "connections", "remove", second, "--no-revoke").returncode == 0
    assert emu.grant(kept["grant_id"])["revoked"] is False
