"""The one process harness of the suite: child processes in their own process groups, CLI
runs, runtimes opened from an environment, and polling with deadlines.

The operations tests (worker, beat, health, metrics) and the faults suite
(tests/faults/harness.py adds its ledger, fleet and Redis snapshots on top) both use it.
Each operations test module gets its own broker database and key prefix, so its processes
never see another module's messages or keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from celery import Celery

from config.redis_tls import celery_tls
from config.settings import Settings
from tests.conftest import FAST, TEST_KEYS
from tests.tls_redis import TlsRedis, db_url, flush_db, server_env
from worker.dev.embedded import EmbeddedRedis
from worker.engine.runtime import Runtime

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `predicate` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(interval)


def _product_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) without what only the tests' own clients may use: a
    tokenworker process under TLS must verify Redis through TOKENWORKER_REDIS_CA alone."""
    clean = dict(os.environ if env is None else env)
    clean.pop("SSL_CERT_FILE", None)
    return clean


def celery_env(
    redis_server: EmbeddedRedis | TlsRedis, broker_db: int, **extra: str
) -> dict[str, str]:
    """Environment for tokenworker processes under a fresh key prefix; flushes the broker db."""
    broker = db_url(redis_server, broker_db)
    flush_db(redis_server, broker_db)
    env = _product_env()
    env.update(FAST)
    env.update(server_env(redis_server))
    env.update(
        {
            "TOKENWORKER_REDIS_URL": redis_server.url,
            "TOKENWORKER_BROKER_URL": broker,
            "TOKENWORKER_ENCRYPTION_KEYS": TEST_KEYS,
            "TOKENWORKER_KEY_PREFIX": f"o{uuid.uuid4().hex[:8]}:",
            "TOKENWORKER_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


def celery_argv(*args: str) -> list[str]:
    """`celery -A config.celery ARGS` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "config.celery", *args]


def worker_args(node: str, concurrency: int = 2, queues: str = "sweep,refresh,ops") -> list[str]:
    """The `celery worker` arguments of the suite's worker processes."""
    return [
        "worker", "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO",
        "--without-mingle", "--without-gossip", "-n", node,
    ]  # fmt: skip


class Proc:
    """A child process that leads its own process group (a Celery worker and its prefork
    children share it), logging to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with open(log, "ab") as handle:
            self.popen = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @classmethod
    def celery(cls, env: dict[str, str], *args: str) -> Proc:
        """`celery -A config.celery ARGS`, logging to a temporary file that `close` removes."""
        handle, path = tempfile.mkstemp(prefix="tw-proc-", suffix=".log")
        os.close(handle)
        return cls(celery_argv(*args), env, Path(path))

    @classmethod
    def worker(cls, env: dict[str, str], node: str, concurrency: int = 2) -> Proc:
        return cls.celery(env, *worker_args(node, concurrency))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        """`sig` to the main process only."""
        self.popen.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group at once: parent and children get no chance to clean up."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM the group (a warm shutdown), SIGKILL what is left after `grace`; the exit
        code of the main process."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        # Whatever is left in the group (orphaned prefork children too) goes now.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        return int(self.popen.returncode)

    def close(self) -> None:
        """Stop, and remove the log."""
        self.stop()
        self.log_path.unlink(missing_ok=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, size: int = 4000) -> str:
        return self.log()[-size:]


def celery_app(env: dict[str, str]) -> Celery:
    """A Celery app on the processes' broker (over TLS when it is rediss://), to send tasks
    and control commands from a test."""
    app = Celery(broker=env["TOKENWORKER_BROKER_URL"])
    app.conf.update(celery_tls(Settings.from_env(env)))
    return app


def wait_ready(env: dict[str, str], proc: Proc, timeout: float = 45.0) -> None:
    """Until a worker on this broker answers a control ping."""
    app = celery_app(env)
    try:
        wait_until(
            lambda: proc.popen.poll() is not None or app.control.ping(timeout=0.5),
            timeout,
            "the worker to answer a ping",
        )
    finally:
        app.close()
    assert proc.popen.poll() is None, proc.log()[-3000:]


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """`python -m worker.cli ARGS` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=_product_env(env),
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def open_runtime(env: dict[str, str]) -> Runtime:
    return Runtime.open(Settings.from_env(env))


def with_runtime(env: dict[str, str], work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run `work` with a fresh Runtime in its own event loop, closing it after."""

    async def go() -> T:
        rt = open_runtime(env)
        try:
            return await work(rt)
        finally:
            await rt.close()

    return asyncio.run(go())
