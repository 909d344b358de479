"""worker/jobs/tasks.py: what the tasks do around the engine (retries, time limits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import TEST_KEYS

# Runs in a child process: configuring the Celery app reads the environment, once per process.
PROBE = """
import json
from types import SimpleNamespace
from celery.exceptions import Retry
from redis.exceptions import ConnectionError
from worker.jobs import tasks

class Task:
    request = SimpleNamespace(retries=6)
    def retry(self, exc, countdown):
        self.countdown = countdown
        raise Retry(exc=exc, when=countdown)

delays = []
for _ in range(200):
    task = Task()
    try:
        with tasks._retried_on_outage(task):
            raise ConnectionError("store down")
    except Retry:
        delays.append(task.countdown)
print(json.dumps(delays))
"""


def test_a_store_outage_retries_the_task_with_backoff_capped_by_retry_max() -> None:
    """An unreachable store retries the task after a jittered exponential delay that never
    exceeds TOKENWORKER_RETRY_MAX, read from the settings when the retry happens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWORKER_")}
    env.update(
        TOKENWORKER_ENCRYPTION_KEYS=TEST_KEYS, TOKENWORKER_RETRY_BASE="1", TOKENWORKER_RETRY_MAX="5"
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    delays = json.loads(done.stdout)
    assert len(delays) == 200
    assert all(0 <= delay <= 5 for delay in delays)
    assert len(set(delays)) > 1  # jittered
