"""Fixtures of the faults suite: its own store Redis and emulator (so the final secrecy scan
sees everything the suite did and nothing else), a ledger of every secret produced, extra
Redis servers, per-test broker databases, and a fleet of worker/beat processes that is always
stopped, process group by process group, even when a test fails.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_KEYS, Emu
from tests.faults.harness import Fleet, Ledger, process_env
from worker.dev.embedded import EmbeddedRedis
from worker.dev.emulator.server import EmulatorThread

SCAN_MODULE = "test_secrets_scan.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The secrecy scan runs after every other test of the session."""
    last = [item for item in items if item.path.name == SCAN_MODULE]
    items[:] = [item for item in items if item.path.name != SCAN_MODULE] + last


@pytest.fixture(scope="session")
def ledger() -> Iterator[Ledger]:
    directory = Path(tempfile.mkdtemp(prefix="tokenworker-faults-"))
    book = Ledger(directory)
    book.secret(TEST_KEYS)
    yield book
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(ledger: Ledger) -> Iterator[EmbeddedRedis]:
    """The suite's store Redis, AOF on via deploy/redis.conf."""
    server = EmbeddedRedis().start()
    ledger.servers.append(server)
    ledger.files.append(Path(server.directory, "redis.log"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator(ledger: Ledger) -> Iterator[EmulatorThread]:
    """The suite's emulator; every token it ever issues is written into the ledger."""
    thread = EmulatorThread(lifetime=3600)
    state = thread.emulator.state
    issue_refresh, issue_access = state._new_refresh_token, state._issue_access

    def new_refresh_token() -> str:
        token = issue_refresh()
        ledger.secrets.add(token)
        return token

    def new_access(grant: Any, now: float) -> Any:
        access = issue_access(grant, now)
        ledger.secrets.add(access.token)
        return access

    state._new_refresh_token = new_refresh_token  # type: ignore[method-assign]
    state._issue_access = new_access  # type: ignore[method-assign]
    with thread:
        yield thread


@pytest.fixture
def emu(emulator: EmulatorThread) -> Iterator[Emu]:
    """The admin API; faults and latency are reset after each test."""
    admin = Emu(emulator.base_url)
    yield admin
    admin.clear_faults()
    admin.post("/_admin/config", {"latency_ms": 0})
    admin.http.close()


@pytest.fixture(scope="session")
def redis_factory(ledger: Ledger) -> Iterator[Callable[[], EmbeddedRedis]]:
    """Extra real Redis servers (AOF on); alive until the session ends so the scan sees them."""
    started: list[EmbeddedRedis] = []

    def make() -> EmbeddedRedis:
        server = EmbeddedRedis().start()
        started.append(server)
        ledger.servers.append(server)
        return server

    yield make
    for server in started:
        if server.process is None:  # stopped by its test: nothing left to scan live
            continue
        server.stop()


@pytest.fixture
def broker_url(redis_factory: Callable[[], EmbeddedRedis]) -> str:
    """A broker of this test alone: its own Redis server, kept for the final scan."""
    return redis_factory().url


@pytest.fixture
def proc_env(
    redis_server: EmbeddedRedis, broker_url: str, prefix: str, ledger: Ledger
) -> dict[str, str]:
    """Environment of this test's worker, beat and CLI processes."""
    ledger.prefixes.add(prefix)
    return process_env(redis_server.url, broker_url, prefix)


@pytest.fixture
def fleet(ledger: Ledger) -> Iterator[Fleet]:
    crew = Fleet(ledger)
    try:
        yield crew
    finally:
        crew.stop_all()
