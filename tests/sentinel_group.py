"""A real Redis Sentinel group on loopback for the suite: one master, one replica and three
sentinels, all Debian `redis-server` processes (tests/processes.py's Proc and wait_until).

Sentinel timeouts are short (down after 1 s, failover timeout 3 s) so a failover takes a few
seconds. Without Debian's binaries (`apt-get install redis-server`, .ci/run does it) the tests
using the group are skipped with SKIP_REASON, which tests/conftest.py repeats loudly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import redis

from tests.conftest import SENTINEL_SKIPPED
from tests.processes import Proc, wait_until
from worker.dev.embedded import free_port

SERVER = "/usr/bin/redis-server"
SENTINEL = "/usr/bin/redis-sentinel"
MASTER = "tw"

SKIP_REASON = (
    f"Debian redis-server/redis-sentinel not found in /usr/bin: {SENTINEL_SKIPPED} "
    "(apt-get install redis-server redis-sentinel)"
)


def available() -> bool:
    return os.access(SERVER, os.X_OK) and os.access(SENTINEL, os.X_OK)


class SentinelGroup:
    """Data nodes by port (the first starts as master) and three sentinels watching them."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tw-sentinel-"))
        self.nodes: dict[int, Proc | None] = {}
        self.sentinels: dict[int, Proc] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def start(self) -> SentinelGroup:
        master = self.start_node(free_port())
        self.start_node(free_port(), replica_of=master)
        for _ in range(3):
            self._start_sentinel(master)
        wait_until(lambda: self.replicas_seen() == 1, 20, "the sentinels see the replica")
        # Counted by INFO (and so by `auto`) from its first contact, the replica confirms
        # nothing (WAIT) until its initial sync is done: 5 s of diskless-sync delay.
        wait_until(lambda: replicas_online(master) == 1, 30, "the replica in sync")
        return self

    def start_node(self, port: int, replica_of: int | None = None) -> int:
        data = self.directory / f"node-{port}"
        data.mkdir(exist_ok=True)
        argv = [
            SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--appendonly", "yes", "--save", "", "--daemonize", "no",
        ]  # fmt: skip
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.nodes[port] = Proc(argv, dict(os.environ), self.directory / f"node-{port}.log")
        wait_until(lambda: _pings(port), 10, f"redis-server :{port} answers", 0.05)
        return port

    def _start_sentinel(self, master: int) -> None:
        port = free_port()
        conf = self.directory / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.directory}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 3000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.sentinels[port] = Proc(
            [SENTINEL, str(conf)], dict(os.environ), self.directory / f"sentinel-{port}.log"
        )
        wait_until(lambda: _pings(port), 10, f"redis-sentinel :{port} answers", 0.05)

    def master(self) -> int | None:
        """The master's port as the sentinels' majority reports it (None while undecided)."""
        seen: dict[int, int] = {}
        for port in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
                found = client.sentinel_get_master_addr_by_name(MASTER)
                client.close()
                if found:
                    seen[int(found[1])] = seen.get(int(found[1]), 0) + 1
        best = max(seen.items(), key=lambda item: item[1], default=None)
        return best[0] if best and best[1] >= 2 else None

    def replicas_seen(self) -> int:
        port = next(iter(self.sentinels))
        client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
        try:
            return sum(
                1 for r in client.sentinel_slaves(MASTER) if "s_down" not in r.get("flags", "")
            )
        finally:
            client.close()

    def failover(self) -> None:
        """A graceful SENTINEL FAILOVER (the master becomes a replica of the promoted one)."""
        client = redis.Redis(port=next(iter(self.sentinels)), socket_timeout=5)
        try:
            client.execute_command("SENTINEL", "FAILOVER", MASTER)
        finally:
            client.close()

    def kill(self, port: int) -> None:
        """SIGKILL a data node: whatever it had not replicated is gone."""
        proc = self.nodes[port]
        assert proc is not None
        proc.kill()
        self.nodes[port] = None

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.nodes.values()]:
            if proc is not None:
                proc.stop(grace=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def replicas_online(port: int) -> int:
    """Replicas of the node on `port` that finished their sync (INFO replication)."""
    client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
    try:
        info = client.info("replication")
    except redis.RedisError:
        return 0
    finally:
        client.close()
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


def _pings(port: int) -> bool:
    client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
