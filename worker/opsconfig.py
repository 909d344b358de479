"""Operational settings that belong to HA beat and health probes, read from the environment.

They follow `config.settings` (TOKENWORKER_* names, validated at start, a message naming the
variable) and are listed in deploy/CONFIGURATION.md by `worker.service.reference`. Kept apart from
`Settings` only so the two can evolve independently; folding them in later changes nothing
for operators.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from config.settings import PREFIX, Seconds, described

# Allowed ranges (seconds). A beat lock over an hour would leave the fleet unswept that long
# after the leader dies; a ping over an hour makes every liveness probe fail (its --max-age
# defaults to 300 s: keep the ping well under the max-age you probe with).
BEAT_LOCK_TIMEOUT = Seconds(3600.0, low=2.0)
PING_INTERVAL = Seconds(3600.0, low=0.1)


@dataclass(frozen=True)
class OpsSettings:
    """HA beat and liveness timing."""

    beat_lock_timeout: int = 25
    ping_interval: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OpsSettings:
        source = os.environ if environ is None else environ

        def read(env: str, parse: Seconds, default: float) -> float:
            raw = source.get(PREFIX + env, "").strip()
            return parse(PREFIX + env, raw) if raw else default

        return cls(
            beat_lock_timeout=int(
                read("BEAT_LOCK_TIMEOUT", BEAT_LOCK_TIMEOUT, cls.beat_lock_timeout)
            ),
            ping_interval=read("PING_INTERVAL", PING_INTERVAL, cls.ping_interval),
        )

    @property
    def beat_loop_interval(self) -> int:
        """The leading beat renews its lease at least this often (and a beat retries an
        unreachable store this often at most): a fifth of the lease's lifetime, so a stalled
        tick never lets a healthy leader's lease expire."""
        return max(1, min(5, self.beat_lock_timeout // 5))


_DOCS = {
    "beat_lock_timeout": (
        "BEAT_LOCK_TIMEOUT",
        BEAT_LOCK_TIMEOUT,
        "Seconds the active beat's Redis lock outlives its last renewal; a standby beat takes "
        "over this long (plus up to 1 s) after the leader dies. Whole seconds (a fraction is "
        "dropped).",
    ),
    "ping_interval": (
        "PING_INTERVAL",
        PING_INTERVAL,
        "Each worker sends itself a no-op ping task this often; consuming it records the "
        "heartbeat that `tokenworker health --liveness` reads (keep it well under --max-age).",
    ),
}


def reference() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every operational setting."""
    rows = []
    for item in fields(OpsSettings):
        env, parse, doc = _DOCS[item.name]
        rows.append((PREFIX + env, f"{item.default:g}", described(doc, parse)))
    return rows
