"""`python -m worker.dev.bench.gcpauses DIR [--since EPOCH --until EPOCH]`: what the GC probe
(worker/dev/bench/gcprobe/sitecustomize.py) saw in each process of a bench run: collections
by generation, and the pauses over its threshold by generation (count, longest, total ms),
all of them or those between two wall times (a read window, say)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def summarize(found: dict[str, Any], since: float, until: float) -> dict[str, Any]:
    pauses = [p for p in found["pauses"] if since <= p[0] <= until]
    by_generation = {}
    for generation in (0, 1, 2):
        ms = [p[2] for p in pauses if p[1] == generation]
        by_generation[generation] = {
            "count": len(ms),
            "max_ms": max(ms, default=0.0),
            "total_ms": round(sum(ms), 1),
        }
    command = " ".join(found["argv"])[-60:]
    return {"command": command, "collections": found["counts"], "pauses": by_generation}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.dev.bench.gcpauses")
    parser.add_argument("directory")
    parser.add_argument("--since", type=float, default=0.0, help="epoch seconds")
    parser.add_argument("--until", type=float, default=float("inf"), help="epoch seconds")
    args = parser.parse_args(argv)
    files = sorted(Path(args.directory).glob("gc-*.json"))
    if not files:
        print(f"gcpauses: no gc-*.json in {args.directory}", file=sys.stderr)
        return 1
    for path in files:
        seen = summarize(json.loads(path.read_text()), args.since, args.until)
        pauses = "  ".join(
            f"gen{g} {p['count']} (max {p['max_ms']:.1f}, total {p['total_ms']:.0f} ms)"
            for g, p in seen["pauses"].items()
        )
        print(f"{path.stem:>10}  {seen['command']:<60}  collections {seen['collections']}")
        print(f"{'':>10}  pauses: {pauses}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
