"""Credentials for host applications: a fresh token costs a Redis read and a decrypt, never a
call to Salesforce; anything else is refreshed first, single-flight with the workers.

    read -> reauth_required?                 ReauthRequired (409)
         -> valid for min_ttl (and not the rejected token)?   hand it out
         -> failing, its retry not due yet?   SalesforceUnavailable, nothing sent (no storm)
         -> Refresher.refresh_unless: the workers' lease, a re-read under it, the one refresh
            path (rotation-safe save, events); nothing is sent when someone else refreshed
         -> read again -> valid? hand it out : SalesforceUnavailable(retry_after) (503)

`min_ttl` (seconds the token must still be valid) defaults to the refresh margin as the workers
apply it to this connection (TOKENWORKER_REFRESH_MARGIN, at most half the session lifetime),
so default reads never cause a refresh the workers would not make anyway. It may not exceed
half the session lifetime (`TtlTooLong`): a longer one could only be met by refreshing on
almost every read. A token valid for less than `min_ttl` is never handed out, not even while
Salesforce is down: the 503 says when to retry, and a caller that can use a shorter-lived token
asks again with a smaller `min_ttl` (0: any unexpired token).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from worker.domain import policy
from worker.domain.models import Connection, ConnectionStatus, IntegrationStatus, LastError
from worker.domain.outcomes import CheckResult, Outcome
from worker.engine.runtime import Runtime
from worker.errors import (
    ConfigurationError,
    InputError,
    NotFoundError,
    ReauthRequired,
    SalesforceError,
    SalesforceUnavailable,
    StoreError,
    TransientError,
)
from worker.service import hotreads

CONTENDED_RETRY = 1.0  # the lease stayed taken for a whole lease wait: ask again soon


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """What a host application needs to call Salesforce for one connection."""

    connection_id: str
    integration: str
    provider: str | None  # None only for a connection whose integration was removed
    access_token: str = field(repr=False)
    instance_url: str | None
    token_type: str = "Bearer"
    issued_at: float | None
    expires_at: float
    expiry_source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "integration": self.integration,
            "provider": self.provider,
            "access_token": self.access_token,
            "instance_url": self.instance_url,
            "token_type": self.token_type,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "expiry_source": self.expiry_source,
        }


class TtlTooLong(InputError):
    """`min_ttl` asks for more than half the session lifetime of this connection's tokens."""

    def __init__(self, asked: float, limit: float) -> None:
        self.limit = limit
        super().__init__(
            f"min_ttl: expected at most {limit:g} seconds (half this connection's session "
            f"lifetime), got {asked:g}"
        )


async def credentials(rt: Runtime, connection_id: str, min_ttl: float | None = None) -> Credentials:
    """A token valid for at least `min_ttl` seconds (see the module docstring); from this
    process's hot reads when they are on and hold one (worker.service.hotreads)."""
    hot = hotreads.of(rt)
    if hot is None:
        conn = await _read(rt, connection_id)
        return await _serve(rt, conn, min_ttl, "credentials_read", _never)
    entry = hot.get(connection_id)
    if entry is not None and _lasts(rt, entry, min_ttl):
        hot.hits += 1
        return cast(Credentials, entry.value)
    hot.misses += 1
    flight = hot.in_flight(connection_id)
    if flight is not None:
        entry = await asyncio.shield(flight)
        if entry is not None and _lasts(rt, entry, min_ttl):
            hot.joined += 1
            return cast(Credentials, entry.value)
    return await _read_and_keep(rt, hot, connection_id, min_ttl)


def _lasts(rt: Runtime, entry: hotreads.Entry[Any], min_ttl: float | None) -> bool:
    """Whether a remembered token is still valid for `min_ttl` now (checked on every hit)."""
    need = _needed(entry.lifetime, min_ttl, rt.refresher.timing)
    expires_at: float = entry.value.expires_at
    return expires_at - rt.refresher.clock() >= need


async def _read_and_keep(
    rt: Runtime, hot: hotreads.HotReads[Any], connection_id: str, min_ttl: float | None
) -> Credentials:
    generation, at = hot.generation, hot.clock()
    flight = hot.take_off(connection_id)
    kept = None
    try:
        conn = await _read(rt, connection_id)
        found = await _serve(rt, conn, min_ttl, "credentials_read", _never)
        kept = hot.put(connection_id, found, conn.lifetime, generation, at, conn.version)
        return found
    finally:
        hot.land(connection_id, flight, kept)


async def token_rejected(rt: Runtime, connection_id: str, access_token: str) -> Credentials:
    """Salesforce refused `access_token` (a 401): if it is still the stored token, refresh now
    (single-flight: many callers reporting it cause one refresh); if it was already replaced,
    the current credentials, without a call to Salesforce."""
    sent = access_token.encode()

    def rejected(conn: Connection) -> bool:
        stored = conn.access_token
        return stored is not None and hmac.compare_digest(stored.encode(), sent)

    # This process serves it from the store from now on: a token already replaced is never
    # handed out again here, and a refresh (in _serve) drops what was read meanwhile.
    hotreads.drop(rt, connection_id)
    conn = await _read(rt, connection_id)
    return await _serve(rt, conn, None, "token_rejected", rejected)


