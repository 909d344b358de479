"""The CLI's command handlers: parse-free glue between argparse, `worker.service.ops` and output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import redis

from config.settings import Settings
from worker.cli import render
from worker.domain.outcomes import Outcome
from worker.engine.runtime import Runtime
from worker.errors import InputError, TokenworkerError
from worker.service import ops
from worker.service.transfer import decode_input, export_row, iter_connections

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


class Unreachable(ConnectionError):
    """The store or broker Redis did not answer (exit 3); the message names which and where,
    with any password masked."""


class NoOutcome(TokenworkerError):
    """--wait gave up after --timeout seconds (exit 1): no worker answered in time."""


PROBE_TIMEOUT = 3.0  # seconds to connect and answer PING; a healthy Redis takes milliseconds


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def require_reachable(settings: Settings | None = None) -> None:
    """Raise Unreachable unless the store and the broker answer PING within seconds.

    Commands that enqueue check first: Celery would retry an unreachable result backend for
    ~20 s and then end in a traceback (exit 1) instead of the documented exit 3.
    """
    settings = settings or Settings.from_env(require_keys=False)
    places = {"store": settings.redis_url}
    if settings.broker_url != settings.redis_url:
        places["broker"] = settings.broker_url
    for where, url in places.items():
        client = redis.Redis.from_url(
            url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
        )
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise Unreachable(_unreachable(where, url, error)) from None
        finally:
            client.close()


def _unreachable(where: str, url: str, error: BaseException) -> str:
    detail = str(error).strip().replace("\n", " ")
    password = urlsplit(url).password
    if password:
        detail = detail.replace(password, "***")
    return f"{where} Redis unreachable at {safe_url(url)}: {type(error).__name__}: {detail}"


@contextlib.contextmanager
def celery_errors(timeout: float) -> Iterator[None]:
    """Celery's failures to reach Redis as Unreachable (exit 3), a --wait that ran out as
    NoOutcome (exit 1): one line each instead of a traceback."""
    from celery.backends.asynchronous import E_RETRY_LIMIT_EXCEEDED  # noqa: PLC0415
    from celery.exceptions import TimeoutError as CeleryTimeout  # noqa: PLC0415
    from kombu.exceptions import OperationalError  # noqa: PLC0415

    settings = Settings.from_env(require_keys=False)
    try:
        yield
    except (OperationalError, redis.ConnectionError, redis.TimeoutError) as error:
        raise Unreachable(_unreachable("broker", settings.broker_url, error)) from None
    except RuntimeError as error:
        if str(error) != E_RETRY_LIMIT_EXCEEDED:
            raise
        raise Unreachable(_unreachable("broker", settings.broker_url, error)) from None
    except CeleryTimeout:
        raise NoOutcome(
            f"no outcome within --timeout {timeout:g} s: is a worker consuming the queue? "
            "(the task stays queued)"
        ) from None


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
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as error:
        raise InputError(f"{args.file}: cannot read: {error.strerror or error}") from None
    text = decode_input(data, "stdin" if args.file == "-" else args.file)

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


MAX_REPORTED = 20  # unreadable records named one by one on stderr; the rest are counted


class Skipped:
    """Unreadable records met by a fleet-wide command: each of the first MAX_REPORTED is
    named on stderr (id and what is wrong), the rest only counted."""

    def __init__(self) -> None:
        self.count = 0
        self.sample: list[dict[str, str]] = []

    def __call__(self, connection_id: str, error: Exception) -> None:
        self.count += 1
        if len(self.sample) < 100:
            self.sample.append({"id": connection_id, "problem": str(error)})
        if self.count <= MAX_REPORTED:
            print(f"unreadable: {error}", file=sys.stderr)

    def summary(self, what: str) -> None:
        if self.count > MAX_REPORTED:
            print(f"unreadable: ... and {self.count - MAX_REPORTED} more", file=sys.stderr)
        if self.count:
            print(f"{what} {self.count} unreadable connections", file=sys.stderr)


def open_export(path: str, with_secrets: bool, force: bool) -> TextIO:
    """The export file. With secrets it is created 0600 and never written through an
    existing file (whose mode and links we do not control): an existing path is refused, or
    with --force removed first."""
    if not with_secrets:
        return open(path, "w")
    if force:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(
            f"{path}: already exists; pass --force to replace it (tokens are written only "
            "to a new file, created readable by its owner alone)"
        ) from None
    except OSError as error:
        raise InputError(f"{path}: cannot create: {error.strerror or error}") from None
    return os.fdopen(fd, "w")


def connections_export(args: argparse.Namespace) -> int:
    """Exit 1 when unreadable records were skipped: the file is then not a full backup."""

    async def work(rt: Runtime) -> int:
        out = (
            sys.stdout
            if args.file == "-"
            else open_export(args.file, args.with_secrets, args.force)
        )
        bar = render.Progress("exporting")
        skipped = Skipped()
        try:
            async for conn in iter_connections(rt.store, unreadable=skipped):
                out.write(json.dumps(export_row(conn, args.with_secrets)) + "\n")
                bar.advance()
        finally:
            if out is not sys.stdout:
                out.close()
        bar.finish()
        skipped.summary("export: skipped")
        return 1 if skipped.count else 0

    return with_runtime(work)


def connections_show(args: argparse.Namespace) -> int:
    async def work(rt: Runtime) -> int:
        data = await ops.show_connection(rt, args.id)  # UnreadableConnection: exit 1
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
    require_reachable()
    from worker.jobs import tasks  # noqa: PLC0415  (imports the Celery app and its settings)

    task = {
        "check": tasks.check_connection,
        "refresh": tasks.refresh_connection,
        "sweep": tasks.sweep_task,
    }[task_name]
    with celery_errors(args.timeout):
        async_result = task.apply_async(task_args, queue="ops" if task_name != "sweep" else "sweep")
        if not args.wait:
            return {"task_id": async_result.id, "queued": True}
        return _outcome(async_result, args.timeout)


def _outcome(async_result: Any, timeout: float) -> dict[str, Any]:
    try:
        outcome: dict[str, Any] = async_result.get(timeout=timeout)
    finally:
        release(async_result)
    return outcome


def release(async_result: Any) -> None:
    """Unsubscribe from a task's result now. AsyncResult.__del__ would do it at interpreter
    shutdown, reconnecting to Redis, which prints an ImportError traceback after a --wait
    that timed out. Best effort: the subscription ends with the process anyway."""
    backend, async_result.backend = async_result.backend, None
    if backend is not None:
        with contextlib.suppress(Exception):
            backend.remove_pending_result(async_result)


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
        from worker.engine.sweep import claim_window  # noqa: PLC0415

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
