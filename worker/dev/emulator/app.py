"""Routing: Salesforce paths to `SalesforceApi`, /_admin/ to `AdminApi`, all sharing one `State`.

An exact-path dict lookup comes first because it is the hot path in the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.dev.emulator.admin import AdminApi
from worker.dev.emulator.http import Request, Response, json_response
from worker.dev.emulator.salesforce import SalesforceApi
from worker.dev.emulator.state import State

TOKEN_PATH = "/services/oauth2/token"
INTROSPECT_PATH = "/services/oauth2/introspect"
REVOKE_PATH = "/services/oauth2/revoke"
DATA_PREFIX = "/services/data/"
ADMIN_PREFIX = "/_admin/"

_NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


class App:
    def __init__(self, state: State) -> None:
        self.state = state
        self.salesforce = SalesforceApi(state)
        self.admin = AdminApi(state)
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("POST", TOKEN_PATH): self.salesforce.token,
            ("POST", INTROSPECT_PATH): self.salesforce.introspect,
            ("POST", REVOKE_PATH): self.salesforce.revoke,
        }

    def handle(self, request: Request) -> Response:
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return route(request)
        path = request.path
        if path.startswith(ADMIN_PREFIX):
            return self.admin.handle(request)
        if path.startswith(DATA_PREFIX) and request.method == "GET":
            return self.salesforce.data(request)
        if path in (TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH):
            return json_response(405, [{"errorCode": "METHOD_NOT_ALLOWED", "message": "POST"}])
        return json_response(404, _NOT_FOUND)
