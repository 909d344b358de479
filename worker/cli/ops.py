"""CLI handlers for running tokenworker in production: health probes, the metrics exporter,
the configuration reference, paged listing and refreshing a whole integration."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis

from config.settings import Settings
from worker.cli import commands, render
from worker.cli.commands import NotFound, celery_errors, dump, require_reachable, safe_url
from worker.domain.outcomes import Outcome
from worker.engine.runtime import Runtime
from worker.errors import InputError
from worker.service.health import Verdict, heartbeats, liveness, node_name, readiness
from worker.service.paging import matching_ids, page_connections
from worker.store.keys import Keys

T = TypeVar("T")
EXIT_UNHEALTHY, EXIT_UNREACHABLE = 1, 3
OK_OUTCOMES = {
    o.value for o in (Outcome.FRESH, Outcome.REFRESHED, Outcome.SKIPPED, Outcome.SUPERSEDED)
}


def with_runtime(work: Callable[[Runtime], Awaitable[T]]) -> T:
    settings = Settings.from_env()

    async def go() -> T:
        rt = Runtime.open(settings)
        try:
            return await work(rt)
        finally:
            await rt.close()

    return asyncio.run(go())


# -- health ------------------------------------------------------------------------------


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)


def health(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_keys=False)
    both = not (args.liveness or args.readiness)
    store = _client(settings.redis_url)
    broker = _client(settings.broker_url) if settings.broker_url != settings.redis_url else None
    verdicts: dict[str, Verdict] = {}
    try:
        if args.readiness or both:
            verdicts["readiness"] = readiness(store, broker, settings.require_persistence)
        if args.liveness or both:
            node = node_name(args.worker) if args.worker else None
            beats = heartbeats(store, Keys(settings.key_prefix))
            verdicts["liveness"] = liveness(beats, time.time(), args.max_age, node)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        where = "broker" if broker is not None and store_answers(store) else "store"
        url = settings.broker_url if where == "broker" else settings.redis_url
        message = f"{where} unreachable at {safe_url(url)}: {type(error).__name__}"
        if args.json:
            dump({"ok": False, "unreachable": where, "error": message})
        else:
            print(f"unreachable: {message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        store.close()
        if broker is not None:
            broker.close()
    ok = all(v.ok for v in verdicts.values())
    if args.json:
        report: dict[str, Any] = {"ok": ok}
        for kind, verdict in verdicts.items():
            report[kind] = {"ok": verdict.ok, "summary": verdict.summary, **verdict.details}
        dump(report)
    else:
        for kind, verdict in verdicts.items():
            print(f"{kind}: {'ok' if verdict.ok else 'FAIL'}: {verdict.summary}")
            for warning in verdict.details.get("warnings", []):
                print(f"{kind}: warning: {warning}")
    return 0 if ok else EXIT_UNHEALTHY


def store_answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


# -- metrics and docs --------------------------------------------------------------------


def metrics(args: argparse.Namespace) -> int:
    from worker.telemetry import exporter  # noqa: PLC0415  (prometheus_client only for this command)

    settings = Settings.from_env(require_keys=False)
    registry = exporter.registry_for(settings, scan_every=args.scan_interval)
    if args.once:
        sys.stdout.write(exporter.exposition(registry).decode())
        return 0
    print(f"serving metrics on http://{args.addr}:{args.port}/metrics", file=sys.stderr)
    exporter.serve(registry, args.port, args.addr)
    return 0


def config_reference(args: argparse.Namespace) -> int:
    from config.reference import render  # noqa: PLC0415

    text = render()
    if args.check:
        try:
            with open(args.check) as handle:
                current = handle.read()
        except OSError as error:
            raise InputError(f"--check {args.check}: {error.strerror}") from None
        if current != text:
            fix = f"tokenworker config-reference > {args.check}"
            print(f"{args.check} is stale: run `{fix}`", file=sys.stderr)
            return EXIT_UNHEALTHY
        return 0
    sys.stdout.write(text)
    return 0


# -- connections list, paged -------------------------------------------------------------


def connections_list(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        page = await page_connections(rt, args.status, args.integration, args.offset, args.limit)
        skipped = commands.Skipped()
        for cid, error in page.unreadable:
            skipped(cid, error)
        skipped.summary("list: left out")
        if args.json:
            dump(page.rows)
            return 1 if skipped.count else 0
        render.table(
            ["id", "integration", "status", "expires", "next check", "last error"],
            [
                [
                    r["id"],
                    r["integration"],
                    r["status"],
                    render.when(r["expires_at"]),
                    render.when(r["next_check_at"]),
                    (r["last_error"] or {}).get("error"),
                ]
                for r in page.rows
            ],
        )
        end = page.offset + len(page.rows)
        if page.rows and (page.offset or end < page.total):
            more = f"; next page: --offset {end}" if end < page.total else ""
            print(f"rows {page.offset + 1}-{end} of {page.total}{more}", file=sys.stderr)
        return 1 if skipped.count else 0  # the rows shown are right; some were left out

    return with_runtime(work)


# -- refresh, one connection or a whole integration --------------------------------------


def refresh(args: argparse.Namespace) -> int:
    if (args.id is None) == (args.integration is None):
        raise InputError("refresh: give a connection ID or --integration NAME (not both)")
    if args.id is not None:
        if args.status:
            raise InputError("--status applies to --integration only")
        return commands.check_or_refresh(args)
    ids = with_runtime(lambda rt: _integration_ids(rt, args.integration, args.status))
    if args.inline:
        return with_runtime(lambda rt: _refresh_inline(rt, ids, args))
    return _refresh_queued(ids, args)


async def _integration_ids(rt: Runtime, name: str, status: str | None) -> list[str]:
    if not await rt.redis.sismember(rt.store.keys.integrations, name):
        raise NotFound(f"no integration {name!r}")
    return await matching_ids(rt, status, name)


async def _refresh_inline(rt: Runtime, ids: list[str], args: argparse.Namespace) -> int:
    bar = render.Progress("refreshing", len(ids))
    counts: Counter[str] = Counter()
    for start in range(0, len(ids), rt.settings.batch_size):
        chunk = ids[start : start + rt.settings.batch_size]
        results = await rt.refresher.check_many(chunk, force=True)
        counts.update(result.outcome.value for result in results)
        bar.advance(len(results))
    bar.finish()
    return _report(args, len(ids), counts)


def _refresh_queued(ids: list[str], args: argparse.Namespace) -> int:
    require_reachable()
    from worker.jobs import tasks  # noqa: PLC0415  (imports the Celery app and its settings)

    with celery_errors(args.timeout):
        return _queue_and_wait(tasks.refresh_connection, ids, args)


def _queue_and_wait(task: Any, ids: list[str], args: argparse.Namespace) -> int:
    bar = render.Progress("queueing", len(ids))
    pending = []
    for cid in ids:
        pending.append(task.apply_async([cid], queue="ops"))
        bar.advance()
    bar.finish()
    if not args.wait:
        if args.json:
            dump({"integration": args.integration, "queued": len(ids)})
        else:
            print(f"queued a refresh of {len(ids)} connections of {args.integration}")
        return 0
    bar = render.Progress("refreshed", len(ids))
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + args.timeout
    try:
        for result in pending:
            outcome: dict[str, Any] = result.get(timeout=max(0.1, deadline - time.monotonic()))
            counts[outcome["outcome"]] += 1
            bar.advance()
    finally:
        for result in pending:
            commands.release(result)
    bar.finish()
    return _report(args, len(ids), counts)


def _report(args: argparse.Namespace, total: int, counts: Counter[str]) -> int:
    if args.json:
        dump({"integration": args.integration, "connections": total, "outcomes": dict(counts)})
    else:
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to do"
        print(f"{args.integration}: {total} connections: {summary}")
    return 0 if set(counts) <= OK_OUTCOMES else EXIT_UNHEALTHY
