"""The ops console over the full app (TestClient), the real emulator and Redis: sign-in and
sessions, the CSRF and scope rules, security headers, pages without secrets, actions that
work and say who did them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import Api
from tests.conftest import Emu
from tests.helpers import connect
from worker.api.console import guard
from worker.api.console.html import relative, when
from worker.api.server import build_app
from worker.engine.events import CONSOLE_ACTION, read_events
from worker.service.status import status
from worker.store.apikeys import Scope

PAGES = ("/console", "/console/connections", "/console/connections/c-x", "/console/api/status",
         "/console/api/connections?ids=c-x", "/console/events/stream")  # fmt: skip
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(api: Api, scope: Scope = Scope.ADMIN) -> str:
    """Sign the test client in with a key of `scope`; the page's CSRF token."""
    answer = api.client.post(
        "/console/sign-in", data={"api_key": api.keys[scope]}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console"
    page = api.client.get("/console/connections")
    assert page.status_code == 200
    found = CSRF.search(page.text)
    assert found is not None
    return found.group(1)


def events_named(api: Api, name: str) -> list[dict[str, Any]]:
    rows = api.call(read_events, api.rt.redis, api.rt.store.keys, 1000)
    return [event for _, event in rows if event["event"] == name]


class TestSignIn:
    def test_signed_out_every_console_url_goes_to_sign_in(self, api: Api) -> None:
        for path in PAGES:
            answer = api.client.get(path, follow_redirects=False)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/console/sign-in"), path
        for action in ("check", "refresh", "remove"):
            answer = api.client.post(f"/console/connections/c-x/{action}", follow_redirects=False)
            assert answer.status_code == 303
        # The API's Bearer key is not a console session.
        answer = api.client.get("/console", headers=api.auth(), follow_redirects=False)
        assert answer.status_code == 303

    def test_a_wrong_key_is_refused_and_a_good_one_makes_a_strict_cookie(self, api: Api) -> None:
        bad = api.client.post("/console/sign-in", data={"api_key": "tw_nope"})
        assert bad.status_code == 401 and "not valid" in bad.text
        assert not api.client.cookies
        answer = api.client.post(
            "/console/sign-in", data={"api_key": api.keys[Scope.READ]}, follow_redirects=False
        )
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("tw_console=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # the test public URL is http
        assert api.client.get("/console", follow_redirects=False).status_code == 200

    def test_https_public_url_makes_the_cookie_secure(self, settings_for: Any) -> None:
        app = build_app(settings_for(public_url="https://tw.example.com"))
        with TestClient(app, base_url="https://testserver") as client:
            key = Api(client).keys[Scope.READ]
            answer = client.post("/console/sign-in", data={"api_key": key}, follow_redirects=False)
            cookie = answer.headers["set-cookie"]
            assert cookie.startswith("__Host-tw_console=") and "Secure" in cookie

    def test_the_session_keeps_the_name_never_the_key(self, api: Api) -> None:
        sign_in(api, Scope.READ)
        redis = api.rt.redis

        async def dump() -> bytes:
            found = b""
            async for name in redis.scan_iter(match="*console:session:*"):
                found += b"".join(k + v for k, v in (await redis.hgetall(name)).items())
            return found

        stored = api.call(dump)
        assert b"k-read" in stored and api.keys[Scope.READ].encode() not in stored
        session_id = next(iter(api.client.cookies.values()))
        assert session_id.encode() not in stored  # filed under its hash

    def test_sign_out_ends_the_session(self, api: Api) -> None:
        token = sign_in(api)
        session_id = next(iter(api.client.cookies.values()))
        out = api.client.post(
            "/console/sign-out", data={"csrf_token": token}, follow_redirects=False
        )
        assert out.status_code == 303 and out.headers["location"] == "/console/sign-in"
        api.client.cookies.set("tw_console", session_id)  # the old cookie, replayed
        assert api.client.get("/console", follow_redirects=False).status_code == 303

    def test_revoking_the_key_ends_its_sessions(self, api: Api) -> None:
        sign_in(api, Scope.READ)
        assert api.call(api.client.app.state.api_keys.revoke, "k-read")  # type: ignore[attr-defined]
        assert api.client.get("/console", follow_redirects=False).status_code == 303

    def test_next_is_a_console_path_only(self) -> None:
        assert guard.safe_next("/console/connections?status=failing") == (
            "/console/connections?status=failing"
        )
        for bad in ("https://evil.example", "//evil.example", "/events", None, "/console\\x"):
            assert guard.safe_next(bad) == "/console"

    def test_a_cross_origin_sign_in_is_refused(self, api: Api) -> None:
        answer = api.client.post(
            "/console/sign-in",
            data={"api_key": api.keys[Scope.ADMIN]},
            headers={"Origin": "https://evil.example"},
            follow_redirects=False,
        )
        assert answer.status_code == 403 and "set-cookie" not in answer.headers


class TestSafety:
    def test_security_headers_on_every_page(self, api: Api) -> None:
        sign_in(api)
        for path in ("/console", "/console/connections", "/console/sign-in"):
            headers = api.client.get(path).headers
            policy = headers["content-security-policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert "unsafe-inline" not in policy
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"

    def test_no_inline_script_or_style(self, api: Api, emu: Emu) -> None:
        api.call(connect, api.rt, emu, 1)
        sign_in(api)
        for path in ("/console", "/console/connections", "/console/sign-in"):
            text = api.client.get(path).text
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
            assert "<style" not in text and " style=" not in text and "onclick" not in text

    def test_actions_without_the_csrf_token_are_403(self, api: Api, emu: Emu) -> None:
        [(cid, grant)] = api.call(connect, api.rt, emu, 1)
        token = sign_in(api)
        for action in ("check", "refresh", "remove"):
            url = f"/console/connections/{cid}/{action}"
            assert api.client.post(url).status_code == 403
            assert api.client.post(url, headers={"X-CSRF-Token": token + "x"}).status_code == 403
            assert api.client.post(url, data={"csrf_token": "nope"}).status_code == 403
        out = api.client.post("/console/sign-out", follow_redirects=False)
        assert out.status_code == 403
        assert emu.token_calls(grant["grant_id"]) == 0
        assert emu.grant(grant["grant_id"])["revoked"] is False
        assert events_named(api, CONSOLE_ACTION) == []

    def test_a_read_key_sees_no_buttons_and_may_not_act(self, api: Api, emu: Emu) -> None:
        [(cid, grant)] = api.call(connect, api.rt, emu, 1)
        token = sign_in(api, Scope.READ)
        for path in ("/console/connections", f"/console/connections/{cid}"):
            text = api.client.get(path).text
            assert cid in text
            for name in ("Check", "Refresh", "Remove"):
                assert f">{name}</button>" not in text, (path, name)
        answer = api.client.post(
            f"/console/connections/{cid}/refresh",
            headers={"X-CSRF-Token": token, "Accept": "application/json"},
        )
        assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
        assert emu.token_calls(grant["grant_id"]) == 0

    def test_no_token_or_key_in_any_page(self, api: Api, emu: Emu) -> None:
        made = api.call(connect, api.rt, emu, 2)
        cid, grant = made[0]
        token = sign_in(api)
        api.client.post(f"/console/connections/{cid}/refresh", headers={"X-CSRF-Token": token})
        stored = api.call(api.rt.store.get_connection, cid)
        secret = api.call(api.rt.store.get_integration, "acme").client_secret
        secrets = [grant["refresh_token"], grant["access_token"], stored.access_token,
                   stored.refresh_token, secret, *api.keys.values()]  # fmt: skip
        texts = [
            api.client.get(path).text
            for path in (
                "/console",
                "/console/connections",
                f"/console/connections/{cid}",
                f"/console/api/connections?ids={cid},{made[1][0]}",
                "/console/api/status",
                "/console/sign-in",
            )
        ]
        for text in texts:
            for value in secrets:
                assert value and value not in text


class TestPages:
    def test_overview_counts_match_status(self, api: Api, emu: Emu) -> None:
        api.call(connect, api.rt, emu, 3)
        sign_in(api)
        text = api.client.get("/console").text
        counts = api.call(status, api.rt).by_status()
        for name, number in counts.items():
            assert f'data-testid="count-{name}">{number}<' in text
        assert 'data-testid="event-feed"' in text and "acme" in text
        assert api.client.get("/console/api/status").json()["by_status"] == counts

    def test_connections_filter_by_prefix_and_page_by_cursor(self, api: Api, emu: Emu) -> None:
        made = api.call(connect, api.rt, emu, 3)
        ids = sorted(cid for cid, _ in made)
        sign_in(api)
        prefix = ids[0].rsplit("-", 1)[0]
        text = api.client.get("/console/connections", params={"q": ids[1]}).text
        assert re.findall(r'data-connection-id="([^"]+)"', text) == [ids[1]]
        text = api.client.get("/console/connections", params={"q": prefix}).text
        assert re.findall(r'data-connection-id="([^"]+)"', text) == ids
        text = api.client.get("/console/connections", params={"q": prefix, "cursor": ids[0]}).text
        assert re.findall(r'data-connection-id="([^"]+)"', text) == ids[1:]
        text = api.client.get("/console/connections", params={"status": "failing"}).text
        assert "data-connection-id" not in text.split("connections-table", 1)[1]

    def test_times_are_relative_with_the_iso_time_on_hover(self) -> None:
        assert relative(1000.0 + 12 * 60, now=1000.0) == "in 12 min"
        assert relative(1000.0 - 3 * 3600, now=1000.0) == "3 h ago"
        shown = when(0.0)
        assert 'title="1970-01-01T00:00:00.000Z"' in shown and "<time" in shown

    def test_static_files_are_served_and_others_are_not(self, api: Api) -> None:
        js = api.client.get("/console/static/console.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert api.client.get("/console/static/console.css").status_code == 200
        assert api.client.get("/console/static/..%2Fhtml.py").status_code == 404


class TestActions:
    @pytest.mark.parametrize("accept", ["application/json", "text/html"])
    def test_an_admin_refresh_works_and_emits_console_action(
        self, api: Api, emu: Emu, accept: str
    ) -> None:
        [(cid, grant)] = api.call(connect, api.rt, emu, 1)
        token = sign_in(api)
        answer = api.client.post(
            f"/console/connections/{cid}/refresh",
            headers={"X-CSRF-Token": token, "Accept": accept},
            follow_redirects=False,
        )
        if accept == "application/json":
            body = answer.json()
            assert answer.status_code == 200 and body["outcome"] == "refreshed"
            assert body["connection"]["id"] == cid and body["connection"]["last_refresh_at"]
            assert set(body["connection"]) >= {"status", "expires_at", "last_error"}
        assert emu.token_calls(grant["grant_id"]) == 1
        [event] = events_named(api, CONSOLE_ACTION)
        assert event["actor"] == "k-admin" and event["action"] == "refresh"
        assert event["connection_id"] == cid and event["outcome"] == "refreshed"

    def test_the_form_post_works_without_script(self, api: Api, emu: Emu) -> None:
        [(cid, _)] = api.call(connect, api.rt, emu, 1)
        token = sign_in(api)
        answer = api.client.post(
            f"/console/connections/{cid}/check", data={"csrf_token": token}, follow_redirects=False
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/console/connections/{cid}"

    def test_remove_revokes_at_salesforce_and_says_who(self, api: Api, emu: Emu) -> None:
        [(cid, grant)] = api.call(connect, api.rt, emu, 1)
        token = sign_in(api)
        answer = api.client.post(
            f"/console/connections/{cid}/remove", headers={"X-CSRF-Token": token}
        )
        assert answer.json()["removed"] is True
        assert emu.grant(grant["grant_id"])["revoked"] is True
        assert api.client.get(f"/console/connections/{cid}").status_code == 404
        [event] = events_named(api, CONSOLE_ACTION)
        assert event["outcome"] == "removed" and event["actor"] == "k-admin"
        again = api.client.post(
            f"/console/connections/{cid}/remove", headers={"X-CSRF-Token": token}
        )
        assert again.status_code == 404

    def test_the_poll_endpoint_reports_rows_and_missing(self, api: Api, emu: Emu) -> None:
        [(cid, _)] = api.call(connect, api.rt, emu, 1)
        sign_in(api)
        data = api.client.get(f"/console/api/connections?ids={cid},c-gone").json()
        assert [row["id"] for row in data["items"]] == [cid]
        assert data["missing"] == ["c-gone"]
