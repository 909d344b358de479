"""deploy/CONFIGURATION.md is generated from the settings classes and must match them."""

from __future__ import annotations

from pathlib import Path

from config.settings import reference
from worker import opsconfig
from worker.cli.main import main
from worker.service import reference as docs


def test_the_committed_configuration_reference_matches_the_code() -> None:
    """The file equals what `tokenworker config-reference` prints (regenerate it on failure)."""
    assert docs.PATH.read_text() == docs.render(), "run `python -m worker.service.reference`"


def test_every_variable_is_documented_once() -> None:
    """Each setting the code reads appears in exactly one row, with its meaning."""
    text = docs.render()
    for name, _, meaning in [*reference(), *opsconfig.reference()]:
        assert text.count(f"| `{name}` |") == 1
        assert meaning in text


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    """`tokenworker config-reference --check FILE` exits 1 for a stale file, 0 for a fresh one."""
    stale = tmp_path / "CONFIGURATION.md"
    stale.write_text("# old\n")
    assert main(["config-reference", "--check", str(stale)]) == 1
    stale.write_text(docs.render())
    assert main(["config-reference", "--check", str(stale)]) == 0
