"""Metrics: worker tallies summed in Redis, event counters tailed from the stream, gauges read
at scrape time, and the exporter serving a real prefork worker's numbers."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from config.redis_urls import RedisEndpoint
from config.settings import Settings
from tests.conftest import Emu, run
from tests.helpers import connect
from tests.processes import Proc, celery_env, cli, wait_ready, wait_until, with_runtime
from worker.dev.embedded import EmbeddedRedis, free_port
from worker.engine import events
from worker.engine.events import EventSink
from worker.engine.runtime import redis_client
from worker.salesforce.client import SalesforceClient
from worker.salesforce.hosts import INTROSPECT_PATH, TOKEN_PATH
from worker.store.keys import Keys
from worker.telemetry.exporter import exposition, registry_for
from worker.telemetry.metrics import (
    _CALLS,
    CALL_SECONDS,
    Recorder,
    Tally,
    instrument,
    record_task,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture
def scrape(settings_for: Callable[..., Settings]) -> Callable[[], Samples]:
    """Scrape a fresh exporter registry for this test's prefix (its event count starts now)."""
    registry = registry_for(settings_for(), scan_every=0)
    return lambda: samples(exposition(registry).decode())


class TestWorkerTotals:
    def test_outcomes_and_latencies_are_summed_in_redis(
        self, settings_for: Callable[..., Settings], scrape: Callable[[], Samples]
    ) -> None:
        """Two processes' tallies add up; histogram buckets come out cumulative."""
        settings = settings_for()
        keys = Keys(settings.key_prefix)
        for outcomes, seconds in (({"refreshed": 3, "fresh": 1}, 0.2), ({"refreshed": 2}, 3.0)):
            recorder = Recorder()
            record_task(recorder.tally, "tokenworker.check_batch", "SUCCESS", outcomes, 0.0)
            recorder.tally.observe(CALL_SECONDS, seconds, call="refresh")
            recorder.flush(settings.store_endpoint, keys, "w@a", time.time())
            assert not recorder.tally
        found = scrape()
        assert value(found, "tokenworker_checks_total", outcome="refreshed") == 5
        assert value(found, "tokenworker_checks_total", outcome="fresh") == 1
        bucket = "tokenworker_salesforce_request_duration_seconds_bucket"
        assert value(found, bucket, call="refresh", le="0.25") == 1
        assert value(found, bucket, call="refresh", le="2.5") == 1
        assert value(found, bucket, call="refresh", le="5.0") == 2
        count = "tokenworker_salesforce_request_duration_seconds_count"
        assert value(found, count, call="refresh") == 2
        assert value(found, "tokenworker_worker_last_consumed_timestamp_seconds", worker="w@a")

    def test_a_sweep_counts_claims_and_stamps_its_time(self) -> None:
        """A sweep adds its claimed ids and records when it ran, unless it was skipped."""
        tally = Tally()
        record_task(tally, "tokenworker.sweep", "SUCCESS", {"claimed": 7, "skipped": False}, 42.0)
        record_task(tally, "tokenworker.sweep", "SUCCESS", {"claimed": 0, "skipped": True}, 43.0)
        assert tally.counts["swept_connections_total"] == 7
        assert tally.counts["sweeps_total|skipped=true"] == 1
        assert tally.values == {"last_sweep_timestamp_seconds": 42.0}

    def test_an_unwritable_tally_is_kept_for_the_next_task(self) -> None:
        """When the store is down the tally survives, so no count is lost."""
        recorder = Recorder()
        recorder.tally.count("checks_total", 2, outcome="fresh")
        recorder.flush(RedisEndpoint(f"redis://127.0.0.1:{free_port()}/0"), Keys("x:"), "w@a", 0.0)
        assert recorder.tally.counts["checks_total|outcome=fresh"] == 2


class TestEventTotals:
    def test_failures_are_counted_by_class_code_and_stage(
        self, settings_for: Callable[..., Settings]
    ) -> None:
        """Events after the exporter started become failures_total/refreshes_total samples."""
        settings = settings_for()

        async def emit(*batch: tuple[str, dict[str, Any]]) -> None:
            client = redis_client(settings.store_endpoint)
            sink = EventSink(client, Keys(settings.key_prefix))
            for name, fields in batch:
                await sink.emit(name, **fields)
            await client.aclose()

        run(emit((events.REAUTH_REQUIRED, {"error": "invalid_grant"})))  # before: not counted
        registry = registry_for(settings)
        run(
            emit(
                (events.TOKEN_REFRESH_FAILED, {"error": "timeout", "stage": "introspect"}),
                (events.TOKEN_REFRESH_FAILED, {"error": "timeout", "stage": "introspect"}),
                (events.REAUTH_REQUIRED, {"error": "invalid_grant"}),
                (events.INTEGRATION_MISCONFIGURED, {"error": "invalid_client", "stage": "refresh"}),
                (events.TOKEN_REFRESHED, {"reason": "keepalive", "rotated": True}),
            )
        )
        found = samples(exposition(registry).decode())

        def failures(kind: str, error: str, stage: str) -> float | None:
            labels = {"class": kind, "error": error, "stage": stage}
            return value(found, "tokenworker_failures_total", **labels)

        assert failures("transient", "timeout", "introspect") == 2
        assert failures("permanent", "invalid_grant", "refresh") == 1
        assert failures("configuration", "invalid_client", "refresh") == 1
        assert value(found, "tokenworker_refreshes_total", reason="keepalive", rotated="true") == 1
        assert value(found, "tokenworker_events_total", event=events.REAUTH_REQUIRED) == 1


