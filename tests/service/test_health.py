"""Liveness (a worker is consuming) and readiness (store and broker answer, the store persists),
as functions and as the `tokenworker health` probe against real processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.processes import Proc, celery_env, cli, wait_ready, wait_until
from worker.dev.embedded import free_port, redis_server_binary
from worker.service.health import FORGET_AFTER, current, heartbeats, liveness, node_name, readiness
from worker.store.keys import Keys

NOW = 1_800_000_000.0


class TestLiveness:
    def test_a_worker_that_consumed_recently_is_live(self) -> None:
        """A named worker whose heartbeat is younger than max_age is live."""
        verdict = liveness({"w@a": NOW - 10}, NOW, 60, "w@a")
        assert verdict.ok
        assert verdict.details["age_seconds"] == 10

    def test_a_silent_worker_is_not_live_though_others_are(self) -> None:
        """Another worker's fresh heartbeat does not keep a silent named worker alive."""
        verdict = liveness({"w@a": NOW - 400, "w@b": NOW - 1}, NOW, 300, "w@a")
        assert not verdict.ok
        assert "400s ago" in verdict.summary

    def test_a_worker_without_heartbeat_is_not_live(self) -> None:
        """A worker that never finished a task fails the probe, saying so."""
        verdict = liveness({"w@b": NOW}, NOW, 300, "w@a")
        assert not verdict.ok
        assert verdict.summary == "no heartbeat from w@a yet"

    def test_without_a_name_the_freshest_worker_decides(self) -> None:
        """The fleet-wide probe is live when any worker consumed within max_age."""
        assert liveness({"w@a": NOW - 900, "w@b": NOW - 5}, NOW, 300, None).ok
        assert not liveness({}, NOW, 300, None).ok

    def test_workers_silent_for_an_hour_are_gone(self) -> None:
        """Heartbeats older than FORGET_AFTER are left out of the fleet view."""
        beats = {"w@a": NOW - FORGET_AFTER - 1, "w@b": NOW - 400}
        assert current(beats, NOW) == {"w@b": NOW - 400}

    def test_node_names_expand_like_celery(self) -> None:
        """%h, %n and %d expand to the host name, its first label and the rest."""
        assert node_name("tw@%h", "pod-1.ns.svc") == "tw@pod-1.ns.svc"
        assert node_name("%n:%d", "pod-1.ns.svc") == "pod-1:ns.svc"
        assert node_name("tw@%h") == f"tw@{socket.gethostname()}"


class _NoConfig:
    """A managed Redis: answers PING, refuses CONFIG."""

    def ping(self) -> bool:
        return True

    def config_get(self, name: str) -> Any:
        raise redis.ResponseError("unknown command 'CONFIG'")


class TestReadiness:
    def test_unreadable_config_warns_unless_persistence_is_required(self) -> None:
        """A store that hides CONFIG is ready with a warning, and unready when strict."""
        lenient = readiness(_NoConfig(), None, strict=False)
        assert lenient.ok
        assert lenient.details["warnings"]
        strict = readiness(_NoConfig(), None, strict=True)
        assert not strict.ok


@pytest.fixture
def volatile_redis() -> Iterator[str]:
    """A Redis server without AOF that evicts: the store tokenworker must refuse."""
    port = free_port()
    directory = tempfile.mkdtemp(prefix="tw-volatile-")
    server = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            directory,
            "--appendonly",
            "no",
            "--save",
            "",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        wait_until(lambda: _answers(client), 10, "the volatile redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        server.terminate()
        server.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.mark.integration
class TestReadinessProbe:
    def test_a_durable_reachable_store_is_ready(self, env: dict[str, str]) -> None:
        """The test store (deploy/redis.conf: AOF, noeviction) is ready: exit 0."""
        done = cli(env, "health", "--readiness", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["readiness"]["ok"] is True

    def test_a_volatile_store_is_unready(self, env: dict[str, str], volatile_redis: str) -> None:
        """A store without AOF that evicts keys fails readiness with exit 1, naming both."""
        done = cli({**env, "TOKENWORKER_REDIS_URL": volatile_redis}, "health", "--readiness")
        assert done.returncode == 1
        assert "appendonly is off" in done.stdout
        assert "allkeys-lru" in done.stdout

    def test_an_unreachable_broker_exits_3(self, env: dict[str, str]) -> None:
        """A broker nobody listens on is reported as unreachable, exit 3, without secrets."""
        url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
        done = cli({**env, "TOKENWORKER_BROKER_URL": url}, "health", "--readiness")
        assert done.returncode == 3
        assert "broker unreachable" in done.stderr
        assert "hunter2" not in done.stderr


@pytest.mark.integration
def test_liveness_follows_consumption_not_the_process(redis_server: Any) -> None:
    """An idle worker stays live through its pings; stopped (alive, not consuming) it fails the
    probe within max_age; resumed, it passes again; a clean stop removes its heartbeat."""
    env = celery_env(redis_server, broker_db=2, TOKENWORKER_PING_INTERVAL="0.3")
    node = f"probe-{uuid.uuid4().hex[:6]}@%h"
    probe = ["health", "--liveness", "--worker", node, "--max-age", "2"]
    worker = Proc.worker(env, node, concurrency=1)
    try:
        wait_ready(env, worker)
        wait_until(lambda: cli(env, *probe).returncode == 0, 15, "the idle worker to be live")
        assert cli(env, "health", "--liveness").returncode == 0
        worker.signal(signal.SIGSTOP)
        failed = wait_until(
            lambda: (done := cli(env, *probe)).returncode == 1 and done, 10, "the probe to fail"
        )
        assert "last consumed" in failed.stdout
        worker.signal(signal.SIGCONT)
        wait_until(lambda: cli(env, *probe).returncode == 0, 15, "the resumed worker to be live")
    finally:
        code = worker.stop()
        log = worker.log()
        worker.close()
    assert code == 0, log[-3000:]
    store = redis.Redis.from_url(env["TOKENWORKER_REDIS_URL"])
    assert node_name(node) not in heartbeats(store, Keys(env["TOKENWORKER_KEY_PREFIX"]))
    store.close()
