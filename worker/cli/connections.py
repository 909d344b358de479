"""`tokenworker connections import|export|list|show|remove`: the stored connections."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from worker.cli import output
from worker.cli._base import examples, with_runtime
from worker.engine.runtime import Runtime
from worker.errors import InputError
from worker.service import connections, management
from worker.service.paging import Page, page_connections
from worker.service.transfer import ImportReport, decode_input

TIMES = {
    "issued_at",
    "expires_at",
    "last_check_at",
    "last_refresh_at",
    "failing_since",
    "next_check_at",
}


def register(sub: Any) -> None:
    conns = sub.add_parser("connections", help="stored connections").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    imp = conns.add_parser(
        "import",
        help="import JSON Lines",
        **examples("tokenworker connections import connections.jsonl"),
    )
    imp.add_argument("file", help="a .jsonl file, or - for stdin")
    imp.add_argument(
        "--skip-invalid",
        action="store_true",
        help="import the valid lines even when some are invalid",
    )
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(handler=import_)
    exp = conns.add_parser(
        "export",
        help="export JSON Lines",
        **examples("tokenworker connections export --with-secrets backup.jsonl"),
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
    exp.set_defaults(handler=export)
    lst = conns.add_parser(
        "list",
        help="list connections",
        **examples("tokenworker connections list --status reauth_required --limit 50 --offset 50"),
    )
    lst.add_argument("--status", help="active, failing or reauth_required")
    lst.add_argument("--integration")
    lst.add_argument("--limit", type=int, help="show at most N (sorted by id)")
    lst.add_argument("--offset", type=int, default=0, help="skip the first N (for paging)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=list_)
    show_ = conns.add_parser(
        "show", help="one connection", **examples("tokenworker connections show c-42 --json")
    )
    show_.add_argument("id")
    show_.add_argument("--json", action="store_true")
    show_.set_defaults(handler=show)
    rm = conns.add_parser(
        "remove",
        help="revoke a connection's grant at Salesforce, then forget it",
        **examples("tokenworker connections remove c-42"),
    )
    rm.add_argument("id")
    rm.add_argument(
        "--no-revoke",
        action="store_true",
        help="forget it without asking Salesforce to revoke the grant",
    )
    rm.set_defaults(handler=remove)


# -- import and export -------------------------------------------------------------------


def import_(args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as error:
        raise InputError(f"{args.file}: cannot read: {error.strerror or error}") from None
    text = decode_input(data, "stdin" if args.file == "-" else args.file)
    bars = output.Bars()

    async def work(rt: Runtime) -> ImportReport:
        return await connections.import_lines(rt, text.splitlines(), args.skip_invalid, bars)

    report = with_runtime(work)
    bars.finish()
    if args.json:
        output.dump(report.as_dict())
        return 1 if report.problems else 0
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


def export(args: argparse.Namespace) -> int:
    """Exit 1 when unreadable records were skipped: the file is then not a full backup."""
    bars, skipped = output.Bars(), output.Skipped()

    async def work(rt: Runtime) -> connections.Exported:
        out = (
            sys.stdout
            if args.file == "-"
            else open_export(args.file, args.with_secrets, args.force)
        )
        try:
            return await connections.export(rt, out.write, args.with_secrets, bars, skipped)
        finally:
            if out is not sys.stdout:
                out.close()

    done = with_runtime(work)
    bars.finish()
    skipped.summary("export: skipped")
    return 1 if done.unreadable else 0


# -- list, show, remove ------------------------------------------------------------------


def list_(args: argparse.Namespace) -> int:
    """Exit 1 when unreadable records were left out: the rows shown are right, but not all."""

    async def work(rt: Runtime) -> Page:
        return await page_connections(rt, args.status, args.integration, args.offset, args.limit)

    page = with_runtime(work)
    skipped = output.Skipped()
    for cid, error in page.unreadable:
        skipped(cid, error)
    skipped.summary("list: left out")
    if args.json:
        output.dump(page.rows)
    else:
        _table(page)
    return 1 if skipped.count else 0


def _table(page: Page) -> None:
    output.table(
        ["id", "integration", "status", "expires", "next check", "last error"],
        [
            [
                r["id"],
                r["integration"],
                r["status"],
                output.when(r["expires_at"]),
                output.when(r["next_check_at"]),
                (r["last_error"] or {}).get("error"),
            ]
            for r in page.rows
        ],
    )
    end = page.offset + len(page.rows)
    if page.rows and (page.offset or end < page.total):
        more = f"; next page: --offset {end}" if end < page.total else ""
        print(f"rows {page.offset + 1}-{end} of {page.total}{more}", file=sys.stderr)


def show(args: argparse.Namespace) -> int:
    """An unreadable record is UnreadableConnection (exit 1), a missing one NotFoundError."""
    data = with_runtime(lambda rt: connections.show(rt, args.id)).as_dict()
    if args.json:
        output.dump(data)
        return 0
    output.fields(
        (k, output.when(v) if k in TIMES else v) for k, v in data.items() if k != "last_error"
    )
    if data["last_error"]:
        e = data["last_error"]
        print(
            f"last_error          {e['error']}: {e['error_description']} "
            f"(HTTP {e['http_status']}, {output.when(e['at'])})"
        )
    return 0


def remove(args: argparse.Namespace) -> int:
    """The same path as `DELETE /connections/{id}`: revoked under the lease, then deleted and
    `connection.removed` emitted; Salesforce unreachable: nothing deleted, exit 1."""
    removal = with_runtime(
        lambda rt: management.remove_connection(rt, args.id, revoke=not args.no_revoke)
    )
    print(f"removed {args.id} (revocation: {removal.revocation.value})")
    return 0
