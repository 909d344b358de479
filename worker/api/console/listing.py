"""The console's connections page: filters, a sort, cursor paging over the fleet's indexes.

Ids come from worker.store.fleet_index (sorted sets, never a SCAN: a page view costs
O(log N + its window) at any size); only the page's 50 records are read and decrypted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request

from worker.api.console import html
from worker.domain.models import ConnectionStatus
from worker.engine.runtime import Runtime
from worker.errors import InputError, StoreError
from worker.service import management
from worker.store.console_sessions import ConsoleSession
from worker.store.fleet_index import FleetIndex, IdPage, Query, Sort, parse_cursor
from worker.store.keys import check_id

PAGE_SIZE = 50
INDEX_BUDGET = 2.0  # seconds a page view may spend on a first backfill of the indexes
SORT_LABELS = {
    Sort.ID: "id",
    Sort.NEXT_CHECK: "next check, soonest first",
    Sort.NEXT_CHECK_DESC: "next check, latest first",
    Sort.ERROR: "last error, newest first",
    Sort.ERROR_ASC: "last error, oldest first",
}


@dataclass(frozen=True)
class Listing:
    query: Query
    rows: list[dict[str, Any]]
    page: IdPage
    unreadable: list[tuple[str, str]]


def query_of(request: Request) -> Query:
    """The page's filters from its query string, or InputError naming the bad one."""
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in html.STATUSES:
        raise InputError(f"status: expected one of {', '.join(html.STATUSES)}")
    try:
        sort = Sort(params.get("sort") or "id")
    except ValueError:
        raise InputError(f"sort: expected one of {', '.join(s.value for s in Sort)}") from None
    found = {}
    for name in ("integration", "q", "cursor"):
        value = (params.get(name) or "").strip() or None
        found[name] = value
    integration = found["integration"]
    prefix = found["q"]
    if integration is not None:
        check_id("integration", integration)
    if prefix is not None:
        check_id("q", prefix)
    parse_cursor(sort, found["cursor"])
    return Query(status, integration, prefix, sort, found["cursor"])


def served(query: Query) -> tuple[Query, str]:
    """The query the page answers, and a note when it differs from the one asked: connections
    needing re-authorization are never scheduled, so by next check they are shown by id (the
    due schedule holds none of them: its walk would only turn up empty windows)."""
    by_next_check = query.sort in (Sort.NEXT_CHECK, Sort.NEXT_CHECK_DESC)
    if query.status != ConnectionStatus.REAUTH_REQUIRED.value or not by_next_check:
        return query, ""
    note = (
        '<p class="note" role="status">Connections needing re-authorization have no next '
        "check (nothing is scheduled until the customer connects again): sorted by id.</p>"
    )
    return replace(query, sort=Sort.ID, cursor=None), note


async def listing(rt: Runtime, query: Query) -> Listing | None:
    """One page, or None while the indexes are still being built (a first backfill)."""
    index = FleetIndex(rt.redis, rt.store.keys)
    if not await index.ready(INDEX_BUDGET):
        return None
    page = await index.page(query, PAGE_SIZE)
    found = await rt.store.read_connections(page.ids)
    async with rt.redis.pipeline(transaction=False) as pipe:
        for cid in page.ids:
            pipe.zscore(rt.store.keys.due, cid)
        scores = await pipe.execute()
    rows: list[dict[str, Any]] = []
    unreadable: list[tuple[str, str]] = []
    for cid, conn, score in zip(page.ids, found, scores, strict=True):
        if isinstance(conn, StoreError):
            unreadable.append((cid, str(conn)))
        elif conn is not None:
            rows.append({**conn.public(), "next_check_at": float(score) if score else None})
    return Listing(query, rows, page, unreadable)


def _kept(query: Query) -> dict[str, str | None]:
    return {"status": query.status, "integration": query.integration, "q": query.prefix,
            "sort": query.sort.value if query.sort is not Sort.ID else None}  # fmt: skip


