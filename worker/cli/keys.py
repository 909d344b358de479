"""`tokenworker keys generate|rotate`: the encryption keys secrets are sealed under."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli import output
from worker.cli._base import examples, with_runtime
from worker.engine.runtime import Runtime
from worker.service import keys
from worker.store.rotation import RotationReport


def register(sub: Any) -> None:
    actions = sub.add_parser("keys", help="encryption keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    actions.add_parser(
        "generate", help="print a new key", **examples("tokenworker keys generate")
    ).set_defaults(handler=generate)
    actions.add_parser(
        "rotate",
        help="re-encrypt everything under the first key",
        **examples("TOKENWORKER_ENCRYPTION_KEYS=NEW,OLD tokenworker keys rotate"),
    ).set_defaults(handler=rotate)


def generate(args: argparse.Namespace) -> int:
    del args
    print(keys.generate())
    return 0


def rotate(args: argparse.Namespace) -> int:
    """Exit 1 when some records could not be read or kept changing: they are still under
    their old key."""
    del args
    bars = output.Bars()

    async def work(rt: Runtime) -> RotationReport:
        return await keys.rotate_all(rt, bars)

    report = with_runtime(work)
    bars.finish()
    print(
        f"rotated {report.rotated}, already current {report.current}, "
        f"unreadable {len(report.unreadable)}, skipped {len(report.skipped)}"
    )
    for problem in report.unreadable:
        print(f"unreadable: {problem}")
    for problem in report.skipped:
        print(f"skipped: {problem}")
    return 1 if report.unreadable or report.skipped else 0