class TestGauges:
    def test_backlog_population_and_processes_are_read_at_scrape_time(
        self, settings_for: Callable[..., Settings], scrape: Callable[[], Samples]
    ) -> None:
        """Due, overdue, oldest age, connections by status, integrations, beat and workers."""
        settings = settings_for()
        keys = Keys(settings.key_prefix)
        now = time.time()
        client = redis.Redis.from_url(settings.redis_url)
        client.zadd(keys.due, {"a": now - 300, "b": now - 0.5, "c": now + 600})
        for cid, status in (("a", "active"), ("b", "failing"), ("c", "failing")):
            client.hset(keys.conn(cid), mapping={"integration": "acme", "status": status})
        client.sadd(keys.integrations, "acme")
        client.hset(
            keys.integration("acme"),
            mapping={"provider": "salesforce", "status": "misconfigured", "introspection": "0"},
        )
        client.set(keys.beat, "token", px=5000)
        client.close()
        found = scrape()
        assert value(found, "tokenworker_due_connections") == 2
        assert value(found, "tokenworker_overdue_connections") == 1
        assert 299 < (value(found, "tokenworker_oldest_due_age_seconds") or 0) < 330
        assert value(found, "tokenworker_scheduled_connections") == 3
        assert value(found, "tokenworker_connections", integration="acme", status="failing") == 2
        up = value(found, "tokenworker_integration_up", integration="acme", provider="salesforce")
        assert up == 0
        assert value(found, "tokenworker_integration_introspection", integration="acme") == 0
        assert value(found, "tokenworker_beat_leader") == 1
        assert value(found, "tokenworker_store_up") == 1

    def test_an_unreachable_store_still_answers_the_scrape(self, env: dict[str, str]) -> None:
        """With the store down a scrape succeeds and says tokenworker_store_up 0."""
        nobody = f"redis://127.0.0.1:{free_port()}/0"
        dead = Settings.from_env({**env, "TOKENWORKER_REDIS_URL": nobody})
        found = samples(exposition(registry_for(dead)).decode())
        assert value(found, "tokenworker_store_up") == 0


@pytest.mark.integration
def test_the_exporter_serves_a_prefork_workers_numbers(
    redis_server: EmbeddedRedis, emu: Emu
) -> None:
    """Checks run by two prefork children add up exactly; `tokenworker metrics` serves them."""
    env = celery_env(redis_server, broker_db=3)
    worker = Proc.worker(env, f"metrics-{uuid.uuid4().hex[:6]}@%h", concurrency=2)
    port = free_port()
    exporter = None
    try:
        wait_ready(env, worker)
        pairs = _seed(env, emu, count=6)
        for _, grant in pairs:
            emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
        from celery import Celery  # noqa: PLC0415

        app = Celery(broker=env["TOKENWORKER_BROKER_URL"])
        for start in range(0, 6, 2):
            ids = [cid for cid, _ in pairs[start : start + 2]]
            app.send_task("tokenworker.check_batch", args=[ids], queue="refresh")
        app.close()

        def counted() -> Samples | None:
            found = samples(cli(env, "metrics", "--once").stdout)
            task = {"task": "tokenworker.check_batch", "state": "SUCCESS"}
            return found if value(found, "tokenworker_tasks_total", **task) == 3 else None

        found = wait_until(counted, 30, "three check_batch tasks to be counted", interval=0.3)
        assert value(found, "tokenworker_checks_total", outcome="refreshed") == 6
        count = "tokenworker_salesforce_request_duration_seconds_count"
        assert value(found, count, call="refresh") == 6
        assert (value(found, count, call="introspect") or 0) >= 6
        answers = value(found, "tokenworker_salesforce_responses_total", call="refresh", code="200")
        assert answers == 6
        exporter = _serve(env, port)
        served = wait_until(lambda: _get(port), 15, "the exporter to answer")
        assert value(samples(served), "tokenworker_checks_total", outcome="refreshed") == 6
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        code = worker.stop()
        log = worker.log()
        worker.close()
    assert code == 0, log[-3000:]


def _seed(env: dict[str, str], emu: Emu, count: int) -> list[tuple[str, dict[str, Any]]]:
    name = f"m-{uuid.uuid4().hex[:6]}"
    return with_runtime(env, lambda rt: connect(rt, emu, count=count, name=name))


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "metrics", "--addr", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _get(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None


def test_instrumented_calls_add_what_observe_and_count_would() -> None:
    """The observer's field names, built once per (call, status, bucket), are exactly
    Tally.observe's and Tally.count's: every status and bucket lands in its own field."""
    tally, expected = Tally(), Tally()
    client = SalesforceClient(httpx.AsyncClient(), timeout=2)
    instrument(client, tally)
    paths = dict(_CALLS)
    for path, seconds, status in [
        (INTROSPECT_PATH, 0.01, 200), (INTROSPECT_PATH, 0.02, 200), (INTROSPECT_PATH, 0.3, 200),
        (INTROSPECT_PATH, 0.01, 400), (TOKEN_PATH, 0.01, 200), (TOKEN_PATH, 7.0, 503),
    ]:  # fmt: skip
        client.observers[0](path, seconds, status)
        expected.observe(CALL_SECONDS, seconds, call=paths[path])
        expected.count("salesforce_responses_total", call=paths[path], code=status)
    assert tally.counts == expected.counts
    assert tally.sums == pytest.approx(expected.sums)
