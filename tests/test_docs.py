"""deploy/CONFIGURATION.md is generated from the settings class and must match it."""

from __future__ import annotations

from pathlib import Path

from config import reference as docs
from config.settings import OPERATIONS, reference
from worker.cli.main import main


def test_the_committed_configuration_reference_matches_the_code() -> None:
    """The file equals what `tokenworker config-reference` prints (regenerate it on failure)."""
    assert docs.PATH.read_text() == docs.render(), "run `python -m config.reference`"


def test_every_variable_is_documented_once() -> None:
    """Each setting the code reads appears in exactly one row, with its meaning."""
    text = docs.render()
    for name, _, meaning in reference():
        assert text.count(f"| `{name}` |") == 1
        assert meaning in text


def test_operations_settings_have_their_own_section() -> None:
    """HA beat and liveness timing are listed under Operations, after the other settings."""
    text = docs.render()
    operations = text.index("## Operations")
    for name, _, _ in reference(OPERATIONS):
        assert text.index(f"| `{name}` |") > operations
    assert {row[0] for row in reference(OPERATIONS)} == {
        "TOKENWORKER_BEAT_LOCK_TIMEOUT", "TOKENWORKER_PING_INTERVAL",
    }


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    """`tokenworker config-reference --check FILE` exits 1 for a stale file, 0 for a fresh one."""
    stale = tmp_path / "CONFIGURATION.md"
    stale.write_text("# old\n")
    assert main(["config-reference", "--check", str(stale)]) == 1
    stale.write_text(docs.render())
    assert main(["config-reference", "--check", str(stale)]) == 0
