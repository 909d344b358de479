"""What the ops commands do, as async functions returning plain data (the CLI renders it)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from worker.cli.render import Progress
from worker.domain.models import ConnectionStatus, Integration, IntegrationStatus, Provider
from worker.engine import events
from worker.engine.runtime import Runtime
from worker.errors import InputError, StoreError
from worker.salesforce.hosts import DEFAULT_LOGIN_URLS, normalize_login_url
from worker.service.health import current
from worker.service.transfer import (
    ImportReport,
    Unreadable,
    import_record,
    iter_connections,
    parse_lines,
)
from worker.store.keys import check_id
from worker.telemetry.metrics import metrics_key


async def add_integration(
    rt: Runtime, name: str, provider: str, client_id: str, secret: str, login_url: str | None
) -> tuple[Integration, int]:
    """Add or update an integration; an update resumes its paused connections.

    Returns the integration and how many connections were rescheduled for a check now.
    """
    check_id("integration name", name)
    try:
        kind = Provider(provider)
    except ValueError:
        raise InputError(
            f"--provider {provider!r}: expected salesforce or salesforce-sandbox"
        ) from None
    if not client_id.strip():
        raise InputError("--client-id: expected the connected app's consumer key")
    if not secret:
        raise InputError("client secret: the variable, file or stdin given is empty")
    url = normalize_login_url(login_url) if login_url else DEFAULT_LOGIN_URLS[kind]
    existing = await rt.store.get_integration(name)
    integration = Integration(
        name=name,
        provider=kind,
        client_id=client_id.strip(),
        client_secret=secret,
        login_url=url,
        status=IntegrationStatus.ACTIVE,
        introspection_available=existing.introspection_available if existing else True,
    )
    await rt.store.save_integration(integration)
    resumed = 0
    if existing is not None:
        resumed = await resume_integration(rt, name)
    return integration, resumed


async def resume_integration(rt: Runtime, name: str) -> int:
    """Schedule every non-dead connection of an integration for a check now."""
    now = time.time()
    count = 0
    # An unreadable record cannot be resumed; `status` reports it, so skip it here.
    async for conn in iter_connections(rt.store, unreadable=lambda _id, _error: None):
        if conn.integration == name and conn.status is not ConnectionStatus.REAUTH_REQUIRED:
            await rt.store.schedule(conn.id, now)
            count += 1
    return count


async def import_connections(
    rt: Runtime, lines: list[str], skip_invalid: bool, progress: bool = True
) -> ImportReport:
    integrations = {i.name: i for i in await rt.store.list_integrations()}
    records, problems = parse_lines(lines, integrations)
    report = ImportReport(problems=problems)
    if problems and not skip_invalid:
        return report
    bar = Progress("importing", len(records)) if progress else None
    now = time.time()
    for record in records:
        outcome = await import_record(rt.store, record, now)
        setattr(report, outcome, getattr(report, outcome) + 1)
        if bar is not None:
            bar.advance()
    if bar is not None:
        bar.finish()
    return report


class UnreadableConnection(StoreError):
    """`connections show` of a record that cannot be decoded (the message says why)."""


async def show_connection(rt: Runtime, connection_id: str) -> dict[str, Any] | None:
    try:
        conn = await rt.store.get_connection(connection_id)
    except StoreError as error:
        raise UnreadableConnection(f"connection {connection_id!r} is unreadable: {error}") from None
    if conn is None:
        return None
    integration = await rt.store.get_integration(conn.integration)
    data = conn.public()
    data["integration_status"] = integration.status.value if integration else "missing"
    data["provider"] = integration.provider.value if integration else None
    data["next_check_at"] = await rt.store.next_check_at(connection_id)
    return data


SAMPLE = 100  # unreadable records listed by `status --json`; all are counted


async def status(rt: Runtime, unreadable: Unreadable | None = None) -> dict[str, Any]:
    """Fleet counts. An unreadable record (a key nobody holds, an incomplete hash) is counted
    and passed to `unreadable`, never allowed to hide the rest of the fleet."""
    now = time.time()
    counts: Counter[str] = Counter()
    by_integration: dict[str, Counter[str]] = {}
    bad: list[dict[str, str]] = []
    skipped = 0

    def note(connection_id: str, error: StoreError) -> None:
        nonlocal skipped
        skipped += 1
        if len(bad) < SAMPLE:
            bad.append({"id": connection_id, "problem": str(error)})
        if unreadable is not None:
            unreadable(connection_id, error)

    async for conn in iter_connections(rt.store, unreadable=note):
        counts[conn.status.value] += 1
        by_integration.setdefault(conn.integration, Counter())[conn.status.value] += 1
    oldest = await rt.store.oldest_due()
    due_now = await rt.store.due_count(now)
    recent = await events.read_events(rt.redis, rt.store.keys, limit=200)
    failures = [e for _, e in recent if e.get("event") in events.ALERTS][-10:]
    return {
        "connections": sum(counts.values()),
        "unreadable": skipped,
        "unreadable_records": bad,
        "by_status": {s.value: counts.get(s.value, 0) for s in ConnectionStatus},
        "due_now": due_now,
        "scheduled": int(await rt.redis.zcard(rt.store.keys.due)),
        "oldest_due_at": oldest if due_now else None,
        "overdue_seconds": round(now - oldest, 1) if due_now and oldest else 0.0,
        "next_due_at": oldest,
        "overdue": await rt.store.due_count(now - rt.settings.sweep_interval),
        "integrations": [
            {**i.public(), "connections": dict(by_integration.get(i.name, {}))}
            for i in await rt.store.list_integrations()
        ],
        "recent_failures": failures,
        **await _processes(rt, now),
        "at": now,
    }


async def _processes(rt: Runtime, now: float) -> dict[str, Any]:
    """Workers by last consumption, whether a beat holds the lock, when a sweep last ran."""
    raw: dict[Any, Any] = await rt.redis.hgetall(rt.store.keys.heartbeat)
    beats = current({k.decode(): float(v) for k, v in raw.items()}, now)
    workers = [
        {"worker": node, "last_consumed_at": at, "age_seconds": round(now - at, 1)}
        for node, at in sorted(beats.items(), key=lambda item: -item[1])
    ]
    ttl_ms = await rt.redis.pttl(rt.store.keys.beat)
    last_sweep = await rt.redis.hget(metrics_key(rt.store.keys), "last_sweep_timestamp_seconds")
    return {
        "workers": workers,
        "beat": {"leader": ttl_ms > 0, "lock_expires_in": ttl_ms / 1000 if ttl_ms > 0 else None},
        "last_sweep_at": float(last_sweep) if last_sweep is not None else None,
    }
