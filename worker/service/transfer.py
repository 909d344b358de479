"""Import and export of connections as JSON Lines.

One object per line: {"id", "integration", "refresh_token", "access_token"?, "instance_url"?,
"issued_at"?}. `issued_at` is seconds or milliseconds (Salesforce's form, string or number),
told apart by magnitude. Every line is validated before anything is written: by default a file
with any bad line imports nothing and every problem is reported with its line and field;
`skip_invalid` imports exactly the valid lines. Import is idempotent per id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.domain.models import Connection, ConnectionStatus, Integration
from worker.errors import ConflictError, InputError, StoreError
from worker.salesforce.hosts import instance_url_problem
from worker.salesforce.responses import epoch_seconds
from worker.store.connections import Store
from worker.store.keys import check_id

FIELDS = ("id", "integration", "refresh_token", "access_token", "instance_url", "issued_at")
MAX_LINE = 64 * 1024
# Records imported at once: their reads and saves share the store's pipelined round trips
# (one at a time, an import waited two round trips per line).
IMPORT_LANES = 32


@dataclass(frozen=True)
class Record:
    line: int
    id: str
    integration: str
    refresh_token: str = field(repr=False)
    access_token: str | None = field(repr=False)
    instance_url: str | None
    issued_at: float | None


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        """Count one record's outcome, as `import_record` names it."""
        if outcome == "created":
            self.created += 1
        elif outcome == "updated":
            self.updated += 1
        else:
            self.unchanged += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "invalid": len(self.problems),
            "problems": self.problems,
        }


def decode_input(data: bytes, source: str) -> str:
    """The file's text, or InputError naming the line of the first byte that is not UTF-8.

    Files and stdin are both read as bytes and decoded here: stdin read as text would turn
    such bytes into surrogates that pass validation and fail only when sealed, mid-import.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise InputError(
            f"{source}: line {line}: not valid UTF-8 (byte 0x{data[error.start]:02x} at byte "
            f"{column} of the line); nothing imported"
        ) from None


def _secret(data: dict[str, Any], name: str, line: int, required: bool) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 4096:
        raise InputError(f"line {line}: field {name!r}: expected a non-empty string")
    if any(ch.isspace() for ch in value):
        raise InputError(f"line {line}: field {name!r}: must not contain whitespace")
    return value


def _encodable(text: str) -> bool:
    """False for text with lone surrogates (undecodable input bytes, or JSON escapes such as
    \\udcff), which cannot be stored: sealing would fail after earlier lines were saved."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(text: str, line: int) -> None:
    if len(text) > MAX_LINE:
        raise InputError(f"line {line}: longer than {MAX_LINE} characters")
    if not _encodable(text):
        raise InputError(f"line {line}: not valid UTF-8 (undecodable bytes)")


def _json_array(lines: list[str]) -> str | None:
    """A problem when the input is a JSON array rather than JSON Lines, else None."""
    for number, text in enumerate(lines, start=1):
        if text.strip():
            if text.lstrip().startswith("["):
                return (
                    f"line {number}: expected JSON Lines (one object per line), got a JSON "
                    "array; convert it with e.g. `jq -c '.[]' FILE`"
                )
            return None
    return None


