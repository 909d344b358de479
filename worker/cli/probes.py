"""`tokenworker health|metrics|config-reference`: what deployments and their probes run."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import redis

from config.redis_urls import RedisEndpoint
from config.settings import Settings
from worker.cli import output
from worker.cli._base import EXIT_FAILED, EXIT_UNREACHABLE, examples
from worker.errors import InputError
from worker.service.health import Verdict, heartbeats, liveness, node_name, readiness
from worker.service.reachability import PROBE_TIMEOUT, safe_url
from worker.store import clients
from worker.store.keys import Keys


def register(sub: Any) -> None:
    hl = sub.add_parser(
        "health",
        help="liveness and readiness probes (exit 0 ok, 1 unhealthy, 3 unreachable)",
        **examples(
            "tokenworker health --liveness --worker tokenworker@%h --max-age 300\n"
            "  tokenworker health --readiness"
        ),
    )
    probe = hl.add_mutually_exclusive_group()
    probe.add_argument(
        "--liveness", action="store_true", help="a worker consumed a task within --max-age"
    )
    probe.add_argument(
        "--readiness", action="store_true", help="store and broker answer; the store persists"
    )
    hl.add_argument(
        "--worker",
        metavar="NODE",
        help="the worker's Celery node name (its -n; %%h is this host's name); default: any",
    )
    hl.add_argument(
        "--max-age", type=float, default=300.0, help="seconds since the last task (300)"
    )
    hl.add_argument("--json", action="store_true")
    hl.set_defaults(handler=health)
    met = sub.add_parser(
        "metrics",
        help="serve Prometheus metrics for the whole fleet",
        **examples("tokenworker metrics --port 9464"),
    )
    met.add_argument("--port", type=int, default=9464)
    met.add_argument("--addr", default="0.0.0.0", help="listen address (0.0.0.0)")  # noqa: S104
    met.add_argument(
        "--scan-interval",
        type=float,
        default=60.0,
        help="recount connections by status at most this often (60 s)",
    )
    met.add_argument("--once", action="store_true", help="print the metrics once and exit")
    met.set_defaults(handler=metrics)
    cref = sub.add_parser(
        "config-reference",
        help="print the configuration reference (deploy/CONFIGURATION.md)",
        **examples("tokenworker config-reference --check deploy/CONFIGURATION.md"),
    )
    cref.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from it")
    cref.set_defaults(handler=config_reference)


# -- health ------------------------------------------------------------------------------


def _client(endpoint: RedisEndpoint) -> redis.Redis:
    return clients.sync_client(
        endpoint, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
    )


def health(args: argparse.Namespace) -> int:
    """Exit 0 healthy, 1 unhealthy, 3 when the store or broker does not answer."""
    settings = Settings.from_env(require_keys=False)
    both = not (args.liveness or args.readiness)
    store = _client(settings.store_endpoint)
    broker = (
        _client(settings.broker_endpoint) if settings.broker_url != settings.redis_url else None
    )
    verdicts: dict[str, Verdict] = {}
    try:
        if args.readiness or both:
            verdicts["readiness"] = readiness(store, broker, settings.require_persistence)
        if args.liveness or both:
            node = node_name(args.worker) if args.worker else None
            beats = heartbeats(store, Keys(settings.key_prefix))
            verdicts["liveness"] = liveness(beats, time.time(), args.max_age, node)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        where = "broker" if broker is not None and _answers(store) else "store"
        url = settings.broker_url if where == "broker" else settings.redis_url
        message = f"{where} unreachable at {safe_url(url)}: {type(error).__name__}"
        if args.json:
            output.dump({"ok": False, "unreachable": where, "error": message})
        else:
            print(f"unreachable: {message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        store.close()
        if broker is not None:
            broker.close()
    return _report(verdicts, args.json)


def _report(verdicts: dict[str, Verdict], as_json: bool) -> int:
    ok = all(v.ok for v in verdicts.values())
    if as_json:
        report: dict[str, Any] = {"ok": ok}
        for kind, verdict in verdicts.items():
            report[kind] = {"ok": verdict.ok, "summary": verdict.summary, **verdict.details}
        output.dump(report)
    else:
        for kind, verdict in verdicts.items():
            print(f"{kind}: {'ok' if verdict.ok else 'FAIL'}: {verdict.summary}")
            for warning in verdict.details.get("warnings", []):
                print(f"{kind}: warning: {warning}")
    return 0 if ok else EXIT_FAILED


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


# -- metrics and the configuration reference ---------------------------------------------


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
    """Exit 1 when --check FILE is stale."""
    from config.reference import render  # noqa: PLC0415

    text = render()
    if not args.check:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.check) as handle:
            current = handle.read()
    except OSError as error:
        raise InputError(f"--check {args.check}: {error.strerror}") from None
    if current != text:
        print(
            f"{args.check} is stale: run `tokenworker config-reference > {args.check}`",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0
