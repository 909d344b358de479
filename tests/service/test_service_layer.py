"""The rules that keep the CLI (and the API after it) a thin layer over `worker.service`:
one error tree, one exit-code table, services that never print, no Celery or dev harness
loaded by the CLI until a command needs it."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import SettingsError
from worker.cli._base import exit_code
from worker.domain.outcomes import Outcome
from worker.errors import (
    DecryptionError,
    InputError,
    NotFoundError,
    TokenworkerError,
    Unreachable,
)

WORKER = Path(__file__).resolve().parents[2] / "worker"


def _modules(package: str) -> list[tuple[str, ast.Module]]:
    root = WORKER / package if package else WORKER
    return [
        (
            ".".join(("worker", *path.relative_to(WORKER).with_suffix("").parts)),
            ast.parse(path.read_text()),
        )
        for path in sorted(root.rglob("*.py"))
    ]


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _top_level_imports(tree: ast.Module) -> set[str]:
    """Imports that run when the module is imported (not inside a function)."""
    only = ast.Module(body=[n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)])
    return _imports(only)


class TestErrorTree:
    def test_every_exception_the_product_defines_is_a_tokenworker_error(self) -> None:
        """Each exception class in worker/ (the dev harness aside) derives from
        TokenworkerError, so the CLI and the API map every one by category."""
        outside = []
        for name, tree in _modules(""):
            # The dev harness, and the SDK (host apps catch its own TokenworkerAPIError tree).
            if name.startswith(("worker.dev", "worker.client")) or name.endswith("__main__"):
                continue
            classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
            for node in classes:
                bases = [ast.unparse(base) for base in node.bases]
                if not any(b.endswith(("Error", "Exception", "Unreachable")) for b in bases):
                    continue
                if name in ("worker.jobs.tasks", "worker.jobs.beat"):
                    outside.append(f"{name}.{node.name}")  # not imported here: Celery app
                    continue
                cls = getattr(importlib.import_module(name), node.name)
                if not issubclass(cls, TokenworkerError):
                    outside.append(f"{name}.{node.name}")
        assert outside == []

    @pytest.mark.parametrize(
        ("error", "code"),
        [
            (InputError("bad"), 2),
            (SettingsError("bad"), 2),
            (NotFoundError("no connection 'x'"), 4),
            (Unreachable("store Redis unreachable"), 3),
            (ConnectionRefusedError("refused"), 3),
            (DecryptionError("no key"), 1),
            (TokenworkerError("failed"), 1),
        ],
    )
    def test_one_exit_code_per_category(
        self, error: Exception, code: int, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Input 2, unreachable 3, not found 4, any other product error 1; one stderr line."""
        assert exit_code(error) == code
        assert len(capsys.readouterr().err.strip().splitlines()) == 1

    def test_a_foreign_error_is_not_swallowed(self) -> None:
        """A bug (not a product error) keeps its traceback: the table does not claim it."""
        assert exit_code(KeyError("x")) is None


class TestOneSuccessTest:
    def test_contended_is_not_success(self) -> None:
        """An explicit check that met another worker's lease did not run: not ok (exit 1)."""
        assert {o for o in Outcome if o.ok} == {
            Outcome.FRESH,
            Outcome.REFRESHED,
            Outcome.SKIPPED,
            Outcome.SUPERSEDED,
        }

    def test_nothing_else_lists_successful_outcomes(self) -> None:
        """No module outside domain/outcomes.py keeps its own collection of good outcomes
        (the copies that disagreed about CONTENDED)."""
        good = {"Outcome.FRESH", "Outcome.SUPERSEDED", "'fresh'", "'superseded'"}
        copies = [
            name
            for name, tree in _modules("")
            if name != "worker.domain.outcomes"
            for node in ast.walk(tree)
            if isinstance(node, ast.Set | ast.Tuple | ast.List)
            and len(good & {ast.unparse(e) for e in node.elts}) >= 2
        ]
        assert copies == []


class TestLayers:
    def test_services_never_print_nor_reach_the_cli(self) -> None:
        """worker/service returns results; printing and progress bars belong to the CLI
        (a module's own `main()`, run as `python -m`, is a script, not a service)."""
        found = []
        for name, tree in _modules("service"):
            scripts = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
            in_scripts = {id(n) for script in scripts for n in ast.walk(script)}
            prints = [
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name)
                and n.func.id == "print"
                and id(n) not in in_scripts
            ]
            if prints or any(m.startswith("worker.cli") for m in _imports(tree)):
                found.append(name)
        assert found == []

    def test_only_the_cli_imports_the_cli(self) -> None:
        """The benchmark and every other package stand without worker.cli."""
        found = [
            name
            for name, tree in _modules("")
            if not name.startswith("worker.cli")
            and any(m.startswith("worker.cli") for m in _imports(tree))
        ]
        assert found == []

    def test_the_cli_loads_neither_celery_nor_the_dev_harness_at_import(self) -> None:
        """Celery comes through worker.jobs.dispatch and dev tools through cli/dev.py, both
        imported inside the handler that needs them."""
        heavy = ("celery", "kombu", "worker.jobs", "worker.dev")
        found = [
            (name, module)
            for name, tree in _modules("cli")
            for module in _top_level_imports(tree)
            if module.startswith(heavy)
        ]
        assert found == []

    def test_help_imports_no_dev_harness_and_no_celery(self) -> None:
        """`tokenworker --help` starts without worker.dev.bench, celery or kombu."""
        probe = (
            "import sys\n"
            "from worker.cli.main import build_parser\n"
            "build_parser().format_help()\n"
            "print(sorted(m for m in sys.modules if m.startswith(('worker.dev', 'celery', "
            "'kombu'))))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
        )
        assert done.stdout.strip() == "[]"
