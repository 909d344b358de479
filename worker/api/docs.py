"""The API describing itself, and the probes.

    GET /openapi.json   the OpenAPI 3.1 document, assembled from the `openapi()` fragment of
                        every route module the app mounts (a module found through its routes)
    GET /docs           that document as one server-rendered HTML page (no script, no CDN)
    GET /healthz        the process is up (no store call)
    GET /readyz         the store answers and persists (worker.service.health.readiness)

None of these needs an API key: probes and docs must work before any key exists.
"""

from __future__ import annotations

import sys
from html import escape
from typing import Any

import anyio
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from worker.api import spec
from worker.api.app import json
from worker.service.health import readiness
from worker.store import clients

TITLE = "tokenworker API"
METHODS = ("get", "post", "put", "patch", "delete")
PROBE_TIMEOUT = 2.0


def document(app: Starlette) -> dict[str, Any]:
    """The OpenAPI document of `app` (built once, then kept on app.state)."""
    cached: dict[str, Any] | None = getattr(app.state, "openapi", None)
    if cached is not None:
        return cached
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": "1",
            "description": (
                "Fresh Salesforce credentials for host applications. Send "
                "`Authorization: Bearer <key>` (`tokenworker api-keys create`); scopes are "
                "ordered read < connect < admin. Errors are JSON: "
                '`{"error": CODE, "message": TEXT, ...}`.'
            ),
        },
        "paths": {},
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    for fragment in _fragments(app.routes):
        for path, operations in fragment.get("paths", {}).items():
            doc["paths"].setdefault(path, {}).update(operations)
        doc["components"]["schemas"].update(fragment.get("components", {}).get("schemas", {}))
    app.state.openapi = doc
    return doc


def _fragments(routes: list[BaseRoute]) -> list[dict[str, Any]]:
    seen: list[Any] = []
    for route in routes:
        endpoint = getattr(route, "endpoint", None)
        module = sys.modules.get(getattr(endpoint, "__module__", "") or "")
        if module is not None and hasattr(module, "openapi") and module not in seen:
            seen.append(module)
    return [module.openapi() for module in seen]


_ERROR = spec.obj(
    {
        "error": {
            "type": "string",
            "description": "unauthorized, forbidden, not_found, invalid_request, "
            "reauth_required, salesforce_unavailable, payload_too_large, ...",
        },
        "message": spec.STRING,
        "field": {"type": "string", "description": "the input field at fault (invalid_request)"},
        "last_error": {"type": ["object", "null"], "description": "Salesforce's own verdict"},
        "retry_after": {"type": "integer", "description": "seconds (also in Retry-After)"},
    },
    ("error", "message"),
)


async def openapi_json(request: Request) -> Response:
    return json(document(request.app))


async def docs_page(request: Request) -> Response:
    return HTMLResponse(render(document(request.app)))


async def healthz(_: Request) -> Response:
    return json({"status": "ok"})


async def readyz(request: Request) -> Response:
    settings = request.app.state.settings

    def probe() -> tuple[bool, str, dict[str, Any]]:
        client = clients.sync_client(
            settings.store_endpoint,
            socket_timeout=PROBE_TIMEOUT,
            socket_connect_timeout=PROBE_TIMEOUT,
        )
        try:
            verdict = readiness(client, None, settings.require_persistence)
        except redis.RedisError as error:
            return False, f"store unreachable: {type(error).__name__}", {}
        finally:
            client.close()
        return verdict.ok, verdict.summary, verdict.details

    ok, summary, details = await anyio.to_thread.run_sync(probe)
    if not ok:
        return json({"error": "not_ready", "message": summary, **details}, status=503)
    return json({"status": "ready", "message": summary, **details})


def routes() -> list[BaseRoute]:
    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs_page, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]


def openapi() -> dict[str, Any]:
    status = spec.obj({"status": spec.STRING, "message": spec.STRING})

    def probe(summary: str, text: str, errors: dict[int, str] | None = None) -> dict[str, Any]:
        return {"get": spec.operation(summary, None, (200, text, status), tag="ops", errors=errors)}

    return {
        "paths": {
            "/healthz": probe("Liveness: the process answers", "up"),
            "/readyz": probe(
                "Readiness: the store answers and persists",
                "ready",
                {503: "the store is unreachable or not durable"},
            ),
            "/openapi.json": {
                "get": spec.operation(
                    "This document", None, (200, "OpenAPI 3.1", {"type": "object"}), tag="ops"
                )
            },
            "/docs": {
                "get": spec.operation("This document as HTML", None, (200, "HTML", None), tag="ops")
            },
        }
    }


# -- the HTML page -------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ddd;margin-top:2.5rem}
section{border:1px solid #e3e3e3;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
code,.path{font-family:ui-monospace,monospace}
.method{display:inline-block;min-width:4.5rem;font-weight:bold;text-transform:uppercase}
.scope{float:right;color:#555}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #e3e3e3;padding:.2rem .5rem;text-align:left;vertical-align:top}
"""


def render(doc: dict[str, Any]) -> str:
    """The whole document as one page: operations grouped by tag, in document order."""
    groups: dict[str, list[str]] = {}
    for path, operations in doc["paths"].items():
        for method in METHODS:
            found = operations.get(method)
            if found is not None:
                tag = (found.get("tags") or ["other"])[0]
                groups.setdefault(tag, []).append(_operation(method, path, found))
    info = doc["info"]
    body = "".join(f"<h2>{escape(tag)}</h2>{''.join(items)}" for tag, items in groups.items())
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(info['title'])}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(info['title'])}</h1><p>{_inline(info.get('description', ''))}</p>"
        f'<p>Machine-readable: <a href="/openapi.json">/openapi.json</a></p>{body}</body></html>'
    )


def _operation(method: str, path: str, found: dict[str, Any]) -> str:
    scope = found.get("x-scope")
    parts = [
        f'<section id="{escape(method + path)}"><span class=method>{method}</span>'
        f"<span class=path>{escape(path)}</span>"
        f"<span class=scope>{'scope: ' + escape(scope) if scope else 'no key needed'}</span>"
        f"<p><b>{escape(found['summary'])}</b></p>"
    ]
    if found.get("description"):
        parts.append(f"<p>{_inline(found['description'])}</p>")
    params = found.get("parameters") or []
    if params:
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
            f"<td>{'required' if p.get('required') else ''}</td>"
            f"<td>{_inline(p.get('description', ''))}</td></tr>"
            for p in params
        )
        parts.append(
            f"<table><tr><th>parameter</th><th>in</th><th></th><th></th></tr>{rows}</table>"
        )
    body = found.get("requestBody", {}).get("content", {}).get(spec.JSON, {}).get("schema")
    if body and "properties" in body:
        fields = ", ".join(f"<code>{escape(name)}</code>" for name in body["properties"])
        parts.append(f"<p>JSON body: {fields}</p>")
    rows = "".join(
        f"<tr><td>{escape(code)}</td><td>{_inline(answer['description'])}</td></tr>"
        for code, answer in found["responses"].items()
    )
    parts.append(f"<table><tr><th>status</th><th>meaning</th></tr>{rows}</table></section>")
    return "".join(parts)


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    pieces = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
