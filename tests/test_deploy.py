"""deploy/ agrees with the code: grace periods, probe commands, node names, beat, metrics."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings
from tests.conftest import TEST_KEYS
from worker.cli.main import build_parser
from worker.telemetry.exporter import exposition, registry_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "kubernetes"


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _container(kind: str, name: str) -> dict[str, Any]:
    spec = _manifests()[(kind, name)]["spec"]["template"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


@pytest.fixture(scope="module")
def hard_time_limit() -> float:
    """The hard task time limit (`worker.engine.limits`, applied by `worker.jobs`) that a
    `celery -A config.celery worker` uses, with every setting at its default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWORKER_")}
    env["TOKENWORKER_ENCRYPTION_KEYS"] = TEST_KEYS
    done = subprocess.run(
        [sys.executable, "-c", "from config.celery import app; print(app.conf.task_time_limit)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def _bare_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWORKER_")}
    env.update(values)
    return env


def test_importing_the_celery_app_and_its_tasks_reads_no_setting() -> None:
    """With a malformed setting, importing config.celery and the tasks still works: the
    environment is read when Celery configures the app, which then stops with the message."""
    shown = "import config.celery, worker.jobs.tasks as t; print('imported', flush=True); "
    shown += "print(sorted(t.app.tasks))"
    done = subprocess.run(
        [sys.executable, "-c", shown],
        env=_bare_env(TOKENWORKER_LEASE_TTL="abc"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout == "imported\n"
    assert done.stderr.startswith("tokenworker: TOKENWORKER_LEASE_TTL='abc'"), done.stderr
    assert done.returncode == 1


@pytest.mark.parametrize("process", ["worker", "beat"])
@pytest.mark.parametrize(
    ("name", "value"), [("LEASE_TTL", "abc"), ("BEAT_LOCK_TIMEOUT", "1"), ("ENCRYPTION_KEYS", "")]
)
def test_a_bad_setting_stops_the_procfile_processes_with_one_line(
    process: str, name: str, value: str
) -> None:
    """`celery -A config.celery worker|beat` refuses to start on a bad setting (the ops ones
    included), saying which in one line, no traceback."""
    env = _bare_env(**{"TOKENWORKER_ENCRYPTION_KEYS": TEST_KEYS, f"TOKENWORKER_{name}": value})
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config.celery", process],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"tokenworker: TOKENWORKER_{name}"), done.stderr


def _node(args: list[str]) -> str:
    return args[args.index("-n") + 1]


def test_shutdown_grace_outlasts_the_task_hard_time_limit(hard_time_limit: float) -> None:
    """Kubernetes and systemd wait longer than a task may run before they kill a worker."""
    worker = _manifests()[("Deployment", "tokenworker-worker")]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > hard_time_limit
    service = _unit("tokenworker-worker.service")["Service"]
    assert float(service["TimeoutStopSec"]) > hard_time_limit
    assert service["KillMode"] == "mixed"  # SIGTERM to the main process only


def test_worker_probes_are_cli_commands_naming_the_workers_node() -> None:
    """Every probe parses as a tokenworker command; liveness names the node the worker runs."""
    container = _container("Deployment", "tokenworker-worker")
    node = _node(container["args"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[0] == "tokenworker"
        args = build_parser().parse_args(command[1:])
        assert args.command == "health"
        if probe != "readinessProbe":
            assert args.liveness
            assert args.worker == node
    unit = _unit("tokenworker-worker.service")["Service"]["ExecStart"]
    check = _unit("tokenworker-liveness.service")["Service"]["ExecStart"]
    assert _node(shlex.split(unit)) == "tokenworker@%%h"
    assert "--worker tokenworker@%%h" in check


def test_beat_runs_the_lease_scheduler_with_a_standby() -> None:
    """Beat runs worker.jobs.beat.LeaseScheduler everywhere, with two replicas on Kubernetes."""
    beat = _manifests()[("Deployment", "tokenworker-beat")]
    assert beat["spec"]["replicas"] >= 2
    args = beat["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("-S") + 1] == "worker.jobs.beat.LeaseScheduler"
    unit = _unit("tokenworker-beat.service")["Service"]["ExecStart"]
    assert "-S worker.jobs.beat.LeaseScheduler" in unit
    procfile = (DEPLOY.parent / "Procfile").read_text()
    assert "beat -S worker.jobs.beat.LeaseScheduler" in procfile


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    """`kubectl apply -k deploy/` covers every manifest; secrets are created by hand."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {f"kubernetes/{p.name}" for p in K8S.glob("*.yaml")}
    assert listed == present - {"kubernetes/secret.example.yaml"}
    [generator] = kustomization["configMapGenerator"]
    assert generator["files"] == ["redis.conf"]


def test_alert_rules_use_only_exported_metrics(settings_for: Callable[..., Settings]) -> None:
    """Every tokenworker_* series an alert reads is one the exporter serves."""
    text = exposition(registry_for(settings_for())).decode()
    exported = set(re.findall(r"^# TYPE (tokenworker_\w+) ", text, re.MULTILINE))
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name) if not name.endswith("_total") else name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"tokenworker_\w+", rule["expr"])
    }
    assert used
    assert used - exported == set()
