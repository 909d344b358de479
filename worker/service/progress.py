"""How a long service call reports how far it got, without knowing who watches.

The CLI draws a bar on stderr from these calls; an HTTP API may stream them or pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable

#: (phase, done so far, total or None when unknown); called with done=0 as each phase starts.
OnProgress = Callable[[str, int, int | None], None]


def quiet(phase: str, done: int, total: int | None) -> None:
    """The progress callback of callers that do not watch."""
    del phase, done, total
