"""The processes a benchmark run needs, and their certain end.

`Workspace` owns a temporary directory, every child process and every embedded Redis the run
starts. Leaving it (normally, on an error, on Ctrl-C or SIGTERM) stops them all and removes the
directory. Children run in their own session so a terminal's Ctrl-C reaches only the
benchmark, which then stops them all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import TracebackType

import httpx

from worker.dev.embedded import EmbeddedRedis, free_port

STOP_GRACE_S = 15.0


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the process's whole group, even when the process itself has ended: its children
    (a Celery worker's prefork children) may not have."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)


class Workspace:
    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="tokenworker-bench-")
        self._procs: list[subprocess.Popen[bytes]] = []
        self._redis: list[EmbeddedRedis] = []
        self._finalizers: list[Callable[[], None]] = []

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def redis(self) -> EmbeddedRedis:
        """A real redis-server with deploy/redis.conf, its data under this workspace."""
        server = EmbeddedRedis(directory=self.path(f"redis-{len(self._redis)}"))
        os.makedirs(server.directory)
        self._redis.append(server)
        return server.start()

    def spawn(self, args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.path(log_name), "ab") as log:
            proc = subprocess.Popen(  # noqa: S603  (our own interpreter and modules)
                args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._procs.append(proc)
        return proc

    def on_close(self, finalizer: Callable[[], None]) -> None:
        self._finalizers.append(finalizer)

    def stop(self, *procs: subprocess.Popen[bytes]) -> None:
        """SIGTERM each process group at once, SIGKILL those still running after a grace
        period."""
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(proc)
            self._forget(proc)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process group: for a process whose graceful stop nobody reads (a
        Celery worker's warm shutdown takes ~1.8 s)."""
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        self._forget(proc)

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        for finalizer in reversed(self._finalizers):
            with contextlib.suppress(Exception):
                finalizer()
        self._finalizers.clear()
        self.stop(*reversed(self._procs))
        for server in self._redis:
            server.stop(remove=False)
        self._redis.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_emulator(ws: Workspace, latency_ms: float, lifetime: float) -> tuple[str, int]:
    """`tokenworker emulator` in its own process; (base URL, pid) once it answers."""
    port = free_port()
    args = [sys.executable, "-m", "worker.cli", "emulator", "--port", str(port)]
    args += ["--latency-ms", str(latency_ms), "--lifetime", str(lifetime)]
    proc = ws.spawn(args, dict(os.environ), "emulator.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc)
    return url, proc.pid


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the emulator exited with {proc.returncode}")
        try:
            httpx.get(url + "/_admin/stats", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"the emulator did not answer at {url} within {timeout:g}s")


def sigterm_as_exit() -> Callable[[], None]:
    """Turn SIGTERM into SystemExit so `finally` blocks clean up; returns the undo."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    signal.signal(signal.SIGTERM, handler)
    return restore
