"""The emulator's web-server flow, revocation, userinfo, identity URL and REST resources,
exercised over real HTTP the way the api process, its proxy and the SDK will use them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from worker.dev.emulator import EmulatorThread

CLIENT_ID = "app"
SECRET = "s3cret"
CALLBACK = "http://127.0.0.1:8080/oauth/callback"
AUTHORIZE = "/services/oauth2/authorize"
TOKEN = "/services/oauth2/token"
REVOKE = "/services/oauth2/revoke"
USERINFO = "/services/oauth2/userinfo"
V = "/services/data/v62.0"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


class _Form(HTMLParser):
    """The fields a browser would submit from the page's form."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "input" and found.get("name"):
            self.fields[str(found["name"])] = found.get("value") or ""


def parse_page(html: str) -> _Form:
    form = _Form()
    form.feed(html)
    return form


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http(clock: FakeClock) -> Iterator[httpx.Client]:
    with (
        EmulatorThread(lifetime=3600, clock=clock) as emu,
        httpx.Client(base_url=emu.base_url, timeout=10) as client,
    ):
        client.post("/_admin/clients", json={"client_id": CLIENT_ID, "client_secret": SECRET})
        yield client


def authorize_params(**overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": CALLBACK,
        "state": "st-1",
        "scope": "api refresh_token",
        "prompt": "consent",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        **overrides,
    }
    return {k: v for k, v in params.items() if v is not None}


def click(
    http: httpx.Client, button: str, username: str | None = None, **overrides: str | None
) -> httpx.Response:
    """Open the authorize page and press a button, as the browser would."""
    page = http.get(AUTHORIZE, params=authorize_params(**overrides))
    assert page.status_code == 200, page.text
    fields = parse_page(page.text).fields
    if username is not None:
        fields["username"] = username
    fields[button] = "1"
    return http.post(AUTHORIZE, data=fields)


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return {k: v[-1] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(http: httpx.Client, code: str, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "code_verifier": VERIFIER,
        **overrides,
    }
    return http.post(TOKEN, data=form)


def connect(http: httpx.Client, **overrides: str | None) -> dict[str, Any]:
    code = redirect_query(click(http, "allow", **overrides))["code"]
    response = exchange(http, code)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def oauth_error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["error_description"]


# -- the authorize page ----------------------------------------------------------------------


def test_page_has_stable_hooks_and_carries_the_request(http: httpx.Client) -> None:
    """The page has the username field (prefilled), Allow and Deny, and the request hidden."""
    page = http.get(AUTHORIZE, params=authorize_params())
    assert page.headers["content-type"].startswith("text/html")
    form = parse_page(page.text)
    assert {"consent", "username", "allow", "deny"} <= form.ids
    assert form.fields["username"] == "user@example.com"
    assert form.fields["state"] == "st-1"
    assert form.fields["code_challenge"] == CHALLENGE
    assert 'name="allow"' in page.text
    assert 'name="deny"' in page.text


def test_allow_redirects_with_code_and_state(http: httpx.Client) -> None:
    """Allow sends the browser to redirect_uri with a code and the state, unchanged."""
    query = redirect_query(click(http, "allow", state="a b&c"))
    assert query["state"] == "a b&c"
    assert query["code"]


def test_deny_redirects_with_salesforce_error(http: httpx.Client) -> None:
    """Deny: error=access_denied, Salesforce's description, and the state."""
    response = click(http, "deny")
    assert (
        "error=access_denied&error_description=end-user+denied+authorization&state=st-1"
        in (response.headers["location"])
    )
    assert http.get("/_admin/stats").json()["consents_denied"] == 1


def test_unknown_client_is_an_error_page_not_a_redirect(http: httpx.Client) -> None:
    """An unknown client_id is shown on Salesforce's own page: no Location header."""
    response = http.get(AUTHORIZE, params=authorize_params(client_id="ghost"))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert 'data-error="invalid_client_id"' in response.text


@pytest.mark.parametrize(
    "uri",
    ["https://evil.example.com/cb", "http://127.0.0.1.evil.com/cb", "http://127.0.0.1/cb#x", ""],
)
def test_non_loopback_redirect_is_refused_by_default(http: httpx.Client, uri: str) -> None:
    """Without a registered list, only loopback http(s) callbacks are accepted."""
    response = http.get(AUTHORIZE, params=authorize_params(redirect_uri=uri))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "redirect_uri_m" in response.text


def test_registered_redirect_uris_are_matched_exactly(http: httpx.Client) -> None:
    """A client that registers callbacks gets exactly those; null restores the default."""
    registered = "https://tokenworker.example.com/oauth/callback"
    body = {"client_id": CLIENT_ID, "redirect_uris": [registered]}
    assert http.post("/_admin/clients", json=body).json()["redirect_uris"] == [registered]
    assert http.get(AUTHORIZE, params=authorize_params()).status_code == 400
    ok = http.get(AUTHORIZE, params=authorize_params(redirect_uri=registered))
    assert ok.status_code == 200
    slash = http.get(AUTHORIZE, params=authorize_params(redirect_uri=registered + "/"))
    assert 'data-error="redirect_uri_mismatch"' in slash.text
    http.post("/_admin/clients", json={"client_id": CLIENT_ID, "redirect_uris": None})
    assert http.get(AUTHORIZE, params=authorize_params()).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "api launch_missiles"}, "invalid_scope"),
    ],
)
def test_bad_requests_redirect_with_error(
    http: httpx.Client, overrides: dict[str, str | None], error: str
) -> None:
    """Errors after the callback is validated go back to it, with the state."""
    response = http.get(AUTHORIZE, params=authorize_params(**overrides))
    query = redirect_query(response)
    assert (query["error"], query["state"]) == (error, "st-1")


