"""The ops console, served by the `api` process at /console (DESIGN.md "Ops console").

    GET  /console                              overview: counts by status and integration,
                                               due backlog, workers, beat leader, last sweep,
                                               the live event feed
    GET  /console/connections                  table: ?status=&integration=&q=(id prefix)&cursor=
                                               &sort=id|next_check|-next_check|-last_error|
                                               last_error (worker.api.console.listing: paged
                                               over sorted sets, no SCAN)
    GET  /console/connections/{id}             one connection: `connections show`, its events
    POST /console/connections/{id}/check       admin + CSRF; JSON for fetch(), else 303
    POST /console/connections/{id}/refresh     admin + CSRF
    POST /console/connections/{id}/remove      admin + CSRF (revokes at Salesforce)
    GET  /console/integrations                 status, login URL, introspection, counts
    POST /console/integrations/{name}/retest   admin + CSRF (worker.api.console.integrations)
    POST /console/bulk/refresh                 admin + CSRF: an integration's failing ones, or ids
    GET  /console/bulk/{job}                   the bulk job's progress (JSON, polled)
    GET  /console/events                       live failures: the feed, failures only at first
    GET  /console/api/connections?ids=a,b      rows for the script to keep statuses current
    GET  /console/api/status                   counts by status for the overview's cards
    GET  /console/events/stream                server-sent events (the /events/stream tail)
    GET  /console/sign-in, POST /console/sign-in (field `api_key`), POST /console/sign-out
    GET  /console/static/{console.js,console.css}

Signed-in state is a server-side session (worker.store.console_sessions) holding the key's
name and scope, never the key; rules in worker.api.console.guard. Pages are rendered by
worker.api.console.html; nothing reads Redis here but through the service layer, the event
stream reader and the session store. Every action emits `console.action` with the key's name.
"""

from __future__ import annotations

from worker.api.console.routes import routes

__all__ = ["routes"]
