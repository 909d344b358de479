"""The CLI's command handlers: parse-free glue between argparse, `worker.ops` and output."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from config.settings import Settings
from worker import ops, render
from worker.errors import InputError
from worker.outcomes import Outcome
from worker.runtime import Runtime
from worker.transfer import export_row, iter_connections

Handler = Callable[[argparse.Namespace], int]


class NotFound(Exception):
    """The named connection or integration does not exist."""


def dump(data: Any) -> None:
    print(json.dumps(data, sort_keys=True, default=str))


def with_runtime(work: Callable[[Runtime], Awaitable[int]]) -> int:
    settings = Settings.from_env()

    async def go() -> int:
        rt = Runtime.open(settings)
        try:
            return await work(rt)
        finally:
            await rt.close()

    return asyncio.run(go())


def read_secret(args: argparse.Namespace) -> str:
    if args.client_secret_env:
        value = os.environ.get(args.client_secret_env)
        if value is None:
            raise InputError(f"--client-secret-env: ${args.client_secret_env} is not set")
        return value.strip()
    if args.client_secret_file:
        try:
            return Path(args.client_secret_file).read_text().strip()
        except OSError as error:
            raise InputError(f"--client-secret-file: {error.strerror}") from None
    return sys.stdin.readline().strip()


def integrations_add(args: argparse.Namespace) -> int:
    secret = read_secret(args)

    async def work(rt: Runtime) -> int:
        integration, resumed = await ops.add_integration(
            rt, args.name, args.provider, args.client_id, secret, args.login_url
        )
        print(
            f"integration {integration.name}: {integration.provider.value} at "
            f"{integration.login_url}" + (f"; {resumed} connections resumed" if resumed else "")
        )
        return 0

    return with_runtime(work)


def integrations_list(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        rows = [i.public() for i in await rt.store.list_integrations()]
        if args.json:
            dump(rows)
        else:
            render.table(
                ["name", "provider", "status", "introspection", "login_url"],
                [
                    [r["name"], r["provider"], r["status"], r["introspection"], r["login_url"]]
                    for r in rows
                ],
            )
        return 0

    return with_runtime(work)


def connections_import(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{args.file}: cannot read: {error}") from None

    async def work(rt: Runtime) -> int:
        report = await ops.import_connections(rt, text.splitlines(), args.skip_invalid)
        if args.json:
            dump(report.as_dict())
        else:
            for problem in report.problems:
                print(f"invalid: {problem}", file=sys.stderr)
            if report.problems and not args.skip_invalid:
                print(
                    f"{len(report.problems)} invalid lines: nothing imported "
                    "(fix them, or pass --skip-invalid)",
                    file=sys.stderr,
                )
            print(
                f"created {report.created}, updated {report.updated}, "
                f"unchanged {report.unchanged}, invalid {len(report.problems)}"
            )
        return 1 if report.problems else 0

    return with_runtime(work)


def connections_export(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        out = sys.stdout if args.file == "-" else open(args.file, "w")  # noqa: SIM115
        bar = render.Progress("exporting")
        try:
            async for conn in iter_connections(rt.store):
                out.write(json.dumps(export_row(conn, args.with_secrets)) + "\n")
                bar.advance()
        finally:
            if out is not sys.stdout:
                out.close()
        bar.finish()
        return 0

    return with_runtime(work)


def connections_show(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        data = await ops.show_connection(rt, args.id)
        if data is None:
            raise NotFound(f"no connection {args.id!r}")
        if args.json:
            dump(data)
            return 0
        times = {
            "issued_at",
            "expires_at",
            "last_check_at",
            "last_refresh_at",
            "failing_since",
            "next_check_at",
        }
        render.fields(
            (k, render.when(v) if k in times else v) for k, v in data.items() if k != "last_error"
        )
        if data["last_error"]:
            e = data["last_error"]
            print(
                f"last_error          {e['error']}: {e['error_description']} "
                f"(HTTP {e['http_status']}, {render.when(e['at'])})"
            )
        return 0

    return with_runtime(work)


def connections_remove(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        if not await rt.store.remove_connection(args.id):
            raise NotFound(f"no connection {args.id!r}")
        print(f"removed {args.id}")
        return 0

    return with_runtime(work)


def _print_outcome(result: dict[str, Any], as_json: bool) -> int:
    if as_json:
        dump(result)
    else:
        error = result.get("error") or {}
        detail = f" {error.get('error')}: {error.get('error_description')}" if error else ""
        reason = f" ({result['reason']})" if result.get("reason") else ""
        nxt = (
            f"; next check {render.when(result['next_check_at'])}"
            if result.get("next_check_at")
            else ""
        )
        print(f"{result['connection_id']}: {result['outcome']}{reason}{detail}{nxt}")
    if result["outcome"] == Outcome.NOT_FOUND.value:
        raise NotFound(f"no connection {result['connection_id']!r}")
    ok = {o.value for o in (Outcome.FRESH, Outcome.REFRESHED, Outcome.SKIPPED, Outcome.SUPERSEDED)}
    return 0 if result["outcome"] in ok else 1


def _enqueue(task_name: str, args: argparse.Namespace, task_args: list[Any]) -> dict[str, Any]:
    from worker import tasks  # noqa: PLC0415  (imports the Celery app and its settings)

    task = {
        "check": tasks.check_connection,
        "refresh": tasks.refresh_connection,
        "sweep": tasks.sweep_task,
    }[task_name]
    async_result = task.apply_async(task_args, queue="ops" if task_name != "sweep" else "sweep")
    if not args.wait:
        return {"task_id": async_result.id, "queued": True}
    outcome: dict[str, Any] = async_result.get(timeout=args.timeout)
    return outcome


def check_or_refresh(args: argparse.Namespace) -> int:
    force = args.command == "refresh"
    if not args.inline:
        result = _enqueue(args.command, args, [args.id])
        if "queued" in result:
            if args.json:
                dump(result)
            else:
                print(f"queued {args.command} of {args.id} as task {result['task_id']}")
            return 0
        return _print_outcome(result, args.json)

    async def work(rt: Runtime) -> int:
        result = await rt.refresher.check(args.id, force=force, explicit=True)
        return _print_outcome(result.as_dict(), args.json)

    return with_runtime(work)


def sweep(args: argparse.Namespace) -> int:
    if not args.inline:
        result = _enqueue("sweep", args, [False])
        dump(result) if args.json else print(result)
        return 0

    async def work(rt: Runtime) -> int:
        from worker.sweep import claim_window  # noqa: PLC0415

        now = time.time()
        ids = await rt.store.claim_due(now, rt.settings.sweep_limit, claim_window(rt.settings))
        bar = render.Progress("checking", len(ids))
        counts: dict[str, int] = {}
        for start in range(0, len(ids), rt.settings.batch_size):
            results = await rt.refresher.check_many(ids[start : start + rt.settings.batch_size])
            for result in results:
                counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
            bar.advance(len(results))
        bar.finish()
        dump({"claimed": len(ids), "outcomes": counts}) if args.json else print(
            f"checked {len(ids)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
        return 0

    return with_runtime(work)
