"""The Salesforce OAuth emulator, exercised over real HTTP the way the worker will use it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from worker.dev.emulator import EmulatorThread

CLIENT_ID = "app"
SECRET = "s3cret"
TOKEN = "/services/oauth2/token"
INTROSPECT = "/services/oauth2/introspect"
REVOKE = "/services/oauth2/revoke"
DATA = "/services/data/v60.0/"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def emu() -> Iterator[EmulatorThread]:
    with EmulatorThread(lifetime=3600) as emulator:
        yield emulator


@pytest.fixture
def http(emu: EmulatorThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, timeout=10) as client:
        add_client(client)
        yield client


def add_client(http: httpx.Client, client_id: str = CLIENT_ID, **flags: Any) -> None:
    body = {"client_id": client_id, "client_secret": SECRET, **flags}
    assert http.post("/_admin/clients", json=body).json() == {"client_id": client_id}


def new_grant(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"client_id": CLIENT_ID, **fields}
    grants: list[dict[str, Any]] = http.post("/_admin/grants", json=body).json()["grants"]
    return grants[0]


def refresh(
    http: httpx.Client, refresh_token: str, client_id: str = CLIENT_ID, secret: str = SECRET
) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client_id,
        "client_secret": secret,
    }
    return http.post(TOKEN, data=form)


def introspect(http: httpx.Client, token: str, secret: str = SECRET) -> httpx.Response:
    form = {"token": token, "client_id": CLIENT_ID, "client_secret": secret}
    return http.post(INTROSPECT, data=form)


def grant_view(http: httpx.Client, grant_id: str) -> dict[str, Any]:
    view: dict[str, Any] = http.get(f"/_admin/grants/{grant_id}").json()
    return view


def add_fault(http: httpx.Client, **fault: Any) -> None:
    assert http.post("/_admin/faults", json=fault).status_code == 200


def signature(id_url: str, issued_at: str, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), (id_url + issued_at).encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


# -- token endpoint ------------------------------------------------------------------------


def test_refresh_success_has_salesforce_shape(emu: EmulatorThread, http: httpx.Client) -> None:
    """A refresh has Salesforce's fields: issued_at ms as a string, a signature, no expires_in."""
    grant = new_grant(http)
    response = refresh(http, grant["refresh_token"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json;charset=UTF-8"
    body = response.json()
    assert list(body) == [
        "access_token", "signature", "scope", "instance_url", "id", "token_type", "issued_at",
    ]  # fmt: skip
    assert body["access_token"].startswith("00D")
    assert "!AQ" in body["access_token"]
    assert body["access_token"] != grant["access_token"]
    assert body["instance_url"] == emu.base_url
    assert re.fullmatch(re.escape(emu.base_url) + r"/id/00D\w{15}/005\w{15}", body["id"])
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "refresh_token api"
    assert isinstance(body["issued_at"], str)
    assert abs(int(body["issued_at"]) - time.time() * 1000) < 10_000
    assert body["signature"] == signature(body["id"], body["issued_at"])


def test_refresh_without_rotation_keeps_refresh_token(http: httpx.Client) -> None:
    """Without rotation the same refresh token keeps working and none is returned."""
    grant = new_grant(http)
    for _ in range(3):
        assert "refresh_token" not in refresh(http, grant["refresh_token"]).json()
    assert grant_view(http, grant["grant_id"])["refresh_count"] == 3


def test_refresh_accepts_http_basic_client_auth(http: httpx.Client) -> None:
    """Client credentials may come in an HTTP Basic header instead of the form."""
    grant = new_grant(http)
    form = {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    response = http.post(TOKEN, data=form, auth=(CLIENT_ID, SECRET))
    assert response.status_code == 200
    assert "access_token" in response.json()


@pytest.mark.parametrize(
    ("change", "error", "description"),
    [
        ({"client_id": "nobody"}, "invalid_client_id", "client identifier invalid"),
        ({"client_secret": "wrong"}, "invalid_client", "invalid client credentials"),
        ({"refresh_token": "5Aep-unknown"}, "invalid_grant", "expired access/refresh token"),
        ({"grant_type": "password"}, "unsupported_grant_type", "grant type not supported"),
    ],
)
def test_refresh_errors_use_salesforce_wording(
    http: httpx.Client, change: dict[str, str], error: str, description: str
) -> None:
    """Each token-endpoint failure answers 400 with Salesforce's error and description."""
    grant = new_grant(http)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": grant["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        **change,
    }
    response = http.post(TOKEN, data=form)
    assert response.status_code == 400
    assert response.json() == {"error": error, "error_description": description}


def test_rotation_issues_new_refresh_token_and_reuse_revokes_grant(http: httpx.Client) -> None:
    """With rotation, presenting a consumed refresh token revokes the whole grant."""
    add_client(http, rotation=True)
    grant = new_grant(http)
    first = refresh(http, grant["refresh_token"]).json()
    assert first["refresh_token"] != grant["refresh_token"]
    second = refresh(http, first["refresh_token"]).json()
    reused = refresh(http, grant["refresh_token"])
    assert reused.json() == {
        "error": "invalid_grant",
        "error_description": "expired access/refresh token",
    }
    assert refresh(http, second["refresh_token"]).status_code == 400
    assert introspect(http, second["access_token"]).json() == {"active": False}
    assert grant_view(http, grant["grant_id"])["revoked"] is True
    assert http.get("/_admin/stats").json()["reuse_revocations"] == 1


def test_every_resent_refresh_token_is_counted(http: httpx.Client) -> None:
    """`refresh_token_resends` counts token calls whose refresh token was sent before, with
    or without rotation (without it, resending is the normal case)."""
    add_client(http, rotation=True)
    grant = new_grant(http)
    first = refresh(http, grant["refresh_token"]).json()
    assert http.get("/_admin/stats").json()["refresh_token_resends"] == 0
    refresh(http, grant["refresh_token"])  # consumed: a resend (and a reuse)
    refresh(http, first["refresh_token"])  # the grant is dead, but this one was never sent
    assert http.get("/_admin/stats").json()["refresh_token_resends"] == 1


def test_token_truth_tells_expiry_without_extending_the_session(
    emu: EmulatorThread, http: httpx.Client
) -> None:
    """POST /_admin/tokens: known, active and exp of each token, in order; no extension."""
    grant = new_grant(http, lifetime=2)
    truth = http.post("/_admin/tokens", json={"tokens": [grant["access_token"], "00Dnope"]})
    first, unknown = truth.json()["tokens"]
    assert first["known"] is True and first["active"] is True
    assert first["exp"] == pytest.approx(time.time() + 2, abs=1)
    assert unknown == {"known": False, "active": False, "exp": None}
    time.sleep(1.2)  # past half-life: a REST call now would extend the session
    again = http.post("/_admin/tokens", json={"tokens": [grant["access_token"]]})
    assert again.json()["tokens"][0]["exp"] == first["exp"]
    assert http.post("/_admin/tokens", json={"tokens": "x"}).status_code == 400


def test_previous_access_tokens_stay_valid_after_refresh(http: httpx.Client) -> None:
    """A refresh does not end the sessions issued before it."""
    grant = new_grant(http)
    newer = refresh(http, grant["refresh_token"]).json()["access_token"]
    assert introspect(http, grant["access_token"]).json()["active"] is True
    assert introspect(http, newer).json()["active"] is True


def test_grant_without_varying_access_token_gets_the_same_one(http: httpx.Client) -> None:
    """A grant with vary_access_token=false gets its still-active access token back."""
    grant = new_grant(http, vary_access_token=False)
    assert refresh(http, grant["refresh_token"]).json()["access_token"] == grant["access_token"]


def test_grant_lifetime_and_instance_url_are_honoured(http: httpx.Client) -> None:
    """A grant's own lifetime and instance_url override the emulator's defaults."""
    grant = new_grant(http, lifetime=120, instance_url="https://acme.my.salesforce.com")
    body = refresh(http, grant["refresh_token"]).json()
    assert body["instance_url"] == "https://acme.my.salesforce.com"
    info = introspect(http, body["access_token"]).json()
    assert info["exp"] - info["iat"] == 120


def test_config_lifetime_applies_to_new_tokens(http: httpx.Client) -> None:
    """Changing the default lifetime live affects tokens issued afterwards."""
    assert http.post("/_admin/config", json={"lifetime": 60}).json()["lifetime"] == 60
    grant = new_grant(http)
    info = introspect(http, grant["access_token"]).json()
    assert info["exp"] - info["iat"] == 60


def test_bulk_grant_creation_is_unique_and_fast(http: httpx.Client) -> None:
    """Creating 20k grants in one call is quick and every token is distinct."""
    started = time.perf_counter()
    grants = http.post("/_admin/grants", json={"client_id": CLIENT_ID, "count": 20_000})
    assert time.perf_counter() - started < 5
    items = grants.json()["grants"]
    assert len({g["refresh_token"] for g in items}) == len({g["access_token"] for g in items})
    assert len({g["grant_id"] for g in items}) == 20_000
    assert all(g["issued_at"].isdigit() for g in items[:10])


# -- introspection -------------------------------------------------------------------------


def test_introspect_active_access_token_shape(http: httpx.Client) -> None:
    """An active access token introspects with Salesforce's fields and integer times."""
    grant = new_grant(http)
    response = introspect(http, grant["access_token"])
    body = response.json()
    assert response.status_code == 200
    assert body == {
        "active": True,
        "scope": "refresh_token api",
        "client_id": CLIENT_ID,
        "username": "user@example.com",
        "sub": grant["id"],
        "token_type": "access_token",
        "exp": body["iat"] + 3600,
        "iat": body["iat"],
        "nbf": body["iat"],
    }
    assert isinstance(body["exp"], int)


def test_introspect_refresh_token(http: httpx.Client) -> None:
    """A current refresh token introspects as active with token_type refresh_token and no exp."""
    body = introspect(http, new_grant(http)["refresh_token"]).json()
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"
    assert "exp" not in body


def test_introspect_inactive_cases_answer_exactly_active_false(http: httpx.Client) -> None:
    """Expired, revoked and unknown-but-plausible tokens all answer exactly {"active": false}."""
    expired, revoked = new_grant(http), new_grant(http)
    http.post(f"/_admin/grants/{expired['grant_id']}/expire")
    http.post(f"/_admin/grants/{revoked['grant_id']}/revoke")
    for token in (expired["access_token"], revoked["access_token"], revoked["refresh_token"]):
        response = introspect(http, token)
        assert response.status_code == 200
        assert response.content == b'{"active":false}'
    assert introspect(http, "00Dxx0000001gEF!AQunknown").json() == {"active": False}


def test_introspect_garbage_token_is_unsupported(http: httpx.Client) -> None:
    """A string that is no Salesforce token answers 400 unsupported_token_type."""
    response = introspect(http, "not-a-token")
    assert response.status_code == 400
    assert response.json() == {
        "error": "unsupported_token_type",
        "error_description": "this token type is not supported",
    }


def test_introspect_bad_client_credentials_is_401(http: httpx.Client) -> None:
    """Wrong client credentials on introspection answer 401 invalid_client."""
    response = introspect(http, new_grant(http)["access_token"], secret="wrong")
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }


def test_client_without_introspect_permission_sees_inactive(http: httpx.Client) -> None:
    """A client with introspect=false gets {"active": false} even for a live token."""
    grant = new_grant(http)
    add_client(http, introspect=False)
    assert introspect(http, grant["access_token"]).json() == {"active": False}


# -- revoke and data -----------------------------------------------------------------------


def test_revoke_access_token_only_ends_that_session(http: httpx.Client) -> None:
    """Revoking an access token leaves the grant able to refresh."""
    grant = new_grant(http)
    response = http.post(REVOKE, data={"token": grant["access_token"]})
    assert response.status_code == 200
    assert response.content == b""
    assert introspect(http, grant["access_token"]).json() == {"active": False}
    assert refresh(http, grant["refresh_token"]).status_code == 200


def test_revoke_refresh_token_ends_the_grant(http: httpx.Client) -> None:
    """Revoking a refresh token revokes the grant and all its access tokens."""
    grant = new_grant(http)
    assert http.post(REVOKE, data={"token": grant["refresh_token"]}).status_code == 200
    assert refresh(http, grant["refresh_token"]).json()["error"] == "invalid_grant"
    assert introspect(http, grant["access_token"]).json() == {"active": False}


def test_revoke_unknown_token_is_unsupported(http: httpx.Client) -> None:
    """Revoking an unknown token answers 400 unsupported_token_type."""
    response = http.post(REVOKE, data={"token": "nope"})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_token_type"


def test_data_call_accepts_active_token_and_rejects_others(http: httpx.Client) -> None:
    """The data API lists resources for a live token and answers INVALID_SESSION_ID otherwise."""
    grant = new_grant(http)
    ok = http.get(DATA, headers={"Authorization": f"Bearer {grant['access_token']}"})
    assert ok.status_code == 200
    assert ok.json()["limits"] == "/services/data/v60.0/limits"
    bad = http.get(DATA, headers={"Authorization": "Bearer 00Dnope"})
    assert bad.status_code == 401
    assert bad.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_activity_extends_session_only_past_half_life() -> None:
    """API use extends exp to now + lifetime once the token is past half its lifetime."""
    clock = FakeClock()
    with (
        EmulatorThread(lifetime=100, clock=clock) as emu,
        httpx.Client(base_url=emu.base_url) as http,
    ):
        add_client(http)
        grant = new_grant(http)
        created = clock.now
        auth = {"Authorization": f"Bearer {grant['access_token']}"}
        clock.now = created + 40
        assert http.get(DATA, headers=auth).status_code == 200
        assert grant_view(http, grant["grant_id"])["exp"] == created + 100
        clock.now = created + 60
        assert http.get(DATA, headers=auth).status_code == 200
        assert grant_view(http, grant["grant_id"])["exp"] == created + 160
        clock.now = created + 161
        assert http.get(DATA, headers=auth).status_code == 401


def test_admin_activity_and_expire_move_exp() -> None:
    """Admin activity sets exp to now + lifetime; admin expire ends the session now."""
    clock = FakeClock()
    with (
        EmulatorThread(lifetime=100, clock=clock) as emu,
        httpx.Client(base_url=emu.base_url) as http,
    ):
        add_client(http)
        grant = new_grant(http)
        clock.now += 10
        assert (
            http.post(f"/_admin/grants/{grant['grant_id']}/activity").json()["exp"]
            == clock.now + 100
        )
        assert introspect(http, grant["access_token"]).json()["exp"] == int(clock.now + 100)
        http.post(f"/_admin/grants/{grant['grant_id']}/expire")
        assert introspect(http, grant["access_token"]).json() == {"active": False}


def test_admin_grant_view_and_unknown_grant(http: httpx.Client) -> None:
    """The admin grant view reports the current state; an unknown grant is a 404."""
    grant = new_grant(http)
    view = grant_view(http, grant["grant_id"])
    assert view["refresh_token"] == grant["refresh_token"]
    assert view["access_token"] == grant["access_token"]
    assert (view["revoked"], view["refresh_count"], view["lifetime"]) == (False, 0, 3600)
    assert http.get("/_admin/grants/g-missing").status_code == 404
    assert http.post("/_admin/grants", json={"client_id": "ghost"}).status_code == 404
    assert http.post("/_admin/faults", json={"mutate": "explode"}).status_code == 400


# -- faults --------------------------------------------------------------------------------


def test_fault_bad_signature_still_advances_the_grant(http: httpx.Client) -> None:
    """bad_signature is a real refresh (rotation happens) whose signature does not verify."""
    add_client(http, rotation=True)
    grant = new_grant(http)
    add_fault(http, endpoint="token", mutate="bad_signature")
    body = refresh(http, grant["refresh_token"]).json()
    assert body["signature"] != signature(body["id"], body["issued_at"])
    view = grant_view(http, grant["grant_id"])
    assert view["refresh_count"] == 1
    assert view["refresh_token"] == body["refresh_token"]
    good = refresh(http, body["refresh_token"]).json()
    assert good["signature"] == signature(good["id"], good["issued_at"])


def test_fault_foreign_instance_url(http: httpx.Client) -> None:
    """foreign_instance_url succeeds for real but names another host."""
    grant = new_grant(http)
    add_fault(http, endpoint="token", mutate="foreign_instance_url")
    body = refresh(http, grant["refresh_token"]).json()
    assert body["instance_url"] == "https://evil.example.com"
    assert grant_view(http, grant["grant_id"])["refresh_count"] == 1


def test_fault_drop_access_token_rotates_first(http: httpx.Client) -> None:
    """drop_access_token at the token endpoint is a 200 a real Salesforce sends only after
    the grant ran: the refresh happens (rotating the token), then the answer loses its
    access token (and the new refresh token with it)."""
    add_client(http, rotation=True)
    grant = new_grant(http)
    add_fault(http, endpoint="token", mutate="drop_access_token")
    response = refresh(http, grant["refresh_token"])
    assert response.status_code == 200
    assert "access_token" not in response.json()
    assert "refresh_token" not in response.json()
    assert response.json()["id"] == grant["id"]
    view = grant_view(http, grant["grant_id"])
    assert view["refresh_count"] == 1
    assert view["refresh_token"] != grant["refresh_token"]


@pytest.mark.parametrize(
    "fault",
    [
        {"mutate": "drop_access_token"},
        {"mutate": "truncated_json"},
        {"mutate": "huge_body"},
        {"mutate": "error", "status": 200, "body": "{}"},
    ],
    ids=["drop_access_token", "truncated_json", "huge_body", "error_200"],
)
def test_broken_success_consumes_the_token_like_salesforce(
    http: httpx.Client, fault: dict[str, Any]
) -> None:
    """Every broken 200 at the token endpoint consumed the token it was sent: it introspects
    inactive, and sending it again later is a reuse that revokes the grant."""
    add_client(http, rotation=True)
    assert http.post("/_admin/config", json={"race_window_ms": 0}).status_code == 200
    grant = new_grant(http)
    add_fault(http, endpoint="token", **fault)
    assert refresh(http, grant["refresh_token"]).status_code == 200
    assert introspect(http, grant["refresh_token"]).json() == {"active": False}
    assert grant_view(http, grant["grant_id"])["revoked"] is False
    assert refresh(http, grant["refresh_token"]).json()["error_description"] == (
        "expired access/refresh token"
    )
    assert grant_view(http, grant["grant_id"])["revoked"] is True
    assert http.get("/_admin/stats").json()["reuse_revocations"] == 1


def test_rotate_false_keeps_a_broken_success_from_touching_the_grant(
    http: httpx.Client,
) -> None:
    """`rotate: false` models a broken 200 that never reached the token endpoint."""
    add_client(http, rotation=True)
    grant = new_grant(http)
    add_fault(http, endpoint="token", mutate="truncated_json", rotate=False)
    assert refresh(http, grant["refresh_token"]).content == b'{"access_token": "00D'
    view = grant_view(http, grant["grant_id"])
    assert (view["refresh_count"], view["refresh_token"]) == (0, grant["refresh_token"])


def test_broken_success_on_a_dead_grant_is_the_real_error(http: httpx.Client) -> None:
    """When the real refresh fails, Salesforce sends its error, not a mangled 200."""
    grant = new_grant(http)
    http.post(f"/_admin/grants/{grant['grant_id']}/revoke")
    add_fault(http, endpoint="token", mutate="huge_body")
    response = refresh(http, grant["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("mutate", ["html_503", "redirect", "close_connection"])
def test_failures_before_the_token_endpoint_change_nothing(
    http: httpx.Client, mutate: str
) -> None:
    """A maintenance page, a redirect or a refused connection never reaches the grant."""
    add_client(http, rotation=True)
    grant = new_grant(http)
    add_fault(http, endpoint="token", mutate=mutate)
    try:
        refresh(http, grant["refresh_token"])
    except httpx.RemoteProtocolError:
        assert mutate == "close_connection"
    view = grant_view(http, grant["grant_id"])
    assert (view["refresh_count"], view["refresh_token"]) == (0, grant["refresh_token"])


def test_concurrent_refresh_loser_gets_expired_authorization_code(
    emu: EmulatorThread, http: httpx.Client
) -> None:
    """A second refresh of one token while the first one's answer is in flight loses with
    400 invalid_grant / "expired authorization code" (Salesforce, Summer '24) and revokes
    nothing; the same token sent after that answer and the race window is a reuse."""
    add_client(http, rotation=True)
    assert http.post("/_admin/config", json={"race_window_ms": 0}).status_code == 200
    grant = new_grant(http)
    add_fault(http, endpoint="token", delay_s=1.0)
    results: list[httpx.Response] = []
    with httpx.Client(base_url=emu.base_url, timeout=10) as other:
        first = threading.Thread(
            target=lambda: results.append(refresh(other, grant["refresh_token"]))
        )
        first.start()
        deadline = time.monotonic() + 5
        while http.get("/_admin/stats").json()["token_calls"] < 1:
            assert time.monotonic() < deadline, "the first refresh never arrived"
            time.sleep(0.01)
        loser = refresh(http, grant["refresh_token"])
        first.join(timeout=10)
    assert loser.status_code == 400
    assert loser.json() == {
        "error": "invalid_grant",
        "error_description": "expired authorization code",
    }
    [winner] = results
    assert winner.status_code == 200
    stats = http.get("/_admin/stats").json()
    assert (stats["concurrent_refresh_rejections"], stats["reuse_revocations"]) == (1, 0)
    assert grant_view(http, grant["grant_id"])["revoked"] is False
    assert refresh(http, grant["refresh_token"]).json()["error_description"] == (
        "expired access/refresh token"
    )
    assert grant_view(http, grant["grant_id"])["revoked"] is True


def test_race_window_after_the_answer_is_configurable(http: httpx.Client) -> None:
    """Within race_window_ms of the rotation the consumed token is still a concurrent loser;
    the window is set through /_admin/config and echoed back."""
    add_client(http, rotation=True)
    config = http.post("/_admin/config", json={"race_window_ms": 60_000}).json()
    assert config["race_window_ms"] == 60_000
    grant = new_grant(http)
    assert refresh(http, grant["refresh_token"]).status_code == 200
    again = refresh(http, grant["refresh_token"])
    assert again.json()["error_description"] == "expired authorization code"
    assert grant_view(http, grant["grant_id"])["revoked"] is False


def test_fault_redirect(http: httpx.Client) -> None:
    """redirect answers 302 to a foreign host without touching the grant."""
    grant = new_grant(http)
    add_fault(http, endpoint="token", mutate="redirect")
    response = refresh(http, grant["refresh_token"])
    assert response.status_code == 302
    assert response.headers["location"] == "http://127.0.0.2:9/steal"
    assert grant_view(http, grant["grant_id"])["refresh_count"] == 0


def test_fault_huge_truncated_and_html_bodies(http: httpx.Client) -> None:
    """huge_body, truncated_json and html_503 answer with unusable bodies."""
    token = new_grant(http)["access_token"]
    for mutate in ("huge_body", "truncated_json", "html_503"):
        add_fault(http, endpoint="introspect", mutate=mutate)
    huge = introspect(http, token)
    assert huge.status_code == 200
    assert len(huge.content) > 10_000_000
    truncated = introspect(http, token)
    assert truncated.content == b'{"access_token": "00D'
    with pytest.raises(json.JSONDecodeError):
        truncated.json()
    html = introspect(http, token)
    assert html.status_code == 503
    assert html.headers["content-type"].startswith("text/html")
    assert introspect(http, token).json()["active"] is True


def test_fault_close_connection(http: httpx.Client) -> None:
    """close_connection drops the socket without any answer."""
    add_fault(http, endpoint="introspect", mutate="close_connection")
    with pytest.raises(httpx.RemoteProtocolError):
        introspect(http, new_grant(http)["access_token"])


def test_fault_error_answers_verbatim(http: httpx.Client) -> None:
    """error answers the given status, body and content type verbatim."""
    grant = new_grant(http)
    body = '{"error":"invalid_grant","error_description":"inactive user"}'
    add_fault(http, endpoint="token", mutate="error", status=400, body=body)
    response = refresh(http, grant["refresh_token"])
    assert response.status_code == 400
    assert response.text == body
    assert response.headers["content-type"] == "application/json;charset=UTF-8"
    assert grant_view(http, grant["grant_id"])["refresh_count"] == 0


def test_fault_delay_then_normal_answer(http: httpx.Client) -> None:
    """A delay-only fault slows the answer, which is otherwise normal."""
    grant = new_grant(http)
    add_fault(http, endpoint="introspect", delay_s=0.3)
    started = time.perf_counter()
    assert introspect(http, grant["access_token"]).json()["active"] is True
    assert time.perf_counter() - started >= 0.3
    add_fault(http, endpoint="introspect", delay_s=2)
    with pytest.raises(httpx.ReadTimeout):
        http.post(INTROSPECT, data={"token": "x"}, timeout=0.2)


def test_fault_matching_count_and_clearing(http: httpx.Client) -> None:
    """Faults match by endpoint and client, are used up by count, and null lasts until cleared."""
    add_client(http, "other")
    grant = new_grant(http)
    add_fault(http, endpoint="token", client_id="other", mutate="html_503")
    add_fault(http, endpoint="revoke", mutate="html_503")
    assert refresh(http, grant["refresh_token"]).status_code == 200
    assert introspect(http, grant["access_token"]).status_code == 200
    add_fault(http, endpoint="any", count=2, mutate="html_503")
    assert [refresh(http, grant["refresh_token"]).status_code for _ in range(3)] == [503, 503, 200]
    add_fault(
        http, endpoint="token", count=None, status=500, body="boom", content_type="text/plain"
    )
    assert [refresh(http, grant["refresh_token"]).text for _ in range(3)] == ["boom"] * 3
    assert len(http.get("/_admin/faults").json()["faults"]) == 3
    http.delete("/_admin/faults")
    assert refresh(http, grant["refresh_token"]).status_code == 200


# -- stats and latency ---------------------------------------------------------------------


def test_stats_count_every_call_including_faulted(http: httpx.Client) -> None:
    """Counters include faulted calls and per-grant token calls; reset zeroes them."""
    grant = new_grant(http)
    refresh(http, grant["refresh_token"])
    add_fault(http, endpoint="token", mutate="html_503")
    refresh(http, grant["refresh_token"])
    introspect(http, grant["access_token"])
    http.post(REVOKE, data={"token": "nope"})
    http.get(DATA)
    stats = http.get("/_admin/stats").json()
    assert stats == {
        "token_calls": 2,
        "introspect_calls": 1,
        "revoke_calls": 1,
        "data_calls": 1,
        "reuse_revocations": 0,
        "refresh_token_resends": 1,  # no rotation: the same refresh token, sent again
        "concurrent_refresh_rejections": 0,
        "authorize_calls": 0,
        "consents_allowed": 0,
        "consents_denied": 0,
        "code_calls": 0,
        "userinfo_calls": 0,
        "approval_revocations": 0,
        "api_usage": 0,
        "token_calls_by_grant": {grant["grant_id"]: 2},
    }
    reset = http.post("/_admin/stats/reset").json()
    assert reset["token_calls"] == 0
    assert reset["token_calls_by_grant"] == {}


def test_latency_applies_to_salesforce_endpoints_only(http: httpx.Client) -> None:
    """Configured latency delays Salesforce endpoints but never the admin API."""
    token = new_grant(http)["access_token"]
    http.post("/_admin/config", json={"latency_ms": 150})
    started = time.perf_counter()
    introspect(http, token)
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    http.get("/_admin/stats")
    assert time.perf_counter() - started < 0.1


# -- HTTP framing over raw sockets ---------------------------------------------------------


def raw_request(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def read_response(stream: Any) -> tuple[int, dict[str, str], bytes]:
    status = int(stream.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    return status, headers, stream.read(int(headers["content-length"]))


def introspect_form(token: str) -> bytes:
    return f"token={token}&client_id={CLIENT_ID}&client_secret={SECRET}".encode()


def test_keep_alive_serves_many_requests_on_one_connection(
    emu: EmulatorThread, http: httpx.Client
) -> None:
    """One TCP connection carries hundreds of sequential requests."""
    form = introspect_form(new_grant(http)["access_token"])
    with socket.create_connection(("127.0.0.1", emu.port)) as sock:
        stream = sock.makefile("rb")
        for _ in range(300):
            sock.sendall(raw_request("POST", INTROSPECT, form))
            status, headers, body = read_response(stream)
            assert status == 200
            assert json.loads(body)["active"] is True
            assert "connection" not in headers


def test_pipelined_requests_answer_in_order_even_when_delayed(
    emu: EmulatorThread, http: httpx.Client
) -> None:
    """Pipelined requests in one write are answered in order, a delayed first one included."""
    grants = [new_grant(http) for _ in range(3)]
    add_fault(http, endpoint="introspect", delay_s=0.2)
    wire = b"".join(
        raw_request("POST", INTROSPECT, introspect_form(g["access_token"])) for g in grants
    )
    with socket.create_connection(("127.0.0.1", emu.port)) as sock:
        sock.sendall(wire + raw_request("GET", "/_admin/stats"))
        stream = sock.makefile("rb")
        subjects = [json.loads(read_response(stream)[2])["sub"] for _ in grants]
        assert subjects == [g["id"] for g in grants]
        assert json.loads(read_response(stream)[2])["introspect_calls"] == 3


def test_partial_reads_byte_by_byte(emu: EmulatorThread, http: httpx.Client) -> None:
    """A request trickling in a few bytes at a time is still parsed correctly."""
    wire = raw_request("POST", INTROSPECT, introspect_form(new_grant(http)["access_token"]))
    with socket.create_connection(("127.0.0.1", emu.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(wire), 7):
            sock.sendall(wire[start : start + 7])
            time.sleep(0.001)
        status, _, body = read_response(sock.makefile("rb"))
        assert status == 200
        assert json.loads(body)["active"] is True


def test_connection_close_is_honoured(emu: EmulatorThread) -> None:
    """A request with Connection: close gets its answer, then the server closes."""
    with socket.create_connection(("127.0.0.1", emu.port)) as sock:
        sock.sendall(raw_request("GET", "/_admin/stats", extra="Connection: close\r\n"))
        stream = sock.makefile("rb")
        status, headers, _ = read_response(stream)
        assert status == 200
        assert headers["connection"] == "close"
        assert stream.read() == b""


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nbroken header\r\n\r\n", 400),
        (f"POST {INTROSPECT} HTTP/1.1\r\nContent-Length: {2 * 1024 * 1024}\r\n\r\n".encode(), 413),
    ],
)
def test_bad_requests_are_refused_and_closed(emu: EmulatorThread, wire: bytes, status: int) -> None:
    """Garbage gets 400 and an oversized body 413, then the connection closes."""
    with socket.create_connection(("127.0.0.1", emu.port)) as sock:
        sock.sendall(wire)
        stream = sock.makefile("rb")
        assert read_response(stream)[0] == status
        assert stream.read() == b""


# -- running it ----------------------------------------------------------------------------


def test_run_forever_prints_url_and_stops_on_sigterm() -> None:
    """The CLI entry point prints its URL to stderr, serves, and exits 0 on SIGTERM."""
    code = "from worker.dev.emulator import run_forever; run_forever('127.0.0.1', 0, 60, 0, True)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url is not None, line
        assert httpx.get(f"{url.group(0)}/_admin/stats").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