def _object(text: str, line: int) -> dict[str, Any]:
    """The line's JSON object, or InputError naming the line (and field) that is wrong."""
    _check_text(text, line)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"line {line}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    except (ValueError, RecursionError) as error:  # numbers too long, nesting too deep
        raise InputError(f"line {line}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"line {line}: expected a JSON object")
    for name, value in data.items():
        if isinstance(value, str) and not _encodable(value):  # JSON's "\udcff" escapes
            raise InputError(f"line {line}: field {name!r}: not valid Unicode (lone surrogate)")
    return data


def parse_line(text: str, line: int, integrations: dict[str, Integration]) -> Record | None:
    """One validated record, None for a blank line, or InputError naming line and field."""
    if not text.strip():
        return None
    data = _object(text, line)
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InputError(f"line {line}: unknown field {unknown[0]!r}; expected {', '.join(FIELDS)}")
    try:
        connection_id = check_id("field 'id'", data.get("id"))
        name = check_id("field 'integration'", data.get("integration"))
    except InputError as error:
        raise InputError(f"line {line}: {error}") from None
    integration = integrations.get(name)
    if integration is None:
        raise InputError(
            f"line {line}: field 'integration': no integration named {name!r} "
            "(add it with `tokenworker integrations add`)"
        )
    instance_url = data.get("instance_url")
    if instance_url is not None:
        problem = (
            instance_url_problem(instance_url, integration.login_url)
            if isinstance(instance_url, str)
            else "expected a string"
        )
        if problem:
            raise InputError(f"line {line}: field 'instance_url': {problem}")
    issued_at = None
    if data.get("issued_at") is not None:
        issued_at = epoch_seconds(data["issued_at"])
        if issued_at is None:
            raise InputError(
                f"line {line}: field 'issued_at': expected epoch seconds or milliseconds"
            )
    return Record(
        line=line,
        id=connection_id,
        integration=name,
        refresh_token=_secret(data, "refresh_token", line, required=True) or "",
        access_token=_secret(data, "access_token", line, required=False),
        instance_url=instance_url.rstrip("/") if isinstance(instance_url, str) else None,
        issued_at=issued_at,
    )


def parse_lines(
    lines: Iterable[str], integrations: dict[str, Integration]
) -> tuple[list[Record], list[str]]:
    """(valid records, problems). A repeated id is a problem on its second line; a JSON
    array is one problem, not one per line of a pretty-printed array."""
    lines = list(lines)
    array = _json_array(lines)
    if array is not None:
        return [], [array]
    records: list[Record] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        try:
            record = parse_line(text, number, integrations)
        except InputError as error:
            problems.append(str(error))
            continue
        if record is None:
            continue
        if record.id in seen:
            problems.append(
                f"line {number}: field 'id': {record.id!r} already on line {seen[record.id]}"
            )
            continue
        seen[record.id] = number
        records.append(record)
    return records, problems


async def import_record(store: Store, record: Record, now: float, attempts: int = 5) -> str:
    """'created', 'updated' (a new grant: status reset, checked now) or 'unchanged'.

    The save is compare-and-set; losing it to a worker's write (a refresh, a check) re-reads
    and decides again, so an import never fails because the fleet is busy.
    """
    for _ in range(attempts):
        existing = await store.get_connection(record.id)
        if existing is not None and existing.refresh_token == record.refresh_token:
            return "unchanged"
        try:
            await store.save_connection(_fresh(record, existing), now, mark=True)
        except ConflictError:
            continue
        return "updated" if existing is not None else "created"
    raise ConflictError(f"line {record.line}: {record.id}: kept changing while importing it")


async def import_records(
    store: Store,
    records: Sequence[Record],
    now: float,
    report: ImportReport,
    on_done: Callable[[int], object] = lambda done: None,
    lanes: int = IMPORT_LANES,
) -> None:
    """import_record for each record, `lanes` at a time, outcomes counted into `report` and
    `on_done(records done so far)` after each. The ids must be unique (parse_lines makes
    them so): two lanes never hold one id. The first error stops the import and is raised
    as itself once the records already under way are done; none is started after it, and
    those saved stay saved, as when the lines were imported one by one."""
    pending = iter(records)
    done = 0
    failed: list[Exception] = []

    async def lane() -> None:
        nonlocal done
        for record in pending:
            if failed:
                return
            try:
                report.add(await import_record(store, record, now))
            except Exception as error:
                failed.append(error)
                return
            done += 1
            on_done(done)

    await asyncio.gather(*(lane() for _ in range(min(lanes, len(records)))))
    if failed:
        raise failed[0]


def _fresh(record: Record, existing: Connection | None) -> Connection:
    """The record as imported. Its save also clears `refresh_started_at` (mark=True): the
    refresh token changed (a new grant, or a new record), so a mark about the old token,
    even one set by a refresh still in flight, no longer describes what is stored; that
    refresh's answer is for a grant the operator replaced."""
    return Connection(
        id=record.id,
        integration=record.integration,
        refresh_token=record.refresh_token,
        access_token=record.access_token,
        instance_url=record.instance_url,
        issued_at=record.issued_at,
        last_refresh_at=record.issued_at,
        status=ConnectionStatus.ACTIVE,
        version=existing.version if existing else 0,
    )


def export_row(conn: Connection, with_secrets: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"id": conn.id, "integration": conn.integration}
    if with_secrets:
        row["refresh_token"] = conn.refresh_token
        if conn.access_token:
            row["access_token"] = conn.access_token
    if conn.instance_url:
        row["instance_url"] = conn.instance_url
    if conn.issued_at is not None:
        row["issued_at"] = int(conn.issued_at * 1000)
    if not with_secrets:
        row["status"] = conn.status.value
    return row


Unreadable = Callable[[str, StoreError], None]


async def iter_connections(
    store: Store, chunk: int = 500, unreadable: Unreadable | None = None
) -> AsyncIterator[Connection]:
    """Every readable connection, in SCAN order, fetched in pipelined chunks.

    An unreadable record (incomplete, malformed, sealed under a key nobody holds) is passed
    to `unreadable(id, error)` and skipped; without that callback its error is raised.
    """
    ids: list[str] = []
    async for connection_id in store.iter_connection_ids():
        ids.append(connection_id)
        if len(ids) >= chunk:
            async for conn in _readable(store, ids, unreadable):
                yield conn
            ids = []
    async for conn in _readable(store, ids, unreadable):
        yield conn


async def _readable(
    store: Store, ids: list[str], unreadable: Unreadable | None
) -> AsyncIterator[Connection]:
    for connection_id, item in zip(ids, await store.read_connections(ids), strict=True):
        if isinstance(item, StoreError):
            if unreadable is None:
                raise item
            unreadable(connection_id, item)
        elif item is not None:
            yield item
