"""The results: machine facts, the JSON document, and the table of targets."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import redis


@dataclass(frozen=True)
class Target:
    key: str
    label: str  # the target as printed
    passes: Callable[[float], bool] | None  # None: a figure shown beside the targets


TARGETS = (
    Target("checks_per_s", ">= 1000 (stretch 2000)", lambda v: v >= 1000),
    Target("ceiling_per_s", "-", None),
    Target("efficiency", ">= 0.5", lambda v: v >= 0.5),
    Target("calls_per_conn_day", "-", None),
    Target("calls_lower_bound", "-", None),
    Target("cost_ratio", "<= 1.2 (old model)", lambda v: v <= 1.2),
    Target("calls_floor", "- (1 refresh/lifetime)", None),
    Target("floor_ratio", "<= 1.5", lambda v: v <= 1.5),
    Target("naive_calls_per_conn_day", "-", None),
    Target("stale_max", "0", lambda v: v == 0),
    Target("redis_bytes_per_conn", "<= 1024", lambda v: v <= 1024),
    Target("idle_sweep_ms_1m", "<= 10", lambda v: v <= 10),
    Target("idle_sweep_growth", "flat (<= 2x)", lambda v: v <= 2.0),
)

# `tokenworker bench --api` (issue 13): credential reads of fresh tokens through the api.
API_TARGETS = (
    Target("reads_per_s", ">= 3000", lambda v: v >= 3000),
    Target("p50_ms", "- (paced at 3000/s)", None),
    Target("p99_ms", "<= 10 (paced at 3000/s)", lambda v: v <= 10),
    Target("paced_reads_per_s", "- (3000 offered)", None),
    Target("salesforce_calls", "0", lambda v: v == 0),
    Target("nango_reads_per_s", "- (Nango's model)", None),
    Target("nango_p50_ms", "- (Nango's model)", None),
    Target("nango_salesforce_calls", "- (Nango's model)", None),
)


# `tokenworker bench --deployed` (issue 16): beat-driven checks/s against the pool's capacity.
DEPLOYED_TARGETS = (
    Target("deployed_checks_per_s", "- (beat, default settings)", None),
    Target("pool_checks_per_s", "- (a sweep every 0.5 s)", None),
    Target("deployed_share", ">= 0.9 of the pool", lambda v: v >= 0.9),
)


# Set by the benchmark for every process it starts; anything else TOKENWORKER_* in the
# environment reaches the Celery worker and is listed with the results.
OWN_SETTINGS = frozenset(
    {
        "TOKENWORKER_REDIS_URL",
        "TOKENWORKER_BROKER_URL",
        "TOKENWORKER_ENCRYPTION_KEYS",
        "TOKENWORKER_KEY_PREFIX",
        "TOKENWORKER_LOG_FORMAT",
    }
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(redis_url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    try:
        version = str(client.info("server")["redis_version"])
    finally:
        client.close()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "redis_version": version,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "worker_settings_from_environment": sorted(
            name
            for name in os.environ
            if name.startswith("TOKENWORKER_") and name not in OWN_SETTINGS
        ),
    }


def verdicts(figures: dict[str, Any], targets: tuple[Target, ...] = TARGETS) -> dict[str, bool]:
    return {
        t.key: t.passes(float(figures[t.key]))
        for t in targets
        if t.passes is not None and isinstance(figures.get(t.key), int | float)
    }


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(
    figures: dict[str, Any],
    notes: dict[str, str],
    out: TextIO,
    targets: tuple[Target, ...] = TARGETS,
) -> None:
    passed = verdicts(figures, targets)
    rows = []
    for target in targets:
        verdict = "-" if target.key not in passed else "pass" if passed[target.key] else "FAIL"
        rows.append([target.key, _shown(figures.get(target.key)), target.label, verdict])
    _table(["metric", "value", "target", "result"], rows, out)
    for key, note in notes.items():
        out.write(f"  {key}: {note}\n")


def _table(headers: list[str], rows: list[list[str]], out: TextIO) -> None:
    """Columns padded to their widest cell; the bench's only table, so it draws its own."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [[h.upper() for h in headers], *rows]:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def write(path: str, document: dict[str, Any]) -> None:
    with open(path, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
