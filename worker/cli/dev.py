"""`tokenworker emulator|demo|bench`: the local Salesforce emulator, the demo, the benchmark.

Development tools, imported only when run: `tokenworker --help` and every production command
start without loading them. `bench` parses its own arguments (`tokenworker bench --help`).
"""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli._base import examples

BENCH_EXAMPLE = "tokenworker bench --quick --output bench-results.json"


def register(sub: Any) -> None:
    emu = sub.add_parser(
        "emulator",
        help="run the local Salesforce OAuth emulator",
        **examples("tokenworker emulator --port 8787 --lifetime 300"),
    )
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8787)
    emu.add_argument("--lifetime", type=float, default=7200.0, help="access-token lifetime (s)")
    emu.add_argument("--latency-ms", type=float, default=0.0)
    emu.add_argument("--rotation", action="store_true", help="rotate refresh tokens")
    emu.set_defaults(handler=emulator)
    sub.add_parser(
        "demo", help="everything at once on embedded defaults", **examples("make demo")
    ).set_defaults(handler=demo)
    # Its flags live with the benchmark (worker.dev.bench.params); `main` passes them through.
    sub.add_parser(
        "bench",
        help="run the scale benchmark (make bench)",
        add_help=False,
        **examples(BENCH_EXAMPLE),
    ).set_defaults(handler=bench, passes_arguments=True)


def emulator(args: argparse.Namespace) -> int:
    from worker.dev.emulator.server import run_forever  # noqa: PLC0415

    run_forever(args.host, args.port, args.lifetime, args.latency_ms, args.rotation)
    return 0


def demo(args: argparse.Namespace) -> int:
    del args
    from worker.dev.demo import run_demo  # noqa: PLC0415

    return run_demo()


def bench(args: argparse.Namespace) -> int:
    from worker.dev.bench import command  # noqa: PLC0415

    return command.run(command.parser().parse_args(args.arguments))
