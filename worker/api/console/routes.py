"""The console's routes (see the package docstring for the list)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from worker.api import events as api_events
from worker.api.console import guard, html, listing
from worker.api.console import integrations as console_integrations
from worker.api.inputs import path_id
from worker.domain.outcomes import Outcome
from worker.engine import events
from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError, SalesforceUnavailable, TokenworkerError
from worker.service import checks, management
from worker.service import connections as connection_service
from worker.service.status import status as fleet_status
from worker.store.apikeys import Scope, digest
from worker.store.console_sessions import ConsoleSession
from worker.store.fleet_index import Query
from worker.store.keys import check_id

LIVE_EVENTS = 100
MAX_POLL_IDS = 100
RECENT_EVENTS = 50
CONNECTION_EVENTS_SCAN = 2000  # newest events searched for one connection's story
ROW_FIELDS = ("id", "integration", "status", "expires_at", "next_check_at", "last_refresh_at",
              "last_error")  # fmt: skip
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
STATIC = {p.name: p.read_bytes() for p in STATIC_DIR.iterdir() if p.suffix in STATIC_TYPES}
EVENT_NAMES = sorted(
    value
    for name, value in vars(events).items()
    if name.isupper() and isinstance(value, str) and "." in value and " " not in value
)


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


_page = html.page


def _can_act(session: ConsoleSession) -> bool:
    return session.scope.allows(Scope.ADMIN)


# -- signing in and out ----------------------------------------------------------------------


async def sign_in_form(request: Request) -> Response:
    if await guard.current(request) is not None:
        return guard.secure(RedirectResponse("/console", status_code=303))
    target = guard.safe_next(request.query_params.get("next"))
    return guard.secure(_page("Sign in", html.sign_in(None, target), None))


async def sign_in(request: Request) -> Response:
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin not in (own, "null"):
        return guard.refuse(request, 403, "cross_origin", "Sign in from the console's own page.")
    fields = await guard.form(request)
    target = guard.safe_next(fields.get("next"))
    key_text = fields.get("api_key", "").strip()
    key = await request.app.state.api_keys.lookup(key_text) if key_text else None
    if key is None:
        problem = "That API key is not valid (revoked, mistyped, or never created)."
        return guard.secure(_page("Sign in", html.sign_in(problem, target), None, status=401))
    session_id, _ = await guard.sessions(request).create(key, digest(key_text))
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        guard.cookie_name(request),
        session_id,
        max_age=guard.sessions(request).ttl,
        path="/",
        httponly=True,
        secure=guard.https(request),
        samesite="strict",
    )
    return guard.secure(response)


async def sign_out(request: Request, session: ConsoleSession) -> Response:
    await guard.sessions(request).delete(request.cookies.get(guard.cookie_name(request)))
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(guard.cookie_name(request), path="/")
    return response


# -- pages ----------------------------------------------------------------------------------


async def overview(request: Request, session: ConsoleSession) -> Response:
    rt = _rt(request)
    fleet = (await fleet_status(rt)).as_dict()
    recent = await events.read_events(rt.redis, rt.store.keys, RECENT_EVENTS)
    counts = fleet["by_status"]
    cards = "".join(
        f'<div class="card status-{s}"><span class="n" data-testid="count-{s}">'
        f'{counts.get(s, 0)}</span><span class="label">{html.STATUS_LABELS[s]}</span></div>'
        for s in html.STATUSES
    )
    cards += (
        f'<div class="card"><span class="n" data-testid="count-connections">'
        f'{fleet["connections"]}</span><span class="label">Connections</span></div>'
    )
    if fleet["unreadable"]:
        cards += (
            f'<div class="card status-failing"><span class="n" data-testid="count-unreadable">'
            f'{fleet["unreadable"]}</span><span class="label">Unreadable</span></div>'
        )
    body = (
        '<h1>Overview</h1><section class="cards" aria-label="Connections by status">'
        f"{cards}</section>"
        "<section><h2>Integrations</h2>"
        f"{console_integrations.table(fleet['integrations'], session, False)}</section>"
        '<div class="columns">'
        f"{_backlog(fleet)}{_processes(fleet)}</div>"
        f"{html.event_feed(recent, EVENT_NAMES, after=recent[-1][0] if recent else None)}"
    )
    return _page("Overview", body, session, "overview")


def _backlog(fleet: dict[str, Any]) -> str:
    oldest = fleet["oldest_due_at"]
    return (
        '<section><h2>Due backlog</h2><dl class="facts">'
        f'<dt>Due now</dt><dd data-testid="due-now">{fleet["due_now"]}</dd>'
        f'<dt>Overdue</dt><dd data-testid="overdue">{fleet["overdue"]}</dd>'
        f"<dt>Oldest due</dt><dd>{html.when(oldest)}</dd>"
        f"<dt>Scheduled</dt><dd>{fleet['scheduled']}</dd>"
        f"<dt>Next due</dt><dd>{html.when(fleet['next_due_at'])}</dd>"
        f"<dt>Last sweep</dt><dd>{html.when(fleet['last_sweep_at'])}</dd></dl></section>"
    )


def _processes(fleet: dict[str, Any]) -> str:
    workers = (
        "".join(
            f"<li><code>{html.esc(w['worker'])}</code> consumed {html.when(w['last_consumed_at'])}"
            "</li>"
            for w in fleet["workers"]
        )
        or '<li class="none">No worker heard from.</li>'
    )
    beat = fleet["beat"]
    leader = (
        f"<code>{html.esc(beat['leader'])}</code>"
        if beat["leader"]
        else '<span class="error">none</span>'
    )
    return (
        f'<section><h2>Processes</h2><ul class="workers">{workers}</ul>'
        f'<dl class="facts"><dt>Beat leader</dt><dd data-testid="beat-leader">{leader}</dd>'
        "</dl></section>"
    )


async def connections(request: Request, session: ConsoleSession) -> Response:
    rt = _rt(request)
    problem = ""
    try:
        query = listing.query_of(request)
    except InputError as error:
        query = Query()
        problem = f'<p class="error" role="alert">{html.esc(error)}</p>'
    query, note = listing.served(query)
    problem += note
    found = await listing.listing(rt, query)
    names = await listing.integration_names(rt)
    body = listing.page_body(found, query, problem, names, session, _can_act(session))
    return _page("Connections", body, session, "connections")


async def live(request: Request, session: ConsoleSession) -> Response:
    """The live feed alone, alerts (failures) shown first by the filter's default."""
    rt = _rt(request)
    recent = await events.read_events(rt.redis, rt.store.keys, LIVE_EVENTS)
    body = "<h1>Live failures</h1>" + html.event_feed(
        recent,
        EVENT_NAMES,
        after=recent[-1][0] if recent else None,
        alerts_only=True,
        heading=None,
    )
    return _page("Live failures", body, session, "events")


