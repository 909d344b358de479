"""The connect flow end to end over HTTP: the API (Starlette's TestClient) and the emulator's
real authorize page, consent form and authorization-code grant, with the browser's hops
followed by hand (httpx, no redirects followed automatically)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from config.settings import Settings
from tests.conftest import Emu
from tests.helpers import events_of
from worker.api import connect as connect_routes
from worker.api.app import make_app
from worker.domain.models import Connection, ConnectionStatus
from worker.engine.runtime import Runtime
from worker.service import connect, integrations
from worker.service.connect_options import set_connect_options
from worker.store.apikeys import Scope
from worker.store.sessions import CONSUMED_GRACE, Sessions

PUBLIC = "http://127.0.0.1:8080"
APP = "https://app.example.com"
RETURN_TO = f"{APP}/settings/salesforce?tab=1"


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class World:
    api: TestClient
    emu: Emu
    clock: Clock
    key: str
    client_id: str = ""
    browser: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))
    seen: list[str] = field(default_factory=list)  # every body and header the browser saw

    @property
    def rt(self) -> Runtime:
        runtime: Runtime = self.api.app.state.runtime  # type: ignore[attr-defined]
        return runtime

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            return await fn(*args, **kwargs)

        return self.api.portal.call(go)  # type: ignore[union-attr]

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def create(self, connection_id: str, **body: Any) -> dict[str, Any]:
        answer = self.api.post(
            "/connect-sessions",
            json={"integration": "acme", "connection_id": connection_id, **body},
            headers=self.auth(),
        )
        assert answer.status_code == 201, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def status(self, session_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/connect-sessions/{session_id}", headers=self.auth())
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def _note(self, answer: httpx.Response) -> httpx.Response:
        self.seen.append(answer.text + json.dumps(dict(answer.headers)))
        return answer

    def to_salesforce(self, connect_url: str) -> str:
        answer = self._note(self.api.get(connect_url))
        assert answer.status_code == 302, answer.text
        location = answer.headers["location"]
        assert location.startswith(self.emu.base_url + "/services/oauth2/authorize?")
        return location

    def consent(self, authorize_url: str, decision: str = "allow", username: str = "") -> str:
        """The emulator's login and consent page, answered; returns where it redirects."""
        page = self.browser.get(authorize_url)
        assert page.status_code == 200, page.text
        form = _inputs(page.text)
        if username:
            form["username"] = username
        form[decision] = "1"
        answer = self.browser.post(self.emu.base_url + "/services/oauth2/authorize", data=form)
        assert answer.status_code == 302, answer.text
        location = answer.headers["location"]
        assert location.startswith(PUBLIC + "/oauth/callback?")
        return location

    def back(self, callback_url: str) -> httpx.Response:
        return self._note(self.api.get(callback_url))

    def flow(
        self, connection_id: str, decision: str = "allow", username: str = "", **body: Any
    ) -> tuple[dict[str, Any], str, httpx.Response]:
        created = self.create(connection_id, **body)
        callback = self.consent(self.to_salesforce(created["connect_url"]), decision, username)
        return created, callback, self.back(callback)

    def connection(self, connection_id: str) -> Connection | None:
        found: Connection | None = self.call(self.rt.store.get_connection, connection_id)
        return found

    def grants(self) -> list[dict[str, Any]]:
        answer = self.emu.http.get("/_admin/grants", params={"client_id": self.client_id})
        grants: list[dict[str, Any]] = answer.raise_for_status().json()["grants"]
        return grants

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call(events_of, self.rt)
        return [e for e in found if name is None or e["event"] == name]

    def user(self, org_id: str | None = None) -> str:
        username = f"u{uuid.uuid4().hex[:8]}@example.com"
        body: dict[str, Any] = {"username": username}
        if org_id:
            body["org_id"] = org_id
        self.emu.post("/_admin/users", body)
        return username


def _inputs(html: str) -> dict[str, str]:
    fields = {}
    for tag in re.findall(r"<input ([^>]*)>", html):
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            fields[unescape(name.group(1))] = unescape(value.group(1)) if value else ""
    return fields


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _org() -> str:
    return "00D" + uuid.uuid4().hex[:15].upper()


