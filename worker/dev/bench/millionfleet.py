"""`bench --million`'s population: lifetimes, backdated sessions, and the import.

Lifetimes: `DEFAULT_SHARE` at Salesforce's 2 h default, the rest round-robin over the other
session timeouts (15 min .. 24 h, `params.LIFETIMES_MIN`). Each session was issued at a
uniformly random moment of its past lifetime, so refreshes come due continuously from the
start. `active_share` of the users keep using their session (`workload.Activity`, the
half-timeout rule). Connections go in through `transfer.import_records`, the function
`tokenworker connections import` calls, `concurrency` at a time.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from config.settings import Settings
from worker.dev.bench.millionemu import MillionEmulator
from worker.dev.bench.params import LIFETIMES_MIN
from worker.dev.bench.progress import Ticker
from worker.dev.bench.workload import Member, floor_per_day
from worker.engine.runtime import Runtime
from worker.service.transfer import ImportReport, Record, import_records

DEFAULT_LIFETIME = 7200.0
DEFAULT_SHARE = 0.6
CHUNK = 20_000  # grants asked of the emulator, then imported, per round


def lifetime_mix(count: int) -> list[float]:
    """`count` lifetimes (s): DEFAULT_SHARE at 2 h, the rest spread over the other timeouts."""
    others = [m * 60.0 for m in LIFETIMES_MIN if m * 60.0 != DEFAULT_LIFETIME]
    at_default = round(count * DEFAULT_SHARE)
    rest = [others[i % len(others)] for i in range(count - at_default)]
    return [DEFAULT_LIFETIME] * at_default + rest


def floor_calls_per_s(lifetimes: list[float]) -> float:
    """The true floor for this population: one refresh per session lifetime."""
    return sum(floor_per_day(life) for life in lifetimes) / 86_400.0


@dataclass
class Imported:
    members: list[Member]  # active users only (the ones activity is fired for)
    lifetimes: list[float]
    seconds: float
    created: int


async def _import_chunk(rt: Runtime, records: list[Record], concurrency: int) -> int:
    report = ImportReport()
    await import_records(rt.store, records, time.time(), report, lanes=concurrency)
    return report.created


def _records(
    emu: MillionEmulator,
    client_id: str,
    integration: str,
    ids: list[str],
    lifetime: float,
    rng: random.Random,
) -> tuple[list[Record], list[str]]:
    ages = [rng.uniform(0.0, lifetime) for _ in ids]
    rows = emu.grants(client_id, lifetime, ages)
    records = [
        Record(
            line=0,
            id=cid,
            integration=integration,
            refresh_token=row[1],
            access_token=row[2],
            instance_url=emu.base_url,
            issued_at=int(row[3]) / 1000.0,
        )
        for cid, row in zip(ids, rows, strict=True)
    ]
    return records, [row[0] for row in rows]


def populate(
    settings: Settings,
    emu: MillionEmulator,
    client_id: str,
    integration: str,
    count: int,
    active_share: float,
    concurrency: int,
    rng: random.Random,
    on_chunk: Callable[[], None] = lambda: None,
) -> Imported:
    """Grants at the emulator and connections imported, chunk by chunk, with progress."""
    lifetimes = lifetime_mix(count)
    rng.shuffle(lifetimes)
    members: list[Member] = []
    ticker = Ticker(10.0)
    started, created = time.monotonic(), 0

    async def go() -> None:
        nonlocal created
        rt = Runtime.open(settings)
        try:
            for start in range(0, count, CHUNK):
                by_life: dict[float, list[str]] = {}
                for n in range(start, min(count, start + CHUNK)):
                    by_life.setdefault(lifetimes[n], []).append(f"m{n:07d}")
                for life, ids in by_life.items():
                    records, grant_ids = _records(emu, client_id, integration, ids, life, rng)
                    created += await _import_chunk(rt, records, concurrency)
                    members.extend(
                        Member(g, life, True) for g in grant_ids if rng.random() < active_share
                    )
                # What an import keeps lives to the end of the run: out of the collector's
                # full walks, which grew with it to 0.27 s each (stop 22)
                gc.freeze()
                done = min(count, start + CHUNK)
                rate = done / max(1e-9, time.monotonic() - started)
                ticker.maybe(f"million: imported {done:,}/{count:,} ({rate:,.0f}/s)")
                on_chunk()
        finally:
            await rt.close()

    asyncio.run(go())
    return Imported(members, lifetimes, time.monotonic() - started, created)