def _never(_: Connection) -> bool:
    return False


async def _read(rt: Runtime, connection_id: str) -> Connection:
    conn = await rt.store.get_connection(connection_id)
    if conn is None:
        raise NotFoundError(f"no connection {connection_id!r}")
    return conn


async def _serve(
    rt: Runtime,
    conn: Connection,
    min_ttl: float | None,
    reason: str,
    rejected: Callable[[Connection], bool],
) -> Credentials:
    timing = rt.refresher.timing
    need = _needed(conn.lifetime, min_ttl, timing)

    def good(c: Connection) -> bool:
        return _usable(c, need, rt.refresher.clock(), timing) and not rejected(c)

    _alive(conn)
    if good(conn):
        return await _credentials(rt, conn)
    await _may_refresh(rt, conn)
    try:
        result = await rt.refresher.refresh_unless(
            conn.id, lambda c: c.status is ConnectionStatus.REAUTH_REQUIRED or good(c), reason
        )
    finally:
        hotreads.drop(rt, conn.id)
    latest = await _read(rt, conn.id)
    _alive(latest)
    if good(latest):
        return await _credentials(rt, latest)
    raise _unavailable(rt, conn.id, result)


def _needed(lifetime: float | None, min_ttl: float | None, timing: policy.Timing) -> float:
    """The seconds of validity to insist on: the workers' margin for a connection of this
    session lifetime unless the caller asked; never more than half the session lifetime."""
    if min_ttl is None:
        return policy.margin_for(lifetime, timing)
    limit = (lifetime or timing.default_lifetime) / 2.0
    if min_ttl > limit:
        raise TtlTooLong(min_ttl, limit)
    return min_ttl


def _usable(conn: Connection, need: float, now: float, timing: policy.Timing) -> bool:
    if conn.access_token is None or conn.status is ConnectionStatus.REAUTH_REQUIRED:
        return False
    return policy.assumed_expiry(conn, now, timing).expires_at - now >= need


def _alive(conn: Connection) -> None:
    if conn.status is ConnectionStatus.REAUTH_REQUIRED:
        last = conn.last_error.as_dict() if conn.last_error else None
        raise ReauthRequired(conn.id, last)


async def _may_refresh(rt: Runtime, conn: Connection) -> None:
    """Refuse, without calling Salesforce, while the connection's retry is not due (a failing
    grant is not retried on every read: Nango's INC-88 storm) or its integration is paused."""
    now = rt.refresher.clock()
    if conn.status is ConnectionStatus.FAILING:
        due = await rt.store.next_check_at(conn.id)
        if due is not None and due > now:
            raise SalesforceUnavailable(conn.id, due - now, _error(conn.last_error))
    integration = await rt.refresher.integration(conn.integration)
    if integration is None:
        missing = ConfigurationError(
            "integration_missing", f"integration {conn.integration!r} does not exist"
        )
        raise SalesforceUnavailable(conn.id, rt.refresher.timing.retry_max, missing)
    if integration.status is IntegrationStatus.MISCONFIGURED:
        rt.refresher.forget_integration(integration.name)  # an operator may fix it any moment
        error = _error(integration.last_error, ConfigurationError)
        raise SalesforceUnavailable(conn.id, rt.refresher.timing.retry_base, error)


def _unavailable(rt: Runtime, connection_id: str, result: CheckResult) -> Exception:
    """Why the refresh left no usable token, as the error to raise."""
    if result.outcome is Outcome.ERROR:
        return StoreError(result.reason or "the connection could not be processed")
    if result.outcome is Outcome.NOT_FOUND:
        return NotFoundError(f"no connection {connection_id!r}")
    now = rt.refresher.clock()
    retry = CONTENDED_RETRY
    if result.next_check_at is not None:
        retry = max(CONTENDED_RETRY, result.next_check_at - now)
    error: SalesforceError | None = None
    if result.error:
        fields = result.error
        kind = ConfigurationError if result.outcome is Outcome.MISCONFIGURED else TransientError
        status = fields.get("http_status")
        error = kind(
            str(fields.get("error", "")),
            str(fields.get("error_description", "")),
            int(status) if isinstance(status, int) else None,
        )
    return SalesforceUnavailable(connection_id, retry, error)


def _error(
    last: LastError | None, kind: type[SalesforceError] = TransientError
) -> SalesforceError | None:
    if last is None:
        return None
    return kind(last.error, last.error_description, last.http_status)


async def _credentials(rt: Runtime, conn: Connection) -> Credentials:
    assert conn.access_token is not None
    integration = await rt.refresher.integration(conn.integration)
    expiry = policy.assumed_expiry(conn, rt.refresher.clock(), rt.refresher.timing)
    return Credentials(
        connection_id=conn.id,
        integration=conn.integration,
        provider=integration.provider.value if integration else None,
        access_token=conn.access_token,
        instance_url=conn.instance_url,
        issued_at=conn.issued_at,
        expires_at=expiry.expires_at,
        expiry_source=expiry.source.value,
    )