@pytest.fixture
def world(settings_for: Callable[..., Settings], emu: Emu) -> Iterator[World]:
    clock = Clock()
    settings = settings_for(
        public_url=PUBLIC, allowed_return_origins=f"{APP}, http://localhost:3000"
    )
    app = make_app(settings, [connect_routes], open_runtime=lambda s: Runtime.open(s, clock=clock))
    with TestClient(app, base_url=PUBLIC, follow_redirects=False) as api:
        world = World(api, emu, clock, key="")
        world.key = world.call(_key, world.rt, "host-app", Scope.CONNECT)
        client_id, secret = emu.client()
        world.client_id = client_id
        world.call(
            integrations.add, world.rt, "acme", "salesforce", client_id, secret, emu.base_url
        )
        yield world
        world.browser.close()


async def _key(rt: Runtime, name: str, scope: Scope) -> str:
    from worker.store.apikeys import ApiKeys  # noqa: PLC0415

    key, _ = await ApiKeys(rt.redis, rt.settings.key_prefix).create(name, scope)
    return key


class TestConnect:
    def test_a_customer_connects_and_lands_back_on_return_to(self, world: World) -> None:
        """Allow on the consent page: the connection is stored encrypted with Salesforce's
        instance_url and identity, its expiry learned, scheduled; the browser lands on
        return_to with connected; the session says connected; connection.created is emitted."""
        created, _, landed = world.flow("cust-1", return_to=RETURN_TO)
        assert landed.status_code == 302
        assert landed.headers["location"] == (f"{RETURN_TO}&connection_id=cust-1&status=connected")
        assert world.status(created["id"]) == {
            "id": created["id"], "status": "connected", "connection_id": "cust-1",
            "integration": "acme", "expires_at": created["expires_at"],
        }  # fmt: skip
        [grant] = world.grants()
        conn = world.connection("cust-1")
        assert conn is not None
        assert conn.refresh_token == grant["refresh_token"]
        assert conn.access_token == grant["access_token"]
        assert conn.instance_url == grant["instance_url"]
        assert conn.identity_url == grant["id"]
        assert conn.status is ConnectionStatus.ACTIVE
        assert conn.expiry_source is not None and conn.expiry_source.value == "introspection"
        assert conn.expires_at == pytest.approx(grant["exp"], abs=1)
        assert world.call(world.rt.store.next_check_at, "cust-1") is not None
        [event] = world.events("connection.created")
        assert event["connection_id"] == "cust-1"
        assert (event["org_id"], event["user_id"]) == (grant["org_id"], grant["user_id"])
        assert not world.events("connection.connect_failed")

    def test_no_secret_reaches_redis_events_or_the_browser(
        self, world: World, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Tokens, the PKCE verifier, the code and the client secret are nowhere in plain
        text: not in Redis, not in an event or a log line, not on any page or header the
        browser saw."""
        created = world.create("cust-1")
        session = world.call(
            Sessions(world.rt.redis, world.rt.store.cipher, world.rt.store.keys).get, created["id"]
        )
        callback = world.consent(world.to_salesforce(created["connect_url"]))
        world.back(callback)
        [grant] = world.grants()
        integration = world.call(world.rt.store.get_integration, "acme")
        secrets = [grant["refresh_token"], grant["access_token"], session.code_verifier,
                   _query(callback)["code"], integration.client_secret]  # fmt: skip
        dump = world.call(_dump, world.rt)
        captured = capfd.readouterr()
        assert "connection.created" in captured.out + captured.err  # the logs were captured
        shown = json.dumps(world.events()) + "".join(world.seen) + captured.out + captured.err
        for secret in secrets:
            assert secret.encode() not in dump
            assert secret not in shown

    def test_without_return_to_a_success_page(self, world: World) -> None:
        """The browser gets a small page naming the connection, escaped, with no token."""
        _, _, landed = world.flow("cust-1")
        assert landed.status_code == 200
        assert 'data-status="connected"' in landed.text
        assert "cust-1" in landed.text
        assert landed.headers["referrer-policy"] == "no-referrer"
        assert landed.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in landed.headers["content-security-policy"]
        [grant] = world.grants()
        assert grant["access_token"] not in landed.text


class TestRefusals:
    def test_a_denied_consent_stores_nothing(self, world: World) -> None:
        """Deny: return_to gets access_denied, the session is failed with Salesforce's error,
        connection.connect_failed carries it, nothing is stored."""
        created, _, landed = world.flow("cust-1", decision="deny", return_to=RETURN_TO)
        assert landed.headers["location"] == (
            f"{RETURN_TO}&connection_id=cust-1&status=error&error=access_denied"
        )
        status = world.status(created["id"])
        assert (status["status"], status["error"]) == ("failed", "access_denied")
        assert status["error_description"] == "end-user denied authorization"
        [event] = world.events("connection.connect_failed")
        assert (event["error"], event["connection_id"]) == ("access_denied", "cust-1")
        assert world.connection("cust-1") is None

    def test_a_replayed_callback_is_refused_and_sends_nothing(self, world: World) -> None:
        """The same callback twice: the second is an error page, the code is not sent again,
        the session stays connected."""
        created, callback, _ = world.flow("cust-1")
        stats_before = world.emu.http.get("/_admin/stats").json()["code_calls"]
        again = world.back(callback)
        assert again.status_code == 409
        assert 'data-error="session_used"' in again.text
        assert world.emu.http.get("/_admin/stats").json()["code_calls"] == stats_before
        assert world.status(created["id"])["status"] == "connected"
        assert [e["error"] for e in world.events("connection.connect_failed")] == ["session_used"]

    def test_a_forged_state_is_refused(self, world: World) -> None:
        """A callback whose state matches no session: an error page, an event, no exchange."""
        answer = world.back(f"{PUBLIC}/oauth/callback?code=abc&state=forged<script>")
        assert answer.status_code == 400
        assert 'data-error="invalid_state"' in answer.text
        assert "<script>" not in answer.text
        [event] = world.events("connection.connect_failed")
        assert event["error"] == "invalid_state"

    def test_a_failed_exchange_stores_nothing(self, world: World) -> None:
        """A code Salesforce refuses (tampered here): invalid_grant, failed, nothing stored."""
        created = world.create("cust-1", return_to=RETURN_TO)
        callback = world.consent(world.to_salesforce(created["connect_url"]))
        landed = world.back(callback.replace("code=", "code=x"))
        assert _query(landed.headers["location"])["error"] == "invalid_grant"
        status = world.status(created["id"])
        assert (status["status"], status["error"]) == ("failed", "invalid_grant")
        assert world.connection("cust-1") is None
        [event] = world.events("connection.connect_failed")
        assert event["http_status"] == 400

    def test_a_foreign_instance_url_is_refused_and_the_grant_revoked(self, world: World) -> None:
        """Salesforce's answer names a non-Salesforce instance_url: nothing stored, and the
        grant it issued is revoked so it holds no approval."""
        world.emu.fault(endpoint="code", mutate="foreign_instance_url")
        _, _, landed = world.flow("cust-1")
        assert 'data-error="invalid_instance_url"' in landed.text
        assert world.connection("cust-1") is None
        assert [g["revoked"] for g in world.grants()] == [True]

    def test_no_refresh_token_is_refused(self, world: World) -> None:
        """An integration whose scopes give no refresh token cannot keep a connection."""
        integration = world.call(world.rt.store.get_integration, "acme")
        world.call(world.rt.store.save_integration, replace(integration, scopes="api"))
        _, _, landed = world.flow("cust-1")
        assert 'data-error="no_refresh_token"' in landed.text
        assert world.connection("cust-1") is None


class TestExpiry:
    def test_an_expired_session_answers_expired_and_reports_once(self, world: World) -> None:
        """Past the TTL: status `expired` (asked twice, one event), the connect_url and a late
        callback both refuse it, nothing is stored."""
        created = world.create("cust-1", return_to=RETURN_TO)
        authorize = world.to_salesforce(created["connect_url"])
        callback = world.consent(authorize)
        world.clock.offset = 601
        for _ in range(2):
            status = world.status(created["id"])
            assert (status["status"], status["error"]) == ("expired", "session_expired")
        assert len(world.events("connection.connect_failed")) == 1
        again = world.api.get(created["connect_url"])
        assert _query(again.headers["location"])["error"] == "session_expired"
        late = world.back(callback)
        assert _query(late.headers["location"])["error"] == "session_expired"
        assert world.connection("cust-1") is None
        assert [e["error"] for e in world.events("connection.connect_failed")] == [
            "session_expired", "session_expired",
        ]  # fmt: skip

    def test_a_session_abandoned_on_salesforces_error_page_is_swept(self, world: World) -> None:
        """Salesforce shows its own error page (here: a connected app it does not know) and
        nobody comes back: the sweep ends the session `expired` with connect_failed."""
        integration = world.call(world.rt.store.get_integration, "acme")
        world.call(world.rt.store.save_integration, replace(integration, client_id="unknown"))
        created = world.create("cust-1")
        page = world.browser.get(world.to_salesforce(created["connect_url"]))
        assert 'id="oauth-error"' in page.text
        assert world.call(connect.expire_sessions, world.rt) == 0
        world.clock.offset = 601
        assert world.call(connect.expire_sessions, world.rt) == 1
        assert world.call(connect.expire_sessions, world.rt) == 0
        assert world.status(created["id"])["status"] == "expired"
        [event] = world.events("connection.connect_failed")
        assert (event["error"], event["connection_id"]) == ("session_expired", "cust-1")

    def test_a_due_session_whose_record_is_gone_leaves_the_sweeps_list(self, world: World) -> None:
        """A session whose tombstone outlived (no sweep for an hour) must not hold a place
        among the due ones forever."""
        created = world.create("cust-1")
        keys = world.rt.store.keys
        world.call(world.rt.redis.delete, keys.connect_session(created["id"]))
        world.clock.offset = 601
        assert world.call(connect.expire_sessions, world.rt) == 0
        assert world.call(world.rt.redis.zcard, keys.connect_pending) == 0


    def test_an_unreadable_due_session_does_not_stop_the_others(self, world: World) -> None:
        """A session sealed under a key since dropped cannot be read: it is expired without
        its event and the sweep goes on to the next one (else it would sit first in the due
        list and fail every sweep after it)."""
        broken, fine = world.create("cust-1"), world.create("cust-2")
        keys = world.rt.store.keys
        world.call(
            world.rt.redis.hset, keys.connect_session(broken["id"]), "verifier", b"\x01" * 60
        )
        world.clock.offset = 601
        assert world.call(connect.expire_sessions, world.rt) == 1
        assert world.call(world.rt.redis.zcard, keys.connect_pending) == 0
        [event] = world.events("connection.connect_failed")
        assert event["connection_id"] == "cust-2" and fine["id"] != broken["id"]

    def test_an_interrupted_callback_ends_expired(self, world: World) -> None:
        """A callback that took the session and never finished (a crash mid-exchange) shows
        `pending`, then `expired` with `interrupted` once its grace is over, reported once."""
        created = world.create("cust-1")
        sessions = Sessions(world.rt.redis, world.rt.store.cipher, world.rt.store.keys)
        world.call(sessions.consume, created["id"], world.clock())
        assert world.status(created["id"])["status"] == "pending"
        world.clock.offset = CONSUMED_GRACE + 1
        for _ in range(2):
            status = world.status(created["id"])
            assert (status["status"], status["error"]) == ("expired", "interrupted")
        [event] = world.events("connection.connect_failed")
        assert event["error"] == "interrupted"

    def test_a_store_failure_after_the_exchange_fails_the_session(self, world: World) -> None:
        """The existing record cannot be read (sealed under a key nobody holds): the callback
        answers 503, the session ends failed (not stuck), and the grant just issued is
        revoked since nothing holds it."""
        key = world.rt.store.keys.conn("cust-1")
        world.call(world.rt.redis.hset, key, mapping={"integration": "acme", "rt": b"\x01" * 60})
        created, _, landed = world.flow("cust-1")
        assert landed.status_code == 503
        assert landed.json()["error"] == "store_unavailable"
        status = world.status(created["id"])
        assert (status["status"], status["error"]) == ("failed", "internal_error")
        assert [g["revoked"] for g in world.grants()] == [True]


class TestReconnect:
    def test_a_reauthorization_keeps_the_id_and_clears_reauth_required(self, world: World) -> None:
        """The same id again: connection.reconnected, active again, the new grant stored and
        the replaced grant revoked at Salesforce (it would hold one of five approvals)."""
        world.flow("cust-1")
        conn = world.connection("cust-1")
        assert conn is not None
        world.call(
            world.rt.store.save_connection, conn.evolve(status=ConnectionStatus.REAUTH_REQUIRED)
        )
        world.flow("cust-1")
        old, new = world.grants()
        again = world.connection("cust-1")
        assert again is not None
        assert again.status is ConnectionStatus.ACTIVE
        assert again.refresh_token == new["refresh_token"]
        assert (old["revoked"], new["revoked"]) == (True, False)
        [event] = world.events("connection.reconnected")
        assert event["previous_status"] == "reauth_required"

    def test_another_org_is_refused_unless_forced(self, world: World) -> None:
        """A reconnect that lands in another org stores nothing (and revokes that grant);
        with force it replaces the connection and says the org changed."""
        world.flow("cust-1")
        before = world.connection("cust-1")
        stranger = world.user(org_id=_org())
        created, _, landed = world.flow("cust-1", username=stranger, return_to=RETURN_TO)
        assert _query(landed.headers["location"])["error"] == "org_mismatch"
        assert world.connection("cust-1") == before
        assert [g["revoked"] for g in world.grants()] == [False, True]
        assert world.status(created["id"])["error"] == "org_mismatch"
        world.flow("cust-1", username=stranger, force=True)
        after = world.connection("cust-1")
        assert after is not None and after.identity_url == world.grants()[-1]["id"]
        [event] = world.events("connection.reconnected")
        assert event["org_changed"] is True

    def test_the_same_user_under_a_second_id_is_warned(self, world: World) -> None:
        """One Salesforce user connecting the app as two ids: connection.duplicate_user
        names the other id (Salesforce keeps at most five approvals per user and app)."""
        user = world.user()
        world.flow("cust-1", username=user)
        assert not world.events("connection.duplicate_user")
        world.flow("cust-2", username=user)
        [event] = world.events("connection.duplicate_user")
        assert event["connection_id"] == "cust-2"
        assert event["other_connection_ids"] == ["cust-1"]


class TestRequests:
    def test_keys_and_scopes(self, world: World) -> None:
        """No key 401; a read key 403; the customer's pages need no key."""
        body = {"integration": "acme", "connection_id": "cust-1"}
        assert world.api.post("/connect-sessions", json=body).status_code == 401
        read = world.call(_key, world.rt, "reader", Scope.READ)
        refused = world.api.post("/connect-sessions", json=body, headers=world.auth(read))
        assert refused.status_code == 403
        assert world.api.get("/connect-sessions/x", headers=world.auth(read)).status_code == 403
        assert world.api.get("/connect-sessions/whatever").status_code == 401

    @pytest.mark.parametrize(
        "return_to",
        [
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "http://app.example.com/",
            "https://app.example.com@evil.example/",
            "https://app.example.com:8443/",
            "//evil.example/",
            "/relative",
            "javascript:alert(1)",
            "https://app.example.com/#x",
            "https://app.example.com/\r\nX: y",
        ],
    )
    def test_a_foreign_return_to_is_refused(self, world: World, return_to: str) -> None:
        """Only an exact allowed origin: look-alikes, other schemes or ports, userinfo,
        relative URLs, fragments and header injection are 422 naming return_to."""
        body = {"integration": "acme", "connection_id": "c", "return_to": return_to}
        answer = world.api.post("/connect-sessions", json=body, headers=world.auth())
        assert answer.status_code == 422, answer.text
        assert (answer.json()["error"], answer.json()["field"]) == ("invalid_request", "return_to")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"integration": "acme", "connection_id": "../c"}, "connection_id"),
            ({"integration": "acme", "connection_id": "a/b"}, "connection_id"),
            ({"integration": "acme", "connection_id": 7}, "connection_id"),
            ({"integration": "nope", "connection_id": "c"}, "integration"),
            ({"integration": "acme"}, "connection_id"),
            ({"integration": "acme", "connection_id": "c", "extra": 1}, "extra"),
            ({"integration": "acme", "connection_id": "c", "force": "yes"}, "force"),
        ],
    )
    def test_bad_session_requests_name_the_field(
        self, world: World, body: dict[str, Any], field: str
    ) -> None:
        """Bad ids, unknown integrations or fields, wrong types: 422 naming the field."""
        answer = world.api.post("/connect-sessions", json=body, headers=world.auth())
        assert answer.status_code == 422, answer.text
        assert (answer.json()["error"], answer.json()["field"]) == ("invalid_request", field)

    def test_an_allowed_origin_with_a_default_port_is_accepted(self, world: World) -> None:
        """The origin compares normalised: https://APP:443/... is https://APP."""
        world.create("cust-1", return_to="https://APP.example.com:443/done")
        world.create("cust-1", return_to="http://localhost:3000/cb")

    def test_malformed_bodies(self, world: World) -> None:
        """Non-JSON 400, not an object 422, oversized 413: all in the one error shape."""
        headers = {**world.auth(), "Content-Type": "application/json"}
        for content, status in ((b"{nope", 400), (b"[1]", 422), (b"{" + b" " * 20000 + b"}", 413)):
            answer = world.api.post("/connect-sessions", content=content, headers=headers)
            assert answer.status_code == status
            assert answer.json()["error"] == "invalid_request"

    def test_unknown_sessions(self, world: World) -> None:
        """An unknown id: 404 JSON for the host app, a 404 page for the browser."""
        assert world.api.get("/connect-sessions/nope", headers=world.auth()).status_code == 404
        page = world.api.get("/connect/" + "A" * 32)
        assert (page.status_code, 'data-error="unknown_session"' in page.text) == (404, True)


