"""Real Celery worker and beat processes for the operations tests, and polling with deadlines.

Each test module gets its own broker database and key prefix, so its processes never see
another module's messages or keys.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis

from config.settings import Settings
from tests.conftest import FAST, TEST_KEYS, run
from worker.dev.embedded import EmbeddedRedis
from worker.engine.runtime import Runtime

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def celery_env(redis_server: EmbeddedRedis, broker_db: int, **extra: str) -> dict[str, str]:
    """Environment for tokenworker processes under a fresh key prefix; flushes the broker db."""
    broker = f"redis://127.0.0.1:{redis_server.port}/{broker_db}"
    redis.Redis.from_url(broker).flushdb()
    env = dict(os.environ)
    env.update(FAST)
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


class Proc:
    """One `celery -A config.celery ...` process with its output in a temporary file."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        handle, self.log_path = tempfile.mkstemp(prefix="tw-proc-", suffix=".log")
        with os.fdopen(handle, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config.celery", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @classmethod
    def worker(cls, env: dict[str, str], node: str, concurrency: int = 2) -> Proc:
        return cls(
            env,
            "worker",
            "-Q",
            "sweep,refresh,ops",
            "-c",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            "-n",
            node,
        )

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a warm shutdown), SIGKILL after `timeout`; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def close(self) -> None:
        self.stop()
        os.unlink(self.log_path)


def wait_ready(env: dict[str, str], proc: Proc, timeout: float = 45.0) -> None:
    """Until a worker on this broker answers a control ping."""
    from celery import Celery  # noqa: PLC0415

    app = Celery(broker=env["TOKENWORKER_BROKER_URL"])
    try:
        wait_for(
            lambda: proc.process.poll() is not None or app.control.ping(timeout=0.5),
            timeout,
            "the worker to answer a ping",
        )
    finally:
        app.close()
    assert proc.process.poll() is None, proc.log()[-3000:]


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def with_runtime(env: dict[str, str], work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run `work` with a Runtime for `env` (arranging and asserting from the test process)."""

    async def go() -> T:
        rt = Runtime.open(Settings.from_env(env))
        try:
            return await work(rt)
        finally:
            await rt.close()

    return run(go())
