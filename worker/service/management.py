"""Managing connections from the API (and `connections remove`): list by cursor, remove with a
revocation at Salesforce first, refresh now (single-flight), list integrations.

Removal revokes the refresh token at `/services/oauth2/revoke` before deleting anything (under
the connection's lease, so no refresh is in flight with an older token). A revocation that
fails for now (network, 5xx, our rate limit) deletes nothing and raises SalesforceUnavailable:
deleting anyway would leave a live grant at Salesforce that nobody can revoke later (it also
counts toward Salesforce's five approvals per user and app). Salesforce's 400 means it does not
know the token (revoked or expired already): the grant is dead, the record goes. `revoke=False`
deletes without asking Salesforce (an unreadable record, an integration that is gone).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from worker.domain.models import Connection, Integration
from worker.domain.outcomes import CheckResult, Outcome
from worker.engine import events
from worker.engine.runtime import Runtime
from worker.errors import (
    InputError,
    NotFoundError,
    SalesforceError,
    SalesforceUnavailable,
    StoreError,
    Throttled,
)
from worker.service import hotreads
from worker.service.paging import matching_ids
from worker.store.keys import check_id

MAX_PAGE = 1000


class Revocation(str, Enum):
    REVOKED = "revoked"  #: Salesforce revoked the grant
    ALREADY_INVALID = "already_invalid"  #: Salesforce did not know the token (dead already)
    NOT_ATTEMPTED = "not_attempted"  #: revoke=False, or the integration is gone


@dataclass(frozen=True)
class Removal:
    connection_id: str
    revocation: Revocation

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "removed": True,
            "revocation": self.revocation.value,
        }


@dataclass(frozen=True)
class ConnectionPage:
    items: list[dict[str, Any]]
    next_cursor: str | None  # the last id of this page, when more follow
    unreadable: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor, "unreadable": self.unreadable}


async def list_connections(
    rt: Runtime,
    status: str | None = None,
    integration: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    prefix: str | None = None,
) -> ConnectionPage:
    """One page of connections (no secrets), sorted by id, after `cursor` (the previous page's
    `next_cursor`). An id cursor, not an offset: removals and additions between two pages
    neither skip nor repeat the others. `prefix` keeps the ids starting with it (a bisection
    of the sorted ids: only the page is read)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit: expected 1 to {MAX_PAGE}, got {limit}")
    if cursor is not None:
        check_id("cursor", cursor)
    ids = await matching_ids(rt, status, integration)
    if prefix:
        low = bisect.bisect_left(ids, prefix)
        high = low
        while high < len(ids) and ids[high].startswith(prefix):
            high += 1
        ids = ids[low:high]
    start = bisect.bisect_right(ids, cursor) if cursor is not None else 0
    chosen = ids[start : start + limit]
    found = await rt.store.read_connections(chosen)
    async with rt.redis.pipeline(transaction=False) as pipe:
        for cid in chosen:
            pipe.zscore(rt.store.keys.due, cid)
        scores = await pipe.execute()
    items: list[dict[str, Any]] = []
    unreadable: list[dict[str, str]] = []
    for cid, conn, score in zip(chosen, found, scores, strict=True):
        if isinstance(conn, StoreError):
            unreadable.append({"id": cid, "problem": str(conn)})
        elif conn is not None:
            items.append({**conn.public(), "next_check_at": float(score) if score else None})
    more = start + limit < len(ids)
    return ConnectionPage(items, chosen[-1] if more and chosen else None, unreadable)


async def refresh_connection(rt: Runtime, connection_id: str) -> CheckResult:
    """Refresh now, single-flight: a refresh that completed after this was asked (another
    admin's, a worker's) answers it without a second call to Salesforce. Runs even when the
    connection or its integration is paused, like `tokenworker refresh`."""
    asked = rt.refresher.clock() - 0.001  # stored times are rounded to the millisecond
    try:
        result = await rt.refresher.refresh_unless(
            connection_id, lambda c: (c.last_refresh_at or 0.0) >= asked, "forced"
        )
    finally:
        hotreads.drop(rt, connection_id)  # new token or status: this process reads it now
    if result.outcome is Outcome.NOT_FOUND:
        raise NotFoundError(f"no connection {connection_id!r}")
    return result


async def list_integrations(rt: Runtime) -> list[dict[str, Any]]:
    """Every integration without its client secret."""
    return [integration.public() for integration in await rt.store.list_integrations()]


async def remove_connection(rt: Runtime, connection_id: str, revoke: bool = True) -> Removal:
    """Revoke at Salesforce, then delete, then `connection.removed` (see the module docstring)."""
    revocation = Revocation.NOT_ATTEMPTED
    conn: Connection | None = None
    integration: Integration | None = None
    if revoke:
        lease = rt.store.keys.lease(connection_id)
        read = rt.store.connection_read(connection_id)
        async with rt.leases.hold(lease, read, rt.refresher.lease_wait) as (token, raw):
            if token is None:  # a refresh outlasted the wait: read what is stored now
                conn = await rt.store.get_connection(connection_id)
            else:
                conn = rt.store.decode_connection(connection_id, raw)
            if conn is None:
                raise NotFoundError(f"no connection {connection_id!r}")
            integration = await rt.store.get_integration(conn.integration)
            if integration is not None:
                revocation = await _revoke(rt, conn, integration)
            return await _delete(rt, connection_id, revocation, conn, integration)
    return await _delete(rt, connection_id, revocation, conn, integration)


async def _revoke(rt: Runtime, conn: Connection, integration: Integration) -> Revocation:
    try:
        await rt.client.revoke(integration, conn.refresh_token)
    except Throttled as throttled:
        raise SalesforceUnavailable(conn.id, throttled.retry_in, None) from None
    except SalesforceError as error:
        if error.http_status == 400:
            return Revocation.ALREADY_INVALID
        retry = error.retry_after or rt.refresher.timing.retry_base
        raise SalesforceUnavailable(conn.id, retry, error) from None
    return Revocation.REVOKED


async def _delete(
    rt: Runtime,
    connection_id: str,
    revocation: Revocation,
    conn: Connection | None,
    integration: Integration | None,
) -> Removal:
    removed = await rt.store.remove_connection(connection_id)
    hotreads.drop(rt, connection_id)
    if not removed:
        raise NotFoundError(f"no connection {connection_id!r}")
    await rt.sink.emit(
        events.CONNECTION_REMOVED,
        conn,
        integration,
        connection_id=connection_id,
        revocation=revocation.value,
    )
    return Removal(connection_id, revocation)
