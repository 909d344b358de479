"""`tokenworker`: the ops command line. See `tokenworker COMMAND --help`.

Exit codes: 0 success; 1 the operation ran and reported a failure (a check that failed, an
import with invalid lines, an unhealthy probe, unreadable records skipped by status, list or
export); 2 bad input or configuration; 3 the store or broker is unreachable; 4 no such
connection or integration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config import logging as tw_logging
from config.settings import SettingsError
from worker.cli import admin as commands_admin
from worker.cli import commands
from worker.cli import ops as commands_ops
from worker.dev.bench import command as bench_command
from worker.errors import InputError, TokenworkerError

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 1, 2, 3, 4

HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "integrations add": commands.integrations_add,
    "integrations list": commands.integrations_list,
    "connections import": commands.connections_import,
    "connections export": commands.connections_export,
    "connections list": commands_ops.connections_list,
    "connections show": commands.connections_show,
    "connections remove": commands.connections_remove,
    "check": commands.check_or_refresh,
    "refresh": commands_ops.refresh,
    "sweep": commands.sweep,
    "status": commands_admin.status,
    "events": commands_admin.events,
    "keys generate": commands_admin.keys_generate,
    "keys rotate": commands_admin.keys_rotate,
    "health": commands_ops.health,
    "metrics": commands_ops.metrics,
    "config-reference": commands_ops.config_reference,
    "emulator": commands_admin.emulator,
    "demo": commands_admin.demo,
    "bench": bench_command.run,
}


def _examples(text: str) -> dict[str, Any]:
    return {
        "epilog": "example:\n  " + text,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def _queue_flags(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--wait", action="store_true", help="wait for the worker and print the outcome"
    )
    mode.add_argument("--inline", action="store_true", help="run in this process, not on a worker")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits (120)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenworker",
        description="Keeps the OAuth tokens of stored Salesforce connections alive.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ints = sub.add_parser("integrations", help="connected apps").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = ints.add_parser(
        "add",
        help="add or update a connected app",
        **_examples(
            "SF_SECRET=... tokenworker integrations add acme --provider salesforce "
            "--client-id 3MVG9... --client-secret-env SF_SECRET"
        ),
    )
    add.add_argument("name")
    add.add_argument("--provider", required=True, choices=["salesforce", "salesforce-sandbox"])
    add.add_argument("--client-id", required=True, help="the connected app's consumer key")
    secret = add.add_mutually_exclusive_group(required=True)
    secret.add_argument("--client-secret-env", metavar="VAR", help="read the secret from $VAR")
    secret.add_argument("--client-secret-file", metavar="PATH", help="read the secret from a file")
    secret.add_argument("--client-secret-stdin", action="store_true", help="read it from stdin")
    add.add_argument("--login-url", help="My Domain login URL (default: by provider)")
    lst = ints.add_parser(
        "list", help="list integrations", **_examples("tokenworker integrations list --json")
    )
    lst.add_argument("--json", action="store_true")

    conns = sub.add_parser("connections", help="stored connections").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    imp = conns.add_parser(
        "import",
        help="import JSON Lines",
        **_examples("tokenworker connections import connections.jsonl"),
    )
    imp.add_argument("file", help="a .jsonl file, or - for stdin")
    imp.add_argument(
        "--skip-invalid",
        action="store_true",
        help="import the valid lines even when some are invalid",
    )
    imp.add_argument("--json", action="store_true")
    exp = conns.add_parser(
        "export",
        help="export JSON Lines",
        **_examples("tokenworker connections export --with-secrets backup.jsonl"),
    )
    exp.add_argument("file", nargs="?", default="-")
    exp.add_argument(
        "--with-secrets",
        action="store_true",
        help="include tokens (handle with care): FILE is created new, mode 0600",
    )
    exp.add_argument(
        "--force",
        action="store_true",
        help="with --with-secrets: replace FILE if it exists (by default that is refused)",
    )
    cl = conns.add_parser(
        "list",
        help="list connections",
        **_examples("tokenworker connections list --status reauth_required --limit 50 --offset 50"),
    )
    cl.add_argument("--status", help="active, failing or reauth_required")
    cl.add_argument("--integration")
    cl.add_argument("--limit", type=int, help="show at most N (sorted by id)")
    cl.add_argument("--offset", type=int, default=0, help="skip the first N (for paging)")
    cl.add_argument("--json", action="store_true")
    show = conns.add_parser(
        "show", help="one connection", **_examples("tokenworker connections show c-42 --json")
    )
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    rm = conns.add_parser(
        "remove", help="forget a connection", **_examples("tokenworker connections remove c-42")
    )
    rm.add_argument("id")

    chk = sub.add_parser(
        "check",
        help="introspect now; refresh if needed",
        **_examples("tokenworker check c-42 --wait"),
    )
    chk.add_argument("id")
    _queue_flags(chk)
    ref = sub.add_parser(
        "refresh",
        help="refresh now, whatever the status: one connection or a whole integration",
        **_examples(
            "tokenworker refresh c-42 --wait\n"
            "  tokenworker refresh --integration acme --status failing --wait --timeout 600"
        ),
    )
    ref.add_argument("id", nargs="?", help="a connection id (or use --integration)")
    ref.add_argument("--integration", metavar="NAME", help="every connection of NAME")
    ref.add_argument("--status", help="with --integration: only connections in this status")
    _queue_flags(ref)
    sw = sub.add_parser(
        "sweep", help="check everything due now", **_examples("tokenworker sweep --inline")
    )
    _queue_flags(sw)

    st = sub.add_parser(
        "status",
        help="counts, backlog, integrations, recent failures",
        **_examples("tokenworker status --json"),
    )
    st.add_argument("--json", action="store_true")
    ev = sub.add_parser("events", help="recent events", **_examples("tokenworker events --follow"))
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    ev.add_argument("--limit", type=int, default=50, help="the newest N (50)")

    hl = sub.add_parser(
        "health",
        help="liveness and readiness probes (exit 0 ok, 1 unhealthy, 3 unreachable)",
        **_examples(
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
    met = sub.add_parser(
        "metrics",
        help="serve Prometheus metrics for the whole fleet",
        **_examples("tokenworker metrics --port 9464"),
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
    cref = sub.add_parser(
        "config-reference",
        help="print the configuration reference (deploy/CONFIGURATION.md)",
        **_examples("tokenworker config-reference --check deploy/CONFIGURATION.md"),
    )
    cref.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from it")

    keys = sub.add_parser("keys", help="encryption keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    keys.add_parser("generate", help="print a new key", **_examples("tokenworker keys generate"))
    keys.add_parser(
        "rotate",
        help="re-encrypt everything under the first key",
        **_examples("TOKENWORKER_ENCRYPTION_KEYS=NEW,OLD tokenworker keys rotate"),
    )

    emu = sub.add_parser(
        "emulator",
        help="run the local Salesforce OAuth emulator",
        **_examples("tokenworker emulator --port 8787 --lifetime 300"),
    )
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8787)
    emu.add_argument("--lifetime", type=float, default=7200.0, help="access-token lifetime (s)")
    emu.add_argument("--latency-ms", type=float, default=0.0)
    emu.add_argument("--rotation", action="store_true", help="rotate refresh tokens")
    sub.add_parser("demo", help="everything at once on embedded defaults", **_examples("make demo"))
    bench_command.add_parser(sub)
    return parser


def _configure_logging() -> None:
    """Logs go to stderr (stdout is for results and --json): readable on a terminal."""
    chosen = os.environ.get("TOKENWORKER_LOG_FORMAT")
    tw_logging.configure(
        chosen if chosen in ("json", "console") else ("console" if sys.stderr.isatty() else "json")
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    action = getattr(args, "action", None)
    handler = HANDLERS[f"{args.command} {action}" if action else args.command]
    try:
        return handler(args)
    except (InputError, SettingsError) as error:
        print(f"tokenworker: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except commands.NotFound as error:
        print(f"tokenworker: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except commands.Unreachable as error:
        print(f"tokenworker: cannot reach Redis: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (RedisConnectionError, RedisTimeoutError, ConnectionError) as error:
        print(f"tokenworker: cannot reach Redis: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except TokenworkerError as error:
        print(f"tokenworker: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
