"""The package layout is the architecture: each layer imports only the layers below it.

    errors <- domain <- salesforce <- store <- engine <- service <- telemetry <- {jobs, api, cli}
    dev (emulator, bench, demo, embedded Redis) sits beside the product: only `cli` reaches it.

- `domain` is pure: the standard library, `worker.errors` and itself, nothing else.
- Celery (celery, kombu, billiard) is imported only by `jobs/` (and by `dev/bench`, which
  drives a Celery pool); the Celery app, `config.celery`, only by `jobs/`.
- The environment (`config.settings`, `config.reference`) is read only by the composition
  roots: `engine/runtime.py`, `telemetry/exporter.py`, `jobs/`, `api/`, `cli/` and `dev/`.
  Everything else is handed the values it needs.
- `config/` (the environment, logging, redaction and the Celery app shell) imports nothing from
  `worker`; `config.logging` and `config.redaction` hold no environment, so any layer but the
  pure domain may use them.

The walk reads every module with `ast`, function-level imports included.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["errors", "domain", "salesforce", "store", "engine", "service", "telemetry"]
# What each top-level part of `worker` may import from `worker` (besides itself).
ALLOWED: dict[str, set[str]] = {
    layer: set(ORDER[: index + 1]) for index, layer in enumerate(ORDER)
}
ALLOWED["jobs"] = {*ORDER, "jobs"}
ALLOWED["cli"] = {*ORDER, "jobs", "cli", "dev"}
ALLOWED["dev"] = {*ORDER, "jobs", "dev"}
ALLOWED["api"] = {*ORDER, "api"}  # the HTTP API: a thin layer over service, like the CLI
ALLOWED["cli"] |= {"api"}  # `tokenworker api` serves it
ALLOWED["client"] = {"client", "salesforce"}  # the SDK: Salesforce's 401 rules, nothing else
ALLOWED["__init__"] = set()
ENVIRONMENT = ("config.settings", "config.reference")
ROOTS = ("worker/engine/runtime.py", "worker/telemetry/exporter.py", "worker/jobs/", "worker/cli/",
         "worker/dev/", "worker/api/")  # fmt: skip
CELERY = {"celery", "kombu", "billiard"}
CELERY_USERS = ("worker/jobs/", "worker/dev/bench/")
PURE = set(sys.stdlib_module_names)


def _imports(path: Path, root: Path) -> Iterator[tuple[str, int]]:
    """Every module `path` imports, as dotted names (`from a import b` gives `a.b`)."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def _worker_rules(where: str, layer: str, name: str) -> str | None:
    parts = name.split(".")
    if parts[0] == "worker" and len(parts) > 1:
        target = parts[1]
        if target != layer and target not in ALLOWED.get(layer, set()):
            return f"{layer} imports {name}"
    elif layer == "domain" and parts[0] not in PURE:
        return f"the pure domain imports {name}"
    elif name.startswith(ENVIRONMENT) and not where.startswith(ROOTS):
        return f"{layer} reads the environment ({name}), which only composition roots do"
    elif name.startswith("config.celery") and not where.startswith("worker/jobs/"):
        return f"{layer} imports the Celery app ({name})"
    elif parts[0] in CELERY and not where.startswith(CELERY_USERS):
        return f"{layer} imports Celery ({name})"
    return None


def _violations(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / "worker").rglob("*.py")):
        where = path.relative_to(root).as_posix()
        layer = path.relative_to(root / "worker").with_suffix("").parts[0]
        for name, line in _imports(path, root):
            problem = _worker_rules(where, layer, name)
            if problem:
                found.append(f"{where}:{line}: {problem}")
    for path in sorted((root / "config").rglob("*.py")):
        where = path.relative_to(root).as_posix()
        for name, line in _imports(path, root):
            if name.split(".")[0] == "worker":
                found.append(f"{where}:{line}: config imports {name}")
    return found


def test_every_module_imports_only_what_its_layer_may() -> None:
    """No module of `worker` or `config` imports against the allowed direction."""
    found = _violations()
    assert not found, "imports against the layering:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("worker/domain/probe.py", "from worker.store.connections import Store", "domain imports"),
        ("worker/domain/probe.py", "import httpx", "pure domain imports httpx"),
        ("worker/domain/probe.py", "from config import redaction", "pure domain imports"),
        ("worker/store/probe.py", "import config.settings", "reads the environment"),
        ("worker/service/probe.py", "from config.reference import render", "reads the env"),
        ("worker/engine/probe.py", "def f():\n    from celery import Task", "imports Celery"),
        ("worker/telemetry/probe.py", "import kombu", "imports Celery"),
        ("worker/service/probe.py", "from config.celery import app", "imports the Celery app"),
        ("worker/telemetry/probe.py", "from worker.dev import demo", "telemetry imports"),
        ("worker/dev/probe.py", "from worker.cli import main", "dev imports worker.cli"),
        ("worker/engine/probe.py", "from worker import jobs", "engine imports worker.jobs"),
        ("worker/store/sub/probe.py", "from ...engine import sweep", "store imports worker."),
        ("config/probe.py", "def f():\n    from worker.jobs import beat", "config imports"),
    ],
)
def test_a_wrong_import_is_reported(
    module: str, source: str, expected: str, tmp_path: Path
) -> None:
    """The walk notices each kind of violation, also inside a function (so the rule above
    cannot pass vacuously)."""
    planted = tmp_path / module
    planted.parent.mkdir(parents=True)
    planted.write_text(source + "\n")
    (tmp_path / "config").mkdir(exist_ok=True)
    [violation] = _violations(tmp_path)
    assert violation.startswith(f"{module}:")
    assert expected in violation


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("worker/jobs/probe.py", "from celery import Celery\nfrom config.celery import app"),
        ("worker/engine/runtime.py", "from config.settings import Settings"),
        ("worker/cli/probe.py", "from config.reference import render\nfrom worker.dev import demo"),
        ("worker/dev/bench/probe.py", "import celery"),
        ("worker/salesforce/probe.py", "from config.redaction import redact_text"),
        ("worker/domain/probe.py", "from dataclasses import dataclass\nfrom worker import errors"),
        ("config/probe.py", "from config.settings import Settings"),
    ],
)
def test_an_allowed_import_is_not_reported(module: str, source: str, tmp_path: Path) -> None:
    """The rules let each composition root, and Celery's users, do their job."""
    planted = tmp_path / module
    planted.parent.mkdir(parents=True)
    planted.write_text(source + "\n")
    (tmp_path / "config").mkdir(exist_ok=True)
    assert _violations(tmp_path) == []
