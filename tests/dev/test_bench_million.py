"""`tokenworker bench --million` in its smallest configuration: a smoke test of the harness
(every key written with a sane type and value, everything cleaned up), not a timed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from worker.dev.bench.loadgen import SLOW_MS, LoadResult
from worker.dev.bench.million import TARGETS
from worker.dev.bench.millionreads import store_slow, summary, watch_store
from worker.dev.bench.services import Workspace


def test_million_smoke_writes_every_key_with_sane_types(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    output = tmp_path / "million.json"
    args = ["--million", "--connections", "2000", "--steady", "20", "--output", str(output)]
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "bench", *args],
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(scratch.glob("tokenworker-bench-*")), "the bench left its workspace behind"
    results = json.loads(output.read_text())
    for target in TARGETS:
        value = results[target.key]
        assert isinstance(value, int | float) and not isinstance(value, bool), target.key
        assert value >= 0, target.key
        assert target.key in done.stdout, target.key
    assert isinstance(results["million_stale_max"], int)
    assert results["million_redis_mb"] > 0
    assert results["million_import_s"] > 0
    assert 0 <= results["million_worker_cpu"] < 1  # an idle 20 s may round to 0
    assert results["million_floor_calls_per_s"] > 0
    assert results["million_emulator_bytes_per_grant"] > 0
    assert results["million_warmup_checks"] >= 2000  # every imported connection checked
    assert results["million_not_active"] == 0
    # Credential reads ran inside the steady window, through the api: fresh tokens, so no
    # read reached Salesforce.
    assert results["details"]["reads"]["error"] is None
    assert results["million_reads_per_s"] > 0 and results["million_read_p99_ms"] > 0
    assert results["million_read_salesforce_calls"] == 0
    # Each api process said what its credentials cache did: the reads came from it.
    caches = results["details"]["reads"]["api_credentials_cache"]
    assert len(caches) == 2 and all(c["hits"] > c["misses"] > 0 for c in caches), caches
    assert all("renewed" in c and "invalidations" in c for c in caches), caches
    assert "commands" in results["details"]["reads"]["paced"]["store_slow"]
    assert results["details"]["warmup_absorbed"] is True
    assert results["params"]["connections"] == 2000
    assert results["details"]["settings"]["sweep_interval"] == 60.0  # the default
    assert len(results["details"]["stale_samples"]) >= 2  # the whole run is sampled
    assert results["machine"]["load_average_at_end"]
    assert results["command"].startswith("tokenworker bench --million")


def test_compact_emulator_keeps_no_per_call_bookkeeping() -> None:
    """Compact mode (the million's emulator): refreshes are counted, nothing grows per call,
    and bulk grants share one identity URL; the default mode keeps all of it."""
    from worker.dev.emulator.state import State  # noqa: PLC0415

    for compact in (False, True):
        state = State()
        state.compact = compact
        client = state.upsert_client("c", "s")
        issued = state.create_grants("c", 3)
        for item in issued:
            state.count("token", item.grant.refresh_token)
            state.refresh(client, item.grant.refresh_token)
        assert state.stats.token_calls == 3
        assert len(state._sent_refresh) == (0 if compact else 3)
        assert sum(state.stats.token_calls_by_grant.values()) == (0 if compact else 3)
        urls = {item.grant.id_url for item in issued}
        assert len(urls) == (1 if compact else 3)
        assert all(url.startswith(f"{state.base_url}/id/{state.org_id}/005") for url in urls)


def test_paced_reads_say_when_in_the_window_their_tail_happened() -> None:
    """A read over loadgen.SLOW_MS is kept with its due time, and the summary counts them by
    second of the window: a tail from one pause shows as one busy second, from contention it
    spreads over the window."""
    result = LoadResult()
    now = time.time()
    result.count(200, b'{"access_token": "x"}', now - 0.050, None, now)  # 50 ms: slow
    result.count(200, b'{"access_token": "x"}', time.time(), None, time.time())  # fast
    assert len(result.slow) == 1 and result.slow[0][1] > SLOW_MS
    other = LoadResult(slow=[(1_003.2, 25.0), (1_003.9, 40.0), (1_007.1, 10.5)])
    found = summary([other], 30.0, 1_000.0, 3000.0)
    assert found["slow_by_second"] == {"3": 2, "7": 1}


BUSY = "local x = 0 for i = 1, 3000000 do x = x + i end return ARGV[1]"  # ~10-30 ms


def test_store_slow_lists_what_held_the_store_in_the_window_never_its_arguments() -> None:
    """A read window's report of the store: commands over SLOW_US inside the window, by
    second, ms and name (a script by its sha's prefix); none from before the window; no
    argument, since a save's arguments carry sealed tokens; the latency monitor's events."""
    with Workspace() as ws:
        store = redis.Redis.from_url(ws.redis().url)
        try:
            watch_store(store)
            busy = store.script_load(BUSY)
            store.evalsha(busy, 0, "before")  # before the window opens
            time.sleep(1.1)
            # The slow log keeps whole seconds: open the window just past one, so the two
            # commands below (~50 ms) fall in its first second, not across into the next.
            time.sleep(1.0 - time.time() % 1.0 + 0.01)
            opens = time.time()
            assert store.evalsha(busy, 0, "sealed-secret") == b"sealed-secret"
            store.eval(BUSY, 0, "inline")
            found = store_slow(store, opens, 10.0)
        finally:
            store.close()
    names = [name for _, _, name in found["commands"]]
    assert sorted(names) == ["EVAL", f"EVALSHA {busy[:8]}"], found
    assert all(at == 0 and ms >= 3.0 for at, ms, _ in found["commands"]), found
    assert "secret" not in json.dumps(found)
    assert found["latency_events_max_ms"]["command"] >= 3, found
