"""What every browser test module shares: the real api process with a headless Chromium
(Debian's, through Playwright's `executable_path`), and where screenshots go.

Screenshots are written under the test's own temporary folder; set TOKENWORKER_SHOTS_DIR to
also keep a copy of each in that folder (for looking at them after a run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from playwright.sync_api import Browser, sync_playwright

from tests.faults.harness import Proc, wait_until

CHROMIUM = shutil.which("chromium")


@contextlib.contextmanager
def api_and_browser(env: dict[str, str], port: int, log: Path) -> Iterator[tuple[Proc, Browser]]:
    """`python -m worker.api` on `port` (ready once /healthz answers) and a launched Chromium;
    both stopped on exit."""
    argv = [sys.executable, "-m", "worker.api", "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc(argv, env, log)
    pw = browser = None
    try:

        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise AssertionError(f"the api exited early:\n{proc.tail()}")
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            return False

        wait_until(ready, 20, "the api answers /healthz", interval=0.1)
        pw = sync_playwright().start()
        assert CHROMIUM is not None
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield proc, browser
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        proc.stop(grace=10)


def keep_shot(path: Path, name: str | None = None) -> None:
    """Copy a screenshot to TOKENWORKER_SHOTS_DIR when it is set."""
    folder = os.environ.get("TOKENWORKER_SHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / (name or path.name))
