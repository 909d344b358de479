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

from config import logging as tw_logging
from worker.cli import api, checks, connections, dev, integrations, keys, probes, watch
from worker.cli._base import EXIT_INTERRUPTED, Handler, exit_code

# One module per noun, each registering its own subcommands; `--help` lists them in this order.
COMMANDS = (integrations, connections, checks, watch, probes, keys, api, dev)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenworker",
        description="Keeps the OAuth tokens of stored Salesforce connections alive.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def _configure_logging() -> None:
    """Logs go to stderr (stdout is for results and --json): readable on a terminal."""
    chosen = os.environ.get("TOKENWORKER_LOG_FORMAT")
    tw_logging.configure(
        chosen if chosen in ("json", "console") else ("console" if sys.stderr.isatty() else "json")
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments; a command that parses its own (bench) gets the rest as `arguments`."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passes_arguments", False):
        args.arguments = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    _configure_logging()
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:
        code = exit_code(error)
        if code is None:
            raise
        return code


if __name__ == "__main__":
    sys.exit(main())
