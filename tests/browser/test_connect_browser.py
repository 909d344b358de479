"""The connect flow end to end in a real browser: headless Chromium (Debian's `chromium`,
driven by Playwright) against a real `python -m worker.api` process on a free port and the
session's Salesforce emulator. The host application is a tiny HTTP server on the one allowed
return origin; it records every query the browser brings back.

Each test asserts what can be observed: the pages the browser shows, where it lands and with
which query, what the api answers for the connection (`GET /connections/{id}`, its
credentials), what the emulator saw (its authorize log, stats and grants) and the events.
Screenshots of the pages go under the test's tmp_path (copied to TOKENWORKER_SHOTS_DIR when set).

Without chromium the module is skipped with a loud reason, and tests/conftest.py repeats it in
the terminal summary.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import Emu
from tests.faults.harness import Proc, process_env, with_runtime
from worker.dev.embedded import EmbeddedRedis, free_port
from worker.dev.emulator.server import EmulatorThread
from worker.engine.runtime import Runtime
from worker.service import integrations as ints
from worker.store.apikeys import ApiKeys, Scope

CHROMIUM = shutil.which("chromium")
SKIP_REASON = "chromium not found: browser tests NOT run (apt-get install chromium)"
if CHROMIUM is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)

from playwright.sync_api import (  # noqa: E402  (after the skip: only needed with a browser)
    Browser,
    BrowserContext,
    Page,
)

from tests.browser.harness import api_and_browser, keep_shot  # noqa: E402

AUTHORIZE_PATH = "/services/oauth2/authorize"
LIMITS = "/services/data/v62.0/limits"
STEP_MS = 10_000  # any one browser step


# -- the host application on the allowed origin -----------------------------------------------


class ReturnApp:
    """The host application's return_to page: records each path+query the browser brings."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                query = parse_qs(urlsplit(self.path).query)
                rows = "".join(
                    f"<li><code>{escape(k)}</code> = <code>{escape(v[0])}</code></li>"
                    for k, v in query.items()
                )
                body = (
                    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Host app</title>'
                    "<style>body{font-family:sans-serif;margin:3rem}</style></head><body>"
                    f'<h1 id="host-app">Example host app</h1><p>Back from connecting:</p>'
                    f"<ul>{rows}</ul></body></html>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def queries(self, path: str) -> list[dict[str, str]]:
        """The queries the browser brought to `path`, in order."""
        return [
            {k: v[0] for k, v in parse_qs(urlsplit(hit).query).items()}
            for hit in self.hits
            if urlsplit(hit).path == path
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# -- the stack: api process, emulator client, integration, key, browser ---------------------


@dataclass
class Stack:
    public: str  # the api's TOKENWORKER_PUBLIC_URL
    api: httpx.Client  # with the host application's API key
    emu: Emu
    app: ReturnApp
    browser: Browser
    client_id: str
    integration: str
    proc: Proc

    @property
    def callback(self) -> str:
        return f"{self.public}/oauth/callback"

    def create(self, connection_id: str, **body: Any) -> dict[str, Any]:
        answer = self.api.post(
            "/connect-sessions",
            json={"integration": self.integration, "connection_id": connection_id, **body},
        )
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        assert created["connect_url"].startswith(f"{self.public}/connect/")
        return created

    def session(self, session_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/connect-sessions/{session_id}")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def connection(self, connection_id: str) -> dict[str, Any] | None:
        answer = self.api.get(f"/connections/{connection_id}")
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def events(self, connection_id: str, name: str | None = None) -> list[dict[str, Any]]:
        answer = self.api.get("/events", params={"limit": 1000})
        assert answer.status_code == 200, answer.text
        return [
            e
            for e in answer.json()["items"]
            if e.get("connection_id") == connection_id and (name is None or e["event"] == name)
        ]

    def grants(self) -> list[dict[str, Any]]:
        answer = self.emu.http.get("/_admin/grants", params={"client_id": self.client_id})
        grants: list[dict[str, Any]] = answer.raise_for_status().json()["grants"]
        return grants

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.emu.http.get("/_admin/stats").raise_for_status().json()
        return data

    def authorizations(self, state: str) -> list[dict[str, Any]]:
        answer = self.emu.http.get("/_admin/authorizations").raise_for_status().json()
        return [a for a in answer["authorizations"] if a.get("state") == state]


@pytest.fixture(scope="module")
def stack(
    redis_server: EmbeddedRedis,
    emulator: EmulatorThread,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    started = time.monotonic()
    app = ReturnApp()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = process_env(
        redis_server.url,
        redis_server.url,
        f"b{uuid.uuid4().hex[:8]}:",
        public_url=public,
        allowed_return_origins=app.origin,
    )
    emu = Emu(emulator.base_url)
    client_id, secret = f"browser-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    emu.post(
        "/_admin/clients",
        {
            "client_id": client_id,
            "client_secret": secret,
            "redirect_uris": [f"{public}/oauth/callback"],  # exactly, as Salesforce compares
        },
    )
    integration = f"acme-{uuid.uuid4().hex[:6]}"

    async def arrange(rt: Runtime) -> str:
        await ints.add(rt, integration, "salesforce", client_id, secret, emu.base_url)
        key, _ = await ApiKeys(rt.redis, rt.settings.key_prefix).create("host-app", Scope.CONNECT)
        return key

    key = with_runtime(env, arrange)
    log = tmp_path_factory.mktemp("api") / "api.log"
    api = httpx.Client(base_url=public, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    try:
        with api_and_browser(env, port, log) as (proc, browser):
            print(f"browser stack up in {time.monotonic() - started:.1f}s")
            yield Stack(public, api, emu, app, browser, client_id, integration, proc)
    finally:
        api.close()
        emu.http.close()
        app.close()


@dataclass
class Tab:
    """One fresh browser context (no cookies carried between tests) and its page."""

    context: BrowserContext
    page: Page
    requests: list[str] = field(default_factory=list)  # every URL the browser asked for
    shots_dir: Path = Path()

    def shot(self, name: str) -> Path:
        path = self.shots_dir / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        keep_shot(path, f"browser-{name}.png")
        return path

    def callbacks(self, stack: Stack) -> list[str]:
        return [url for url in self.requests if url.startswith(stack.callback + "?")]


@pytest.fixture
def tab(stack: Stack, tmp_path: Path) -> Iterator[Tab]:
    context = stack.browser.new_context(viewport={"width": 900, "height": 640})
    context.set_default_timeout(STEP_MS)
    page = context.new_page()
    opened = Tab(context, page, shots_dir=tmp_path)
    context.on("request", lambda request: opened.requests.append(request.url))
    try:
        yield opened
    finally:
        context.close()


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def _to_consent(stack: Stack, tab: Tab, connect_url: str) -> None:
    """Open the connect_url: the browser is sent on to the emulator's consent page."""
    tab.page.goto(connect_url)
    tab.page.wait_for_selector("form#consent")
    assert tab.page.url.startswith(stack.emu.base_url + AUTHORIZE_PATH + "?")
    assert tab.page.input_value("#username")  # prefilled with the org's default user
    assert tab.page.inner_text("#app-name") == stack.client_id


def _decide(stack: Stack, tab: Tab, button: str, lands_on: str) -> None:
    tab.page.click(f"button#{button}")
    tab.page.wait_for_url(lambda url: url.startswith(lands_on))
    tab.page.wait_for_load_state()


# -- the scenarios -----------------------------------------------------------------------------


def test_connect_lands_on_return_to_and_stores_a_live_connection(stack: Stack, tab: Tab) -> None:
    """Allow on the consent page: the browser lands on return_to (its own query kept) with
    connection_id and status=connected; the api holds an active connection whose credentials
    are a token the emulator accepts; the emulator saw one PKCE authorize request for the
    registered callback; connection.created is in the event stream; no token reached the
    browser."""
    cid = f"cust-{uuid.uuid4().hex[:6]}"
    before = stack.api.get("/events", params={"limit": 1000}).json()["next_after"] or "0-0"
    allowed_before = stack.stats()["consents_allowed"]
    created = stack.create(cid, return_to=f"{stack.app.origin}/done?tab=1")

    _to_consent(stack, tab, created["connect_url"])
    tab.shot("consent")
    _decide(stack, tab, "allow", f"{stack.app.origin}/done?")

    connected = {"tab": "1", "connection_id": cid, "status": "connected"}
    assert _query(tab.page.url) == connected
    assert stack.app.queries("/done")[-1] == connected
    assert tab.page.inner_text("#host-app") == "Example host app"
    tab.shot("landed-connected")

    # The api: the session, the stored connection, its credentials.
    assert stack.session(created["id"])["status"] == "connected"
    shown = stack.connection(cid)
    assert shown is not None
    assert (shown["status"], shown["integration"]) == ("active", stack.integration)
    assert shown["has_access_token"] is True and shown["next_check_at"] is not None
    answer = stack.api.get(f"/connections/{cid}/credentials")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    creds = answer.json()
    [grant] = [g for g in stack.grants() if g["access_token"] == creds["access_token"]]
    assert not grant["revoked"] and grant["instance_url"] == creds["instance_url"]
    assert shown["identity_url"] == grant["id"]
    with httpx.Client(base_url=creds["instance_url"], timeout=10) as org:
        live = org.get(LIMITS, headers={"Authorization": f"Bearer {creds['access_token']}"})
        forged = org.get(LIMITS, headers={"Authorization": f"Bearer {creds['access_token']}x"})
    assert (live.status_code, forged.status_code) == (200, 401)  # the check tells them apart

    # The emulator: what the browser brought it.
    [callback] = tab.callbacks(stack)
    seen = stack.authorizations(_query(callback)["state"])
    assert [a["outcome"] for a in seen] == ["shown", "allow"]
    assert seen[0]["client_id"] == stack.client_id
    assert seen[0]["redirect_uri"] == stack.callback
    assert seen[0]["code_challenge_method"] == "S256" and seen[0]["code_challenge"]
    assert stack.stats()["consents_allowed"] == allowed_before + 1

    # The event, read from the live stream.
    assert _streamed(stack, before, "connection.created", cid)["integration"] == stack.integration
    assert not stack.events(cid, "connection.connect_failed")

    # No token ever reached the browser: not in a URL it asked for, not on the page.
    for secret in (grant["access_token"], grant["refresh_token"]):
        assert not any(secret in url for url in tab.requests)
        assert secret not in tab.page.content()


def test_deny_lands_with_access_denied_and_stores_nothing(stack: Stack, tab: Tab) -> None:
    """Deny: return_to?...&status=error&error=access_denied; no connection, no grant at the
    emulator, the session failed with Salesforce's words, connection.connect_failed."""
    cid = f"cust-{uuid.uuid4().hex[:6]}"
    grants_before = len(stack.grants())
    denied_before = stack.stats()["consents_denied"]
    created = stack.create(cid, return_to=f"{stack.app.origin}/done")

    _to_consent(stack, tab, created["connect_url"])
    _decide(stack, tab, "deny", f"{stack.app.origin}/done?")

    expected = {"connection_id": cid, "status": "error", "error": "access_denied"}
    assert _query(tab.page.url) == expected
    assert stack.app.queries("/done")[-1] == expected
    tab.shot("landed-denied")
    assert stack.connection(cid) is None
    assert stack.api.get(f"/connections/{cid}/credentials").status_code == 404
    assert len(stack.grants()) == grants_before
    assert stack.stats()["consents_denied"] == denied_before + 1
    session = stack.session(created["id"])
    assert (session["status"], session["error"]) == ("failed", "access_denied")
    assert session["error_description"] == "end-user denied authorization"
    [event] = stack.events(cid, "connection.connect_failed")
    assert (event["error"], event["error_description"]) == (
        "access_denied",
        "end-user denied authorization",
    )
    assert event["session_id"] == created["id"]
    assert not stack.events(cid, "connection.created")


def test_a_replayed_session_shows_an_error_page_and_changes_nothing(stack: Stack, tab: Tab) -> None:
    """After a completed connect, the same connect_url and then the same callback URL again:
    each an error page (connect-result, status error, session_used); the connection, the
    emulator's grants and code exchanges and the session's status stay as they were."""
    cid = f"cust-{uuid.uuid4().hex[:6]}"
    created = stack.create(cid)
    _to_consent(stack, tab, created["connect_url"])
    _decide(stack, tab, "allow", stack.callback + "?")
    tab.page.wait_for_selector('[data-testid="connect-result"][data-status="connected"]')
    [callback] = tab.callbacks(stack)
    stored, grants, code_calls = stack.connection(cid), stack.grants(), stack.stats()["code_calls"]
    assert stored is not None

    again = tab.page.goto(created["connect_url"])
    assert again is not None and again.status == 409
    assert tab.page.url == created["connect_url"]  # not sent on to Salesforce again
    result = tab.page.locator('[data-testid="connect-result"]')
    assert (result.get_attribute("data-status"), result.get_attribute("data-error")) == (
        "error",
        "session_used",
    )
    assert "already used" in result.inner_text()
    tab.shot("error-replayed-connect-url")

    replayed = tab.page.goto(callback)
    assert replayed is not None and replayed.status == 409
    assert result.get_attribute("data-status") == "error"
    assert result.get_attribute("data-error") == "session_used"
    tab.shot("error-replayed-callback")

    assert stack.connection(cid) == stored
    assert stack.grants() == grants
    assert stack.stats()["code_calls"] == code_calls
    assert stack.session(created["id"])["status"] == "connected"
    assert [e["error"] for e in stack.events(cid, "connection.connect_failed")] == ["session_used"]
    assert len(stack.events(cid, "connection.created")) == 1


def test_a_foreign_return_to_is_refused(stack: Stack) -> None:
    """return_to on any origin but the allowed one: 422 invalid_request naming return_to,
    and no session to open."""
    port = urlsplit(stack.app.origin).port
    for foreign in (
        f"http://127.0.0.1:{free_port()}/done",  # another port
        f"http://localhost:{port}/done",  # another host name for the same server
        f"https://127.0.0.1:{port}/done",  # another scheme
        "https://evil.example/done",
    ):
        answer = stack.api.post(
            "/connect-sessions",
            json={"integration": stack.integration, "connection_id": "c", "return_to": foreign},
        )
        assert answer.status_code == 422, (foreign, answer.text)
        body = answer.json()
        assert (body["error"], body["field"]) == ("invalid_request", "return_to"), foreign
        assert "connect_url" not in body


def test_without_return_to_a_success_page(stack: Stack, tab: Tab) -> None:
    """No return_to: the browser ends on the api's small success page naming the
    connection, sent with no-store and no-referrer; the connection is stored."""
    cid = f"cust-{uuid.uuid4().hex[:6]}"
    created = stack.create(cid)
    _to_consent(stack, tab, created["connect_url"])
    with tab.page.expect_response(lambda r: r.url.startswith(stack.callback + "?")) as landed:
        tab.page.click("button#allow")
    response = landed.value
    assert response.status == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    result = tab.page.locator('[data-testid="connect-result"]')
    assert result.get_attribute("data-status") == "connected"
    assert cid in result.inner_text()
    assert tab.page.title() == "Connected"
    tab.shot("success")
    assert stack.session(created["id"])["status"] == "connected"
    shown = stack.connection(cid)
    assert shown is not None and shown["status"] == "active"
    assert len(stack.events(cid, "connection.created")) == 1


def _streamed(stack: Stack, after: str, name: str, connection_id: str) -> dict[str, Any]:
    """The first `name` event for `connection_id` on GET /events/stream after `after`."""
    deadline = time.monotonic() + 10
    with stack.api.stream("GET", "/events/stream", params={"after": after}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line.startswith("data: "):
                continue
            event: dict[str, Any] = json.loads(line[len("data: ") :])
            if event["event"] == name and event.get("connection_id") == connection_id:
                return event
    raise AssertionError(f"no {name} for {connection_id} on the event stream within 10s")
