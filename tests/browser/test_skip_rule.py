"""The browser tests never vanish silently: without chromium their module is skipped with a
reason that says so, and the terminal summary repeats it loudly at the end of the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests/browser/test_connect_browser.py"
REASON = "chromium not found: browser tests NOT run (apt-get install chromium)"


def test_without_chromium_the_module_is_skipped_loudly(tmp_path: Path) -> None:
    """PATH holding no chromium: the module is skipped with REASON and the summary's last
    lines shout it; nothing fails."""
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty directory: no chromium on it
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", MODULE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode in (0, 5), out  # all skipped: nothing failed
    assert "1 skipped" in out, out
    assert f"SKIPPED [1] {MODULE}:" in out and REASON in out, out
    loud = [line for line in out.splitlines() if f"BROWSER TESTS SKIPPED: {REASON}" in line]
    assert len(loud) == 1 and loud[0].startswith("! ") and loud[0].endswith(" !"), out
