"""Where a worker process spends its time: py-spy attached to the Celery children.

`py-spy record --format raw` writes collapsed stacks (`frame;frame;... count`); the summary
lists the functions with the largest inclusive share (time on the stack) and self share
(time at the top), which is what the README's notes and the proposals are based on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass(frozen=True)
class Hotspot:
    function: str
    inclusive: float  # share of samples with the function anywhere on the stack
    own: float  # share of samples with the function on top


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def start(pids: list[int], seconds: float, directory: str) -> list[subprocess.Popen[bytes]]:
    binary = py_spy()
    if binary is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    procs = []
    for pid in pids:
        args = [binary, "record", "--pid", str(pid), "--duration", str(int(seconds))]
        args += ["--rate", "100", "--format", "raw", "-o", f"{directory}/worker-{pid}.txt"]
        procs.append(
            subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        )
    return procs


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/worker/", "/config/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


AREAS = {  # top-level package of the frame on top of a sample -> where the CPU went
    "httpx": "httpx",
    "aiohttp": "aiohttp",
    "yarl": "aiohttp",
    "multidict": "aiohttp",
    "redis": "redis-py client",
    "cryptography": "encryption (AES-GCM)",
    "structlog": "logging",
    "logging": "logging",
    "json": "json",
    "celery": "celery/kombu/billiard",
    "kombu": "celery/kombu/billiard",
    "billiard": "celery/kombu/billiard",
    "asyncio": "asyncio (tasks, streams, timeouts)",
    "worker": "tokenworker code",
    "config": "tokenworker code",
}
LOOP = "uvloop's event loop itself (C, under worker/jobs/process.py run)"


def _area(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    path = match.group("file") if match else frame
    if path.startswith("worker/jobs/process.py") and match and match.group("func") == "run":
        return LOOP
    return AREAS.get(path.split("/", 1)[0], "other (stdlib: dataclasses, urllib, contextlib...)")


def by_area(directory: str) -> dict[str, float]:
    """Share of samples by the library of the frame on top: where CPU actually burns."""
    counts: Counter[str] = Counter()
    for path in Path(directory).glob("worker-*.txt"):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if stack and count_text.isdigit():
                counts[_area(stack.rsplit(";", 1)[-1])] += int(count_text)
    total = sum(counts.values()) or 1
    return {area: round(n / total, 3) for area, n in counts.most_common()}


COMMON = 0.98  # a frame on this share of the samples or more is the stack every sample shares


def summarize(directory: str, top: int = 25) -> list[Hotspot]:
    """The `top` functions by inclusive share, then those by own share, leaving out the frames
    nearly every sample has (Celery's and billiard's process start, the task's entry)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for path in Path(directory).glob("worker-*.txt"):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_name(frame) for frame in stack.split(";") if frame]
            total += count
            for name in set(frames):
                inclusive[name] += count
            if frames:
                own[frames[-1]] += count
    if total == 0:
        return []
    common = {name for name, n in inclusive.items() if n >= COMMON * total}
    names = [name for name, _ in inclusive.most_common() if name not in common][:top]
    listed = common | set(names)
    names += [name for name, _ in own.most_common() if name not in listed][:top]
    return sorted(
        (Hotspot(n, inclusive[n] / total, own[n] / total) for n in names),
        key=lambda spot: -spot.inclusive,
    )


class CpuMeter:
    """CPU seconds each named process used between `start` and `stop`, as cores busy."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float] = {}
        self._started = 0.0
        self.spent: dict[str, float] = {}  # CPU seconds by process, set by stop()

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._started = time.monotonic()
        self._before = {name: self._cpu(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        """Cores busy since `start` (CPU seconds per wall second); the CPU seconds themselves
        are kept in `spent`."""
        wall = max(1e-9, time.monotonic() - self._started)
        self.spent = {name: self._cpu(pid) - self._before[name] for name, pid in self.pids.items()}
        return {name: round(cpu / wall, 3) for name, cpu in self.spent.items()}


def cpu_per_item_us(cpu_seconds: dict[str, float], items: float) -> dict[str, float]:
    """Microseconds of CPU each process spent per item (a check, a call) done in the window
    its CPU seconds were taken over, and the box's total: where the cores go per unit of
    work."""
    if items <= 0 or not cpu_seconds:
        return {}
    each = {name: cpu / items * 1e6 for name, cpu in cpu_seconds.items()}
    return {name: round(us, 1) for name, us in each.items()} | {"all": round(sum(each.values()), 1)}