def test_unknown_username_shows_login_error(http: httpx.Client) -> None:
    """Allow with a username the org does not have re-renders the page with an alert."""
    response = click(http, "allow", username="nobody@example.com")
    assert response.status_code == 200
    assert 'id="login-error"' in response.text


# -- the authorization_code grant --------------------------------------------------------------


def test_exchange_answers_like_salesforce(http: httpx.Client) -> None:
    """The token answer: refresh_token, id, instance_url, ms issued_at, signature, no expires_in."""
    body = connect(http)
    assert set(body) == {
        "access_token",
        "refresh_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "api refresh_token"
    assert len(body["issued_at"]) == 13
    mac = hmac.new(SECRET.encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256)
    assert body["signature"] == base64.b64encode(mac.digest()).decode()
    assert body["instance_url"] == str(http.base_url).rstrip("/")
    user = http.get("/_admin/users").json()["users"][0]
    assert body["id"].endswith(f"/id/{user['org_id']}/{user['user_id']}")


def test_exchanged_grant_refreshes_and_rotates(http: httpx.Client) -> None:
    """The new grant is an ordinary one: it refreshes (and rotates when the client does)."""
    http.post("/_admin/clients", json={"client_id": CLIENT_ID, "rotation": True})
    body = connect(http)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": body["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }
    refreshed = http.post(TOKEN, data=form).json()
    assert refreshed["refresh_token"] != body["refresh_token"]
    assert refreshed["id"] == body["id"]


def test_code_is_single_use(http: httpx.Client) -> None:
    """A second exchange of the same code is invalid_grant / invalid authorization code."""
    code = redirect_query(click(http, "allow"))["code"]
    assert exchange(http, code).status_code == 200
    again = exchange(http, code)
    assert oauth_error(again) == (400, "invalid_grant", "invalid authorization code")
    garbage = exchange(http, "not-a-code")
    assert oauth_error(garbage) == (400, "invalid_grant", "invalid authorization code")


def test_code_expires_after_15_minutes(http: httpx.Client, clock: FakeClock) -> None:
    """A code older than 15 minutes is invalid_grant / expired authorization code."""
    code = redirect_query(click(http, "allow"))["code"]
    clock.now += 15 * 60
    response = exchange(http, code)
    assert oauth_error(response) == (400, "invalid_grant", "expired authorization code")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"code_verifier": "x" * 43}, (400, "invalid_grant", "invalid code verifier")),
        ({"code_verifier": ""}, (400, "invalid_grant", "invalid code verifier")),
        (
            {"redirect_uri": "http://127.0.0.1:8080/other"},
            (400, "redirect_uri_mismatch", "redirect_uri must match configuration"),
        ),
        ({"client_secret": "wrong"}, (400, "invalid_client", "invalid client credentials")),
        ({"client_id": "ghost"}, (400, "invalid_client_id", "client identifier invalid")),
    ],
)
def test_exchange_errors_use_salesforce_wording(
    http: httpx.Client, overrides: dict[str, str], expected: tuple[int, str, str]
) -> None:
    """PKCE, redirect_uri and client failures answer as Salesforce does; nothing is issued."""
    code = redirect_query(click(http, "allow"))["code"]
    assert oauth_error(exchange(http, code, **overrides)) == expected
    assert http.get("/_admin/grants", params={"username": "user@example.com"}).json() == {
        "grants": []
    }
    assert exchange(http, code).status_code == 200  # a failed attempt does not use it up


