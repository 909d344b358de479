"""Credentials, rejected tokens and managing connections and integrations.

    GET    /connections/{id}/credentials[?min_ttl=S]   read     fresh credentials
    POST   /connections/{id}/token-rejected            connect  {access_token}: Salesforce said 401
    GET    /connections                                read     status, integration, limit, cursor
    GET    /connections/{id}                           read     `connections show --json`
    DELETE /connections/{id}[?revoke=false]            admin    revoke at Salesforce, then delete
    POST   /connections/{id}/refresh                   admin    refresh now (single-flight)
    GET    /integrations                               read     no secrets

Credentials answers carry `Cache-Control: no-store`: a token must not sit in a proxy's cache.
"""

from __future__ import annotations

import json as json_module
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from worker.api import spec
from worker.api.app import json
from worker.api.auth import require
from worker.api.errors import ApiError, invalid, not_found
from worker.api.fastpath import FastRoute
from worker.api.inputs import flag, json_object, number, path_id, query, whole
from worker.domain.models import ConnectionStatus
from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError
from worker.service import connections as connection_service
from worker.service import credentials as creds
from worker.service import management
from worker.store.apikeys import Scope
from worker.store.keys import check_id

NO_STORE = {"Cache-Control": "no-store"}
# Starlette's JSONResponse encoding: compact, UTF-8, no NaN.
JSON_ENCODE = json_module.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode
MAX_MIN_TTL = 86400.0
MAX_TOKEN_CHARS = 4096
STATUSES = tuple(s.value for s in ConnectionStatus)


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def credentials(request: Request) -> Response:
    await require(request, Scope.READ)
    connection_id = path_id(request)
    min_ttl = number(query(request, {"min_ttl"}).get("min_ttl"), "min_ttl", 0.0, MAX_MIN_TTL)
    try:
        found = await creds.credentials(_rt(request), connection_id, min_ttl)
    except creds.TtlTooLong as error:
        raise ApiError(
            422, "invalid_request", str(error), field="min_ttl", max_min_ttl=error.limit
        ) from None
    return NoStoreJSON(found.as_dict())


class NoStoreJSON(Response):
    """JSONResponse's body (the same encoding) with `Cache-Control: no-store`, its headers
    built directly: the credentials read answers thousands a second, and Starlette's generic
    header assembly is a measurable share of it."""

    media_type = "application/json"

    def __init__(self, content: dict[str, Any]) -> None:
        self.status_code = 200
        self.background = None
        self.body = JSON_ENCODE(content).encode()
        self.raw_headers = [
            (b"cache-control", b"no-store"),
            (b"content-length", b"%d" % len(self.body)),
            (b"content-type", b"application/json"),
        ]


async def token_rejected(request: Request) -> Response:
    await require(request, Scope.CONNECT)
    connection_id = path_id(request)
    query(request, set())
    body = await json_object(request, {"access_token": str}, frozenset({"access_token"}))
    token: str = body["access_token"]
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise invalid(
            "access_token", f"the access token Salesforce refused (1-{MAX_TOKEN_CHARS} characters)"
        )
    found = await creds.token_rejected(_rt(request), connection_id, token)
    return json(found.as_dict(), headers=NO_STORE)


async def list_connections(request: Request) -> Response:
    await require(request, Scope.READ)
    params = query(request, {"status", "integration", "limit", "cursor"})
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise invalid("status", f"one of {', '.join(STATUSES)}")
    integration = _optional_id(params.get("integration"), "integration")
    cursor = _optional_id(params.get("cursor"), "cursor")
    limit = whole(params.get("limit"), "limit", 1, management.MAX_PAGE, 100)
    page = await management.list_connections(_rt(request), status, integration, limit, cursor)
    return json(page.as_dict())


