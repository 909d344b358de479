"""Progress lines on stderr, so stdout carries only the final table."""

from __future__ import annotations

import sys
import time


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


class Ticker:
    """Calls `say` at most every `every` seconds (the last line is always printed)."""

    def __init__(self, every: float = 2.0) -> None:
        self.every = every
        self._last = 0.0

    def maybe(self, text: str, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._last >= self.every:
            self._last = now
            say(text)
