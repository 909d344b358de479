"""Health: the store's durability settings, worker heartbeats, liveness and readiness.

Liveness proves consumption, not a live PID (a Celery worker can sit connected and silent after
a Redis reconnect). Every task a worker process finishes records `<prefix>heartbeat[node] = now`
(`worker.telemetry.metrics.Recorder.flush`), and each worker's main process runs a `Pinger`
that sends itself a no-op `tokenworker.ping` every TOKENWORKER_PING_INTERVAL seconds through
its own direct queue (`worker_direct`), so even an idle worker keeps its heartbeat fresh exactly
as long as it consumes (the Celery signals that drive both are in `worker.jobs.signals`). A
probe only reads the heartbeat: it needs neither the broker nor the encryption keys.
Readiness: the store and the broker answer, and the store persists and does not evict.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog

from config.redis_urls import RedisEndpoint
from worker.store import clients
from worker.store.keys import Keys

PING_TASK = "tokenworker.ping"
# Workers silent this long are gone (crashed, or their pod was replaced): the exporter and
# `status` leave them out and each worker start prunes them. A clean stop removes its own.
FORGET_AFTER = 3600.0
log = structlog.get_logger("tokenworker.health")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _config(client: redis.Redis, name: str) -> str:
    found: dict[Any, Any] = dict(client.config_get(name))
    return next((_text(v) for k, v in found.items() if _text(k) == name), "")


def persistence_problems(client: redis.Redis) -> list[str]:
    """What is wrong with the store's durability settings; empty when all is well."""
    try:
        appendonly = _config(client, "appendonly")
        policy = _config(client, "maxmemory-policy")
    except redis.ResponseError:
        return [
            "cannot read CONFIG (managed Redis?): make sure AOF is on and "
            "maxmemory-policy is noeviction"
        ]
    problems = []
    if appendonly != "yes":
        problems.append(
            "appendonly is off: a restart loses every token refreshed since the "
            "last snapshot (set `appendonly yes`, see deploy/redis.conf)"
        )
    if policy != "noeviction":
        problems.append(
            f"maxmemory-policy is {policy!r}: Redis may evict connections and "
            "locks under memory pressure (set `maxmemory-policy noeviction`)"
        )
    return problems


# -- liveness ----------------------------------------------------------------------------


def node_name(pattern: str, hostname: str | None = None) -> str:
    """Expand Celery's node-name placeholders: %h (host name), %n (its first label), %d
    (the rest), so a probe names its own worker as the worker's `-n` did."""
    host = hostname or socket.gethostname()
    name, _, domain = host.partition(".")
    return pattern.replace("%h", host).replace("%n", name).replace("%d", domain)


def heartbeats(client: redis.Redis, keys: Keys) -> dict[str, float]:
    """Worker node name -> when it last finished a task (epoch seconds)."""
    raw: Any = client.hgetall(keys.heartbeat)
    return {_text(node): float(at) for node, at in raw.items()}


def current(beats: Mapping[str, float], now: float) -> dict[str, float]:
    """The heartbeats of workers that are not gone (silent for less than FORGET_AFTER)."""
    return {node: at for node, at in beats.items() if now - at < FORGET_AFTER}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def liveness(beats: Mapping[str, float], now: float, max_age: float, node: str | None) -> Verdict:
    """Live when `node` (or, without one, any worker) finished a task within `max_age`."""
    if node is not None:
        beats = {name: at for name, at in beats.items() if name == node}
        if not beats:
            return Verdict(False, f"no heartbeat from {node} yet", {"worker": node})
    if not beats:
        return Verdict(False, "no worker has recorded a heartbeat", {})
    name, last = max(beats.items(), key=lambda item: item[1])
    age = round(max(0.0, now - last), 1)
    details = {"worker": name, "last_consumed_at": last, "age_seconds": age, "max_age": max_age}
    if age > max_age:
        return Verdict(False, f"{name} last consumed {age:g}s ago (max {max_age:g}s)", details)
    return Verdict(True, f"{name} consumed {age:g}s ago", details)


# -- readiness ---------------------------------------------------------------------------


def readiness(store: redis.Redis, broker: redis.Redis | None, strict: bool) -> Verdict:
    """Ready when both answer and the store is durable. A store whose CONFIG cannot be read
    (managed Redis) only counts against readiness when `strict`
    (TOKENWORKER_REQUIRE_PERSISTENCE). Raises redis.ConnectionError when one is unreachable."""
    store.ping()
    if broker is not None:
        broker.ping()
    problems = persistence_problems(store)
    unknown = [p for p in problems if p.startswith("cannot read CONFIG")]
    failing = problems if strict else [p for p in problems if p not in unknown]
    warnings = [p for p in problems if p not in failing]
    details = {"problems": failing, "warnings": warnings}
    if failing:
        return Verdict(False, "store is not durable: " + "; ".join(failing), details)
    return Verdict(True, "store and broker reachable; store persists", details)


# -- the worker's self-ping --------------------------------------------------------------


class Pinger:
    """A daemon thread in the worker's main process that calls `send` every `interval`."""

    def __init__(self, send: Callable[[], object], interval: float) -> None:
        self.send = send
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokenworker-ping", daemon=True)

    def start(self) -> Pinger:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.send()
            except Exception as error:  # the broker is down, say; the probe will tell
                log.warning("ping.unsent", problem=f"{type(error).__name__}: {error}")
            self._stop.wait(self.interval)


def forget_silent_workers(endpoint: RedisEndpoint, keys: Keys, now: float) -> None:
    """Remove the heartbeats of workers gone for FORGET_AFTER (each worker start does this)."""
    client = clients.sync_client(endpoint, socket_timeout=5, socket_connect_timeout=5)
    try:
        stale = [n for n, at in heartbeats(client, keys).items() if now - at > FORGET_AFTER]
        if stale:
            client.hdel(keys.heartbeat, *stale)
    except redis.RedisError as error:
        log.warning("heartbeat.prune_failed", problem=f"{type(error).__name__}: {error}")
    finally:
        client.close()


def remove_heartbeat(endpoint: RedisEndpoint, keys: Keys, node: str) -> None:
    """Remove `node`'s heartbeat (a clean stop), so a replaced worker leaves no stale entry."""
    client = clients.sync_client(endpoint, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.hdel(keys.heartbeat, node)
    except redis.RedisError as error:
        log.warning("heartbeat.unremoved", problem=f"{type(error).__name__}: {error}")
    finally:
        client.close()