def _optional_id(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        return check_id(field, value)
    except InputError as error:
        raise ApiError(422, "invalid_request", str(error), field=field) from None


async def show(request: Request) -> Response:
    await require(request, Scope.READ)
    connection_id = path_id(request)
    query(request, set())
    try:
        shown = await connection_service.show(_rt(request), connection_id)
    except NotFoundError:
        raise not_found("connection", connection_id) from None
    return json(shown.as_dict())


async def remove(request: Request) -> Response:
    await require(request, Scope.ADMIN)
    connection_id = path_id(request)
    revoke = flag(query(request, {"revoke"}).get("revoke"), "revoke", True)
    removal = await management.remove_connection(_rt(request), connection_id, revoke)
    return json(removal.as_dict())


async def refresh(request: Request) -> Response:
    await require(request, Scope.ADMIN)
    connection_id = path_id(request)
    query(request, set())
    result = await management.refresh_connection(_rt(request), connection_id)
    return json(result.as_dict())


async def integrations(request: Request) -> Response:
    await require(request, Scope.READ)
    query(request, set())
    return json({"items": await management.list_integrations(_rt(request))})


def fast_routes() -> list[FastRoute]:
    """The credentials read skips Starlette's router (worker.api.fastpath); same endpoint."""
    return [FastRoute("GET", "/connections/", "/credentials", "id", credentials)]


def routes() -> list[BaseRoute]:
    return [
        Route("/connections", list_connections, methods=["GET"]),
        Route("/connections/{id}", show, methods=["GET"]),
        Route("/connections/{id}", remove, methods=["DELETE"]),
        Route("/connections/{id}/credentials", credentials, methods=["GET"]),
        Route("/connections/{id}/token-rejected", token_rejected, methods=["POST"]),
        Route("/connections/{id}/refresh", refresh, methods=["POST"]),
        Route("/integrations", integrations, methods=["GET"]),
    ]


# -- the OpenAPI fragment ------------------------------------------------------------------

_ID_ERRORS = {400: "the id is not a connection id", 404: "no such connection"}
_UNUSABLE = {
    409: "reauth_required: the customer must re-authorize (`last_error` says why)",
    503: "salesforce_unavailable: no token valid for min_ttl; see Retry-After",
}
_CREDENTIALS = spec.obj(
    {
        "connection_id": spec.STRING,
        "integration": spec.STRING,
        "provider": {
            "type": ["string", "null"],
            "enum": ["salesforce", "salesforce-sandbox", None],
        },
        "access_token": spec.STRING,
        "instance_url": spec.NULLABLE_STRING,
        "token_type": {"type": "string", "enum": ["Bearer"]},
        "issued_at": {**spec.NULLABLE_NUMBER, "description": "epoch seconds"},
        "expires_at": {**spec.NUMBER, "description": "epoch seconds"},
        "expiry_source": {"type": "string", "enum": ["introspection", "expires_in", "assumed"]},
    },
    ("connection_id", "integration", "access_token", "instance_url", "token_type", "expires_at"),
)
_OBJECT = {"type": "object", "additionalProperties": True}


def openapi() -> dict[str, Any]:
    tag = "connections"
    return {
        "paths": {
            "/connections/{id}/credentials": {
                "get": spec.operation(
                    "Fresh credentials for a connection",
                    "read",
                    (200, "the access token and where to use it", spec.ref("Credentials")),
                    tag=tag,
                    description=(
                        "A token valid for at least `min_ttl` seconds (default: the refresh "
                        "margin, at most half the session lifetime). A fresh token costs no "
                        "call to Salesforce; otherwise it is refreshed first, single-flight "
                        "with the workers. Never a token known to expire within `min_ttl`."
                    ),
                    params=(
                        spec.ID,
                        spec.param(
                            "min_ttl",
                            "query",
                            "Seconds the token must stay valid (0 to half its lifetime).",
                            {"type": "number", "minimum": 0},
                        ),
                    ),
                    errors={**_ID_ERRORS, **_UNUSABLE, 422: "min_ttl out of range"},
                )
            },
            "/connections/{id}/token-rejected": {
                "post": spec.operation(
                    "Report an access token Salesforce refused (401)",
                    "connect",
                    (200, "the credentials to use now", spec.ref("Credentials")),
                    tag=tag,
                    description=(
                        "Still the stored token: refreshed now (one refresh however many "
                        "callers report it). Already replaced: the current credentials, "
                        "without a call to Salesforce."
                    ),
                    params=(spec.ID,),
                    body=spec.obj({"access_token": spec.STRING}, ("access_token",)),
                    errors={**_ID_ERRORS, **_UNUSABLE, 413: "body too large", 422: "bad field"},
                )
            },
            "/connections": {
                "get": spec.operation(
                    "List connections (no secrets), sorted by id",
                    "read",
                    (200, "one page", spec.ref("ConnectionPage")),
                    tag=tag,
                    params=(
                        spec.param(
                            "status", "query", "Only this status.", {"enum": list(STATUSES)}
                        ),
                        spec.param("integration", "query", "Only this integration.", spec.STRING),
                        spec.param(
                            "limit",
                            "query",
                            "Page size (1-1000, default 100).",
                            {"type": "integer"},
                        ),
                        spec.param(
                            "cursor", "query", "`next_cursor` of the previous page.", spec.STRING
                        ),
                    ),
                    errors={422: "a bad filter, limit or cursor"},
                )
            },
            "/connections/{id}": {
                "get": spec.operation(
                    "One connection, as `tokenworker connections show --json` (no secrets)",
                    "read",
                    (200, "the connection", _OBJECT),
                    tag=tag,
                    params=(spec.ID,),
                    errors=_ID_ERRORS,
                ),
                "delete": spec.operation(
                    "Revoke the grant at Salesforce, then delete the connection",
                    "admin",
                    (200, "removed; `revocation` says what Salesforce did", _OBJECT),
                    tag=tag,
                    description=(
                        "Salesforce unreachable: nothing is deleted (503, Retry-After). "
                        "`revoke=false` deletes without asking Salesforce."
                    ),
                    params=(
                        spec.ID,
                        spec.param("revoke", "query", "false: do not revoke", {"type": "boolean"}),
                    ),
                    errors={**_ID_ERRORS, 503: "the revocation failed for now"},
                ),
            },
            "/connections/{id}/refresh": {
                "post": spec.operation(
                    "Refresh now, single-flight (the check outcome)",
                    "admin",
                    (200, "the outcome: refreshed, failed, reauth_required, ...", _OBJECT),
                    tag=tag,
                    params=(spec.ID,),
                    errors=_ID_ERRORS,
                )
            },
            "/integrations": {
                "get": spec.operation(
                    "List integrations (no client secrets)",
                    "read",
                    (
                        200,
                        "every integration",
                        spec.obj({"items": {"type": "array", "items": _OBJECT}}),
                    ),
                    tag="integrations",
                )
            },
        },
        "components": {
            "schemas": {
                "Credentials": _CREDENTIALS,
                "ConnectionPage": spec.obj(
                    {
                        "items": {"type": "array", "items": _OBJECT},
                        "next_cursor": spec.NULLABLE_STRING,
                        "unreadable": {"type": "array", "items": _OBJECT},
                    }
                ),
            }
        },
    }
