"""HA beat: celery-redbeat keeps the schedule in the store Redis behind one lock.

Every beat process blocks at start until it holds the lock (`<prefix>beat:lock`), and the
holder renews it on each tick, at least every `beat_loop_interval` seconds. A clean stop
releases it; after a crash it expires `TOKENWORKER_BEAT_LOCK_TIMEOUT` seconds after the last
renewal, and a standby (polling every loop interval) takes over and sends whatever is due.
Run two beats under a restarting supervisor: a leader that loses its lock (a store outage
longer than the timeout) exits rather than risk a second scheduler. Sweeps stay safe even if
two ever overlap: the sweep guard key and atomic claims make a duplicate sweep a no-op.
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from worker.keys import Keys
from worker.opsconfig import OpsSettings

SCHEDULER = "redbeat.RedBeatScheduler"


def redbeat_config(settings: Settings, ops: OpsSettings) -> dict[str, Any]:
    """Celery settings for redbeat, its keys under TOKENWORKER_KEY_PREFIX."""
    keys = Keys(settings.key_prefix)
    return {
        "beat_scheduler": SCHEDULER,
        "beat_max_loop_interval": ops.beat_loop_interval,
        "redbeat_redis_url": settings.redis_url,
        # Passed to redis-py as is (retry_period is redbeat's: retry a lost connection for
        # that long before giving up the tick).
        "redbeat_redis_options": {
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "retry_period": min(10, ops.beat_lock_timeout // 2),
        },
        "redbeat_key_prefix": f"{keys.prefix}beat:",
        "redbeat_lock_key": keys.beat,
        "redbeat_lock_timeout": ops.beat_lock_timeout,
    }