def test_verifier_without_challenge_is_refused(http: httpx.Client) -> None:
    """A code issued without PKCE refuses a verifier, and works without one."""
    code = redirect_query(click(http, "allow", code_challenge=None))["code"]
    assert oauth_error(exchange(http, code))[2] == "invalid code verifier"
    assert exchange(http, code, code_verifier="").status_code == 200


def test_no_refresh_token_without_refresh_scope(http: httpx.Client) -> None:
    """Without refresh_token/offline_access in the scope, no refresh token comes back."""
    body = connect(http, scope="api id")
    assert "refresh_token" not in body
    assert body["scope"] == "api id"


def test_another_user_and_org(http: httpx.Client) -> None:
    """An admin-added user (optionally in another org) logs in by username."""
    org = "00D000000000002AAA"
    user = http.post("/_admin/users", json={"username": "b@corp.example", "org_id": org}).json()
    body = connect(http, username="b@corp.example")
    assert body["id"].endswith(f"/id/{org}/{user['user_id']}")
    grants = http.get("/_admin/grants", params={"username": "b@corp.example"}).json()["grants"]
    assert [g["org_id"] for g in grants] == [org]


def test_sixth_approval_revokes_the_oldest(http: httpx.Client) -> None:
    """Five approvals per user and app; the sixth revokes the oldest grant."""
    first = connect(http)
    for _ in range(5):
        connect(http)
    grants = http.get("/_admin/grants", params={"username": "user@example.com"}).json()["grants"]
    assert [g["revoked"] for g in grants] == [True, False, False, False, False, False]
    assert http.get(f"{V}/", headers=bearer(first["access_token"])).status_code == 401
    assert http.get("/_admin/stats").json()["approval_revocations"] == 1


def test_code_exchange_is_faulted_and_counted_apart_from_refreshes(http: httpx.Client) -> None:
    """Faults on "code" hit exchanges only; code_calls counts them, token_calls does not."""
    http.post("/_admin/faults", json={"endpoint": "code", "status": 503})
    code = redirect_query(click(http, "allow"))["code"]
    assert exchange(http, code).status_code == 503
    assert exchange(http, code).status_code == 200
    stats = http.get("/_admin/stats").json()
    assert (stats["code_calls"], stats["token_calls"]) == (2, 0)


# -- admin helpers ---------------------------------------------------------------------------


def test_admin_code_without_a_browser(http: httpx.Client) -> None:
    """POST /_admin/codes issues a code as if Allow was clicked, with the same checks."""
    body = {"client_id": CLIENT_ID, "redirect_uri": CALLBACK, "code_challenge": CHALLENGE}
    code = http.post("/_admin/codes", json=body).json()["code"]
    assert exchange(http, code).status_code == 200
    bad = http.post("/_admin/codes", json={**body, "redirect_uri": "https://x.example/cb"})
    assert bad.status_code == 400


def test_admin_authorization_log(http: httpx.Client) -> None:
    """Every authorize request is logged with its parameters and outcome."""
    click(http, "allow")
    click(http, "deny")
    log = http.get("/_admin/authorizations").json()["authorizations"]
    assert [entry["outcome"] for entry in log] == ["shown", "allow", "shown", "deny"]
    assert log[1]["username"] == "user@example.com"
    assert log[0]["prompt"] == "consent"
    assert log[0]["code_challenge_method"] == "S256"
    stats = http.get("/_admin/stats").json()
    assert (stats["authorize_calls"], stats["consents_allowed"]) == (2, 1)
    http.delete("/_admin/authorizations")
    assert http.get("/_admin/authorizations").json() == {"authorizations": []}


# -- revoke ----------------------------------------------------------------------------------


def test_revoke_refresh_token_ends_grant_and_second_revoke_is_invalid_token(
    http: httpx.Client,
) -> None:
    """200 with an empty body; then the token is dead: 400 invalid_token."""
    body = connect(http)
    response = http.post(REVOKE, data={"token": body["refresh_token"]})
    assert (response.status_code, response.content) == (200, b"")
    assert http.get(f"{V}/", headers=bearer(body["access_token"])).status_code == 401
    again = http.post(REVOKE, data={"token": body["refresh_token"]})
    assert oauth_error(again)[:2] == (400, "invalid_token")
    unknown = http.post(REVOKE, data={"token": "never-issued"})
    assert oauth_error(unknown)[:2] == (400, "unsupported_token_type")


