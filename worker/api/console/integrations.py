"""The console's integrations page, its re-test button and the bulk refresh.

    GET  /console/integrations                     status, login URL, introspection, counts
    POST /console/integrations/{name}/retest       admin + CSRF: check one of its connections
    POST /console/bulk/refresh                     admin + CSRF: `integration=NAME` (its failing
                                                   connections) or `ids=a,b,c` (a selection)
    GET  /console/bulk/{job}                       the job's progress, JSON (the page polls it)

The work goes through the service layer as the CLI's does: a re-test is `tokenworker check`
of one connection (a refresh when the integration is misconfigured: only a refresh proves
Salesforce takes the client again), a bulk refresh is `tokenworker refresh --integration NAME
--status failing --inline` or the checks of the chosen ids, run in this process. Progress is
kept in worker.store.console_jobs so any `api` process answers the poll.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from worker.api.console import guard, html
from worker.domain.models import Integration, IntegrationStatus
from worker.engine import events
from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError, TokenworkerError
from worker.service import checks
from worker.service.integrations import require
from worker.service.status import status as fleet_status
from worker.store.apikeys import Scope
from worker.store.console_jobs import ConsoleJobs
from worker.store.console_sessions import ConsoleSession
from worker.store.fleet_index import FleetIndex, Query
from worker.store.keys import check_id

MAX_SELECTED = 500  # ids one bulk request may name
FLUSH_EVERY = 0.3  # seconds between progress writes while a job runs
FIXES = {
    "misconfigured": "Salesforce rejects this client id/secret: correct them on the connected "
    "app and with `tokenworker integrations add` (its connections are paused meanwhile).",
    "unavailable": "Token introspection is unavailable: expiry is assumed; allow "
    "introspection on the connected app, then re-test.",
}


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _jobs(request: Request) -> ConsoleJobs:
    return ConsoleJobs(_rt(request).redis, request.app.state.settings.key_prefix)


def table(items: list[dict[str, Any]], session: ConsoleSession, can_act: bool) -> str:
    heads = ["Integration", "Status", "Introspection", "Login URL", "Connections", "Error"]
    rows = [_row(item, session, can_act) for item in items]
    head = "".join(f'<th scope="col">{h}</th>' for h in heads + (["Actions"] if can_act else []))
    span = len(heads) + can_act
    empty = f'<tr><td colspan="{span}" class="none">No integration yet.</td></tr>'
    return (
        '<div class="scroll"><table data-testid="integrations">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows) or empty}</tbody></table></div>"
    )


def _row(item: dict[str, Any], session: ConsoleSession, can_act: bool) -> str:
    name = str(item["name"])
    counts = item["connections"]
    shown = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none"
    fixes = [FIXES[k] for k in (item["status"], item["introspection"]) if k in FIXES]
    fix = "".join(f'<p class="fix">{html.esc(f)}</p>' for f in fixes)
    link = html.link("/console/connections", {"integration": name})
    actions = ""
    if can_act:
        failing = int(counts.get("failing", 0))
        base = "/console/integrations/" + html.esc(name)
        actions = (
            f'<td><form method="post" action="{base}/retest" class="action" data-action="retest">'
            f'{html.csrf_field(session)}<button type="submit">Re-test</button></form>'
            f'<form method="post" action="/console/bulk/refresh" class="bulk">'
            f'{html.csrf_field(session)}<input type="hidden" name="integration" '
            f'value="{html.esc(name)}"><button type="submit"{"" if failing else " disabled"}>'
            f"Refresh {failing} failing</button></form>"
            '<span class="result" data-field="result" role="status" aria-live="polite"></span>'
            "</td>"
        )
    return (
        f'<tr data-integration="{html.esc(name)}" data-connection-id="" '
        f'data-status="{html.esc(item["status"])}">'
        f'<th scope="row"><a href="{link}">{html.esc(name)}</a></th>'
        f'<td data-field="integration_status">{html.status_badge(item["status"])}{fix}</td>'
        f'<td data-field="introspection">{html.esc(item["introspection"])}</td>'
        f"<td><code>{html.esc(item['login_url'])}</code></td>"
        f"<td>{html.esc(shown)}</td>"
        f"<td>{html.last_error(item.get('last_error'))}</td>{actions}</tr>"
    )


async def page(request: Request, session: ConsoleSession) -> Response:
    fleet = (await fleet_status(_rt(request))).as_dict()
    can_act = session.scope.allows(Scope.ADMIN)
    body = f"<h1>Integrations</h1>{table(fleet['integrations'], session, can_act)}"
    if not can_act:
        return html.page("Integrations", body, session, "integrations")
    body += (
        '<p class="note">Re-test checks one of its connections now (a refresh when the '
        "integration is misconfigured). Refresh failing refreshes every failing connection of "
        "it, with its progress shown here.</p>"
        '<div id="bulk-progress" data-testid="bulk-progress" role="status" aria-live="polite">'
        "</div>"
    )
    return html.page("Integrations", body, session, "integrations")


async def _sample(rt: Runtime, name: str) -> str | None:
    """A connection to re-test with: a failing one first, else the first active one."""
    index = FleetIndex(rt.redis, rt.store.keys)
    await index.ready(2.0)
    for status in ("failing", "active"):
        found = await index.page(Query(status=status, integration=name), 1)
        if found.ids:
            return found.ids[0]
    return None


async def retest(request: Request, session: ConsoleSession) -> Response:
    rt = _rt(request)
    name = request.path_params["name"]
    try:
        check_id("integration", name)
        await require(rt, name)
    except (InputError, NotFoundError) as error:
        return guard.refuse(request, 404, "not_found", str(error))
    rt.refresher.forget_integration(name)  # the verdict is re-read, not cached
    integration = await rt.store.get_integration(name)
    cid = await _sample(rt, name)
    outcome, message = "no_connection", "no active or failing connection to test with"
    if cid is not None and integration is not None:
        force = integration.status is IntegrationStatus.MISCONFIGURED
        result = await checks.check(checks.InlineDispatch(rt), cid, force=force)
        assert not isinstance(result, checks.Queued)
        outcome = result.outcome.value
        said = result.error or {}
        detail = f": {said.get('error')} {said.get('error_description') or ''}" if said else ""
        message = f"{'refresh' if force else 'check'} of {cid}: {outcome}{detail}".rstrip()
    rt.refresher.forget_integration(name)
    after = await rt.store.get_integration(name)
    await rt.sink.emit(events.CONSOLE_ACTION, None, after, connection_id=cid, action="retest",
                       actor=session.name, outcome=outcome)  # fmt: skip
    public = after.public() if after else {}
    return JSONResponse(
        {"ok": after is not None and after.status is IntegrationStatus.ACTIVE,
         "action": "retest", "outcome": outcome, "message": message,
         "integration": {k: public.get(k) for k in ("name", "status", "introspection")}}
    )  # fmt: skip


# -- bulk refresh ---------------------------------------------------------------------------


def _selection(fields: dict[str, str]) -> tuple[str | None, list[str]]:
    integration = fields.get("integration", "").strip() or None
    ids = [p for p in fields.get("ids", "").split(",") if p]
    if (integration is None) == (not ids):
        raise InputError("bulk refresh: give integration=NAME or ids=a,b,c (one of them)")
    if len(ids) > MAX_SELECTED:
        raise InputError(f"ids: at most {MAX_SELECTED} at once, got {len(ids)}")
    if integration is not None:
        check_id("integration", integration)
    return integration, [check_id("ids", cid) for cid in ids]


async def bulk_refresh(request: Request, session: ConsoleSession) -> Response:
    rt = _rt(request)
    try:
        integration, ids = _selection(await guard.form(request))
        if integration is not None:
            await require(rt, integration)
    except (InputError, NotFoundError) as error:
        return JSONResponse({"error": "invalid_request", "message": str(error)}, 422)
    jobs = _jobs(request)
    job_id = jobs.new_id()
    target = f"failing connections of {integration}" if integration else f"{len(ids)} selected"
    job: dict[str, Any] = {"id": job_id, "action": "bulk_refresh", "actor": session.name,
                           "target": target, "total": len(ids) if ids else None, "done": 0,
                           "outcomes": {}, "state": "running"}  # fmt: skip
    await jobs.put(job_id, job)
    owner = await rt.store.get_integration(integration) if integration else None
    await rt.sink.emit(events.CONSOLE_ACTION, None, owner, action="bulk_refresh",
                       actor=session.name, outcome="started", target=target)  # fmt: skip
    running: set[asyncio.Task[None]] | None = getattr(request.app.state, "bulk_tasks", None)
    if running is None:
        running = request.app.state.bulk_tasks = set()
    task = asyncio.create_task(_run(rt, jobs, job, integration, ids, owner))
    running.add(task)  # kept until done: a task nobody references may be collected
    task.add_done_callback(running.discard)
    return JSONResponse({"job": job_id, "target": target}, status_code=202)


async def _run(
    rt: Runtime,
    jobs: ConsoleJobs,
    job: dict[str, Any],
    integration: str | None,
    ids: list[str],
    owner: Integration | None,
) -> None:
    def progress(phase: str, done: int, total: int | None) -> None:
        job["done"], job["total"] = done, total if total is not None else job["total"]

    async def flush() -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            await jobs.put(job["id"], job)

    flusher = asyncio.create_task(flush())
    dispatch = checks.InlineDispatch(rt)
    try:
        if integration is not None:
            done = await checks.refresh_integration(rt, dispatch, integration, "failing", progress)
            tally = done.tally
        else:
            tally = await dispatch.check_many(ids, force=True, on_progress=progress)
        job["outcomes"], job["state"] = dict(tally.outcomes), "done"
    except TokenworkerError as error:
        job["state"], job["message"] = "failed", str(error)
    finally:
        flusher.cancel()
        await jobs.put(job["id"], job)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(job["outcomes"].items())) or job["state"]
    await rt.sink.emit(events.CONSOLE_ACTION, None, owner, action="bulk_refresh",
                       actor=job["actor"], outcome=job["state"], target=job["target"],
                       summary=summary)  # fmt: skip


async def bulk_status(request: Request, session: ConsoleSession) -> Response:
    job = await _jobs(request).get(request.path_params["job"])
    if job is None:
        return JSONResponse({"error": "not_found", "message": "no such job (or expired)"}, 404)
    return JSONResponse(job)
