"""What an authorization becomes: the code exchanged, the connection stored, its events.

The token response is turned into a record by the refresh's own `apply_refresh` (signature
check, instance_url rules, expiry) and saved through the store's compare-and-set save that
imports use (`mark=True`: a new grant clears any refresh-in-flight mark), scheduled, and its
expiry learned like a refreshed token's. Anything refused after Salesforce issued tokens
(a foreign instance_url, a bad signature, another org) is revoked at Salesforce, best
effort, so no orphan approval counts against the user's five.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

import structlog

from worker.domain.answers import TokenResponse
from worker.domain.models import Connection, ConnectionStatus, Integration
from worker.engine import events
from worker.engine.runtime import Runtime
from worker.engine.saving import apply_refresh
from worker.errors import ConflictError, SalesforceError, StoreError, Throttled
from worker.salesforce import hosts, oauth
from worker.service import hotreads
from worker.store.sessions import ConnectSession, Sessions, SessionStatus

log = structlog.get_logger("tokenworker.connect")
SAVE_ATTEMPTS = 5
APPROVALS_PER_USER = 5  # Salesforce's limit per user and connected app


@dataclass(frozen=True)
class Refusal:
    """Why a callback stored nothing: Salesforce's error, or ours."""

    error: str
    description: str
    http_status: int | None = None


async def failed_event(
    rt: Runtime, session: ConnectSession, error: str, description: str, **fields: Any
) -> None:
    integration = await rt.store.get_integration(session.integration)
    # Only the id and integration of this stand-in reach the event; it holds no secret.
    named = Connection(id=session.connection_id, integration=session.integration, refresh_token="")
    await rt.sink.emit(
        events.CONNECT_FAILED,
        named,
        integration,
        session_id=session.id,
        error=error,
        error_description=description,
        **fields,
    )


async def fail(rt: Runtime, session: ConnectSession, refusal: Refusal) -> None:
    """Finish a consumed session as failed and report it (nothing was stored)."""
    await _sessions(rt).finish(session, SessionStatus.FAILED, refusal.error, refusal.description)
    await failed_event(
        rt, session, refusal.error, refusal.description, http_status=refusal.http_status
    )


async def complete(rt: Runtime, session: ConnectSession, code: str) -> Refusal | None:
    """Exchange the code and store the connection; None when stored (session connected),
    else the refusal (session failed, event emitted, nothing stored)."""
    try:
        refusal = await _exchange_and_store(rt, session, code)
    except BaseException:
        # A store outage or a bug mid-way: the session must not stay `consumed` (if the store
        # is down this fails too, and the session ends `expired`, `interrupted`, later).
        with contextlib.suppress(Exception):
            await _sessions(rt).finish(
                session, SessionStatus.FAILED, "internal_error", "the callback failed; try again"
            )
        raise
    finally:
        hotreads.drop(rt, session.connection_id)  # a reconnect replaced its token and status
    if refusal is not None:
        await fail(rt, session, refusal)
    return refusal


async def _exchange_and_store(rt: Runtime, session: ConnectSession, code: str) -> Refusal | None:
    integration = await rt.store.get_integration(session.integration)
    if integration is None:
        return Refusal("unknown_integration", f"integration {session.integration!r} was removed")
    login_url = session.login_url or integration.login_url
    redirect_uri = oauth.callback_url(rt.settings.public_url)
    try:
        response = await oauth.exchange_code(
            rt.client, integration, login_url, code, redirect_uri, session.code_verifier
        )
    except SalesforceError as error:
        return Refusal(error.error, error.error_description, error.http_status)
    except Throttled:
        return Refusal("throttled", "TOKENWORKER_RATE_LIMIT allowed no call; try again")
    at_login = replace(integration, login_url=login_url)
    try:
        saved = await _save(rt, session, integration, response)
    except Exception:
        await _revoke(rt, at_login, response.refresh_token)  # stored nothing: give it back
        raise
    if isinstance(saved, Refusal):
        await _revoke(rt, at_login, response.refresh_token)
        return saved
    conn, existing, learned = saved
    await _sessions(rt).finish(session, SessionStatus.CONNECTED)
    if not learned:
        conn = await rt.refresher.learn_expiry(conn, integration)
    await _stored(rt, session, integration, existing, conn, oauth.identity(conn.identity_url))
    return None


def _unusable(response: TokenResponse, integration: Integration) -> Refusal | None:
    if response.refresh_token is None:
        return Refusal(
            "no_refresh_token",
            "Salesforce issued no refresh token: the integration's scopes and the connected "
            "app must include refresh_token (or offline_access)",
        )
    if response.instance_url is None:
        return Refusal("invalid_instance_url", "the token response has no instance_url")
    problem = hosts.instance_url_problem(response.instance_url, integration.login_url)
    return Refusal("invalid_instance_url", problem) if problem else None


