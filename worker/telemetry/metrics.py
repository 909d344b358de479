"""Domain metrics recorded by worker processes and summed in the store Redis.

Each prefork child keeps a small tally (check outcomes, sweeps, Salesforce call latencies and
status codes) and adds it to one Redis hash after every task, in the same round trip that
records the worker's heartbeat. The totals are therefore fleet-wide, survive child restarts and
`max_tasks_per_child`, and any one `tokenworker metrics` process serves them
(`worker.telemetry.exporter`): no PROMETHEUS_MULTIPROC_DIR, no exporter per host. A failed write
keeps the tally for the next task; metrics never fail a task. `worker.jobs.signals` calls
`record_task` and `RECORDER.flush` when a task finishes.

Hash fields are `name|label=value|...`; histogram buckets are stored per bucket (not
cumulative) as `<name>_bucket|...|le=<bound>`, with `_sum` and `_count` beside them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import redis
import structlog

from config.redis_urls import RedisEndpoint
from worker.salesforce import hosts
from worker.salesforce.client import SalesforceClient
from worker.store import clients
from worker.store.keys import Keys

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
CALL_SECONDS = "salesforce_request_duration_seconds"
_CALLS = (
    (hosts.INTROSPECT_PATH, "introspect"),
    (hosts.TOKEN_PATH, "refresh"),
    (hosts.REVOKE_PATH, "revoke"),
)
_CHECK_TASKS = ("tokenworker.check_connection", "tokenworker.refresh_connection")
log = structlog.get_logger("tokenworker.metrics")


def metrics_key(keys: Keys) -> str:
    return keys.metrics


def field(name: str, **labels: object) -> str:
    return "|".join([name, *(f"{k}={labels[k]}" for k in sorted(labels))])


def parse_field(text: str) -> tuple[str, dict[str, str]]:
    name, *pairs = text.split("|")
    return name, dict(pair.split("=", 1) for pair in pairs)


def bound(le: float) -> str:
    """A bucket's `le` label as Prometheus's client writes it: 0.25, 5.0, +Inf."""
    return "+Inf" if le == float("inf") else repr(float(le))


def bucket_of(seconds: float) -> float:
    """The upper bound of the latency bucket `seconds` falls in."""
    return next(b for b in LATENCY_BUCKETS if seconds <= b)


def histogram_fields(name: str, le: float, **labels: object) -> tuple[str, str, str]:
    """The bucket, count and sum fields an observation in bucket `le` adds to."""
    return (
        field(f"{name}_bucket", **labels, le=bound(le)),
        field(f"{name}_count", **labels),
        field(f"{name}_sum", **labels),
    )


class Tally:
    """Counts, float sums and last values not yet written to Redis."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.sums: defaultdict[str, float] = defaultdict(float)
        self.values: dict[str, float] = {}

    def count(self, name: str, amount: int = 1, **labels: object) -> None:
        if amount:
            self.counts[field(name, **labels)] += amount

    def observe(self, name: str, seconds: float, **labels: object) -> None:
        self.observed(histogram_fields(name, bucket_of(seconds), **labels), seconds)

    def observed(self, fields: tuple[str, str, str], seconds: float) -> None:
        """One observation into `histogram_fields`' (bucket, count, sum), built by the caller
        (who may keep them: the names are the same for every call of a kind)."""
        bucket, count, total = fields
        self.counts[bucket] += 1
        self.counts[count] += 1
        self.sums[total] += seconds

    def set(self, name: str, value: float) -> None:
        self.values[field(name)] = value

    def __bool__(self) -> bool:
        return bool(self.counts or self.sums or self.values)

    def write(self, pipe: Any, key: str) -> None:
        for name, amount in self.counts.items():
            pipe.hincrby(key, name, amount)
        for name, total in self.sums.items():
            pipe.hincrbyfloat(key, name, total)
        if self.values:
            pipe.hset(key, mapping=self.values)

    def clear(self) -> None:
        self.counts.clear()
        self.sums.clear()
        self.values.clear()


def record_task(tally: Tally, task: str, state: str | None, retval: Any, now: float) -> None:
    """Count what a finished task reports: check outcomes, sweeps, the task itself."""
    tally.count("tasks_total", task=task, state=state or "UNKNOWN")
    if not isinstance(retval, Mapping):
        return
    if task == "tokenworker.check_batch":
        for outcome, amount in retval.items():
            tally.count("checks_total", int(amount), outcome=outcome)
    elif task in _CHECK_TASKS and "outcome" in retval:
        tally.count("checks_total", outcome=retval["outcome"])
    elif task == "tokenworker.sweep":
        skipped = bool(retval.get("skipped"))
        tally.count("sweeps_total", skipped=str(skipped).lower())
        tally.count("swept_connections_total", int(retval.get("claimed") or 0))
        if not skipped:
            tally.set("last_sweep_timestamp_seconds", now)


def _call_fields(call: str, status: int, le: float) -> tuple[tuple[str, str, str], str]:
    """What Tally.observe(CALL_SECONDS, ..., call=call) and the responses count write to."""
    return (
        histogram_fields(CALL_SECONDS, le, call=call),
        field("salesforce_responses_total", call=call, code=status),
    )


def instrument(client: SalesforceClient, tally: Tally) -> None:
    """Time every call to Salesforce's OAuth endpoints (until the whole answer is read) and
    count answers by HTTP status; once per worker process. Calls that never get an answer
    (timeouts, resets) show up as `token.refresh_failed` events, error `timeout` or
    `network_error`."""
    names = dict(_CALLS)
    # (call, HTTP status, bucket) -> the four field names a call adds to: built once, not
    # on every call (the same dozen combinations come back all day).
    known: dict[tuple[str, int, float], tuple[tuple[str, str, str], str]] = {}

    def answered(path: str, seconds: float, status: int) -> None:
        call = names.get(path)
        if call is None:
            return
        le = bucket_of(seconds)
        fields = known.get((call, status, le))
        if fields is None:
            fields = known[(call, status, le)] = _call_fields(call, status, le)
        histogram, responses = fields
        tally.observed(histogram, seconds)
        tally.counts[responses] += 1

    client.observers.append(answered)


class Recorder:
    """One per worker process: the tally and the Redis client it is written with."""

    def __init__(self) -> None:
        self.tally = Tally()
        self._client: redis.Redis | None = None
        self._endpoint: RedisEndpoint | None = None

    def client(self, endpoint: RedisEndpoint) -> redis.Redis:
        if self._client is None or self._endpoint != endpoint:
            self._client = clients.sync_client(endpoint, socket_timeout=2, socket_connect_timeout=2)
            self._endpoint = endpoint
        return self._client

    def flush(self, endpoint: RedisEndpoint, keys: Keys, hostname: str | None, now: float) -> None:
        """Add the tally to the store's metrics hash and record this worker's heartbeat."""
        try:
            with self.client(endpoint).pipeline(transaction=False) as pipe:
                self.tally.write(pipe, metrics_key(keys))
                if hostname:
                    pipe.hset(keys.heartbeat, hostname, f"{now:.3f}")
                pipe.execute()
        except redis.RedisError as error:
            log.warning("metrics.unwritten", problem=f"{type(error).__name__}: {error}")
            return
        self.tally.clear()


RECORDER = Recorder()