def _options(values: list[str], chosen: str | None, anything: str) -> str:
    return f'<option value="">{anything}</option>' + "".join(
        f'<option value="{html.esc(v)}"{" selected" if v == chosen else ""}>{html.esc(v)}</option>'
        for v in values
    )


def filters(query: Query, integrations: list[str]) -> str:
    sorts = "".join(
        f'<option value="{s.value}"{" selected" if s is query.sort else ""}>{label}</option>'
        for s, label in SORT_LABELS.items()
    )
    return (
        '<form method="get" action="/console/connections" class="filters" role="search">'
        f'<label>Status <select name="status">'
        f"{_options(list(html.STATUSES), query.status, 'any status')}</select></label>"
        f'<label>Integration <select name="integration">'
        f"{_options(integrations, query.integration, 'any integration')}</select></label>"
        '<label>Id starts with <input name="q" spellcheck="false" autocapitalize="none" '
        f'value="{html.esc(query.prefix or "")}"></label>'
        f'<label>Sort by <select name="sort">{sorts}</select></label>'
        '<button type="submit">Filter</button></form>'
    )


def sort_links(query: Query) -> dict[str, str]:
    """Header links that sort by a column (the other direction when it is the current sort)."""
    kept = {**_kept(query)}
    pairs = {
        "Next check": (Sort.NEXT_CHECK, Sort.NEXT_CHECK_DESC),
        "Last error": (Sort.ERROR, Sort.ERROR_ASC),
        "Connection": (Sort.ID, Sort.ID),
    }
    links = {}
    for header, (first, other) in pairs.items():
        target = other if query.sort is first else first
        value = target.value if target is not Sort.ID else None
        links[header] = html.link("/console/connections", {**kept, "sort": value})
    return links


def current_sort(query: Query) -> dict[str, str]:
    """aria-sort of each sortable header."""
    order = "descending" if query.sort.descending else "ascending"
    column = {Sort.ID: "Connection", Sort.NEXT_CHECK: "Next check",
              Sort.NEXT_CHECK_DESC: "Next check", Sort.ERROR: "Last error",
              Sort.ERROR_ASC: "Last error"}[query.sort]  # fmt: skip
    return {column: order}


def paging(found: Listing) -> str:
    kept = _kept(found.query)
    parts = []
    if found.query.cursor:
        parts.append(f'<a href="{html.link("/console/connections", kept)}">First page</a>')
    if found.page.next_cursor:
        more = html.link("/console/connections", {**kept, "cursor": found.page.next_cursor})
        label = "Search further" if found.page.short else "Next page"
        parts.append(f'<a href="{more}" rel="next">{label}</a>')
    note = ""
    if found.page.short:
        note = (
            '<p class="note">Few connections match these filters in this order: this page '
            "looked through the next 2000; search further to continue.</p>"
        )
    return f'{note}<nav class="paging" aria-label="Pages">{" ".join(parts)}</nav>'


def page_body(
    found: Listing | None, query: Query, problem: str, integrations: list[str],
    session: ConsoleSession, can_act: bool,
) -> str:  # fmt: skip
    head = f"<h1>Connections</h1>{problem}{filters(query, integrations)}"
    if found is None:
        return head + (
            '<p class="note" role="status">The fleet\'s indexes are being built (once, after an '
            "upgrade or on a new store): reload in a moment.</p>"
        )
    unreadable = "".join(
        f"<li><code>{html.esc(cid)}</code>: {html.esc(problem)}</li>"
        for cid, problem in found.unreadable
    )
    return (
        head
        + (html.bulk_bar(session) if can_act else "")
        + html.connections_table(
            found.rows, session, can_act, sort_links(query), current_sort(query)
        )
        + paging(found)
        + (f"<section><h2>Unreadable</h2><ul>{unreadable}</ul></section>" if unreadable else "")
    )


async def integration_names(rt: Runtime) -> list[str]:
    return [str(i["name"]) for i in await management.list_integrations(rt)]