async def _save(
    rt: Runtime, session: ConnectSession, integration: Integration, response: TokenResponse
) -> tuple[Connection, Connection | None, bool] | Refusal:
    """(saved record, the record it replaced, whether its expiry is known), or the refusal:
    nothing is saved then."""
    refusal = _unusable(response, integration)
    if refusal is not None:
        return refusal
    who = oauth.identity(response.identity_url)
    for _ in range(SAVE_ATTEMPTS):
        existing = await rt.store.get_connection(session.connection_id)
        refusal = _conflicting(existing, session, who)
        if refusal is not None:
            return refusal
        applied = apply_refresh(
            _base(existing, session, who, response),
            integration,
            response,
            rt.refresher.clock(),
            rt.refresher.timing,
            rt.refresher.rng,
        )
        if applied.problem is not None:
            return Refusal(applied.problem.error, applied.problem.error_description)
        try:
            saved = await rt.store.save_connection(
                applied.connection, applied.next_check_at, mark=True
            )
        except ConflictError:
            continue  # a worker or another callback wrote it meanwhile: decide again
        return saved, existing, applied.expiry is not None
    return Refusal("conflict", "the connection kept changing while it was stored; try again")


def _conflicting(
    existing: Connection | None, session: ConnectSession, who: oauth.Identity | None
) -> Refusal | None:
    """A reconnect must stay in its org and integration, unless the session was forced."""
    if existing is None or session.force:
        return None
    if existing.integration != session.integration:
        return Refusal(
            "integration_mismatch",
            f"connection {existing.id!r} belongs to integration {existing.integration!r}",
        )
    before = oauth.identity(existing.identity_url)
    if before is not None and who is not None and not before.same_org(who):
        return Refusal(
            "org_mismatch",
            f"connection {existing.id!r} is org {before.org_id}; this authorization is org "
            f"{who.org_id} (create the session with force to replace it)",
        )
    return None


def _base(
    existing: Connection | None,
    session: ConnectSession,
    who: oauth.Identity | None,
    response: TokenResponse,
) -> Connection:
    """The record the token response is applied to: the existing one (a reconnect keeps its
    id, history and learned lifetime, unless the org changed) or a new one."""
    if existing is None:
        assert response.refresh_token is not None
        return Connection(
            id=session.connection_id,
            integration=session.integration,
            refresh_token=response.refresh_token,
        )
    before = oauth.identity(existing.identity_url)
    same_org = before is None or who is None or before.same_org(who)
    return existing.evolve(
        integration=session.integration, lifetime=existing.lifetime if same_org else None
    )


async def _stored(
    rt: Runtime,
    session: ConnectSession,
    integration: Integration,
    existing: Connection | None,
    saved: Connection,
    who: oauth.Identity | None,
) -> None:
    fields: dict[str, Any] = {
        "session_id": session.id,
        "instance_url": saved.instance_url,
        "org_id": who.org_id if who else None,
        "user_id": who.user_id if who else None,
        "expires_at": saved.expires_at,
        "expiry_source": saved.expiry_source.value if saved.expiry_source else None,
    }
    if existing is None:
        await rt.sink.emit(events.CONNECTION_CREATED, saved, integration, **fields)
    else:
        before = oauth.identity(existing.identity_url)
        changed = before is not None and who is not None and not before.same_org(who)
        await rt.sink.emit(
            events.CONNECTION_RECONNECTED,
            saved,
            integration,
            previous_status=existing.status.value,
            org_changed=changed or None,
            **fields,
        )
        if existing.refresh_token != saved.refresh_token:
            # The replaced grant is an approval Salesforce still counts: give it back.
            await _revoke(rt, integration, existing.refresh_token)
    if who is not None:
        await _warn_same_user(rt, integration, saved, who)


async def _warn_same_user(
    rt: Runtime, integration: Integration, saved: Connection, who: oauth.Identity
) -> None:
    """One Salesforce user, one app, several connection ids: each holds an approval, and
    Salesforce silently revokes the oldest beyond five. Say so while it can be fixed."""
    key = rt.store.keys.connect_identity(integration.name, who.key())
    await rt.redis.sadd(key, saved.id)
    members: set[bytes] = await rt.redis.smembers(key)  # type: ignore[assignment]
    others = sorted(m.decode() for m in members if m.decode() != saved.id)
    duplicates, stale = [], []
    for other_id, other in zip(others, await rt.store.read_connections(others), strict=True):
        if isinstance(other, StoreError):
            continue
        if other is not None and _same_user(other, integration, who):
            duplicates.append(other_id)
        else:
            stale.append(other_id)
    if stale:
        await rt.redis.srem(key, *stale)
    if duplicates:
        await rt.sink.emit(
            events.DUPLICATE_USER,
            saved,
            integration,
            org_id=who.org_id,
            user_id=who.user_id,
            other_connection_ids=duplicates,
            approvals=len(duplicates) + 1,
            error_description=(
                f"this Salesforce user also approved this app for {len(duplicates)} other "
                f"connection(s); Salesforce keeps at most {APPROVALS_PER_USER} approvals per "
                "user and app and silently revokes the oldest"
            ),
        )


def _same_user(conn: Connection, integration: Integration, who: oauth.Identity) -> bool:
    other = oauth.identity(conn.identity_url)
    return (
        conn.integration == integration.name
        and conn.status is not ConnectionStatus.REAUTH_REQUIRED
        and other is not None
        and other.key() == who.key()
    )


async def _revoke(rt: Runtime, integration: Integration, token: str | None) -> None:
    if token is None:
        return
    try:
        await rt.client.revoke(integration, token)
    except (SalesforceError, Throttled) as error:
        log.warning("connect.revoke_failed", integration=integration.name, problem=str(error))


def _sessions(rt: Runtime) -> Sessions:
    return Sessions(rt.redis, rt.store.cipher, rt.store.keys)
