"""Connect routes: the host application opens sessions and polls them (API key, scope
`connect`); the customer's browser follows the connect_url and comes back from Salesforce
(no API key: the session id and the OAuth state are the capabilities).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from worker.api import pages, spec
from worker.api.app import json as json_response
from worker.api.auth import require
from worker.api.errors import ApiError, invalid, not_found
from worker.engine.runtime import Runtime
from worker.errors import NotFoundError
from worker.service import connect
from worker.store.apikeys import Scope

MAX_BODY = 16 * 1024
SESSION_FIELDS = {"integration", "connection_id", "return_to", "force"}


async def create_session(request: Request) -> Response:
    """Open a connect session for one connection id.
    ---
    summary: Create a connect session (scope connect)
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [integration, connection_id]
            properties:
              integration: {type: string}
              connection_id: {type: string}
              return_to: {type: string, description: origin in ALLOWED_RETURN_ORIGINS}
              force: {type: boolean, description: a reconnect may change the org}
    responses:
      201: {description: "{id, connect_url, expires_at}"}
      422: {description: invalid_request naming the field}
    """
    await require(request, Scope.CONNECT)
    body = await _json_object(request)
    unknown = sorted(set(body) - SESSION_FIELDS)
    if unknown:
        raise invalid(unknown[0], "no such field (integration, connection_id, return_to, force)")
    integration, connection_id = body.get("integration"), body.get("connection_id")
    return_to, force = body.get("return_to"), body.get("force", False)
    if not isinstance(integration, str):
        raise invalid("integration", "the integration's name (a string)")
    if not isinstance(connection_id, str):
        raise invalid("connection_id", "a connection id (a string)")
    if return_to is not None and not isinstance(return_to, str):
        raise invalid("return_to", "a URL (a string)")
    if not isinstance(force, bool):
        raise invalid("force", "true or false")
    try:
        created = await connect.create_session(
            _runtime(request), integration, connection_id, return_to, force=force
        )
    except connect.InvalidField as error:
        raise ApiError(422, "invalid_request", str(error), field=error.field) from None
    return json_response(created.as_dict(), status=201)


async def session_status(request: Request) -> Response:
    """Where a connect session stands.
    ---
    summary: A connect session's status (scope connect)
    responses:
      200: {description: "{id, status: pending|connected|failed|expired, connection_id, error?}"}
      404: {description: not_found}
    """
    await require(request, Scope.CONNECT)
    session_id = request.path_params["session_id"]
    try:
        view = await connect.session_status(_runtime(request), session_id)
    except NotFoundError:
        raise not_found("connect session", session_id[:64]) from None
    return json_response(view.as_dict())


async def connect_page(request: Request) -> Response:
    """The connect_url: the browser goes on to Salesforce (or is asked for its My Domain)."""
    session_id = request.path_params["session_id"]
    rt = _runtime(request)
    if request.method == "POST":
        form = await _form(request)
        landing = await connect.choose_domain(rt, session_id, form.get("my_domain", ""))
    else:
        landing = await connect.begin(rt, session_id)
    return pages.render(landing)


async def oauth_callback(request: Request) -> Response:
    """Salesforce's redirect back: `code` and `state`, or `error` and `error_description`."""
    params = dict(request.query_params)
    return pages.render(await connect.callback(_runtime(request), params))


def routes() -> list[BaseRoute]:
    return [
        Route("/connect-sessions", create_session, methods=["POST"]),
        Route("/connect-sessions/{session_id}", session_status, methods=["GET"]),
        Route("/connect/{session_id}", connect_page, methods=["GET", "POST"]),
        Route("/oauth/callback", oauth_callback, methods=["GET"]),
    ]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise ApiError(413, "invalid_request", f"the body is larger than {MAX_BODY} bytes")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_BODY:
            raise ApiError(413, "invalid_request", f"the body is larger than {MAX_BODY} bytes")
    return bytes(received)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await _bounded_body(request)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_request", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object")
    return data


async def _form(request: Request) -> dict[str, str]:
    raw = await _bounded_body(request)
    try:
        return dict(parse_qsl(raw.decode("utf-8", "replace"), max_num_fields=10))
    except ValueError:
        raise ApiError(400, "invalid_request", "too many form fields") from None


_SESSION = spec.param("session_id", "path", "The connect session id.", spec.STRING)
_BROWSER = "A page for the customer's browser (HTML or a redirect), no API key."


def openapi() -> dict[str, Any]:
    tag = "connect"
    session = spec.obj(
        {
            "id": spec.STRING,
            "status": {"enum": ["pending", "connected", "failed", "expired"]},
            "connection_id": spec.STRING,
            "integration": spec.STRING,
            "expires_at": spec.NUMBER,
            "error": spec.NULLABLE_STRING,
            "error_description": spec.NULLABLE_STRING,
        },
        ("id", "status", "connection_id"),
    )
    return {
        "paths": {
            "/connect-sessions": {
                "post": spec.operation(
                    "Start connecting a customer's Salesforce org",
                    "connect",
                    (
                        201,
                        "send the customer's browser to connect_url",
                        spec.obj(
                            {
                                "id": spec.STRING,
                                "connect_url": spec.STRING,
                                "expires_at": spec.NUMBER,
                            },
                            ("id", "connect_url", "expires_at"),
                        ),
                    ),
                    tag=tag,
                    description=(
                        "Single-use and expiring (TOKENWORKER_CONNECT_SESSION_TTL). `return_to` "
                        "must be on an origin in TOKENWORKER_ALLOWED_RETURN_ORIGINS; the browser "
                        "lands there with `connection_id` and `status=connected` (or "
                        "`status=error&error=CODE`)."
                    ),
                    body=spec.obj(
                        {
                            "integration": spec.STRING,
                            "connection_id": spec.STRING,
                            "return_to": spec.STRING,
                            "force": {"type": "boolean"},
                        },
                        ("integration", "connection_id"),
                    ),
                    errors={400: "not JSON", 413: "body too large", 422: "a field is wrong"},
                )
            },
            "/connect-sessions/{session_id}": {
                "get": spec.operation(
                    "Where a connect session stands",
                    "connect",
                    (
                        200,
                        "pending, connected, failed (with Salesforce's error) or expired",
                        session,
                    ),
                    tag=tag,
                    params=(_SESSION,),
                    errors={404: "no such session"},
                )
            },
            "/connect/{session_id}": {
                method: spec.operation(
                    "The connect_url: on to Salesforce's authorize page (or the My Domain form)",
                    None,
                    (302, _BROWSER, None),
                    tag=tag,
                    params=(_SESSION,),
                )
                for method in ("get", "post")
            },
            "/oauth/callback": {
                "get": spec.operation(
                    "Salesforce's redirect back after the customer's consent",
                    None,
                    (302, _BROWSER, None),
                    tag=tag,
                )
            },
        }
    }
