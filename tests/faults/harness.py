"""The faults suite's harness, over the shared one in tests/processes.py (processes in their
own process groups, CLI runs, runtimes, polling with deadlines): fleets of workers and beats,
Redis snapshots, and a ledger of every secret and every captured output that
the final secrecy scan (tests/faults/test_secrets_scan.py) reads.

Timing used across the suite (small on purpose, so recovery bounds are seconds):
sweep every 2 s, lease 5 s, HTTP timeout 2 s, hence a claim window of max(2 x 5, 2 x 2) = 10 s.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import redis

from tests.conftest import FAST, TEST_KEYS
from tests.helpers import connect
from tests.processes import (
    Proc,
    celery_argv,
    wait_until,
    with_runtime,
    worker_args,
)
from tests.processes import cli as run_cli
from worker.dev.embedded import EmbeddedRedis, free_port
from worker.engine.runtime import Runtime
from worker.store.apikeys import ApiKeys, Scope

T = TypeVar("T")

SWEEP_INTERVAL = 2.0
LEASE_TTL = 5.0
HTTP_TIMEOUT = 2.0
CLAIM_WINDOW = max(2 * LEASE_TTL, 2 * SWEEP_INTERVAL)  # worker.engine.sweep.claim_window


@dataclass
class Ledger:
    """Everything secret the suite produced, and everywhere it might have leaked to."""

    directory: Path
    secrets: set[str] = field(default_factory=set)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (label, captured output)
    files: list[Path] = field(default_factory=list)  # logs, read at scan time
    servers: list[EmbeddedRedis] = field(default_factory=list)  # scanned at scan time
    snapshots: list[tuple[str, list[bytes]]] = field(default_factory=list)  # stopped servers
    prefixes: set[str] = field(default_factory=set)  # store prefixes whose events to read

    def secret(self, *values: str | None) -> None:
        self.secrets.update(v for v in values if v)

    def text(self, label: str, value: str) -> None:
        self.texts.append((label, value))

    def log_path(self, name: str) -> Path:
        path = self.directory / f"{name}-{uuid.uuid4().hex[:6]}.log"
        path.touch()
        self.files.append(path)
        return path


# -- environments and runtimes ----------------------------------------------------------


def process_env(store_url: str, broker_url: str, prefix: str, **overrides: str) -> dict[str, str]:
    """The environment of a worker, beat or CLI process of this suite."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWORKER_")}
    env.update(FAST)
    env.update(
        {
            "TOKENWORKER_REDIS_URL": store_url,
            "TOKENWORKER_BROKER_URL": broker_url,
            "TOKENWORKER_ENCRYPTION_KEYS": TEST_KEYS,
            "TOKENWORKER_KEY_PREFIX": prefix,
            "TOKENWORKER_LOG_FORMAT": "json",
            "TOKENWORKER_SWEEP_INTERVAL": f"{SWEEP_INTERVAL:g}",
            "TOKENWORKER_LEASE_TTL": f"{LEASE_TTL:g}",
            "TOKENWORKER_HTTP_TIMEOUT": f"{HTTP_TIMEOUT:g}",
            # HA beat and liveness: fast takeover.
            "TOKENWORKER_BEAT_LOCK_TIMEOUT": "4",
            "TOKENWORKER_PING_INTERVAL": "1",
            "PYTHONUNBUFFERED": "1",
            # A SIGABRT then prints every thread's stack even when the process is wedged.
            "PYTHONFAULTHANDLER": "1",
        }
    )
    env.update({f"TOKENWORKER_{k.upper()}": v for k, v in overrides.items()})
    return env


