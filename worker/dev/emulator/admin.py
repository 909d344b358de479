"""The admin API under /_admin/: JSON in, JSON out, never delayed, never faulted.

Tests and the demo set the emulated org up and inspect it through these routes, so their
paths and field names are a contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from worker.dev.emulator.faults import ENDPOINTS, MUTATIONS, Fault
from worker.dev.emulator.http import Request, Response, json_response
from worker.dev.emulator.records import Grant, OAuthError, User
from worker.dev.emulator.state import State, paused_gc
from worker.dev.emulator.webflow import PageError, issue_code, parse_authorize

JSON = "application/json"
MAX_GRANTS_PER_CALL = 1_000_000
BY_GRANT_LIMIT = 10_000  # above this many grants, stats skip the per-grant map unless asked


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _reply(payload: object, status: int = 200) -> Response:
    return json_response(status, payload, JSON)


def _object(request: Request) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        value = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdminError(400, f"body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise AdminError(400, "body must be a JSON object")
    return value


def _str(obj: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise AdminError(400, f"{name} is required")
        return None
    if not isinstance(value, str) or not value:
        raise AdminError(400, f"{name} must be a non-empty string")
    return value


def _bool(obj: dict[str, Any], name: str) -> bool | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, bool):
        raise AdminError(400, f"{name} must be true or false")
    return value


def _number(obj: dict[str, Any], name: str, minimum: float = 0.0) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise AdminError(400, f"{name} must be a number >= {minimum}")
    return float(value)


def _str_list(obj: dict[str, Any], name: str) -> tuple[str, ...] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AdminError(400, f"{name} must be null or a list of non-empty strings")
    return tuple(value)


def _user_json(user: User) -> dict[str, object]:
    return {
        "username": user.username,
        "user_id": user.user_id,
        "org_id": user.org_id,
        "display_name": user.display_name,
        "email": user.email,
        "instance_url": user.instance_url,
    }


def _int(obj: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AdminError(400, f"{name} must be an integer in [{low}, {high}]")
    return value


class AdminApi:
    def __init__(self, state: State) -> None:
        self.state = state
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("POST", "clients"): self._clients,
            ("POST", "grants"): self._create_grants,
            ("GET", "grants"): self._list_grants,
            ("GET", "users"): self._list_users,
            ("POST", "users"): self._add_user,
            ("POST", "codes"): self._issue_code,
            ("GET", "authorizations"): self._authorizations,
            ("DELETE", "authorizations"): self._clear_authorizations,
            ("GET", "config"): self._config,
            ("POST", "config"): self._config,
            ("GET", "faults"): self._list_faults,
            ("POST", "faults"): self._add_fault,
            ("DELETE", "faults"): self._clear_faults,
            ("GET", "stats"): self._stats,
            ("POST", "stats/reset"): self._reset_stats,
            ("POST", "tokens"): self._tokens,
        }
        self._grant_actions: dict[tuple[str, str], Callable[[Grant], Response]] = {
            ("GET", ""): self._grant_view,
            ("POST", "revoke"): self._grant_revoke,
            ("POST", "activity"): self._grant_activity,
            ("POST", "expire"): self._grant_expire,
        }

    def handle(self, request: Request) -> Response:
        try:
            return self._route(request)
        except AdminError as exc:
            return _reply({"error": str(exc)}, exc.status)

    def _route(self, request: Request) -> Response:
        rest = request.path[len("/_admin/") :].strip("/")
        route = self._routes.get((request.method, rest))
        if route is not None:
            return route(request)
        parts = rest.split("/")
        if parts[0] == "grants" and len(parts) in (2, 3):
            action = self._grant_actions.get((request.method, parts[2] if len(parts) == 3 else ""))
            if action is not None:
                return action(self._grant(parts[1]))
        raise AdminError(404, f"no admin route {request.method} {request.path}")

    # -- clients and grants --------------------------------------------------------------

    def _clients(self, request: Request) -> Response:
        body = _object(request)
        client_id = _str(body, "client_id", required=True)
        assert client_id is not None
        try:
            client = self.state.upsert_client(
                client_id,
                _str(body, "client_secret"),
                rotation=_bool(body, "rotation"),
                introspect=_bool(body, "introspect"),
                redirect_uris=_str_list(body, "redirect_uris"),
                # An explicit null goes back to "any loopback URL"; absent changes nothing.
                any_loopback="redirect_uris" in body and body["redirect_uris"] is None,
            )
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        reply: dict[str, object] = {"client_id": client_id}
        if "redirect_uris" in body:
            uris = client.redirect_uris
            reply["redirect_uris"] = None if uris is None else list(uris)
        return _reply(reply)

    def _list_users(self, request: Request) -> Response:
        return _reply({"users": [_user_json(user) for user in self.state.users.values()]})

    def _add_user(self, request: Request) -> Response:
        body = _object(request)
        username = _str(body, "username", required=True)
        assert username is not None
        user = self.state.add_user(
            username,
            org_id=_str(body, "org_id"),
            display_name=_str(body, "display_name"),
            email=_str(body, "email"),
            instance_url=_str(body, "instance_url"),
        )
        return _reply(_user_json(user))

    def _list_grants(self, request: Request) -> Response:
        query = {k: v[-1] for k, v in parse_qs(request.query).items()}
        username = query.get("username")
        client_id = query.get("client_id")
        if username is not None:
            grants = self.state.grants_of(username, client_id)
        else:
            grants = [
                g
                for g in self.state.grants.values()
                if client_id is None or g.client_id == client_id
            ]
        return _reply({"grants": [self._grant_json(grant) for grant in grants]})

    def _issue_code(self, request: Request) -> Response:
        """A code as if the user clicked Allow, for tests that skip the browser."""
        body = _object(request)
        params = {"response_type": "code"}
        for name in ("client_id", "redirect_uri", "scope", "code_challenge"):
            value = _str(body, name)
            if value is not None:
                params[name] = value
        if "code_challenge" in params:
            params["code_challenge_method"] = _str(body, "code_challenge_method") or "S256"
        username = _str(body, "username") or self.state.default_user.username
        user = self.state.users.get(username)
        if user is None:
            raise AdminError(404, f"unknown username {username!r}")
        try:
            parsed = parse_authorize(self.state, params)
        except (PageError, OAuthError) as exc:
            raise AdminError(400, str(exc)) from None
        return _reply({"code": issue_code(self.state, parsed, user), "username": username})

    def _authorizations(self, request: Request) -> Response:
        return _reply({"authorizations": list(self.state.authorize_log)})

    def _clear_authorizations(self, request: Request) -> Response:
        self.state.authorize_log.clear()
        return _reply({"authorizations": []})

    def _create_grants(self, request: Request) -> Response:
        body = _object(request)
        client_id = _str(body, "client_id", required=True)
        assert client_id is not None
        if client_id not in self.state.clients:
            raise AdminError(404, f"unknown client_id {client_id!r}")
        count = _int(body, "count", 1, MAX_GRANTS_PER_CALL) or 1
        vary = _bool(body, "vary_access_token")
        with paused_gc():
            issued = self.state.create_grants(
                client_id,
                count,
                lifetime=_number(body, "lifetime", minimum=0.001),
                instance_url=_str(body, "instance_url"),
                vary_access_token=True if vary is None else vary,
            )
            grants = [
                {
                    "grant_id": item.grant.grant_id,
                    "refresh_token": item.grant.refresh_token,
                    "access_token": item.access.token,
                    "instance_url": item.grant.instance_url,
                    "id": item.grant.id_url,
                    "issued_at": item.issued_at_ms,
                }
                for item in issued
            ]
            return _reply({"grants": grants})

    def _grant(self, grant_id: str) -> Grant:
        grant = self.state.grants.get(grant_id)
        if grant is None:
            raise AdminError(404, f"unknown grant_id {grant_id!r}")
        return grant

    def _grant_view(self, grant: Grant) -> Response:
        return _reply(self._grant_json(grant))

    def _grant_json(self, grant: Grant) -> dict[str, object]:
        latest = grant.latest if grant.tokens else None
        return {
            "grant_id": grant.grant_id,
            "client_id": grant.client_id,
            "revoked": grant.revoked,
            "refresh_token": grant.refresh_token,
            "refresh_count": grant.refresh_count,
            "access_token": latest.token if latest else None,
            "exp": latest.exp if latest else None,
            "lifetime": self.state.effective_lifetime(grant),
            "id": grant.id_url,
            "username": grant.username,
            "user_id": grant.user_id,
            "org_id": grant.org_id,
            "scope": grant.scope,
            "instance_url": grant.instance_url,
        }

    def _grant_revoke(self, grant: Grant) -> Response:
        self.state.revoke_grant(grant)
        return self._grant_view(grant)

    def _grant_activity(self, grant: Grant) -> Response:
        self.state.extend(grant)
        return self._grant_view(grant)

    def _grant_expire(self, grant: Grant) -> Response:
        self.state.expire(grant)
        return self._grant_view(grant)

    # -- config, faults, stats -----------------------------------------------------------

    def _config(self, request: Request) -> Response:
        body = _object(request)
        lifetime = _number(body, "lifetime", minimum=0.001)
        latency_ms = _number(body, "latency_ms")
        race_window_ms = _number(body, "race_window_ms")
        consumed_active = _bool(body, "consumed_refresh_active")
        approvals = _int(body, "approvals_per_user", 0, 1000)
        code_lifetime = _number(body, "code_lifetime", minimum=0.001)
        if approvals is not None:
            self.state.approvals_per_user = approvals
        if code_lifetime is not None:
            self.state.code_lifetime = code_lifetime
        if lifetime is not None:
            self.state.lifetime = lifetime
        if latency_ms is not None:
            self.state.latency_ms = latency_ms
        if race_window_ms is not None:
            self.state.race_window_ms = race_window_ms
        if consumed_active is not None:
            self.state.consumed_refresh_active = consumed_active
        return _reply(
            {
                "lifetime": self.state.lifetime,
                "latency_ms": self.state.latency_ms,
                "race_window_ms": self.state.race_window_ms,
                "consumed_refresh_active": self.state.consumed_refresh_active,
                "approvals_per_user": self.state.approvals_per_user,
                "code_lifetime": self.state.code_lifetime,
            }
        )

    def _add_fault(self, request: Request) -> Response:
        body = _object(request)
        endpoint = _str(body, "endpoint") or "any"
        if endpoint not in ENDPOINTS:
            raise AdminError(400, f"endpoint must be one of {sorted(ENDPOINTS)}")
        mutate = _str(body, "mutate")
        if mutate is not None and mutate not in MUTATIONS:
            raise AdminError(400, f"mutate must be null or one of {sorted(MUTATIONS)}")
        status = _int(body, "status", 100, 599)
        if mutate is None and status is not None:
            mutate = "error"  # a bare status means "answer this", not "delay, then succeed"
        # An absent count means once; an explicit null means until the queue is cleared.
        count = _int(body, "count", 1, 2**62) if "count" in body else 1
        fault = Fault(
            endpoint=endpoint,
            count=count,
            client_id=_str(body, "client_id"),
            status=status,
            body=self._fault_body(body),
            content_type=_str(body, "content_type") or "application/json;charset=UTF-8",
            delay_s=_number(body, "delay_s") or 0.0,
            mutate=mutate,
            retry_after=_int(body, "retry_after", 0, 86400),
            rotate=_bool(body, "rotate"),
        )
        self.state.faults.add(fault)
        return _reply({"queued": len(self.state.faults.pending())})

    @staticmethod
    def _fault_body(body: dict[str, Any]) -> str:
        value = body.get("body", "")
        if not isinstance(value, str):
            raise AdminError(400, "body must be a string")
        return value

    def _list_faults(self, request: Request) -> Response:
        return _reply({"faults": [fault.as_json() for fault in self.state.faults.pending()]})

    def _clear_faults(self, request: Request) -> Response:
        self.state.faults.clear()
        return _reply({"queued": 0})

    def _stats(self, request: Request) -> Response:
        stats = self.state.stats
        payload: dict[str, object] = {
            "token_calls": stats.token_calls,
            "introspect_calls": stats.introspect_calls,
            "revoke_calls": stats.revoke_calls,
            "data_calls": stats.data_calls,
            "reuse_revocations": stats.reuse_revocations,
            "refresh_token_resends": stats.refresh_token_resends,
            "concurrent_refresh_rejections": stats.concurrent_refresh_rejections,
            "authorize_calls": stats.authorize_calls,
            "consents_allowed": stats.consents_allowed,
            "consents_denied": stats.consents_denied,
            "code_calls": stats.code_calls,
            "userinfo_calls": stats.userinfo_calls,
            "approval_revocations": stats.approval_revocations,
            "api_usage": stats.api_usage,
        }
        asked = parse_qs(request.query).get("by_grant", ["0"])[-1] not in ("0", "", "false")
        if asked or len(self.state.grants) <= BY_GRANT_LIMIT:
            payload["token_calls_by_grant"] = dict(stats.token_calls_by_grant)
        return _reply(payload)

    def _tokens(self, request: Request) -> Response:
        """The org's truth about access tokens (POST, so tokens never sit in a URL):
        `{"tokens": [...]}` -> `{"tokens": [{known, active, exp}, ...]}` in the same order.
        Unlike a REST call this never extends a session."""
        tokens = _object(request).get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise AdminError(400, "tokens must be a list of strings")
        return _reply({"tokens": [self.state.access_truth(token) for token in tokens]})

    def _reset_stats(self, request: Request) -> Response:
        self.state.reset_stats()
        return self._stats(request)