async def connection(request: Request, session: ConsoleSession) -> Response:
    rt = _rt(request)
    cid = path_id(request)
    try:
        shown = (await connection_service.show(rt, cid)).as_dict()
    except NotFoundError:
        body = (
            f"<h1>No connection <code>{html.esc(cid)}</code></h1>"
            '<p><a href="/console/connections">All connections</a></p>'
        )
        return _page("Not found", body, session, "connections", status=404)
    rows = await events.read_events(rt.redis, rt.store.keys, CONNECTION_EVENTS_SCAN)
    mine = [(rid, ev) for rid, ev in rows if ev.get("connection_id") == cid][-RECENT_EVENTS:]
    times = {"issued_at", "expires_at", "last_check_at", "last_refresh_at", "failing_since",
             "escalated_at", "next_check_at"}  # fmt: skip
    facts = []
    for name, value in shown.items():
        if name in ("id", "last_error"):
            continue
        if name in times:
            shown_value = html.when(value)
        elif name == "status":
            shown_value = html.status_badge(str(value))
        else:
            shown_value = html.esc(value) if value is not None else '<span class="none">—</span>'
        facts.append(
            f'<dt>{html.esc(name)}</dt><dd data-field="{html.esc(name)}">{shown_value}</dd>'
        )
    after = rows[-1][0] if rows else None
    body = (
        f'<article class="connection" data-connection-id="{html.esc(cid)}" '
        f'data-status="{html.esc(shown["status"])}">'
        '<p><a href="/console/connections">Connections</a> /</p>'
        f"<h1><code>{html.esc(cid)}</code></h1>"
        f"{html.buttons(cid, session, _can_act(session))}"
        f'<h2>Last error</h2><p data-field="last_error">{html.last_error(shown["last_error"])}</p>'
        f'<dl class="facts">{"".join(facts)}</dl></article>'
        f"{html.event_feed(mine, EVENT_NAMES, connection_id=cid, after=after)}"
    )
    return _page(cid, body, session, "connections")


# -- JSON for the script ---------------------------------------------------------------------


def _row(shown: dict[str, Any]) -> dict[str, Any]:
    return {name: shown.get(name) for name in ROW_FIELDS}


async def _shown_row(rt: Runtime, cid: str) -> dict[str, Any] | None:
    try:
        return _row((await connection_service.show(rt, cid)).as_dict())
    except (NotFoundError, connection_service.UnreadableConnection):
        return None


async def rows_json(request: Request, session: ConsoleSession) -> Response:
    raw = request.query_params.get("ids", "")
    try:
        ids = [check_id("ids", part) for part in raw.split(",") if part][:MAX_POLL_IDS]
    except InputError as error:
        return JSONResponse({"error": "invalid_request", "message": str(error)}, 422)
    rt = _rt(request)
    found = await asyncio.gather(*(_shown_row(rt, cid) for cid in ids))
    return JSONResponse(
        {
            "items": [r for r in found if r is not None],
            "missing": [cid for cid, r in zip(ids, found, strict=True) if r is None],
        }
    )


