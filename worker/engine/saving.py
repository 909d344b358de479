"""Turning a token response into the record to store, and storing it safely.

Once Salesforce has answered a refresh, the refresh token we sent may be dead (rotation): the
record built here always carries the newest refresh token, even when the rest of the response
is rejected, and `save_refresh` never gives up on storing it because of a lost race.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from worker.domain import policy
from worker.domain.answers import TokenResponse
from worker.domain.models import Connection, ExpirySource, Integration
from worker.errors import ConflictError, ResponseIntegrityError, TokenworkerError
from worker.salesforce import hosts, signature
from worker.store.clients import STORE_DOWN
from worker.store.connections import Store
from worker.store.replication import Replication

log = structlog.get_logger("tokenworker.tokens")
SAVE_RETRY_MAX_DELAY = 2.0  # a returning store is noticed within 2 s


@dataclass(frozen=True)
class Applied:
    """The record to save after a refresh, and what the refresh revealed."""

    connection: Connection
    next_check_at: float
    expiry: policy.Expiry | None  # None: not learned yet (introspect the new token)
    rotated: bool
    problem: ResponseIntegrityError | None = None
    rejected_instance_url: str | None = None
    instance_url_changed: bool = False


def apply_refresh(
    conn: Connection,
    integration: Integration,
    response: TokenResponse,
    now: float,
    timing: policy.Timing,
    rng: random.Random,
) -> Applied:
    refresh_token = response.refresh_token or conn.refresh_token
    rotated = refresh_token != conn.refresh_token
    if response.signature is not None and not signature.is_valid(
        integration.client_secret,
        response.identity_url,
        response.issued_at_raw,
        response.signature,
    ):
        # Keep only the rotated refresh token; the access token of this answer is not used.
        kept = conn.evolve(
            refresh_token=refresh_token, last_refresh_at=now, refresh_started_at=None
        )
        problem = ResponseIntegrityError(
            "signature_invalid",
            "signature does not match HMAC-SHA256(client secret, id + issued_at)",
        )
        return Applied(kept, now, None, rotated, problem=problem)
    instance_url, rejected = _instance_url(conn, integration, response)
    learned = policy.expiry_after_refresh(conn, response, now, timing)
    issued = response.issued_at if response.issued_at is not None else now
    expiry = learned or policy.Expiry(
        issued + (conn.lifetime or timing.default_lifetime), ExpirySource.ASSUMED, conn.lifetime
    )
    updated = conn.healthy(
        now,
        refresh_token=refresh_token,
        access_token=response.access_token,
        instance_url=instance_url,
        identity_url=response.identity_url or conn.identity_url,
        issued_at=issued,
        expires_at=expiry.expires_at,
        expiry_source=expiry.source,
        lifetime=expiry.lifetime,
        last_refresh_at=now,
        refresh_started_at=None,
    )
    return Applied(
        connection=updated,
        next_check_at=policy.next_check_at(expiry, updated, now, timing, rng),
        expiry=learned,
        rotated=rotated,
        rejected_instance_url=rejected,
        instance_url_changed=conn.instance_url is not None and instance_url != conn.instance_url,
    )


def _instance_url(
    conn: Connection, integration: Integration, response: TokenResponse
) -> tuple[str | None, str | None]:
    """(instance_url to store, why the response's one was rejected or None)."""
    if response.instance_url is None:
        return conn.instance_url, None
    problem = hosts.instance_url_problem(response.instance_url, integration.login_url)
    if problem is not None:
        return conn.instance_url, problem
    return response.instance_url.rstrip("/"), None


async def save_refresh(
    store: Store,
    conn: Connection,
    next_check_at: float,
    *,
    sent: str,
    window: float,
    replication: Replication | None = None,
    keep: Callable[[], Awaitable[bool]] | None = None,
) -> Connection:
    """Save a refreshed record built from the answer to sending the refresh token `sent`.

    Store unreachable: retried for `window` seconds (`limits.SAVE_WINDOW`), since this answer may
    be the only copy of a rotated token. A lost compare-and-set re-reads the record: if it
    still holds `sent`, the writer that won did not replace the grant (a status, a mark, a
    schedule) and our answer is applied onto its version: our token fields win, they are the
    rotation of that very grant. If it holds another refresh token, an operator imported a new
    grant or another writer moved the grant on: that record stands and is returned.

    A rotated token also waits for `replication` (WAIT): until enough replicas confirm it, the
    answer stays here and is saved again the same way, so a failover that lost the write (the
    new master holds `sent` again) gets it back. Past `window` an unconfirmed token that the
    store holds is kept as saved, with an error logged.

    `keep` (the caller's lease) is renewed, or taken back, each time the store answers
    without the save being done: the lease tells other workers that this answer is in hand.
    Once it is lost another worker may read the record (the mark set, the token consumed),
    judge the answer lost and end the connection `reauth_required` while we hold its new
    grant. Only an outage longer than the lease TTL lets that happen; a later save here still
    stores the answer (the compare-and-set rules above) and the connection recovers.
    """
    deadline = time.monotonic() + window
    delay = 0.1
    # Only rotation needs WAIT: a plain refresh lost in a failover leaves the previous access
    # token and the same, still valid, refresh token, and the next check simply refreshes again.
    confirm = replication if conn.refresh_token != sent else None
    while True:
        try:
            try:
                return await _save_once(store, conn, next_check_at, confirm)
            except (ConflictError, Unconfirmed) as missed:
                if isinstance(missed, Unconfirmed):
                    await asyncio.sleep(delay)  # a failover takes seconds: do not spin
                latest = await store.get_connection(conn.id)
                if keep is not None and not await keep():
                    log.warning("lease.lost_while_saving", connection_id=conn.id)
        except STORE_DOWN:
            # The store is away (a restart, a failover): wait for it rather than give it up.
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, SAVE_RETRY_MAX_DELAY)
            continue
        if latest is None:
            return conn  # removed by an operator meanwhile: do not resurrect it
        if latest.refresh_token not in (sent, conn.refresh_token):
            log.warning("refresh.superseded", connection_id=conn.id, version=latest.version)
            return latest
        if time.monotonic() > deadline:
            if latest.refresh_token == conn.refresh_token:
                log.error("replication.unconfirmed", connection_id=conn.id, after_seconds=window)
                return latest
            raise ConflictError(f"connection {conn.id}: still losing the save after {window:g}s")
        delay = min(delay * 2, SAVE_RETRY_MAX_DELAY)
        conn = conn.evolve(version=latest.version)


class Unconfirmed(TokenworkerError):
    """Fewer replicas than wanted confirmed a rotated token (WAIT ran out)."""


async def _save_once(
    store: Store, conn: Connection, next_check_at: float, replication: Replication | None
) -> Connection:
    if replication is None or replication.cached() == 0:
        return await store.save_connection(conn, next_check_at)
    saved, wanted, acked = await store.save_replicated(conn, next_check_at, replication)
    if acked < wanted:
        # The master holds it, its replicas may not: a failover now would lose the grant.
        log.warning("replication.short", connection_id=conn.id, acked=acked, wanted=wanted)
        raise Unconfirmed(conn.id)
    return saved
