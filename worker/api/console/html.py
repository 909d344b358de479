"""The console's HTML, as Python functions: every value goes through `esc` (html.escape with
quotes), markup is built only from constants. No inline script or style (the CSP forbids both):
behaviour is in static/console.js, looks in static/console.css.

Stable hooks (DESIGN.md "Ops console"): `count-<status>`, `connections-table` with rows
`data-connection-id`/`data-status`, buttons Check/Refresh/Remove, `event-feed` items with
`data-event`/`data-connection-id`, the field `api_key`, the `Sign out` button.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from starlette.responses import HTMLResponse

from worker.engine.events import ALERTS, iso
from worker.store.console_sessions import ConsoleSession

CURRENT = ' aria-current="page"'
ACTIONS = ("check", "refresh", "remove")
STATUSES = ("active", "failing", "reauth_required")
EVENT_DETAILS = ("integration", "action", "actor", "outcome", "target", "summary", "error",
                 "error_description")  # fmt: skip
STATUS_LABELS = {"active": "Active", "failing": "Failing", "reauth_required": "Re-auth required"}


def esc(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def relative(ts: float, now: float | None = None) -> str:
    """'in 12 min', '3 h ago', 'now'."""
    delta = ts - (time.time() if now is None else now)
    seconds = abs(delta)
    if seconds < 5:
        return "now"
    if seconds < 60:
        amount = f"{int(seconds)} s"
    elif seconds < 3600:
        amount = f"{int(seconds // 60)} min"
    elif seconds < 86400 * 2:
        amount = f"{int(seconds // 3600)} h"
    else:
        amount = f"{int(seconds // 86400)} d"
    return f"in {amount}" if delta > 0 else f"{amount} ago"


def when(ts: float | None, now: float | None = None) -> str:
    """A relative time with the exact ISO time on hover (and for the script to redo)."""
    if ts is None:
        return '<span class="none">—</span>'
    exact = iso(ts)
    return (
        f'<time datetime="{exact}" title="{exact}" data-ts="{ts!r}">{esc(relative(ts, now))}</time>'
    )


def link(path: str, params: Mapping[str, str | None] | None = None) -> str:
    kept = {k: v for k, v in (params or {}).items() if v}
    return esc(path + ("?" + urlencode(kept) if kept else ""))


def connection_url(connection_id: str) -> str:
    return "/console/connections/" + quote(connection_id, safe="")


def layout(
    title: str, body: str, session: ConsoleSession | None, current: str = "", status: int = 200
) -> str:
    header = ""
    meta = ""
    if session is not None:
        meta = f'<meta name="csrf-token" content="{esc(session.csrf)}">'
        nav = "".join(
            f'<a href="{href}"{CURRENT if name == current else ""}>{label}</a>'
            for name, href, label in (
                ("overview", "/console", "Overview"),
                ("connections", "/console/connections", "Connections"),
                ("integrations", "/console/integrations", "Integrations"),
                ("events", "/console/events", "Live failures"),
            )
        )
        header = (
            '<header class="top"><span class="brand">tokenworker</span>'
            f'<nav aria-label="Console">{nav}</nav>'
            f'<span class="who">{esc(session.name)} <span class="scope">'
            f"{esc(session.scope.value)}</span></span>"
            '<form method="post" action="/console/sign-out" class="signout">'
            f"{csrf_field(session)}"
            '<button type="submit">Sign out</button></form></header>'
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{meta}<title>{esc(title)} · tokenworker console</title>"
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script></head>'
        f"<body>{header}<main>{body}</main></body></html>"
    )


def page(
    title: str, body: str, session: ConsoleSession | None, current: str = "", status: int = 200
) -> HTMLResponse:
    return HTMLResponse(layout(title, body, session, current), status_code=status)


def csrf_field(session: ConsoleSession) -> str:
    return f'<input type="hidden" name="csrf_token" value="{esc(session.csrf)}">'


def sign_in(problem: str | None, next_path: str) -> str:
    alert = f'<p class="error" role="alert">{esc(problem)}</p>' if problem else ""
    return (
        '<section class="signin"><h1>tokenworker console</h1>'
        "<p>Sign in with an API key (<code>tokenworker api-keys create</code>). An "
        "<code>admin</code> key may act; a <code>read</code> key sees the same pages.</p>"
        f"{alert}"
        '<form method="post" action="/console/sign-in">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label for="api_key">API key</label>'
        '<input id="api_key" name="api_key" type="password" autocomplete="off" required '
        'spellcheck="false" autocapitalize="none" maxlength="128">'
        '<button type="submit">Sign in</button></form></section>'
    )


def status_badge(status: str) -> str:
    return f'<span class="badge status-{esc(status)}">{esc(status)}</span>'


def last_error(error: Mapping[str, Any] | None) -> str:
    if not error:
        return '<span class="none">—</span>'
    code = esc(error.get("error"))
    described = error.get("error_description")
    text = f"<code>{code}</code>" + (f" {esc(described)}" if described else "")
    at = error.get("at")
    return text + (f" <small>{when(at)}</small>" if isinstance(at, (int, float)) else "")


def buttons(connection_id: str, session: ConsoleSession, can_act: bool) -> str:
    if not can_act:
        return ""
    forms = []
    base = connection_url(connection_id)
    for action in ACTIONS:
        confirm = (
            f' data-confirm="Remove {esc(connection_id)}? This revokes its grant at Salesforce '
            'and deletes it."'
            if action == "remove"
            else ""
        )
        forms.append(
            f'<form method="post" action="{base}/{action}" class="action" '
            f'data-action="{action}"{confirm}>{csrf_field(session)}'
            f'<button type="submit" class="btn-{action}">{action.capitalize()}</button></form>'
        )
    return (
        '<div class="actions">'
        + "".join(forms)
        + '<span class="result" data-field="result" role="status" aria-live="polite"></span></div>'
    )


def bulk_bar(session: ConsoleSession) -> str:
    """Refresh the rows ticked in the table (console.js posts their ids, shows progress)."""
    return (
        '<form method="post" action="/console/bulk/refresh" class="bulk" data-selection>'
        f'{csrf_field(session)}<input type="hidden" name="ids" value="">'
        '<button type="submit" disabled>Refresh selected</button> '
        '<span id="bulk-progress" data-testid="bulk-progress" role="status" aria-live="polite">'
        "</span></form>"
    )


def row(item: Mapping[str, Any], session: ConsoleSession, can_act: bool) -> str:
    cid = str(item["id"])
    pick = (
        f'<td><input type="checkbox" class="pick" value="{esc(cid)}" '
        f'aria-label="Select {esc(cid)}"></td>'
        if can_act
        else ""
    )
    return (
        f'<tr data-connection-id="{esc(cid)}" data-status="{esc(item["status"])}">{pick}'
        f'<th scope="row"><a href="{esc(connection_url(cid))}">{esc(cid)}</a></th>'
        f"<td>{esc(item['integration'])}</td>"
        f'<td data-field="status">{status_badge(item["status"])}</td>'
        f'<td data-field="expires_at">{when(item.get("expires_at"))}</td>'
        f'<td data-field="next_check_at">{when(item.get("next_check_at"))}</td>'
        f'<td data-field="last_refresh_at">{when(item.get("last_refresh_at"))}</td>'
        f'<td data-field="last_error">{last_error(item.get("last_error"))}</td>'
        + (f"<td>{buttons(cid, session, can_act)}</td>" if can_act else "")
        + "</tr>"
    )


def _header(name: str, links: Mapping[str, str], sorted_by: Mapping[str, str]) -> str:
    aria = f' aria-sort="{sorted_by[name]}"' if name in sorted_by else ""
    arrow = {"ascending": " ▲", "descending": " ▼"}.get(sorted_by.get(name, ""), "")
    text = f'<a href="{links[name]}">{esc(name)}{arrow}</a>' if name in links else esc(name)
    return f'<th scope="col"{aria}>{text}</th>'


def connections_table(
    items: Sequence[Mapping[str, Any]],
    session: ConsoleSession,
    can_act: bool,
    links: Mapping[str, str] | None = None,
    sorted_by: Mapping[str, str] | None = None,
) -> str:
    names = ["Connection", "Integration", "Status", "Expires", "Next check", "Last refresh",
             "Last error"]  # fmt: skip
    head = "".join(_header(n, links or {}, sorted_by or {}) for n in names)
    if can_act:
        pick = '<input type="checkbox" class="pick-all" aria-label="Select every row">'
        head = f'<th scope="col">{pick}</th>{head}<th scope="col">Actions</th>'
    body = "".join(row(item, session, can_act) for item in items)
    span = len(names) + 2 * can_act
    empty = f'<tr><td colspan="{span}" class="none">No connection matches.</td></tr>'
    empty = empty if not items else ""
    return (
        '<div class="scroll"><table data-testid="connections-table" id="connections-table">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}{empty}</tbody></table></div>"
    )


def event_item(row_id: str, event: Mapping[str, Any]) -> str:
    name = str(event.get("event", ""))
    cid = str(event.get("connection_id") or "")
    who = f' <a href="{esc(connection_url(cid))}">{esc(cid)}</a>' if cid else ""
    details = " ".join(
        f'<span class="k">{esc(k)}</span>=<span class="v">{esc(event[k])}</span>'
        for k in EVENT_DETAILS
        if event.get(k) not in (None, "")
    )
    stamp = when(_epoch(event.get("ts")))
    return (
        f'<li data-event="{esc(name)}" data-connection-id="{esc(cid)}" data-id="{esc(row_id)}" '
        f'class="ev{" alert" if name in ALERTS else ""}">{stamp} <code>{esc(name)}</code>'
        f"{who} {details}</li>"
    )


def _epoch(ts: object) -> float | None:
    """An event's ISO `ts` as epoch seconds (None when absent or malformed)."""
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def event_feed(
    rows: Sequence[tuple[str, Mapping[str, Any]]],
    names: Iterable[str],
    connection_id: str | None = None,
    after: str | None = None,
    alerts_only: bool = False,
    heading: str | None = "Live events",
) -> str:
    """The live feed; `alerts_only` starts its filter on the failures (ALERTS). No `heading`
    when the feed is the whole page (its title says it)."""
    chosen = " selected" if alerts_only else ""
    options = (
        '<option value="">every event</option>'
        f'<option value="@alerts"{chosen}>failures only</option>'
        + "".join(f'<option value="{esc(n)}">{esc(n)}</option>' for n in names)
    )
    items = "".join(event_item(rid, ev) for rid, ev in reversed(rows))
    scope = f' data-connection-filter="{esc(connection_id)}"' if connection_id else ""
    title = f"<h2>{esc(heading)}</h2>" if heading else ""
    return (
        f'<section class="feed">{title}'
        '<label for="event-filter">Show</label> '
        f'<select id="event-filter">{options}</select> '
        '<span class="live" id="feed-state" role="status">connecting…</span>'
        f'<ol data-testid="event-feed" id="event-feed" data-after="{esc(after or "")}"{scope} '
        f'data-alerts="{esc(" ".join(sorted(ALERTS)))}">'
        f"{items}</ol></section>"
    )
