"""Routing: Salesforce paths to `SalesforceApi`, the authorize page to `ConsentPage`,
/_admin/ to `AdminApi`, all sharing one `State`.

An exact-path dict lookup comes first because it is the hot path in the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.dev.emulator.admin import AdminApi
from worker.dev.emulator.consent import AUTHORIZE_PATH, ConsentPage
from worker.dev.emulator.http import Request, Response, json_response
from worker.dev.emulator.salesforce import SalesforceApi
from worker.dev.emulator.state import State

TOKEN_PATH = "/services/oauth2/token"
INTROSPECT_PATH = "/services/oauth2/introspect"
REVOKE_PATH = "/services/oauth2/revoke"
USERINFO_PATH = "/services/oauth2/userinfo"
DATA_PREFIX = "/services/data"
IDENTITY_PREFIX = "/id/"
ADMIN_PREFIX = "/_admin/"

_NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
_POST_ONLY = (TOKEN_PATH, INTROSPECT_PATH)


class App:
    def __init__(self, state: State) -> None:
        self.state = state
        self.salesforce = SalesforceApi(state)
        self.consent = ConsentPage(state)
        self.admin = AdminApi(state)
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("POST", TOKEN_PATH): self.salesforce.token,
            ("POST", INTROSPECT_PATH): self.salesforce.introspect,
            ("POST", REVOKE_PATH): self.salesforce.revoke,
            ("GET", REVOKE_PATH): self.salesforce.revoke,
            ("GET", USERINFO_PATH): self.salesforce.userinfo,
            ("POST", USERINFO_PATH): self.salesforce.userinfo,
            ("GET", AUTHORIZE_PATH): self.consent.show,
            ("POST", AUTHORIZE_PATH): self.consent.decide,
        }

    def handle(self, request: Request) -> Response:
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return route(request)
        path = request.path
        if path.startswith(ADMIN_PREFIX):
            return self.admin.handle(request)
        if path == DATA_PREFIX or path.startswith(DATA_PREFIX + "/"):
            return self.salesforce.data(request)
        if path.startswith(IDENTITY_PREFIX) and request.method in ("GET", "POST"):
            return self.salesforce.identity(request)
        if path in _POST_ONLY:
            return json_response(405, [{"errorCode": "METHOD_NOT_ALLOWED", "message": "POST"}])
        return json_response(404, _NOT_FOUND)
