"""`tokenworker metrics`: a Prometheus exporter that reads everything from the store Redis.

Three sources, one scrape:
- counters and histograms that worker processes add up in Redis (`worker.telemetry.metrics`):
  checks by outcome, sweeps, tasks, Salesforce call latency and HTTP status;
- counters of events tailed from the event stream since this exporter started: failures by
  class and error code, refreshes by reason, every event by name;
- gauges computed at scrape time: due backlog, overdue, age of the oldest due connection,
  connections by integration and status (a SCAN reading two fields, no decryption, cached for
  `scan_every` seconds), integrations, worker heartbeats, whether a beat holds the lock.

One process serves the whole fleet (prefork children never export anything themselves); it
needs the store URL and key prefix, not the encryption keys. If the store is unreachable the
scrape still answers, with `tokenworker_store_up 0`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from config.settings import Settings
from worker.service.health import current, heartbeats
from worker.store.keys import Keys
from worker.telemetry.event_counts import EventCounts
from worker.telemetry.metrics import CALL_SECONDS, LATENCY_BUCKETS, bound, metrics_key, parse_field

NS = "tokenworker_"
WORKER_COUNTERS = {
    "checks_total": ("Connections checked by workers, by outcome.", ["outcome"]),
    "tasks_total": ("Celery tasks finished by workers, by task and state.", ["task", "state"]),
    "sweeps_total": ("Sweeps run; skipped=true when another ran in the window.", ["skipped"]),
    "swept_connections_total": ("Connections claimed by sweeps.", []),
    "salesforce_responses_total": (
        "Answers of Salesforce's OAuth endpoints, by call and HTTP status.",
        ["call", "code"],
    ),
}
HISTOGRAMS = {
    CALL_SECONDS: ("Time to Salesforce's answer, by call (introspect, refresh).", ["call"]),
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ConnectionCounts:
    """Connections by (integration, status), recounted at most every `every` seconds."""

    def __init__(self, client: redis.Redis, keys: Keys, every: float) -> None:
        self.client = client
        self.keys = keys
        self.every = every
        self.counts: Counter[tuple[str, str]] = Counter()
        self._at = float("-inf")

    def get(self) -> Counter[tuple[str, str]]:
        if time.monotonic() - self._at >= self.every:
            self.counts = self._count()
            self._at = time.monotonic()
        return self.counts

    def _count(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        keys: list[Any] = []
        for key in self.client.scan_iter(match=self.keys.conn_pattern, count=1000):
            keys.append(key)
            if len(keys) >= 1000:
                self._add(keys, counts)
                keys = []
        self._add(keys, counts)
        return counts

    def _add(self, keys: list[Any], counts: Counter[tuple[str, str]]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "integration", "status")
            for integration, status in pipe.execute():
                if integration is not None:
                    counts[(_text(integration), _text(status or b"active"))] += 1


class StoreCollector(Collector):
    """Every tokenworker metric, read from the store at scrape time."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        scan_every: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.clock = clock
        self.events = EventCounts(client, self.keys)
        self.connections = ConnectionCounts(client, self.keys, scan_every)
        self._lock = threading.Lock()
        with contextlib.suppress(redis.RedisError):  # else the first good scrape starts it
            self.events.update()  # start counting events from now

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                families = [*self._worker_totals(), *self._event_totals(), *self._gauges()]
            except redis.RedisError:
                families = []
        up = GaugeMetricFamily(NS + "store_up", "1 when the store Redis answered this scrape.")
        up.add_metric([], 1.0 if families else 0.0)
        yield from families
        yield up

    def _worker_totals(self) -> list[Metric]:
        raw: Any = self.client.hgetall(metrics_key(self.keys))
        counters = {
            name: CounterMetricFamily(NS + name, doc, labels=labels)
            for name, (doc, labels) in WORKER_COUNTERS.items()
        }
        histograms: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
        last_sweep = GaugeMetricFamily(
            NS + "last_sweep_timestamp_seconds", "When the last (unskipped) sweep finished."
        )
        for key, value in sorted((_text(k), float(v)) for k, v in raw.items()):
            name, labels = parse_field(key)
            if name in counters:
                family = counters[name]
                values = [labels.get(label, "") for label in WORKER_COUNTERS[name][1]]
                family.add_metric(values, value)
            elif name == "last_sweep_timestamp_seconds":
                last_sweep.add_metric([], value)
            else:
                base, _, part = name.rpartition("_")
                if base in HISTOGRAMS:
                    series = tuple(labels.get(label, "") for label in HISTOGRAMS[base][1])
                    slot = labels["le"] if part == "bucket" else part
                    histograms.setdefault((base, series), {})[slot] = value
        return [*counters.values(), *self._histograms(histograms), last_sweep]

    def _histograms(
        self, found: dict[tuple[str, tuple[str, ...]], dict[str, float]]
    ) -> list[Metric]:
        families = {
            name: HistogramMetricFamily(NS + name, doc, labels=labels)
            for name, (doc, labels) in HISTOGRAMS.items()
        }
        for (name, series), slots in found.items():
            cumulative, buckets = 0.0, []
            for le in LATENCY_BUCKETS:
                cumulative += slots.get(bound(le), 0.0)
                buckets.append((bound(le), cumulative))
            families[name].add_metric(list(series), buckets, sum_value=slots.get("sum", 0.0))
        return list(families.values())

    def _event_totals(self) -> list[Metric]:
        self.events.update()
        named = CounterMetricFamily(
            NS + "events_total", "Events emitted since this exporter started.", labels=["event"]
        )
        for name, count in sorted(self.events.events.items()):
            named.add_metric([name], count)
        failures = CounterMetricFamily(
            NS + "failures_total",
            "Failures since this exporter started, by class (transient, permanent, "
            "configuration, integrity), Salesforce error code and stage.",
            labels=["class", "error", "stage"],
        )
        for labels, count in sorted(self.events.failures.items()):
            failures.add_metric(list(labels), count)
        refreshes = CounterMetricFamily(
            NS + "refreshes_total",
            "Successful refreshes since this exporter started, by reason and rotation.",
            labels=["reason", "rotated"],
        )
        for (reason, rotated), count in sorted(self.events.refreshes.items()):
            refreshes.add_metric([reason, rotated], count)
        return [named, failures, refreshes]

    def _gauges(self) -> list[Metric]:
        return [*self._schedule(), *self._population(), *self._processes()]

    def _schedule(self) -> list[Metric]:
        now = self.clock()
        due_key = self.keys.due
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zcount(due_key, "-inf", now)
            pipe.zcount(due_key, "-inf", now - self.settings.sweep_interval)
            pipe.zcard(due_key)
            pipe.zrange(due_key, 0, 0, withscores=True)
            due, overdue, scheduled, first = pipe.execute()
        oldest = now - float(first[0][1]) if first and first[0][1] < now else 0.0
        return [
            _gauge("due_connections", "Connections whose next check time has passed.", due),
            _gauge(
                "overdue_connections",
                "Connections due for longer than one sweep interval (the sweep is behind).",
                overdue,
            ),
            _gauge(
                "oldest_due_age_seconds", "How long the oldest due connection has waited.", oldest
            ),
            _gauge("scheduled_connections", "Connections in the due index.", scheduled),
        ]

    def _population(self) -> list[Metric]:
        conns = GaugeMetricFamily(
            NS + "connections",
            "Stored connections by integration and status (recounted every minute or so).",
            labels=["integration", "status"],
        )
        for (integration, status), count in sorted(self.connections.get().items()):
            conns.add_metric([integration, status], count)
        up = GaugeMetricFamily(
            NS + "integration_up",
            "1 when the integration is active, 0 when misconfigured.",
            labels=["integration", "provider"],
        )
        introspection = GaugeMetricFamily(
            NS + "integration_introspection",
            "1 when introspection works for the integration's connected app.",
            labels=["integration"],
        )
        names: Any = self.client.smembers(self.keys.integrations)
        for name in sorted(_text(n) for n in names):
            found: Any = self.client.hmget(
                self.keys.integration(name), "provider", "status", "introspection"
            )
            provider, status, intro = found
            if provider is None:
                continue
            active = _text(status or b"active") == "active"
            up.add_metric([name, _text(provider)], 1.0 if active else 0.0)
            introspection.add_metric([name], 0.0 if intro == b"0" else 1.0)
        return [conns, up, introspection]

    def _processes(self) -> list[Metric]:
        workers = GaugeMetricFamily(
            NS + "worker_last_consumed_timestamp_seconds",
            "When each worker node last finished a task (pings included); nodes silent for "
            "an hour are left out.",
            labels=["worker"],
        )
        for node, at in sorted(current(heartbeats(self.client, self.keys), self.clock()).items()):
            workers.add_metric([node], at)
        leader = _gauge(
            "beat_leader",
            "1 when a beat holds the scheduler lock.",
            1.0 if self.client.exists(self.keys.beat) else 0.0,
        )
        return [workers, leader]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(NS + name, doc)
    family.add_metric([], float(value))
    return family


def registry_for(settings: Settings, scan_every: float = 60.0) -> CollectorRegistry:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(client, settings, scan_every))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104
    """Serve /metrics on `addr:port` until the process is stopped."""
    start_http_server(port, addr=addr, registry=registry)
    threading.Event().wait()
