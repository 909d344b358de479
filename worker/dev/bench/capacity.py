"""What one check costs the store Redis, and what one connection occupies in it.

    python -m worker.dev.bench.capacity [--connections 5000] [--output FILE.json]

Grants at the emulator (2 h sessions) are imported as connections. Round 1 checks them all
as imported: introspect, still fresh, reschedule (the cheapest check). Round 2 ends every
session at the emulator first, so each check is introspect (inactive), refresh, introspect
the new token to learn its lifetime, save: the dearest, and close to the check that default
lifetimes bring every ~1 h 45 min at each session's end.

Each round runs in this process what a worker process runs for a sweep (`sweep` claims, then
`check_many` batch after batch) through the production Runtime, reading the store's
`INFO commandstats`, `INFO stats` (total_net_input/output_bytes) and `INFO cpu` before and
after: the deltas over the checks are the per-check figures (the commands inside the Lua
scripts included; the probes' own bytes and CPU, measured back to back, subtracted).
Memory: `INFO memory` used_memory before the import, after it and after the checks (every
field set), over the connections; and `MEMORY USAGE` of sampled records.

The broker's share is not here: one `check_batch` message carries TOKENWORKER_BATCH_SIZE ids
(2,000 by default) for a handful of commands, thousands of times fewer per check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from config.logging import configure
from config.settings import Settings
from worker.dev.bench import seed, storage
from worker.dev.bench.emuadmin import EmulatorAdmin
from worker.dev.bench.population import (
    INTEGRATION,
    NOT_DUE,
    add_integration,
    cipher_of,
    store_env,
)
from worker.dev.bench.report import machine
from worker.dev.bench.services import Workspace, start_emulator
from worker.dev.bench.throughput import check_in_batches
from worker.engine.runtime import Runtime
from worker.engine.sweep import claimed_ids, collect, sweep
from worker.store.keys import Keys

LIFETIME_S = 7200.0  # Salesforce's default session: 2 h
ROUNDS = ("fresh: introspect, reschedule", "session over: introspect, refresh, learn, save")
SECTIONS = ("commandstats", "stats", "cpu")


@dataclass
class Round:
    name: str
    checks: int
    seconds: float
    token_calls: int
    introspect_calls: int
    commands: dict[str, int]
    bytes_in: int
    bytes_out: int
    redis_cpu_s: float

    @property
    def per_check(self) -> dict[str, float]:
        n = max(1, self.checks)
        return {
            "commands": round(sum(self.commands.values()) / n, 2),
            "bytes_to_redis": round(self.bytes_in / n, 1),
            "bytes_from_redis": round(self.bytes_out / n, 1),
            "redis_cpu_us": round(1e6 * self.redis_cpu_s / n, 1),
            "salesforce_calls": round((self.token_calls + self.introspect_calls) / n, 2),
        }


def snapshot(client: redis.Redis) -> dict[str, float]:
    """Command calls, network bytes and CPU seconds of the server so far."""
    found: dict[str, float] = {}
    for section in SECTIONS:
        info: dict[str, Any] = client.info(section)
        for name, value in info.items():
            if name.startswith("cmdstat_"):
                found[name.removeprefix("cmdstat_")] = float(value["calls"])
        if section == "stats":
            found["~in"] = float(info["total_net_input_bytes"])
            found["~out"] = float(info["total_net_output_bytes"])
        if section == "cpu":
            found["~cpu"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return found


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}


def probe_cost(client: redis.Redis) -> dict[str, float]:
    """What one `snapshot` adds to the counters (it is taken twice per round)."""
    first = snapshot(client)
    return delta(first, snapshot(client))


async def _check_all(settings: Settings) -> int:
    rt = Runtime.open(settings)
    checked = 0
    try:
        while True:
            batches: list[tuple[list[str], float]] = []
            result = await sweep(
                rt.store, settings, time.time(), collect(batches), window_guard=False
            )
            claimed = claimed_ids(batches)
            if not result.claimed:
                return checked
            checked += len(await check_in_batches(rt, claimed))
    finally:
        await rt.close()


def measure_round(
    name: str,
    settings: Settings,
    client: redis.Redis,
    admin: EmulatorAdmin,
    probe: dict[str, float],
) -> Round:
    admin.reset_stats()
    before = snapshot(client)
    started = time.perf_counter()
    checks = asyncio.run(_check_all(settings))
    seconds = time.perf_counter() - started
    moved = delta(before, snapshot(client))
    # The snapshots' own bytes and CPU are in `moved`: subtract one snapshot's measured cost.
    # Their INFO calls are left out of the commands (no check sends INFO).
    for key in ("~in", "~out", "~cpu"):
        moved[key] = max(0.0, moved.get(key, 0.0) - probe.get(key, 0.0))
    stats = admin.stats()
    commands = {
        k: int(v) for k, v in moved.items() if not k.startswith("~") and k != "info" and v >= 1
    }
    return Round(
        name, checks, seconds, stats.token_calls, stats.introspect_calls, commands,
        int(moved.get("~in", 0)), int(moved.get("~out", 0)), moved.get("~cpu", 0.0),
    )  # fmt: skip


def populate(
    settings: Settings, admin: EmulatorAdmin, client: redis.Redis, keys: Keys, count: int
) -> tuple[list[str], list[str]]:
    """`count` emulator grants imported as connections, parked (not due); (ids, grant ids)."""
    client_id, secret = admin.client()
    add_integration(settings, admin.base_url, client_id, secret)
    grants = admin.grants(client_id, count)
    ids = [f"c{n:08d}" for n in range(count)]
    parked = time.time() + NOT_DUE
    records = [
        (seed.imported(cid, INTEGRATION, grant), parked)
        for cid, grant in zip(ids, grants, strict=True)
    ]
    seed.write(client, keys, cipher_of(settings), records)
    return ids, [grant.grant_id for grant in grants]


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def run(connections: int) -> dict[str, Any]:
    with Workspace() as ws:
        store = ws.redis()
        emulator_url, _ = start_emulator(ws, latency_ms=0.0, lifetime=LIFETIME_S)
        env = store_env(store.url, store.url.rpartition("/")[0] + "/1")
        settings = Settings.from_env(env)
        admin = EmulatorAdmin(emulator_url)
        client = redis.Redis.from_url(settings.redis_url)
        base = used_memory(client)
        keys = Keys(settings.key_prefix)
        ids, grant_ids = populate(settings, admin, client, keys, connections)
        imported = used_memory(client)
        probe = probe_cost(client)
        # An unmeasured first pass: the Lua scripts get loaded (their bodies sent once) before
        # anything is counted, so a small run's figures are the checks' own, not that set-up's
        # (40 checks could not amortize it: the fresh round then looked dearer than a refresh).
        seed.reschedule(client, keys, ids, time.time())
        asyncio.run(_check_all(settings))
        rounds = []
        for name in ROUNDS:
            if name == ROUNDS[1]:
                admin.grant_action(grant_ids, "expire")
            seed.reschedule(client, keys, ids, time.time())
            rounds.append(measure_round(name, settings, client, admin, probe))
        steady = used_memory(client)
        sampled = storage.memory(client, keys, ids, min(1000, connections), 6)
        box = machine(settings.redis_url)
        client.close()
        admin.close()
    return {
        "connections": connections,
        "memory": {
            "used_memory_before": base,
            "per_connection_imported": round((imported - base) / connections, 1),
            "per_connection_checked": round((steady - base) / connections, 1),
            # MEMORY USAGE of sampled records + their due-index share: no allocator noise and
            # no capped events stream (which used_memory above spreads over few connections).
            "memory_usage_per_connection": round(sampled.per_connection, 1),
            "events_stream_bytes": sampled.events_stream_bytes,
        },
        "rounds": [{**asdict(r), "per_check": r.per_check} for r in rounds],
        "settings": {
            "batch_size": settings.batch_size,
            "concurrency": settings.concurrency,
            "refresh_margin": settings.refresh_margin,
        },
        "machine": box,
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--output", help="write the JSON result here too")
    args = parser.parse_args()
    configure("json", level=logging.WARNING)  # the checks' own events stay quiet
    result = run(args.connections)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
