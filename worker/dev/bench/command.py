"""`tokenworker bench`: the scale benchmark of issue 6, end to end.

Starts its own Redis (deploy/redis.conf), Salesforce emulator (50 ms per call) and Celery
worker, runs the throughput, cost and store scenarios, prints a table of targets and writes
the figures, machine facts and parameters as JSON. Every process and temporary file it
started is gone when it ends, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from worker.dev.bench import params as bench_params

EXAMPLE = "tokenworker bench --quick --output bench-results.json"
REQUIRED = (
    "checks_per_s",
    "ceiling_per_s",
    "efficiency",
    "calls_per_conn_day",
    "calls_lower_bound",
    "cost_ratio",
    "calls_floor",
    "floor_ratio",
    "naive_calls_per_conn_day",
    "stale_max",
    "redis_bytes_per_conn",
    "idle_sweep_ms_1m",
)


def parser() -> argparse.ArgumentParser:
    """`tokenworker bench`'s own parser: the CLI passes the arguments after `bench` through."""
    parser = argparse.ArgumentParser(
        prog="tokenworker bench",
        description=__doc__,
        epilog="example:\n  " + EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench_params.add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from config.logging import configure  # noqa: PLC0415
    from worker.dev.bench import report  # noqa: PLC0415
    from worker.dev.bench.progress import say  # noqa: PLC0415
    from worker.dev.bench.scenarios import Run  # noqa: PLC0415
    from worker.dev.bench.services import Workspace, sigterm_as_exit  # noqa: PLC0415

    configure("json", level=logging.WARNING)  # the in-process scenarios' events stay quiet
    alone = [flag for flag in ("api", "console", "deployed", "million") if getattr(args, flag)]
    if args.phase and alone:
        parser().error(f"--phase picks scenarios of the main run, not of --{alone[0]}")
    if args.api:
        return _run_api(args)
    if args.console:
        from worker.dev.bench import console  # noqa: PLC0415

        return console.run(args)
    if args.deployed:
        return _run_deployed(args)
    if args.million:
        return _run_million(args)
    params = bench_params.from_args(args)
    # In their order, each once; a run of some of them reports only their figures.
    phases = [p for p in bench_params.PHASES if args.phase is None or p in args.phase]
    restore = sigterm_as_exit()
    started = time.monotonic()
    shown = "" if args.phase is None else f" ({', '.join(phases)} only)"
    say(f"{params.mode} run{shown}; results to {args.output}")
    try:
        with Workspace() as ws:
            bench = Run(ws, params, args.profile)
            machine = report.machine(bench.redis.url)
            for phase in phases:
                getattr(bench, phase)()
    finally:
        restore()
    figures = bench.figures
    document: dict[str, Any] = {
        **{key: figures[key] for key in (*REQUIRED, "idle_sweep_growth") if key in figures},
        "passed": report.verdicts(figures),
        "notes": bench.notes,
        "machine": machine,
        "params": params.as_dict(),
        "command": "tokenworker " + " ".join(sys.argv[1:]),
        "seconds": round(time.monotonic() - started, 1),
        "details": bench.details,
    }
    report.write(args.output, document)
    say(f"done in {document['seconds']:g}s; wrote {args.output}")
    targets = tuple(t for t in report.TARGETS if t.key in figures)
    report.table(figures, bench.notes, sys.stdout, targets)
    return 0


def _run_api(args: argparse.Namespace) -> int:
    """`bench --api`: the api scenario alone, its document written like the main run's."""
    from dataclasses import replace  # noqa: PLC0415

    from worker.dev.bench import api, report  # noqa: PLC0415
    from worker.dev.bench.services import Workspace, sigterm_as_exit  # noqa: PLC0415

    params = api.PRESETS[_size(args)]
    if args.api_processes:
        params = replace(params, api_processes=args.api_processes)
    restore = sigterm_as_exit()
    started = time.monotonic()
    _say_start(params.mode, args.output)
    try:
        with Workspace() as ws:
            figures, notes, details = api.run(ws, params, args.profile)
            machine = report.machine(ws.redis().url)
    finally:
        restore()
    document = _document(figures, notes, details, machine, params.as_dict(), started)
    return _finish(args.output, document, report.API_TARGETS)


def _run_deployed(args: argparse.Namespace) -> int:
    """`bench --deployed`: beat-driven checks/s beside the pool's capacity (issue 16)."""
    from worker.dev.bench import deployed, report  # noqa: PLC0415

    params = deployed.PRESETS[_size(args)]
    started = time.monotonic()
    figures, details, machine = _in_workspace(params.mode, args.output, deployed.run, params)
    notes = {
        "deployed_checks_per_s": "beat (LeaseScheduler) sends the sweeps; default settings "
        "but the benchmark's rate limit; mostly refreshes (the simulated day's mix)"
    }
    document = _document(figures, notes, details, machine, params.as_dict(), started)
    return _finish(args.output, document, report.DEPLOYED_TARGETS)


def _run_million(args: argparse.Namespace) -> int:
    """`bench --million`: a million connections kept fresh in real time (issue 16)."""
    from worker.dev.bench import million  # noqa: PLC0415

    if args.steady <= 0 or (args.connections is not None and args.connections < 1):
        raise SystemExit("tokenworker bench: --steady and --connections must be positive")
    params = million.MillionParams(
        connections=args.connections or million.MillionParams.connections, steady_s=args.steady
    )
    started = time.monotonic()
    figures, details, machine = _in_workspace(params.mode, args.output, million.run, params)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document = _document(figures, million.NOTES, details, machine, params.as_dict(), started)
    return _finish(args.output, document, million.TARGETS)


def _in_workspace(
    mode: str, output: str, run: Callable[[Any, Any], tuple[Any, Any]], params: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """(figures, details, machine facts) of `run(workspace, params)`, in a workspace that is
    removed afterwards, Ctrl-C and SIGTERM stopping every process it started."""
    from worker.dev.bench import report  # noqa: PLC0415
    from worker.dev.bench.services import Workspace, sigterm_as_exit  # noqa: PLC0415

    restore = sigterm_as_exit()
    _say_start(mode, output)
    try:
        with Workspace() as ws:
            machine = report.machine(ws.redis().url)
            figures, details = run(ws, params)
    finally:
        restore()
    return figures, details, machine


def _size(args: argparse.Namespace) -> str:
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def _say_start(mode: str, output: str) -> None:
    from worker.dev.bench.progress import say  # noqa: PLC0415

    say(f"{mode} run; results to {output}")


def _document(
    figures: dict[str, Any],
    notes: dict[str, str],
    details: dict[str, Any],
    machine: dict[str, Any],
    params: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    return {
        **figures,
        "passed": {},  # filled by _finish
        "notes": notes,
        "machine": machine,
        "params": params,
        "command": "tokenworker " + " ".join(sys.argv[1:]),
        "seconds": round(time.monotonic() - started, 1),
        "details": details,
    }


def _finish(output: str, document: dict[str, Any], targets: Any) -> int:
    from worker.dev.bench import report  # noqa: PLC0415
    from worker.dev.bench.progress import say  # noqa: PLC0415

    figures = {k: v for k, v in document.items() if isinstance(v, int | float)}
    document["passed"] = report.verdicts(figures, targets)
    report.write(output, document)
    say(f"done in {document['seconds']:g}s; wrote {output}")
    report.table(figures, document["notes"], sys.stdout, targets)
    return 0
