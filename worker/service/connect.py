"""The connect flow: connect sessions, the browser's steps, and the OAuth callback.

    POST /connect-sessions  -> create_session    (host app: a session and its connect_url)
    GET  /connect/{id}      -> begin             (browser: to Salesforce, or the My Domain form)
    POST /connect/{id}      -> choose_domain     (browser: the My Domain it typed)
    GET  /oauth/callback    -> callback          (browser, from Salesforce: store, then land)
    GET  /connect-sessions/{id} -> session_status

Every step returns a `Landing`: where the browser goes next. Nothing here renders HTML. What
the callback stores, and the events it emits, are in `worker.service.connecting`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from config.redaction import redact_text
from config.urls import origin_of
from worker.domain.models import Integration
from worker.engine import events
from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError, StoreError
from worker.salesforce import hosts, oauth
from worker.service import connecting
from worker.store.keys import check_id
from worker.store.sessions import EXPIRED_NOW, WON, ConnectSession, Sessions, SessionStatus

log = structlog.get_logger("tokenworker.connect")

MAX_RETURN_TO = 2048


class InvalidField(InputError):
    """A request field the connect flow refuses; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class CreatedSession:
    id: str
    connect_url: str
    expires_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "connect_url": self.connect_url, "expires_at": self.expires_at}


@dataclass(frozen=True)
class SessionView:
    """Where a session stands, for the host application (no secret, no state)."""

    id: str
    status: SessionStatus
    connection_id: str
    integration: str
    expires_at: float
    error: str | None = None
    error_description: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "connection_id": self.connection_id,
            "integration": self.integration,
            "expires_at": self.expires_at,
        }
        if self.error:
            shown["error"] = self.error
            shown["error_description"] = self.error_description or ""
        return shown


@dataclass(frozen=True)
class Landing:
    """Where the browser goes next: `location` (a 302), or a page of `kind`
    ("ask_domain", "connected", "error")."""

    kind: str
    location: str | None = None
    connection_id: str | None = None
    error: str | None = None
    error_description: str | None = None
    session_id: str | None = None


def sessions_of(rt: Runtime) -> Sessions:
    return Sessions(rt.redis, rt.store.cipher, rt.store.keys)


def _now(rt: Runtime) -> float:
    return rt.refresher.clock()


# -- the host application's calls ---------------------------------------------------------


def check_return_to(return_to: str, allowed: tuple[str, ...]) -> str:
    """`return_to` when its origin is exactly one of `allowed`, else InvalidField."""
    if len(return_to) > MAX_RETURN_TO or any(ch.isspace() or ord(ch) < 32 for ch in return_to):
        raise InvalidField("return_to", "expected an absolute http(s) URL without spaces")
    origin = origin_of(return_to)
    if origin is None:
        raise InvalidField("return_to", "expected an absolute http(s) URL")
    if urlsplit(return_to).fragment or "#" in return_to:
        raise InvalidField("return_to", "must not carry a #fragment")
    if origin not in allowed:
        raise InvalidField(
            "return_to",
            f"origin {origin} is not in TOKENWORKER_ALLOWED_RETURN_ORIGINS",
        )
    return return_to


async def create_session(
    rt: Runtime,
    integration: str,
    connection_id: str,
    return_to: str | None = None,
    *,
    force: bool = False,
) -> CreatedSession:
    """A pending session for one connection id. `force` lets a reconnect change the org."""
    try:
        check_id("integration", integration)
        check_id("connection_id", connection_id)
    except InputError as error:
        field = "integration" if str(error).startswith("integration") else "connection_id"
        raise InvalidField(field, str(error).split(": ", 1)[1]) from None
    if await rt.store.get_integration(integration) is None:
        raise InvalidField("integration", f"no integration named {integration!r}")
    if return_to is not None:
        check_return_to(return_to, rt.settings.allowed_return_origins)
    session = await sessions_of(rt).create(
        integration,
        connection_id,
        return_to,
        oauth.new_verifier(),
        _now(rt),
        rt.settings.connect_session_ttl,
        force=force,
    )
    url = f"{rt.settings.public_url}/connect/{session.id}"
    return CreatedSession(session.id, url, session.expires_at)


async def session_status(rt: Runtime, session_id: str) -> SessionView:
    """Where a session stands; a pending one past its TTL is recorded as expired (and
    reported once, with `connection.connect_failed`) by the first caller who notices."""
    sessions = sessions_of(rt)
    session = await sessions.get(session_id)
    if session is None:
        raise NotFoundError(f"no connect session {session_id!r:.60}")
    seen = session.seen_status(_now(rt))
    if session.overdue(_now(rt)):
        await expire(rt, session)
        session = await sessions.get(session_id) or session
    error = session.error or ("session_expired" if seen is SessionStatus.EXPIRED else None)
    return SessionView(
        session.id,
        seen,
        session.connection_id,
        session.integration,
        session.expires_at,
        error,
        session.error_description,
    )


async def expire(rt: Runtime, session: ConnectSession) -> bool:
    """Record the expiry; the one caller that does emits the event. A session abandoned on
    Salesforce's own error page ends here: nobody ever comes back."""
    if not await sessions_of(rt).expire(session.id, _now(rt)):
        return False
    interrupted = session.status is SessionStatus.CONSUMED
    await connecting.failed_event(
        rt,
        session,
        "interrupted" if interrupted else "session_expired",
        "the callback did not finish"
        if interrupted
        else "the customer did not complete the authorization in time",
    )
    return True


