"""`tokenworker demo` (what `make demo` runs): everything starts, the events reach the
terminal, the printed curl line works against the running API, and it stops by itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_the_demo_serves_credentials_and_shows_refreshes() -> None:
    """The printed key and URL read a live token; expired tokens are refreshed on screen."""
    env = {n: v for n, v in os.environ.items() if not n.startswith("TOKENWORKER_")}
    env["TOKENWORKER_DEMO_SECONDS"] = "22"
    demo = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    answer = None
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 90
        for line in demo.stdout:
            lines.append(line)
            found = re.search(r"Bearer (tw_\S+)' (http://\S+/credentials)", line)
            if found:
                answer = httpx.get(
                    found.group(2), headers={"Authorization": f"Bearer {found.group(1)}"}
                )
            assert time.monotonic() < deadline, "".join(lines)
        assert demo.wait(30) == 0, "".join(lines)
    finally:
        if demo.poll() is None:
            demo.kill()
    text = "".join(lines)
    assert answer is not None, text
    assert answer.status_code == 200, answer.text
    assert answer.json()["access_token"] and answer.json()["connection_id"] == "customer-01"
    assert text.count("event token.refreshed") >= 5, text
    assert "celery@" not in text and "Task tokenworker" not in text  # chatter is in the log
    log = re.search(r"Celery's own log lines go to (\S+)", text)
    assert log is not None
    with open(log.group(1)) as celery_log:
        assert "tokenworker.check_batch" in celery_log.read()
