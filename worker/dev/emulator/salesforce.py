"""The Salesforce endpoints: token (refresh_token and authorization_code grants),
introspect, revoke, and (through `RestApi`) REST, userinfo and the identity URL.

Bodies, statuses and error wording follow what Salesforce really answers, including its
quirks: `issued_at` is epoch milliseconds as a string, there is no `expires_in`, and the
signature is base64(HMAC-SHA256(client_secret, id + issued_at)).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote_plus

from worker.dev.emulator.faults import REPLACING, Fault
from worker.dev.emulator.http import Request, Response, json_response
from worker.dev.emulator.records import SCOPE, AccessToken, Client, Issued, OAuthError
from worker.dev.emulator.rest import RestApi, bearer
from worker.dev.emulator.state import State
from worker.dev.emulator.webflow import exchange, gives_refresh_token

JSON = "application/json;charset=UTF-8"
EVIL_INSTANCE_URL = "https://evil.example.com"
REDIRECT_TARGET = "http://127.0.0.2:9/steal"
_INACTIVE = b'{"active":false}'
_MAINTENANCE = (
    b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>"
    b"<h1>Salesforce is down for maintenance</h1><p>Please try again later.</p></body></html>"
)


def parse_form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    """Client id and secret from the form, else from HTTP Basic (RFC 6749 2.3.1 encoding)."""
    if "client_id" in form:
        return form["client_id"], form.get("client_secret")
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() != "basic ":
        return None, None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, _, password = decoded.partition(":")
    return unquote_plus(user), unquote_plus(password)


def sign(client_secret: str, id_url: str, issued_at: str) -> str:
    mac = hmac.new(client_secret.encode(), (id_url + issued_at).encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def oauth_error(status: int, error: str, description: str) -> Response:
    return json_response(status, {"error": error, "error_description": description})


_CANNED = {
    "redirect": Response(302, b"", None, [("Location", REDIRECT_TARGET)]),
    "truncated_json": Response(200, b'{"access_token": "00D', JSON),
    "html_503": Response(503, _MAINTENANCE, "text/html;charset=UTF-8"),
    "close_connection": Response(0, drop=True),
}


@functools.cache
def _huge_body() -> bytes:
    # Built once: 10 MB of almost-JSON, for clients that must cap what they read.
    return b'{"access_token":"' + b"A" * (10 * 1024 * 1024) + b'","padding":true}'


class SalesforceApi:
    def __init__(self, state: State) -> None:
        self.state = state
        self.rest = RestApi(state)

    # -- endpoints -----------------------------------------------------------------------

    def token(self, request: Request) -> Response:
        form = parse_form(request.body)
        client_id, secret = client_credentials(request, form)
        if form.get("grant_type") == "authorization_code":
            # Counted and faulted as "code", apart from refreshes.
            return self._answer(
                "code",
                client_id,
                None,
                lambda mutate, _: self._exchange(form, client_id, secret, mutate),
            )
        refresh_token = form.get("refresh_token", "")
        return self._answer(
            "token",
            client_id,
            refresh_token,
            lambda mutate, delay: self._refresh(form, client_id, secret, mutate, delay),
        )

    def introspect(self, request: Request) -> Response:
        form = parse_form(request.body)
        client_id, secret = client_credentials(request, form)
        return self._answer(
            "introspect", client_id, None, lambda _, __: self._introspect(form, client_id, secret)
        )

    def revoke(self, request: Request) -> Response:
        # Salesforce also takes `GET /services/oauth2/revoke?token=...` (fact sheet 9).
        form = parse_form(request.body if request.method == "POST" else request.query.encode())
        client_id, _ = client_credentials(request, form)
        return self._answer("revoke", client_id, None, lambda _, __: self._revoke(form))

    def data(self, request: Request) -> Response:
        token = bearer(request)
        return self._answer("data", None, None, lambda _, __: self.rest.data(request, token))

    def userinfo(self, request: Request) -> Response:
        token = bearer(request)
        return self._answer(
            "userinfo", None, None, lambda _, __: self.rest.userinfo(request, token)
        )

    def identity(self, request: Request) -> Response:
        token = bearer(request)
        return self._answer(
            "userinfo", None, None, lambda _, __: self.rest.identity(request, token)
        )

    # -- the common path: count, maybe fault, add latency --------------------------------

    def _answer(
        self,
        endpoint: str,
        client_id: str | None,
        refresh_token: str | None,
        real: Callable[[str | None, float], Response],
    ) -> Response:
        """`real(mutate, delay)` does the real operation; `delay` is how long its answer
        will be held back (a refresh in flight that long is what a concurrent one loses to)."""
        state = self.state
        state.count(endpoint, refresh_token)
        fault = state.faults.take(endpoint, client_id)
        delay = state.latency_ms / 1000.0 + (fault.delay_s if fault is not None else 0.0)
        if fault is None:
            response = real(None, delay)
        elif fault.mutate in REPLACING:
            response = self._replacing(fault, endpoint, refresh_token, real, delay)
        else:
            response = real(fault.mutate, delay)
        response.delay += delay
        return response

    def _replacing(
        self,
        fault: Fault,
        endpoint: str,
        refresh_token: str | None,
        real: Callable[[str | None, float], Response],
        delay: float,
    ) -> Response:
        if fault.rotates_first(endpoint):
            # Salesforce sends a 200 only after the grant ran: the token is consumed first.
            done = real(None, delay)
            if done.status != 200:
                return done  # the real refresh failed: that error is what Salesforce says
        return self._replacement(fault, refresh_token)

    def _replacement(self, fault: Fault, refresh_token: str | None) -> Response:
        mutate = fault.mutate
        if mutate == "drop_access_token":
            return json_response(200, self._tokenless_body(refresh_token))
        if mutate == "error":
            headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after else []
            return Response(
                fault.status or 500, fault.body.encode("utf-8"), fault.content_type, headers
            )
        if mutate == "huge_body":
            return Response(200, _huge_body(), JSON)
        canned = _CANNED[mutate or ""]
        # A fresh copy each time: the caller adds latency to it in place.
        return Response(
            canned.status, canned.body, canned.content_type, list(canned.headers), drop=canned.drop
        )

    # -- real behaviour ------------------------------------------------------------------

    def _refresh(
        self,
        form: dict[str, str],
        client_id: str | None,
        secret: str | None,
        mutate: str | None,
        delay: float,
    ) -> Response:
        if form.get("grant_type") != "refresh_token":
            return oauth_error(400, "unsupported_grant_type", "grant type not supported")
        try:
            client = self.state.authenticate(client_id, secret)
            issued = self.state.refresh(client, form.get("refresh_token", ""), delay)
        except OAuthError as exc:
            return oauth_error(exc.status, exc.error, exc.description)
        return json_response(200, self._token_body(issued, client, mutate))

    def _exchange(
        self, form: dict[str, str], client_id: str | None, secret: str | None, mutate: str | None
    ) -> Response:
        try:
            client = self.state.authenticate(client_id, secret)
            issued = exchange(self.state, client, form)
        except OAuthError as exc:
            return oauth_error(exc.status, exc.error, exc.description)
        if not gives_refresh_token(issued.grant.scope):
            issued = dataclasses.replace(issued, refresh_token=None)
        return json_response(200, self._token_body(issued, client, mutate))

    def _token_body(self, issued: Issued, client: Client, mutate: str | None) -> dict[str, str]:
        grant = issued.grant
        body = {"access_token": issued.access.token}
        if issued.refresh_token is not None:
            body["refresh_token"] = issued.refresh_token
        key = client.client_secret
        if mutate == "bad_signature":
            key += "-not-the-secret"
        body["signature"] = sign(key, grant.id_url, issued.issued_at_ms)
        body["scope"] = grant.scope
        foreign = mutate == "foreign_instance_url"
        body["instance_url"] = EVIL_INSTANCE_URL if foreign else grant.instance_url
        body["id"] = grant.id_url
        body["token_type"] = "Bearer"
        body["issued_at"] = issued.issued_at_ms
        return body

    def _tokenless_body(self, refresh_token: str | None) -> dict[str, str]:
        issued_at = str(int(self.state.clock() * 1000))
        body = {"scope": SCOPE, "token_type": "Bearer", "issued_at": issued_at}
        grant = self.state.grant_of_refresh_token(refresh_token) if refresh_token else None
        client = self.state.clients.get(grant.client_id) if grant is not None else None
        if grant is not None and client is not None:
            body["signature"] = sign(client.client_secret, grant.id_url, issued_at)
            body["instance_url"] = grant.instance_url
            body["id"] = grant.id_url
        return body

    def _introspect(
        self, form: dict[str, str], client_id: str | None, secret: str | None
    ) -> Response:
        try:
            caller = self.state.authenticate(client_id, secret)
        except OAuthError:
            return oauth_error(401, "invalid_client", "invalid client credentials")
        token = form.get("token", "")
        record = self.state.find(token)
        if record is None and not token.startswith("00D"):
            return oauth_error(400, "unsupported_token_type", "this token type is not supported")
        if record is None or not caller.introspect:
            return Response(200, _INACTIVE, JSON)
        if isinstance(record, AccessToken):
            if not record.active(self.state.clock()):
                return Response(200, _INACTIVE, JSON)
            grant, token_type, exp = record.grant, "access_token", int(record.exp)
            issued = int(record.iat)
        else:
            consumed = record.refresh_token != token
            if record.revoked or (consumed and not self.state.consumed_refresh_active):
                return Response(200, _INACTIVE, JSON)
            grant, token_type, exp, issued = record, "refresh_token", None, int(record.created)
        body: dict[str, object] = {
            "active": True,
            "scope": grant.scope,
            "client_id": grant.client_id,
            "username": grant.username,
            "sub": grant.id_url,
            "token_type": token_type,
        }
        if exp is not None:
            body["exp"] = exp
        body["iat"] = issued
        body["nbf"] = issued
        return json_response(200, body)

    def _revoke(self, form: dict[str, str]) -> Response:
        try:
            self.state.revoke(form.get("token", ""))
        except OAuthError as exc:
            return oauth_error(exc.status, exc.error, exc.description)
        return Response(200)