class TestMyDomain:
    def test_the_customer_is_asked_and_the_host_validated(self, world: World) -> None:
        """With ask_domain the connect_url asks first; a foreign host is refused on the form
        (nothing redirected); a My Domain goes to that host's authorize page; the emulator's
        loopback host completes the flow with the code exchanged there."""
        world.call(set_connect_options, world.rt, "acme", ask_domain=True)
        created = world.create("cust-1", return_to=RETURN_TO)
        form = world.api.get(created["connect_url"])
        assert (form.status_code, 'name="my_domain"' in form.text) == (200, True)
        refused = world.api.post(created["connect_url"], data={"my_domain": "evil.example<i>"})
        assert refused.status_code == 422
        assert 'data-testid="domain-error"' in refused.text and "<i>" not in refused.text
        elsewhere = world.api.post(created["connect_url"], data={"my_domain": "acme"})
        assert elsewhere.headers["location"].startswith(
            "https://acme.my.salesforce.com/services/oauth2/authorize?"
        )
        chosen = world.api.post(created["connect_url"], data={"my_domain": world.emu.base_url})
        callback = world.consent(chosen.headers["location"])
        landed = world.back(callback)
        assert _query(landed.headers["location"])["status"] == "connected"


async def _dump(rt: Runtime) -> bytes:
    dump = b""
    async for name in rt.redis.scan_iter(match=rt.settings.key_prefix + "*"):
        kind = await rt.redis.type(name)
        if kind == b"hash":
            dump += b"".join(k + v for k, v in (await rt.redis.hgetall(name)).items())
        elif kind == b"string":
            dump += await rt.redis.get(name) or b""
        elif kind == b"stream":
            dump += str(await rt.redis.xrange(name)).encode()
    return dump
