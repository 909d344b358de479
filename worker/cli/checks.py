"""`tokenworker check|refresh|sweep`: check connections now, on the pool or in this process.

By default each queues tasks for the worker pool and returns (`--wait` waits for the
outcome); `--inline` runs the checks here. Exit 1 when a check did not do its work
(`Outcome.ok`), 4 when the connection or integration does not exist.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from worker.cli import output
from worker.cli._base import EXIT_FAILED, examples, queue_flags, with_runtime
from worker.domain.outcomes import CheckResult, Outcome
from worker.engine.runtime import Runtime
from worker.errors import NotFoundError
from worker.service import checks
from worker.service.checks import Dispatch, InlineDispatch, IntegrationRefresh, Queued, Swept


def register(sub: Any) -> None:
    chk = sub.add_parser(
        "check",
        help="introspect now; refresh if needed",
        **examples("tokenworker check c-42 --wait"),
    )
    chk.add_argument("id")
    queue_flags(chk)
    chk.set_defaults(handler=check, force=False)
    ref = sub.add_parser(
        "refresh",
        help="refresh now, whatever the status: one connection or a whole integration",
        **examples(
            "tokenworker refresh c-42 --wait\n"
            "  tokenworker refresh --integration acme --status failing --wait --timeout 600"
        ),
    )
    ref.add_argument("id", nargs="?", help="a connection id (or use --integration)")
    ref.add_argument("--integration", metavar="NAME", help="every connection of NAME")
    ref.add_argument("--status", help="with --integration: only connections in this status")
    queue_flags(ref)
    ref.set_defaults(handler=refresh, force=True)
    sw = sub.add_parser(
        "sweep", help="check everything due now", **examples("tokenworker sweep --inline")
    )
    queue_flags(sw)
    sw.set_defaults(handler=sweep)


def _queued(args: argparse.Namespace) -> Dispatch:
    from worker.jobs.dispatch import CeleryDispatch  # noqa: PLC0415  (Celery only when queueing)

    return CeleryDispatch(wait=args.wait, timeout=args.timeout)


def check(args: argparse.Namespace) -> int:
    """`check ID`, and `refresh ID` (args.force)."""
    if args.inline:
        result = with_runtime(
            lambda rt: checks.check(InlineDispatch(rt), args.id, force=args.force)
        )
    else:
        result = asyncio.run(checks.check(_queued(args), args.id, force=args.force))
    if isinstance(result, Queued):
        if args.json:
            output.dump(result.as_dict())
        else:
            command = "refresh" if args.force else "check"
            print(f"queued {command} of {args.id} as task {result.task_id}")
        return 0
    return _outcome(result, args.json)


def _outcome(result: CheckResult, as_json: bool) -> int:
    if as_json:
        output.dump(result.as_dict())
    else:
        error = result.error or {}
        detail = f" {error.get('error')}: {error.get('error_description')}" if error else ""
        reason = f" ({result.reason})" if result.reason else ""
        nxt = f"; next check {output.when(result.next_check_at)}" if result.next_check_at else ""
        print(f"{result.connection_id}: {result.outcome.value}{reason}{detail}{nxt}")
    if result.outcome is Outcome.NOT_FOUND:  # shown above, and exit 4 like any missing record
        raise NotFoundError(f"no connection {result.connection_id!r}")
    return 0 if result.outcome.ok else EXIT_FAILED


def refresh(args: argparse.Namespace) -> int:
    checks.one_target(args.id, args.integration, args.status)
    if args.id is not None:
        return check(args)
    bars = output.Bars()

    async def work(rt: Runtime) -> IntegrationRefresh:
        dispatch = InlineDispatch(rt) if args.inline else _queued(args)
        return await checks.refresh_integration(rt, dispatch, args.integration, args.status, bars)

    done = with_runtime(work)
    bars.finish()
    if args.json:
        output.dump(done.as_dict())
    elif done.tally.queued is not None:
        print(f"queued a refresh of {done.tally.queued} connections of {done.integration}")
    else:
        outcomes = sorted(done.tally.outcomes.items())
        summary = ", ".join(f"{k} {v}" for k, v in outcomes) or "nothing to do"
        print(f"{done.integration}: {done.connections} connections: {summary}")
    return 0 if done.ok else EXIT_FAILED


def sweep(args: argparse.Namespace) -> int:
    """Exit 0 whatever the checks found: a sweep reports, it does not judge."""
    bars = output.Bars()
    if args.inline:
        result = with_runtime(lambda rt: checks.sweep(InlineDispatch(rt), bars))
    else:
        result = asyncio.run(checks.sweep(_queued(args)))
    bars.finish()
    if args.json:
        output.dump(result.as_dict())
    elif isinstance(result, Swept):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
        print(f"checked {result.claimed}: {counts}")
    else:
        print(result.as_dict())  # a queued sweep has always printed the dict as Python shows it
    return 0
