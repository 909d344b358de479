"""What the ops commands do, as async functions returning plain data (the CLI renders it)."""

from __future__ import annotations

import time
from typing import Any

from worker.cli.render import Progress
from worker.domain.models import ConnectionStatus, Integration, IntegrationStatus, Provider
from worker.engine.runtime import Runtime
from worker.errors import InputError, StoreError
from worker.salesforce.hosts import DEFAULT_LOGIN_URLS, normalize_login_url
from worker.service.transfer import (
    ImportReport,
    import_record,
    iter_connections,
    parse_lines,
)
from worker.store.keys import check_id


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