async def expire_sessions(rt: Runtime, limit: int = 100) -> int:
    """The sweep: record and report every pending session past its TTL; how many.

    One bad session never stops the rest: a session that cannot be read (sealed under a key
    since dropped from TOKENWORKER_ENCRYPTION_KEYS) is expired without its event, and logged,
    so it cannot sit first in the due list and fail every sweep after it."""
    sessions = sessions_of(rt)
    count = 0
    for session_id in await sessions.due(_now(rt), limit):
        try:
            session = await sessions.get(session_id)
            if session is None:
                await sessions.drop_due(session_id)
            elif await expire(rt, session):
                count += 1
        except StoreError as error:
            log.error("connect_session.unreadable", session_id=session_id, error=str(error))
            await sessions.expire(session_id, _now(rt))
    return count


# -- the browser's steps -------------------------------------------------------------------


async def begin(rt: Runtime, session_id: str) -> Landing:
    """GET /connect/{id}: on to Salesforce's authorize page, or the My Domain form first."""
    found = await _live(rt, session_id)
    if isinstance(found, Landing):
        return found
    session, integration = found
    if integration.ask_domain and session.login_url is None:
        return Landing("ask_domain", session_id=session.id)
    return _to_salesforce(rt, session, integration, session.login_url or integration.login_url)


async def choose_domain(rt: Runtime, session_id: str, typed: str) -> Landing:
    """POST /connect/{id}: the My Domain the customer typed, validated against Salesforce's
    domains before anything goes there; a bad one shows the form again with the reason."""
    found = await _live(rt, session_id)
    if isinstance(found, Landing):
        return found
    session, integration = found
    if not integration.ask_domain:
        return Landing("ask_domain", session_id=session.id, error="domain_not_asked")
    try:
        login_url = hosts.my_domain_login_url(typed, integration.provider, integration.login_url)
    except InputError as error:
        return Landing(
            "ask_domain",
            session_id=session.id,
            error="invalid_domain",
            error_description=str(error),
        )
    if not await sessions_of(rt).choose_login(session.id, login_url, _now(rt)):
        return await _refused(rt, session)
    return _to_salesforce(rt, session, integration, login_url)


async def callback(rt: Runtime, params: Mapping[str, str]) -> Landing:
    """GET /oauth/callback: Salesforce sent the browser back with `code` or `error`."""
    session = await sessions_of(rt).by_state(params.get("state", ""))
    if session is None:
        await rt.sink.emit(
            events.CONNECT_FAILED,
            error="invalid_state",
            error_description="the callback's state matches no connect session",
        )
        return Landing("error", error="invalid_state", error_description="unknown or forged state")
    outcome = await sessions_of(rt).consume(session.id, _now(rt))
    if outcome == EXPIRED_NOW:
        await connecting.failed_event(rt, session, "session_expired", "the session expired")
        return land(session, "session_expired", "the connect session expired; start again")
    if outcome != WON:
        description = f"this connect session was already used ({outcome})"
        await connecting.failed_event(rt, session, "session_used", description)
        return land(session, "session_used", description)
    if params.get("error") or not params.get("code"):
        # Salesforce's own words (a denial is access_denied), as the browser carried them.
        denied = connecting.Refusal(
            _browser_text(params.get("error") or "invalid_request", 100),
            _browser_text(params.get("error_description") or "no code returned", 500),
        )
        await connecting.fail(rt, session, denied)
        return land(session, denied.error, denied.description)
    refusal = await connecting.complete(rt, session, params["code"][:2048])
    if refusal is not None:
        return land(session, refusal.error, refusal.description)
    return land(session)


def land(
    session: ConnectSession,
    error: str | None = None,
    description: str | None = None,
) -> Landing:
    """The end of the flow: back to return_to with the outcome, or a page."""
    fields = {"connection_id": session.connection_id}
    fields.update({"status": "error", "error": error} if error else {"status": "connected"})
    location = with_query(session.return_to, fields) if session.return_to else None
    kind = "error" if error else "connected"
    return Landing(kind, location, session.connection_id, error, description, session.id)


def with_query(url: str, fields: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *fields.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _live(rt: Runtime, session_id: str) -> tuple[ConnectSession, Integration] | Landing:
    session = await sessions_of(rt).get(session_id)
    if session is None:
        return Landing("error", error="unknown_session", error_description="no such connect link")
    live = session.status is SessionStatus.PENDING and session.expires_at > _now(rt)
    if not live:
        return await _refused(rt, session)
    integration = await rt.store.get_integration(session.integration)
    if integration is None:
        return land(session, "unknown_integration", "the integration was removed")
    return session, integration


async def _refused(rt: Runtime, session: ConnectSession) -> Landing:
    if session.seen_status(_now(rt)) is SessionStatus.EXPIRED:
        await expire(rt, session)
        return land(session, "session_expired", "the connect session expired; start again")
    return land(session, "session_used", "this connect link was already used")


def _to_salesforce(
    rt: Runtime, session: ConnectSession, integration: Integration, login_url: str
) -> Landing:
    url = oauth.authorize_url(
        integration,
        login_url,
        oauth.callback_url(rt.settings.public_url),
        session.state,
        session.code_verifier,
    )
    return Landing("redirect", url, session.connection_id, session_id=session.id)


def _browser_text(value: str, limit: int) -> str:
    """Text that came through the browser's query string: printable, short, redacted."""
    printable = "".join(ch for ch in value if ch.isprintable())
    return redact_text(printable[:limit])
