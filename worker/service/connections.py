"""Stored connections: show one, remove one, import and export them as JSON Lines.

Listing (paged, filtered without decrypting) lives in `worker.service.paging`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.domain.models import Connection, Integration
from worker.engine.runtime import Runtime
from worker.errors import NotFoundError, StoreError
from worker.service.progress import OnProgress, quiet
from worker.service.transfer import (
    ImportReport,
    Unreadable,
    export_row,
    import_records,
    iter_connections,
    parse_lines,
)


class UnreadableConnection(StoreError):
    """`connections show` of a record that cannot be decoded (the message says why)."""


@dataclass(frozen=True)
class Shown:
    connection: Connection
    integration: Integration | None  # None: the record names an integration that is gone
    next_check_at: float | None

    def as_dict(self) -> dict[str, Any]:
        data = self.connection.public()
        data["integration_status"] = (
            self.integration.status.value if self.integration else "missing"
        )
        data["provider"] = self.integration.provider.value if self.integration else None
        data["next_check_at"] = self.next_check_at
        return data


async def show(rt: Runtime, connection_id: str) -> Shown:
    try:
        conn = await rt.store.get_connection(connection_id)
    except StoreError as error:
        raise UnreadableConnection(f"connection {connection_id!r} is unreadable: {error}") from None
    if conn is None:
        raise NotFoundError(f"no connection {connection_id!r}")
    integration = await rt.store.get_integration(conn.integration)
    return Shown(conn, integration, await rt.store.next_check_at(connection_id))


async def import_lines(
    rt: Runtime, lines: list[str], skip_invalid: bool, on_progress: OnProgress = quiet
) -> ImportReport:
    """Validate every line, then save: nothing when any line is invalid, unless `skip_invalid`
    (then exactly the valid lines)."""
    integrations = {i.name: i for i in await rt.store.list_integrations()}
    records, problems = parse_lines(lines, integrations)
    report = ImportReport(problems=problems)
    if problems and not skip_invalid:
        return report
    total = len(records)
    on_progress("importing", 0, total)
    await import_records(
        rt.store, records, time.time(), report, lambda done: on_progress("importing", done, total)
    )
    return report


@dataclass(frozen=True)
class Exported:
    exported: int
    unreadable: int  # records skipped: the output is then not a full backup

    def as_dict(self) -> dict[str, Any]:
        return {"exported": self.exported, "unreadable": self.unreadable}


async def export(
    rt: Runtime,
    write: Callable[[str], object],
    with_secrets: bool,
    on_progress: OnProgress = quiet,
    unreadable: Unreadable | None = None,
) -> Exported:
    """Every readable connection as one JSON line each, passed to `write`; tokens only
    `with_secrets`. Unreadable records are skipped, counted and passed to `unreadable`."""
    skipped = 0

    def note(connection_id: str, error: StoreError) -> None:
        nonlocal skipped
        skipped += 1
        if unreadable is not None:
            unreadable(connection_id, error)

    exported = 0
    on_progress("exporting", 0, None)
    async for conn in iter_connections(rt.store, unreadable=note):
        write(json.dumps(export_row(conn, with_secrets)) + "\n")
        exported += 1
        on_progress("exporting", exported, None)
    return Exported(exported, skipped)
