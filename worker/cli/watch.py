"""`tokenworker status|events`: what the fleet is doing, at a glance and as it happens."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli import output
from worker.cli._base import examples, with_runtime
from worker.domain.models import ConnectionStatus
from worker.engine.runtime import Runtime
from worker.service import events as event_log
from worker.service.status import status as fleet_status


def register(sub: Any) -> None:
    st = sub.add_parser(
        "status",
        help="counts, backlog, integrations, recent failures",
        **examples("tokenworker status --json"),
    )
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=status)
    ev = sub.add_parser("events", help="recent events", **examples("tokenworker events --follow"))
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    ev.add_argument("--limit", type=int, default=50, help="the newest N (50)")
    ev.set_defaults(handler=events)


def status(args: argparse.Namespace) -> int:
    """Unreadable records are counted in the report (`unreadable`) and named on stderr, the
    rest of the fleet is reported as usual, and the exit code is 1 so scripts notice."""
    skipped = output.Skipped()
    data = with_runtime(lambda rt: _status(rt, skipped))
    skipped.summary("status: skipped")
    if args.json:
        output.dump(data)
    else:
        print_status(data)
    return 1 if skipped.count else 0



async def _status(rt: Runtime, skipped: output.Skipped) -> dict[str, Any]:
    return (await fleet_status(rt, unreadable=skipped)).as_dict()


def print_status(data: dict[str, Any]) -> None:
    statuses = [s.value for s in ConnectionStatus]
    counts = ", ".join(f"{k} {v}" for k, v in data["by_status"].items())
    oldest = f" (oldest due {output.relative(-data['overdue_seconds'])})" if data["due_now"] else ""
    output.fields(
        [
            ("connections", f"{data['connections']}: {counts}" + _unreadable(data)),
            ("due now", f"{data['due_now']}{oldest}; overdue {data['overdue']}"),
            ("next due", output.when(data["next_due_at"])),
            ("workers", _workers(data["workers"])),
            ("beat", _beat(data)),
        ]
    )
    print()
    output.table(
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
    shown = [f"{w['worker']} {output.relative(-w['age_seconds'])}" for w in workers[:5]]
    more = f" (+{len(workers) - 5} more)" if len(workers) > 5 else ""
    return "last consumed: " + ", ".join(shown) + more


def _beat(data: dict[str, Any]) -> str:
    leader = "a beat holds the lock" if data["beat"]["leader"] else "NO beat holds the lock"
    return f"{leader}; last sweep {output.when(data['last_sweep_at'])}"


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


def _show(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.dump(event)
    else:
        print(event_line(event), flush=True)


def events(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        rows = await event_log.recent(rt, args.limit)
        for _, event in rows:
            _show(event, args.json)
        if args.follow:
            async for _, event in event_log.follow(rt, rows[-1][0] if rows else "0-0"):
                _show(event, args.json)
        return 0

    return with_runtime(work)
