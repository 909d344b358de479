"""CLI handlers for watching and administering: status, events, keys, emulator, demo."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli import render
from worker.cli.commands import Skipped, dump, with_runtime
from worker.domain.models import ConnectionStatus
from worker.engine.events import read_events
from worker.engine.runtime import Runtime
from worker.service.status import status as fleet_status
from worker.store.crypto import generate_key
from worker.store.rotation import rotate


def status(args: argparse.Namespace) -> int:
    """Unreadable records are counted in the report (`unreadable`) and named on stderr, the
    rest of the fleet is reported as usual, and the exit code is 1 so scripts notice."""

    async def work(rt: Runtime) -> int:
        skipped = Skipped()
        data = (await fleet_status(rt, unreadable=skipped)).as_dict()
        skipped.summary("status: skipped")
        if args.json:
            dump(data)
        else:
            print_status(data)
        return 1 if skipped.count else 0

    return with_runtime(work)


def print_status(data: dict[str, Any]) -> None:
    statuses = [s.value for s in ConnectionStatus]
    counts = ", ".join(f"{k} {v}" for k, v in data["by_status"].items())
    oldest = f" (oldest due {render.relative(-data['overdue_seconds'])})" if data["due_now"] else ""
    render.fields(
        [
            ("connections", f"{data['connections']}: {counts}" + _unreadable(data)),
            ("due now", f"{data['due_now']}{oldest}; overdue {data['overdue']}"),
            ("next due", render.when(data["next_due_at"])),
            ("workers", _workers(data["workers"])),
            ("beat", _beat(data)),
        ]
    )
    print()
    render.table(
        ["integration", "provider", "status", "introspection", *statuses],
        [
            [i["name"], i["provider"], i["status"], i["introspection"]]
            + [i["connections"].get(s, 0) for s in statuses]
            for i in data["integrations"]
        ],
    )
    if data["recent_failures"]:
        print("\nrecent failures")
        for event in data["recent_failures"]:
            print("  " + event_line(event))


def _unreadable(data: dict[str, Any]) -> str:
    count = data.get("unreadable", 0)
    return f"; UNREADABLE {count} (see stderr)" if count else ""


def _workers(workers: list[dict[str, Any]]) -> str:
    if not workers:
        return "none has consumed a task yet"
    shown = [f"{w['worker']} {render.relative(-w['age_seconds'])}" for w in workers[:5]]
    more = f" (+{len(workers) - 5} more)" if len(workers) > 5 else ""
    return "last consumed: " + ", ".join(shown) + more


def _beat(data: dict[str, Any]) -> str:
    leader = "a beat holds the lock" if data["beat"]["leader"] else "NO beat holds the lock"
    return f"{leader}; last sweep {render.when(data['last_sweep_at'])}"


def event_line(event: dict[str, Any]) -> str:
    who = event.get("connection_id") or ""
    integration = event.get("integration")
    where = f"{who} ({integration})" if who and integration else who or integration or ""
    detail = ""
    if event.get("error"):
        detail = f"  {event['error']}: {event.get('error_description', '')}"
        if event.get("http_status"):
            detail += f" (HTTP {event['http_status']})"
    elif event.get("reason"):
        detail = f"  {event['reason']}"
    return f"{event.get('ts', '-')}  {event['event']:<32} {where}{detail}"


def events(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        rows = await read_events(rt.redis, rt.store.keys, limit=max(1, args.limit))
        last = rows[-1][0] if rows else "0-0"
        for _, event in rows:
            dump(event) if args.json else print(event_line(event), flush=True)
        while args.follow:
            for row_id, event in await read_events(
                rt.redis, rt.store.keys, limit=100, after=last, block_ms=2000
            ):
                last = row_id
                dump(event) if args.json else print(event_line(event), flush=True)
        return 0

    return with_runtime(work)


def keys_generate(args: argparse.Namespace) -> int:
    del args
    print(generate_key())
    return 0


def keys_rotate(args: argparse.Namespace) -> int:
    del args

    async def work(rt: Runtime) -> int:
        bar = render.Progress("re-encrypting")
        report = await rotate(rt.store, progress=bar.set)
        bar.finish()
        print(
            f"rotated {report.rotated}, already current {report.current}, "
            f"unreadable {len(report.unreadable)}"
        )
        for problem in report.unreadable:
            print(f"unreadable: {problem}")
        return 1 if report.unreadable else 0

    return with_runtime(work)


def emulator(args: argparse.Namespace) -> int:
    from worker.dev.emulator.server import run_forever  # noqa: PLC0415

    run_forever(args.host, args.port, args.lifetime, args.latency_ms, args.rotation)
    return 0


def demo(args: argparse.Namespace) -> int:
    del args
    from worker.dev.demo import run_demo  # noqa: PLC0415

    return run_demo()
