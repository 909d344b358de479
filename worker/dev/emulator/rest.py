"""What an access token is for: a few REST resources under /services/data/, userinfo and
the identity URL.

- REST answers 401 `[{"message":"Session expired or invalid","errorCode":
  "INVALID_SESSION_ID"}]` to anything but a live token (fact sheet section 10); a live token
  whose scope has neither `api` nor `full` gets the 401 that says the session is not valid
  for the REST API (the policy case jsforce refuses to refresh on). A success carries
  `Sforce-Limit-Info: api-usage=N/15000` (section 7). Each use is session activity
  (`State.use_session`: past half-life it extends the session, section 6).
- `GET /services/data/` (the version list) needs no token, as at Salesforce.
- userinfo and the identity URL answer 403 `Bad_OAuth_Token` in plain text for a bad token
  (section 10), `Missing_OAuth_Token` without one, `Wrong_Org` / `Bad_Id` for ids that do
  not belong to the token's org (Salesforce's identity URL docs).
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import parse_qs

from worker.dev.emulator.http import Request, Response, json_response
from worker.dev.emulator.records import Grant, User
from worker.dev.emulator.state import State

API_LIMIT = 15000
VERSIONS = {
    "58.0": "Summer '23",
    "59.0": "Winter '24",
    "60.0": "Spring '24",
    "61.0": "Summer '24",
    "62.0": "Winter '25",
}
_VERSION_PATH = re.compile(r"/services/data/v(\d+\.\d)(/.*)?")
_INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
_WRONG_API = [
    {
        "message": "This session is not valid for use with the REST API",
        "errorCode": "INVALID_SESSION_ID",
    }
]
_NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
_RESOURCES = ("limits", "query", "sobjects", "search", "tooling", "recent", "composite")
_API_SCOPES = frozenset({"api", "full"})


def bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def _record_id(prefix: str) -> str:
    return prefix + os.urandom(8).hex()[:15].upper()


class RestApi:
    def __init__(self, state: State) -> None:
        self.state = state

    # -- /services/data/ -----------------------------------------------------------------

    def data(self, request: Request, token: str) -> Response:
        path = request.path
        if path in ("/services/data", "/services/data/"):
            return self._versions() if request.method == "GET" else _method_not_allowed("GET")
        match = _VERSION_PATH.fullmatch(path)
        access = self.state.find_access(token) if token else None
        if access is None or not self.state.use_session(token):
            return json_response(401, _INVALID_SESSION)
        if _API_SCOPES.isdisjoint(access.grant.scope.split()):
            return json_response(401, _WRONG_API)
        if match is None or match.group(1) not in VERSIONS:
            return json_response(404, _NOT_FOUND)
        version, rest = match.group(1), (match.group(2) or "/").strip("/")
        response = self._resource(request, version, rest)
        if response.status < 400:
            self.state.stats.api_usage += 1
            usage = f"api-usage={self.state.stats.api_usage}/{API_LIMIT}"
            response.headers.append(("Sforce-Limit-Info", usage))
        return response

    def _versions(self) -> Response:
        return json_response(
            200,
            [
                {"label": label, "url": f"/services/data/v{v}", "version": v}
                for v, label in VERSIONS.items()
            ],
        )

    def _resource(self, request: Request, version: str, rest: str) -> Response:
        base = f"/services/data/v{version}"
        method = request.method
        if rest == "":
            if method != "GET":
                return _method_not_allowed("GET,HEAD")
            return json_response(200, {name: f"{base}/{name}" for name in _RESOURCES})
        if rest == "limits":
            if method != "GET":
                return _method_not_allowed("GET,HEAD")
            used = self.state.stats.api_usage + 1
            return json_response(
                200,
                {
                    "DailyApiRequests": {"Max": API_LIMIT, "Remaining": API_LIMIT - used},
                    "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
                    "DataStorageMB": {"Max": 5, "Remaining": 5},
                },
            )
        if rest == "query":
            return self._query(request, base)
        if rest.startswith("sobjects/") and rest.count("/") == 1:
            return self._create(request, base, rest.split("/", 1)[1])
        return json_response(404, _NOT_FOUND)

    def _query(self, request: Request, base: str) -> Response:
        if request.method != "GET":
            return _method_not_allowed("GET,HEAD")
        soql = parse_qs(request.query).get("q", [""])[-1].strip()
        if not soql.lower().startswith("select "):
            return json_response(
                400, [{"message": "unexpected token: query", "errorCode": "MALFORMED_QUERY"}]
            )
        record_id = "001000000000001AAA"
        return json_response(
            200,
            {
                "totalSize": 1,
                "done": True,
                "records": [
                    {
                        "attributes": {
                            "type": "Account",
                            "url": f"{base}/sobjects/Account/{record_id}",
                        },
                        "Id": record_id,
                        "Name": "Emulated Account",
                    }
                ],
            },
        )

    def _create(self, request: Request, base: str, sobject: str) -> Response:
        if request.method != "POST":
            return _method_not_allowed("GET,HEAD,POST")
        if sobject != "Account":
            return json_response(
                404,
                [
                    {
                        "message": f"The requested resource does not exist: {sobject}",
                        "errorCode": "NOT_FOUND",
                    }
                ],
            )
        try:
            fields = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            fields = None
        if not isinstance(fields, dict):
            return json_response(
                400, [{"message": "Invalid JSON body", "errorCode": "JSON_PARSER_ERROR"}]
            )
        return json_response(201, {"id": _record_id("001"), "success": True, "errors": []})

    # -- userinfo and the identity URL ---------------------------------------------------

    def userinfo(self, request: Request, token: str) -> Response:
        grant = self._identity_grant(token)
        if isinstance(grant, Response):
            return grant
        user = self._user(grant)
        body = self._identity(grant, user)
        return json_response(
            200,
            {
                "sub": grant.id_url,
                "user_id": user.user_id,
                "organization_id": user.org_id,
                "preferred_username": user.username,
                "nickname": user.display_name,
                "name": user.display_name,
                "email": user.email,
                "email_verified": True,
                "zoneinfo": "America/Los_Angeles",
                "active": True,
                "user_type": "STANDARD",
                "language": "en_US",
                "locale": "en_US",
                "utcOffset": -28800000,
                "urls": body["urls"],
                "is_app_installed": True,
            },
        )

    def identity(self, request: Request, token: str) -> Response:
        grant = self._identity_grant(token)
        if isinstance(grant, Response):
            return grant
        parts = request.path.strip("/").split("/")
        if len(parts) != 3:
            return _plain(404, "Bad_Id")
        org_id, user_id = parts[1], parts[2]
        if org_id != grant.org_id:
            return _plain(403, "Wrong_Org")
        if user_id != grant.user_id:
            known = next((u for u in self.state.users.values() if u.user_id == user_id), None)
            if known is None or known.org_id != org_id:
                return _plain(404, "Bad_Id")
            return json_response(200, self._identity(grant, known, id_url=request.path))
        return json_response(200, self._identity(grant, self._user(grant)))

    def _identity_grant(self, token: str) -> Grant | Response:
        if not token:
            return _plain(403, "Missing_OAuth_Token")
        access = self.state.find_access(token)
        if access is None or not self.state.use_session(token):
            return _plain(403, "Bad_OAuth_Token")
        return access.grant

    def _user(self, grant: Grant) -> User:
        known = self.state.user_of(grant)
        if known is not None:
            return known
        return User(grant.user_id, grant.username, grant.org_id, "user", grant.username)

    def _identity(self, grant: Grant, user: User, id_url: str | None = None) -> dict[str, object]:
        instance = grant.instance_url
        rest = f"{instance}/services/data/v{{version}}/"
        return {
            "id": f"{self.state.base_url}{id_url}" if id_url else grant.id_url,
            "asserted_user": id_url is None,
            "user_id": user.user_id,
            "organization_id": user.org_id,
            "username": user.username,
            "nick_name": user.display_name,
            "display_name": user.display_name,
            "email": user.email,
            "email_verified": True,
            "status": {"created_date": None, "body": None},
            "urls": {
                "rest": rest,
                "sobjects": f"{rest}sobjects/",
                "query": f"{rest}query/",
                "limits": f"{rest}limits/",
                "profile": f"{instance}/{user.user_id}",
                "custom_domain": instance,
            },
            "active": True,
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": -28800000,
            "is_app_installed": True,
        }


def _plain(status: int, text: str) -> Response:
    return Response(status, text.encode("ascii"), "text/plain;charset=UTF-8")


def _method_not_allowed(allowed: str) -> Response:
    return json_response(
        405,
        [
            {
                "errorCode": "METHOD_NOT_ALLOWED",
                "message": f"HTTP Method not allowed. Allowed are {allowed}",
            }
        ],
    )