def seed(env: dict[str, str], emu: Any, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    """A fresh integration (unique name: workers cache integrations) and imported connections."""
    kwargs.setdefault("name", f"acme-{uuid.uuid4().hex[:6]}")
    return with_runtime(env, lambda rt: connect(rt, emu, **kwargs))


def stored(env: dict[str, str], ids: list[str]) -> dict[str, Any]:
    """Connection id -> its stored Connection (None when missing), read in one round trip."""

    async def read(rt: Runtime) -> dict[str, Any]:
        return dict(zip(ids, await rt.store.get_connections(ids), strict=True))

    return with_runtime(env, read)


def events_for(env: dict[str, str], connection_id: str | None = None) -> list[dict[str, Any]]:
    from worker.engine.events import read_events  # noqa: PLC0415

    async def read(rt: Runtime) -> list[dict[str, Any]]:
        rows = await read_events(rt.redis, rt.store.keys, limit=10_000)
        return [
            e for _, e in rows if connection_id is None or e.get("connection_id") == connection_id
        ]

    return with_runtime(env, read)


# -- processes --------------------------------------------------------------------------


class Fleet:
    """The worker and beat processes of one test; every group is stopped at teardown."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(argv, env, self.ledger.log_path(name))
        self.procs.append(proc)
        return proc

    def worker(
        self, env: dict[str, str], concurrency: int = 2, queues: str = "sweep,refresh,ops"
    ) -> Worker:
        node = f"f{uuid.uuid4().hex[:8]}"
        proc = self.start(
            "worker", celery_argv(*worker_args(f"{node}@%h", concurrency, queues)), env
        )
        return Worker(proc, f"{node}@{socket.gethostname()}", env)

    def beat(self, env: dict[str, str]) -> Proc:
        schedule = self.ledger.directory / f"beat-{uuid.uuid4().hex[:8]}"
        return self.start(
            "beat", celery_argv("beat", "-s", str(schedule), "--loglevel", "INFO"), env
        )

    def api(self, env: dict[str, str]) -> tuple[str, Proc]:
        """A real `python -m worker.api` on a free port, once /healthz answers: its base URL
        and its process."""
        port = free_port()
        argv = [sys.executable, "-m", "worker.api", "--host", "127.0.0.1", "--port", str(port)]
        api = self.start("api", argv, env)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if api.popen.poll() is not None:
                raise AssertionError(f"the api exited:\n{api.tail()}")
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 45, "the api answers /healthz")
        return url, api

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.signal_group(signal.SIGCONT)
            proc.signal_group(signal.SIGTERM)
        for proc in self.procs:
            proc.stop(grace=10.0)


@dataclass
class Worker:
    proc: Proc
    node: str
    env: dict[str, str]

    def wait_ready(self, timeout: float = 45.0) -> float:
        """Block until this node answers a ping; returns when it did (epoch seconds)."""
        app = celery_client(self.env)
        try:

            def answered() -> bool:
                if self.proc.popen.poll() is not None:
                    raise AssertionError(f"worker exited early:\n{self.proc.tail()}")
                return bool(app.control.ping(destination=[self.node], timeout=0.5))

            wait_until(answered, timeout, f"worker {self.node} answers a ping", interval=0.05)
            return time.time()
        finally:
            app.close()

    def stacks(self) -> str:
        """Abort the main process (faulthandler prints every thread's stack, even when it is
        wedged) and return the log tail: the diagnosis of a worker that stopped consuming."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.popen.wait(5)
        return self.proc.tail(12000)


def celery_client(env: dict[str, str], results: bool = True) -> Any:
    """A bare Celery app on the worker's broker, for sending tasks (and reading results)."""
    from celery import Celery  # noqa: PLC0415

    url = env["TOKENWORKER_BROKER_URL"]
    app = Celery("faults-client", broker=url, backend=url if results else None)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    return app


def read_key(ledger: Ledger, env: dict[str, str], name: str) -> str:
    """A new API key with scope read (registered in the ledger as a secret)."""

    async def create(rt: Runtime) -> str:
        key, _ = await ApiKeys(rt.redis, env["TOKENWORKER_KEY_PREFIX"]).create(name, Scope.READ)
        return key

    key = with_runtime(env, create)
    ledger.secret(key)
    return key


def emulator_stats(emu: Any) -> dict[str, Any]:
    """The emulator's counters, with token calls per grant."""
    data: dict[str, Any] = emu.http.get("/_admin/stats", params={"by_grant": "1"}).json()
    return data


def token_calls(emu: Any, grants: Iterable[str]) -> int:
    """Token endpoint calls the emulator answered for these grants."""
    by_grant = emulator_stats(emu).get("token_calls_by_grant", {})
    return sum(int(by_grant.get(g, 0)) for g in grants)


@contextlib.contextmanager
def sending(env: dict[str, str], ids: list[str], task: str, every: float) -> Iterator[list[int]]:
    """A thread sending `task` for each id in turn to the ops queue every `every` seconds,
    through broker outages (a failed send is skipped); yields the count of sends."""
    stop = threading.Event()
    sent = [0]

    def send() -> None:
        app = celery_client(env, results=False)
        try:
            while not stop.is_set():
                with contextlib.suppress(Exception):  # the broker is down for a moment
                    app.send_task(task, args=[ids[sent[0] % len(ids)]], queue="ops")
                    sent[0] += 1
                stop.wait(every)
        finally:
            app.close()

    thread = threading.Thread(target=send, name="sending", daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(30)


def cli(
    ledger: Ledger,
    env: dict[str, str],
    *args: str,
    stdin: str | None = None,
    timeout: float = 90.0,
) -> subprocess.CompletedProcess[str]:
    """`python -m worker.cli ARGS` as an operator runs it; its output goes to the ledger."""
    done = run_cli(env, *args, stdin=stdin, timeout=timeout)
    ledger.text(f"cli {' '.join(args)} (stdout)", done.stdout)
    ledger.text(f"cli {' '.join(args)} (stderr)", done.stderr)
    return done


# -- Redis ------------------------------------------------------------------------------


def redis_values(client: redis.Redis, match: str = "*") -> dict[bytes, Any]:
    """Every key matching `match` -> its logical value (comparable across a restart)."""
    values: dict[bytes, Any] = {}
    for key in client.scan_iter(match=match, count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            continue  # expired between SCAN and TYPE
        values[key] = (kind, value)
    return values


def databases(client: redis.Redis) -> list[int]:
    info: dict[str, Any] = client.info("keyspace")
    return sorted(int(name[2:]) for name in info if name.startswith("db"))


def flat_bytes(value: Any) -> Iterator[bytes]:
    """Every bytes/str leaf inside a value from `redis_values`."""
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, str):
        yield value.encode()
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from flat_bytes(k)
            yield from flat_bytes(v)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from flat_bytes(item)


def dump_server(port: int) -> list[bytes]:
    """Every key and value of every database of the Redis server on `port`, as bytes."""
    client = redis.Redis(port=port)
    try:
        out: list[bytes] = []
        for db in databases(client):
            scoped = redis.Redis(port=port, db=db)
            try:
                for key, (_, value) in redis_values(scoped).items():
                    out.append(key)
                    out.extend(flat_bytes(value))
            finally:
                scoped.close()
        return out
    finally:
        client.close()


def start_redis_with(directory: str, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server with the given arguments instead of deploy/redis.conf."""
    from worker.dev.embedded import free_port, redis_server_binary  # noqa: PLC0415

    port = free_port()
    argv = [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
        "--daemonize", "no", "--logfile", os.path.join(directory, "redis.log"), *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        wait_until(lambda: _pings(client), 10, f"redis-server {extra} answers", interval=0.05)
    finally:
        client.close()
    return proc, port


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


# -- a listener that must hear nothing ---------------------------------------------------


class Tripwire:
    """A TCP listener recording every connection and byte it receives."""

    def __init__(self, host: str, port: int) -> None:
        self.received: list[bytes] = []
        self.connections = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tripwire", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(1.0)
            with conn, contextlib.suppress(OSError):
                while chunk := conn.recv(65536):
                    self.received.append(chunk)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)


# -- the secrecy scan --------------------------------------------------------------------

_WINDOW = 16
_RUNS = re.compile(rb"[A-Za-z0-9!._\-=+/%]{16,}")


def needles(values: set[str]) -> dict[bytes, str]:
    """Every secret as it may appear (plain, form-encoded) -> a printable hint of it."""
    found: dict[bytes, str] = {}
    for value in values:
        hint = f"{value[:10]}...({len(value)} chars)"
        for form in {value, quote(value, safe="")}:
            if len(form) >= _WINDOW:
                found[form.encode()] = hint
    return found


def find_secrets(
    haystacks: list[tuple[str, bytes]], secrets_: dict[bytes, str]
) -> list[tuple[str, str]]:
    """(where, which secret) for every secret found in a haystack. Secrets are indexed by
    their first 16 bytes and only runs of token characters are walked, so megabytes of
    haystack against thousands of secrets take about a second."""
    by_prefix: dict[bytes, list[bytes]] = {}
    for secret in secrets_:
        by_prefix.setdefault(secret[:_WINDOW], []).append(secret)
    hits: set[tuple[str, str]] = set()
    for where, data in haystacks:
        for match in _RUNS.finditer(data):
            run = match.group()
            for start in range(len(run) - _WINDOW + 1):
                for secret in by_prefix.get(run[start : start + _WINDOW], ()):
                    if run.startswith(secret, start):
                        hits.add((where, secrets_[secret]))
    return sorted(hits)


def kombu_bodies(value: bytes) -> list[bytes]:
    """Celery messages keep their body base64-encoded in the broker: decode them, so an
    argument carrying a secret would be seen."""
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return []
    out: list[bytes] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            encoding = (item.get("properties") or {}).get("body_encoding")
            if encoding == "base64" and isinstance(item.get("body"), str):
                with contextlib.suppress(ValueError):
                    out.append(base64.b64decode(item["body"]))
            stack.extend(item.values())
    return out
