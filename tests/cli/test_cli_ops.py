"""The CLI for people: paging, refreshing a whole integration, status, help with examples."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import pytest

from tests.conftest import Emu
from tests.helpers import connect
from tests.processes import Proc, celery_env, cli, wait_ready, with_runtime
from worker.cli.main import build_parser
from worker.dev.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


def _seed(env: dict[str, str], emu: Emu, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    kwargs.setdefault("name", f"acme-{uuid.uuid4().hex[:6]}")
    return with_runtime(env, lambda rt: connect(rt, emu, **kwargs))


def _leaves(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, Any]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _leaves(child, f"{path} {name}".strip())
    return found or [(path, parser)]


def test_every_command_has_an_example_in_its_help() -> None:
    """`tokenworker X --help` ends with an example for every command and action."""
    leaves = _leaves(build_parser())
    assert len(leaves) > 15
    missing = [path for path, parser in leaves if "example:" not in (parser.epilog or "")]
    assert missing == []


def test_connections_list_pages_by_id(env: dict[str, str], emu: Emu) -> None:
    """--limit/--offset return consecutive pages of the id-sorted list, with a hint for more."""
    ids = sorted(cid for cid, _ in _seed(env, emu, count=5))
    page = cli(env, "connections", "list", "--limit", "2", "--offset", "2", "--json")
    assert page.returncode == 0, page.stderr
    assert [row["id"] for row in json.loads(page.stdout)] == ids[2:4]
    shown = cli(env, "connections", "list", "--limit", "2", "--offset", "2")
    assert ids[2] in shown.stdout and ids[1] not in shown.stdout
    assert "rows 3-4 of 5; next page: --offset 4" in shown.stderr
    none = cli(env, "connections", "list", "--status", "failing", "--json")
    assert json.loads(none.stdout) == []
    bad = cli(env, "connections", "list", "--status", "sleepy")
    assert bad.returncode == 2


def test_refresh_an_integration_inline(env: dict[str, str], emu: Emu) -> None:
    """Every connection of the named integration is refreshed once; others are untouched."""
    pairs = _seed(env, emu, count=3, rotation=True)
    [(_, other)] = _seed(env, emu, count=1)
    integration = with_runtime(env, lambda rt: rt.store.get_connection(pairs[0][0]))
    assert integration is not None
    done = cli(env, "refresh", "--integration", integration.integration, "--inline", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcomes"] == {"refreshed": 3}
    assert "refreshing [" in done.stderr
    for cid, grant in pairs:
        stored = with_runtime(env, lambda rt, cid=cid: rt.store.get_connection(cid))
        assert stored is not None
        assert stored.refresh_token == emu.grant(grant["grant_id"])["refresh_token"]
        assert emu.token_calls(grant["grant_id"]) == 1
    assert emu.token_calls(other["grant_id"]) == 0


def test_refresh_needs_exactly_one_target(env: dict[str, str]) -> None:
    """An id and --integration together is bad input (2); an unknown integration is 4."""
    assert cli(env, "refresh", "c-1", "--integration", "acme", "--inline").returncode == 2
    assert cli(env, "refresh", "--inline").returncode == 2
    assert cli(env, "refresh", "--integration", "nope", "--inline").returncode == 4


def test_status_shows_backlog_workers_beat_and_integrations(env: dict[str, str], emu: Emu) -> None:
    """The status table names every section an operator looks for; --json carries them."""
    _seed(env, emu, count=1)
    shown = cli(env, "status")
    assert shown.returncode == 0, shown.stderr
    for label in ("connections", "due now", "overdue", "next due", "workers", "beat"):
        assert label in shown.stdout
    assert "NO beat holds the lock" in shown.stdout
    assert "REAUTH_REQUIRED" in shown.stdout
    data = json.loads(cli(env, "status", "--json").stdout)
    assert data["overdue"] == 0
    assert data["workers"] == []
    assert data["integrations"][0]["connections"] == {"active": 1}


def test_refresh_an_integration_through_the_workers(redis_server: EmbeddedRedis, emu: Emu) -> None:
    """Queued refreshes of an integration run on the pool; --wait reports their outcomes."""
    env = celery_env(redis_server, broker_db=5)
    worker = Proc.worker(env, f"cli-{uuid.uuid4().hex[:6]}@%h")
    try:
        wait_ready(env, worker)
        pairs = _seed(env, emu, count=4, rotation=True, name="bulk")
        done = cli(env, "refresh", "--integration", "bulk", "--wait", "--timeout", "60")
        assert done.returncode == 0, done.stderr + worker.log()[-3000:]
        assert "bulk: 4 connections: refreshed 4" in done.stdout
        assert all(emu.token_calls(grant["grant_id"]) == 1 for _, grant in pairs)
    finally:
        worker.close()