async def status_json(request: Request, session: ConsoleSession) -> Response:
    fleet = (await fleet_status(_rt(request))).as_dict()
    return JSONResponse({"by_status": fleet["by_status"], "connections": fleet["connections"]})


async def event_stream(request: Request, session: ConsoleSession) -> Response:
    after = request.headers.get("last-event-id") or request.query_params.get("after") or None
    if after is not None and not api_events.STREAM_ID.match(after):
        after = None
    return api_events.sse_response(request, after, named=False)


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    content = STATIC.get(name)
    if content is None:
        return guard.refuse(request, 404, "not_found", "No such file.")
    media = STATIC_TYPES[Path(name).suffix]
    return guard.secure(Response(content, media_type=media, headers={"Cache-Control": "no-cache"}))


# -- actions ---------------------------------------------------------------------------------


def action(name: str) -> guard.Handler:
    async def act(request: Request, session: ConsoleSession) -> Response:
        rt = _rt(request)
        cid = path_id(request)
        status_code, outcome, message = 200, "ok", ""
        try:
            if name == "remove":
                removal = await management.remove_connection(rt, cid)
                outcome, message = "removed", f"removed ({removal.revocation.value})"
            else:
                if name == "check":
                    result = await checks.check(checks.InlineDispatch(rt), cid, force=False)
                else:
                    result = await management.refresh_connection(rt, cid)
                assert not isinstance(result, checks.Queued)
                if result.outcome is Outcome.NOT_FOUND:
                    raise NotFoundError(f"no connection {cid!r}")
                outcome = result.outcome.value
                error = result.error or {}
                message = outcome + (
                    f": {error.get('error')} {error.get('error_description') or ''}".rstrip()
                    if error
                    else ""
                )
                if not result.outcome.ok:
                    status_code = 409 if outcome == "reauth_required" else 502
        except NotFoundError:
            status_code, outcome, message = 404, "not_found", f"no connection {cid}"
        except SalesforceUnavailable as error:
            status_code, outcome, message = 503, "salesforce_unavailable", str(error)
        except TokenworkerError as error:
            status_code, outcome, message = 500, "error", str(error)
        await rt.sink.emit(
            events.CONSOLE_ACTION,
            connection_id=cid,
            action=name,
            actor=session.name,
            outcome=outcome,
        )
        row = await _shown_row(rt, cid) if outcome not in ("removed", "not_found") else None
        if guard.wants_json(request) or request.headers.get("x-csrf-token"):
            return JSONResponse(
                {
                    "ok": status_code == 200,
                    "action": name,
                    "outcome": outcome,
                    "message": message,
                    "connection": row,
                    "removed": outcome == "removed",
                },
                status_code=status_code,
            )
        target = "/console/connections" if outcome == "removed" else html.connection_url(cid)
        return RedirectResponse(target, status_code=303)

    return act


def routes() -> list[BaseRoute]:
    """The console's pages (not part of the API: left out of /openapi.json)."""
    found: list[BaseRoute] = [
        Route("/console", guard.page(overview), methods=["GET"]),
        Route("/console/", guard.page(overview), methods=["GET"]),
        Route("/console/sign-in", sign_in_form, methods=["GET"]),
        Route("/console/sign-in", sign_in, methods=["POST"]),
        Route("/console/sign-out", guard.change(sign_out, Scope.READ), methods=["POST"]),
        Route("/console/connections", guard.page(connections), methods=["GET"]),
        Route("/console/connections/{id}", guard.page(connection), methods=["GET"]),
        *(
            Route(
                f"/console/connections/{{id}}/{name}", guard.change(action(name)), methods=["POST"]
            )
            for name in html.ACTIONS
        ),
        Route("/console/integrations", guard.page(console_integrations.page), methods=["GET"]),
        Route(
            "/console/integrations/{name}/retest",
            guard.change(console_integrations.retest),
            methods=["POST"],
        ),
        Route(
            "/console/bulk/refresh",
            guard.change(console_integrations.bulk_refresh),
            methods=["POST"],
        ),
        Route("/console/bulk/{job}", guard.page(console_integrations.bulk_status), methods=["GET"]),
        Route("/console/events", guard.page(live), methods=["GET"]),
        Route("/console/api/connections", guard.page(rows_json), methods=["GET"]),
        Route("/console/api/status", guard.page(status_json), methods=["GET"]),
        Route("/console/events/stream", guard.page(event_stream), methods=["GET"]),
        Route("/console/static/{name}", static, methods=["GET"]),
    ]
    for route in found:
        assert isinstance(route, Route)
        route.include_in_schema = False
    return found
