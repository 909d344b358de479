"""What every command module shares: a Runtime per command, help examples, the queue flags,
and the one table from error class to exit code and message."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.settings import Settings, SettingsError
from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError, TokenworkerError, Unreachable

T = TypeVar("T")

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND, EXIT_INTERRUPTED = 1, 2, 3, 4, 130

# Error class -> (exit code, message format), most specific first: `main` uses the first row
# the error is an instance of. Raw redis/socket errors are a Redis that stopped answering
# mid-command (the product's own checks raise Unreachable before that).
EXIT_CODES: tuple[tuple[tuple[type[BaseException], ...], int, str], ...] = (
    ((InputError, SettingsError), EXIT_USAGE, "tokenworker: error: {error}"),
    ((NotFoundError,), EXIT_NOT_FOUND, "tokenworker: {error}"),
    ((Unreachable,), EXIT_UNREACHABLE, "tokenworker: cannot reach Redis: {error}"),
    (
        (RedisConnectionError, RedisTimeoutError, ConnectionError),
        EXIT_UNREACHABLE,
        "tokenworker: cannot reach Redis: {kind}: {error}",
    ),
    ((TokenworkerError,), EXIT_FAILED, "tokenworker: {error}"),
)


def exit_code(error: BaseException) -> int | None:
    """Print the error's one line to stderr and return its exit code; None: not ours."""
    for kinds, code, message in EXIT_CODES:
        if isinstance(error, kinds):
            print(message.format(error=error, kind=type(error).__name__), file=sys.stderr)
            return code
    return None


Handler = Callable[[argparse.Namespace], int]


def with_runtime(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run `work` with a Runtime for this environment, closed afterwards."""
    settings = Settings.from_env()

    async def go() -> T:
        rt = Runtime.open(settings)
        try:
            return await work(rt)
        finally:
            await rt.close()

    return asyncio.run(go())


def examples(text: str) -> dict[str, Any]:
    """`add_parser` keywords that end a command's --help with an example."""
    return {
        "epilog": "example:\n  " + text,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def queue_flags(parser: argparse.ArgumentParser) -> None:
    """--wait | --inline, --timeout, --json: for commands that run on the pool by default."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--wait", action="store_true", help="wait for the worker and print the outcome"
    )
    mode.add_argument("--inline", action="store_true", help="run in this process, not on a worker")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits (120)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
