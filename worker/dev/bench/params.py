"""The benchmark's knobs: one frozen dataclass, three presets (smoke, quick, full).

Every loop the benchmark runs is bounded by these counts and by `deadline_s`, so a stuck
scenario ends with a clear message instead of hanging.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from typing import Any

LIFETIMES_MIN = (15, 30, 60, 120, 240, 480, 720, 1440)  # Salesforce's session timeouts
DAY = 86_400.0


@dataclass(frozen=True)
class BenchParams:
    mode: str
    # throughput
    connections: int  # all due at once
    expired_share: float  # of those, with an expired access token (introspect + refresh)
    warmup: int  # connections checked before timing, so worker processes are warm
    celery: bool  # the real path (Celery worker, 2 processes); False: in-process, for smoke
    worker_processes: int
    latency_ms: float  # the emulator's answer delay on every Salesforce call
    ceiling_processes: tuple[int, ...]  # bare aiohttp loops tried; the best is the ceiling
    # (each keeps TOKENWORKER_CONCURRENCY requests in flight, as each worker process does)
    # cost and freshness (simulated time)
    cost_connections: int
    naive_connections: int
    days: float  # simulated days of the tokenworker policy
    naive_days: float  # simulated days of the naive policy (its cost per day is flat)
    margin: float  # TOKENWORKER_REFRESH_MARGIN used in the simulated day
    sweep_interval: float  # simulated seconds between sweeps
    active_share: float  # connections whose sessions users keep extending
    freshness_every: float  # simulated seconds between freshness samples
    cost_shards: int  # processes simulating the day side by side (`cost.Shards`)
    # store
    memory_sample: int
    store_totals: tuple[int, ...]  # stored connections for the idle-sweep series
    sweep_repeats: int
    deadline_s: float  # every waiting loop gives up after this many wall seconds
    seed: int = 6

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = BenchParams(
    mode="full",
    connections=100_000,
    expired_share=0.05,
    warmup=1_000,
    celery=True,
    worker_processes=2,
    latency_ms=50.0,
    ceiling_processes=(1, 2),
    cost_connections=1_600,
    naive_connections=80,
    days=2.0,
    naive_days=1.0,
    margin=300.0,  # the default TOKENWORKER_REFRESH_MARGIN
    sweep_interval=60.0,
    active_share=0.25,
    freshness_every=600.0,
    cost_shards=2,
    memory_sample=1_000,
    store_totals=(100_000, 1_000_000),
    sweep_repeats=200,
    deadline_s=600.0,
)

QUICK = replace(
    FULL,
    mode="quick",
    connections=20_000,
    warmup=600,
    ceiling_processes=(2,),  # one process never wins on 2 cores and cost 11.6 of 140 s
    cost_connections=320,
    naive_connections=16,
    days=1.0,
    naive_days=0.25,
    store_totals=(20_000, 200_000),
    sweep_repeats=100,
    deadline_s=120.0,
)

SMOKE = replace(
    QUICK,
    mode="smoke",
    connections=300,
    warmup=0,
    celery=False,
    ceiling_processes=(1,),
    cost_connections=16,
    naive_connections=8,
    days=0.25,
    naive_days=0.05,
    freshness_every=1_800.0,
    memory_sample=100,
    store_totals=(1_000, 5_000),
    sweep_repeats=10,
    deadline_s=60.0,
)

PRESETS = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


PHASES = ("throughput", "cost", "store")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the < 2 minute run (make bench)")
    size.add_argument("--smoke", action="store_true", help="the tiny harness check (tests)")
    parser.add_argument("--output", default="bench-results.json", help="JSON results file")
    parser.add_argument("--connections", type=int, help="throughput: connections all due")
    parser.add_argument("--cost-connections", type=int, help="cost: connections simulated")
    parser.add_argument("--store-total", type=int, help="store: the largest stored population")
    parser.add_argument(
        "--no-celery", action="store_true", help="throughput in this process, not on Celery"
    )
    parser.add_argument(
        "--phase",
        choices=PHASES,
        action="append",
        help="run only this scenario (repeatable; default: all three): for measuring one "
        "change, e.g. --quick --phase throughput (the check path and its ceiling, ~30 s; "
        "redis_bytes_per_conn comes with it, from the records the worker wrote)",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy the Celery worker into DIR")
    parser.add_argument(
        "--api",
        action="store_true",
        help="instead: credential reads of fresh tokens through the api process (issue 13)",
    )
    parser.add_argument(
        "--api-processes", type=int, help="--api: api processes serving the load (default 2)"
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="instead: console page times (p99) at --seed connections (issue 14)",
    )
    parser.add_argument(
        "--seed", type=int, default=1_000_000, help="--console: connections to seed"
    )
    parser.add_argument("--rdb", help="--console: load this store (key prefix tw:) instead")
    parser.add_argument("--runs", type=int, default=100, help="--console: requests per page")
    parser.add_argument(
        "--deployed",
        action="store_true",
        help="instead: checks/s with beat sending the sweeps at the default settings, beside "
        "the pool's capacity on the same mix (issue 16)",
    )
    parser.add_argument(
        "--million",
        action="store_true",
        help="instead: --connections (default 1,000,000) kept fresh at real lifetimes, in real "
        "time: import, warm-up, then --steady seconds measured (issue 16; < 30 min)",
    )
    parser.add_argument(
        "--steady", type=float, default=600.0, help="--million: seconds of steady state"
    )


def from_args(args: argparse.Namespace) -> BenchParams:
    params = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.connections:
        params = replace(params, connections=args.connections)
    if args.cost_connections:
        params = replace(params, cost_connections=args.cost_connections)
    if args.store_total:
        totals = sorted({min(params.store_totals[0], args.store_total), args.store_total})
        params = replace(params, store_totals=tuple(totals))
    if args.no_celery:
        params = replace(params, celery=False)
    return params
