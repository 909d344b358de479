"""What the CLI writes: JSON, tables, fields, times, progress bars and unreadable records.

stdout carries results (`--json` output only through `dump`); stderr carries progress and
problems, so a pipe gets clean data.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from worker.errors import StoreError


def dump(data: Any) -> None:
    print(json.dumps(data, sort_keys=True, default=str))


def when(ts: float | None, now: float | None = None) -> str:
    """ISO 8601 UTC with a relative hint: 2026-11-28T14:00:00Z (in 5m)."""
    if ts is None:
        return "-"
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    delta = ts - (time.time() if now is None else now)
    return f"{stamp} ({relative(delta)})"


def relative(delta: float) -> str:
    size = abs(delta)
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if size >= seconds:
            text = f"{size / seconds:.0f}{unit}"
            break
    else:
        text = f"{size:.0f}s"
    return f"in {text}" if delta >= 0 else f"{text} ago"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO = sys.stdout) -> None:
    cells = [[("-" if value is None else str(value)) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    out.write("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    out.write("\n")
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def fields(pairs: Iterable[tuple[str, Any]], out: TextIO = sys.stdout) -> None:
    items = [(k, "-" if v is None else str(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        out.write(f"{key.ljust(width)}  {value}\n")


class Progress:
    """A one-line progress counter on stderr: redrawn on a terminal, every 10% otherwise."""

    def __init__(self, label: str, total: int | None = None, out: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = total
        self.out = out
        self.tty = out.isatty()
        self.done = 0
        self._last_draw = 0.0
        self._last_decile = -1

    def advance(self, count: int = 1) -> None:
        self.done += count
        self._draw(final=False)

    def set(self, done: int) -> None:
        self.done = done
        self._draw(final=False)

    def finish(self) -> None:
        if not self.tty and self.total and self._last_decile >= 10:
            return  # the 100% line is already out
        self._draw(final=True)

    def _draw(self, final: bool) -> None:
        now = time.monotonic()
        if self.tty:
            if not final and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            self.out.write("\r" + self._line() + ("\n" if final else ""))
            self.out.flush()
            return
        decile = int(10 * self.done / self.total) if self.total else -1
        if final or (decile > self._last_decile and decile > 0):
            self._last_decile = decile
            self.out.write(self._line() + "\n")

    def _line(self) -> str:
        if self.total:
            share = min(1.0, self.done / self.total)
            bar = "#" * int(share * 30)
            return f"{self.label} [{bar.ljust(30)}] {self.done}/{self.total}"
        return f"{self.label} {self.done}"


class Bars:
    """A service call's `OnProgress`, drawn as one Progress line per phase on stderr."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.bar: Progress | None = None

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase != self.phase or self.bar is None:
            self.finish()
            self.phase, self.bar = phase, Progress(phase, total)
        self.bar.set(done)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.finish()
        self.phase, self.bar = None, None


MAX_REPORTED = 20  # unreadable records named one by one on stderr; the rest are counted


class Skipped:
    """Unreadable records met by a fleet-wide command: each of the first MAX_REPORTED is
    named on stderr (id and what is wrong), the rest only counted."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, connection_id: str, error: StoreError) -> None:
        del connection_id  # the error's message names it
        self.count += 1
        if self.count <= MAX_REPORTED:
            print(f"unreadable: {error}", file=sys.stderr)

    def summary(self, what: str) -> None:
        if self.count > MAX_REPORTED:
            print(f"unreadable: ... and {self.count - MAX_REPORTED} more", file=sys.stderr)
        if self.count:
            print(f"{what} {self.count} unreadable connections", file=sys.stderr)
