"""`tokenworker metrics`: a Prometheus exporter that reads everything from the store Redis.

Three sources, one scrape:
- counters and histograms that worker processes add up in Redis (`worker.telemetry.metrics`):
  checks by outcome, sweeps, tasks, Salesforce call latency and HTTP status;
- counters of events tailed from the event stream since this exporter started: failures by
  class and error code, refreshes by reason, every event by name;
- gauges from the fleet read model (worker.store.fleet) at scrape time: due backlog, overdue,
  age of the oldest due connection, connections by integration and status (the counts the
  store keeps, re-read at most every `scan_every` seconds), integrations, worker heartbeats,
  whether a beat holds the lock, the last sweep.

One process serves the whole fleet (prefork children never export anything themselves); it
needs the store URL and key prefix, not the encryption keys. If the store is unreachable the
scrape still answers, with `tokenworker_store_up 0`. Each scrape runs the async read model on
its own short-lived event loop and connection. On a store written before counts existed, each
scrape spends up to BACKFILL_BUDGET seconds on the one-time count (worker.store.counting) and
says `tokenworker_connections_counting 1` until it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.settings import Settings
from worker.service.health import current
from worker.store import clients
from worker.store.fleet import Counts, Fleet, Processes
from worker.store.keys import Keys
from worker.telemetry.event_counts import EventCounts
from worker.telemetry.metrics import CALL_SECONDS, LATENCY_BUCKETS, bound, parse_field

T = TypeVar("T")
BACKFILL_BUDGET = 2.0  # seconds of a scrape spent on a first-time count of the store
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


class StoreCollector(Collector):
    """Every tokenworker metric, read from the store at scrape time."""

    def __init__(
        self,
        settings: Settings,
        scan_every: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.clock = clock
        self.scan_every = scan_every
        self.events = EventCounts(self.keys)
        self._counts: Counts | None = None
        self._counted_at = float("-inf")
        self._lock = threading.Lock()
        with contextlib.suppress(RedisError):  # else the first good scrape starts it
            self._run(self.events.update)  # start counting events from now

    def _run(self, work: Callable[[Redis], Awaitable[T]]) -> T:
        async def scrape() -> T:
            client = clients.async_client(
                self.settings.store_endpoint, socket_timeout=5, socket_connect_timeout=5
            )
            try:
                return await work(client)
            finally:
                await client.aclose()

        return asyncio.run(scrape())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                families = self._run(self._families)
            except RedisError:
                families = []
        up = GaugeMetricFamily(NS + "store_up", "1 when the store Redis answered this scrape.")
        up.add_metric([], 1.0 if families else 0.0)
        yield from families
        yield up

    async def _families(self, client: Redis) -> list[Metric]:
        fleet = Fleet(client, self.keys)
        now = self.clock()
        processes = await fleet.processes(now, self.settings.sweep_interval)
        return [
            *await self._worker_totals(client),
            *await self._event_totals(client),
            *_schedule(processes, now),
            *_population(await self._population(fleet)),
            *await self._integrations(fleet),
            *_processes(processes, now),
        ]

    async def _population(self, fleet: Fleet) -> Counts | None:
        """The kept counts, re-read at most every `scan_every` seconds."""
        if self._counts is None or time.monotonic() - self._counted_at >= self.scan_every:
            self._counts = await fleet.counts_within(BACKFILL_BUDGET)
            self._counted_at = time.monotonic()
        return self._counts

    async def _worker_totals(self, client: Redis) -> list[Metric]:
        raw: Any = await client.hgetall(self.keys.metrics)
        counters = {
            name: CounterMetricFamily(NS + name, doc, labels=labels)
            for name, (doc, labels) in WORKER_COUNTERS.items()
        }
        histograms: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
        for key, value in sorted((_text(k), float(v)) for k, v in raw.items()):
            name, labels = parse_field(key)
            if name in counters:
                family = counters[name]
                values = [labels.get(label, "") for label in WORKER_COUNTERS[name][1]]
                family.add_metric(values, value)
            else:
                base, _, part = name.rpartition("_")
                if base in HISTOGRAMS:
                    series = tuple(labels.get(label, "") for label in HISTOGRAMS[base][1])
                    slot = labels["le"] if part == "bucket" else part
                    histograms.setdefault((base, series), {})[slot] = value
        return [*counters.values(), *self._histograms(histograms)]

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

    async def _event_totals(self, client: Redis) -> list[Metric]:
        await self.events.update(client)
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

    async def _integrations(self, fleet: Fleet) -> list[Metric]:
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
        for facts in await fleet.integrations():
            up.add_metric([facts.name, facts.provider], 1.0 if facts.status == "active" else 0.0)
            introspection.add_metric([facts.name], 1.0 if facts.introspection else 0.0)
        return [up, introspection]


def _schedule(processes: Processes, now: float) -> list[Metric]:
    backlog = processes.backlog
    return [
        _gauge("due_connections", "Connections whose next check time has passed.", backlog.due_now),
        _gauge(
            "overdue_connections",
            "Connections due for longer than one sweep interval (the sweep is behind).",
            backlog.overdue,
        ),
        _gauge(
            "oldest_due_age_seconds",
            "How long the oldest due connection has waited.",
            backlog.oldest_age(now),
        ),
        _gauge("scheduled_connections", "Connections in the due index.", backlog.scheduled),
    ]


def _population(counts: Counts | None) -> list[Metric]:
    conns = GaugeMetricFamily(
        NS + "connections",
        "Stored connections by integration and status (counts the store keeps on every write).",
        labels=["integration", "status"],
    )
    for (integration, status), count in sorted((counts.by_integration() if counts else {}).items()):
        conns.add_metric([integration, status], count)
    counting = _gauge(
        "connections_counting",
        "1 while the one-time count of a store written before counts existed runs "
        "(tokenworker_connections is left out until it is done).",
        0.0 if counts else 1.0,
    )
    return [conns, counting]


def _processes(processes: Processes, now: float) -> list[Metric]:
    workers = GaugeMetricFamily(
        NS + "worker_last_consumed_timestamp_seconds",
        "When each worker node last finished a task (pings included); nodes silent for "
        "an hour are left out.",
        labels=["worker"],
    )
    for node, at in sorted(current(processes.heartbeats, now).items()):
        workers.add_metric([node], at)
    leader = _gauge(
        "beat_leader", "1 when a beat holds the scheduler lock.", float(processes.beat.leader)
    )
    last_sweep = GaugeMetricFamily(
        NS + "last_sweep_timestamp_seconds", "When the last (unskipped) sweep finished."
    )
    if processes.last_sweep_at is not None:
        last_sweep.add_metric([], processes.last_sweep_at)
    return [workers, leader, last_sweep]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(NS + name, doc)
    family.add_metric([], float(value))
    return family


def registry_for(settings: Settings, scan_every: float = 60.0) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(settings, scan_every))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104
    """Serve /metrics on `addr:port` until the process is stopped."""
    start_http_server(port, addr=addr, registry=registry)
    threading.Event().wait()