def test_revoke_by_get_and_access_token(http: httpx.Client) -> None:
    """GET ?token= works too; an access token revokes only that session."""
    body = connect(http)
    assert http.get(REVOKE, params={"token": body["access_token"]}).status_code == 200
    assert http.get(f"{V}/", headers=bearer(body["access_token"])).status_code == 401
    form = {
        "grant_type": "refresh_token",
        "refresh_token": body["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }
    assert http.post(TOKEN, data=form).status_code == 200


# -- userinfo and the identity URL -----------------------------------------------------------


def test_userinfo_and_identity_url(http: httpx.Client) -> None:
    """Both answer the token's user and org; the identity URL is the token answer's `id`."""
    body = connect(http)
    auth = bearer(body["access_token"])
    info = http.get(USERINFO, headers=auth).json()
    assert info["sub"] == body["id"]
    assert info["preferred_username"] == "user@example.com"
    identity = http.get(body["id"], headers=auth).json()
    assert identity["id"] == body["id"]
    assert identity["username"] == "user@example.com"
    assert body["id"].endswith(f"/{identity['organization_id']}/{identity['user_id']}")
    assert identity["urls"]["rest"] == body["instance_url"] + "/services/data/v{version}/"
    assert http.get("/_admin/stats").json()["userinfo_calls"] == 2


def test_userinfo_and_identity_refuse_bad_tokens_with_403(http: httpx.Client) -> None:
    """Bad_OAuth_Token / Missing_OAuth_Token in plain text; another org's id is Wrong_Org."""
    body = connect(http)
    bad = http.get(USERINFO, headers=bearer("00Dnope"))
    assert (bad.status_code, bad.text) == (403, "Bad_OAuth_Token")
    assert http.get(body["id"]).text == "Missing_OAuth_Token"
    user_id = body["id"].rsplit("/", 1)[1]
    other = http.get(f"/id/00D000000000009AAA/{user_id}", headers=bearer(body["access_token"]))
    assert (other.status_code, other.text) == (403, "Wrong_Org")


# -- REST ------------------------------------------------------------------------------------


def test_rest_resources_with_a_live_token(http: httpx.Client) -> None:
    """Resources, limits, query and create answer, each with Sforce-Limit-Info."""
    auth = bearer(connect(http)["access_token"])
    versions = http.get("/services/data/").json()  # no token needed
    assert {"version": "62.0", "url": V, "label": "Winter '25"} in versions
    resources = http.get(f"{V}/", headers=auth)
    assert resources.json()["query"] == f"{V}/query"
    assert resources.headers["sforce-limit-info"] == "api-usage=1/15000"
    limits = http.get(f"{V}/limits", headers=auth)
    assert limits.json()["DailyApiRequests"] == {"Max": 15000, "Remaining": 14998}
    assert limits.headers["sforce-limit-info"] == "api-usage=2/15000"
    query = http.get(f"{V}/query", params={"q": "SELECT Id FROM Account"}, headers=auth)
    assert query.json()["totalSize"] == 1
    created = http.post(f"{V}/sobjects/Account", json={"Name": "Acme"}, headers=auth)
    assert created.status_code == 201
    assert created.json()["success"] is True
    assert created.json()["id"].startswith("001")
    assert http.get(f"{V}/nothing", headers=auth).status_code == 404


def test_rest_refuses_anything_but_a_live_token(http: httpx.Client, clock: FakeClock) -> None:
    """No token, a foreign one, an expired one: 401 INVALID_SESSION_ID, no usage counted."""
    auth = bearer(connect(http)["access_token"])
    for headers in ({}, bearer("00Dnope"), {"Authorization": "Basic eDp5"}):
        response = http.post(f"{V}/sobjects/Account", json={}, headers=headers)
        assert (response.status_code, response.json()) == (401, INVALID_SESSION)
    clock.now += 3601
    assert http.get(f"{V}/limits", headers=auth).json() == INVALID_SESSION
    assert http.get("/_admin/stats").json()["api_usage"] == 0


def test_rest_use_is_session_activity(http: httpx.Client, clock: FakeClock) -> None:
    """A REST call past half the session's life extends it (the half-timeout rule)."""
    auth = bearer(connect(http)["access_token"])
    clock.now += 2000
    assert http.get(f"{V}/", headers=auth).status_code == 200
    clock.now += 3000  # 5000 s after issue: alive only because the call extended it
    assert http.get(f"{V}/", headers=auth).status_code == 200


def test_session_without_api_scope_is_not_valid_for_rest(http: httpx.Client) -> None:
    """A token without the api scope gets the policy 401, not the expired-session one."""
    auth = bearer(connect(http, scope="id refresh_token")["access_token"])
    response = http.get(f"{V}/", headers=auth)
    assert response.status_code == 401
    assert response.json()[0]["message"] == "This session is not valid for use with the REST API"
