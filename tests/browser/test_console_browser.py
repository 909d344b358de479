"""The ops console in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright) against a real `python -m worker.api` process, Redis and the session's emulator.

Signed out, console URLs land on sign-in; signed in with an admin key the overview's counts
match `status --json`'s numbers; Refresh updates the row's last refresh without a reload and
the live feed shows the `console.action`; a revoked grant's refresh turns the row
`reauth_required` and the feed shows `connection.reauth_required`; a POST without the CSRF
token is refused; a read key sees no buttons. Screenshots go under tmp_path (and
TOKENWORKER_SHOTS_DIR when set).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Emu
from tests.faults.harness import process_env, with_runtime
from tests.helpers import connect
from worker.dev.embedded import EmbeddedRedis, free_port
from worker.dev.emulator.server import EmulatorThread
from worker.engine.runtime import Runtime
from worker.service.status import status
from worker.store.apikeys import ApiKeys, Scope

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(
        "chromium not found: browser tests NOT run (apt-get install chromium)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page  # noqa: E402

from tests.browser.harness import api_and_browser, keep_shot  # noqa: E402

STEP_MS = 10_000


@dataclass
class Console:
    public: str
    env: dict[str, str]
    keys: dict[Scope, str]
    made: list[tuple[str, dict[str, Any]]]
    emu: Emu
    browser: Browser


@pytest.fixture(scope="module")
def console(
    redis_server: EmbeddedRedis, emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = process_env(
        redis_server.url, redis_server.url, f"c{uuid.uuid4().hex[:8]}:", public_url=public
    )
    emu = Emu(emulator.base_url)

    async def arrange(rt: Runtime) -> tuple[dict[Scope, str], list[tuple[str, dict[str, Any]]]]:
        keys = ApiKeys(rt.redis, rt.settings.key_prefix)
        made = {
            scope: (await keys.create(f"ops-{scope.value}", scope))[0]
            for scope in (Scope.READ, Scope.ADMIN)
        }
        return made, await connect(rt, emu, 4)

    keys, made = with_runtime(env, arrange)
    log = tmp_path_factory.mktemp("console") / "api.log"
    try:
        with api_and_browser(env, port, log) as (_, browser):
            yield Console(public, env, keys, made, emu, browser)
    finally:
        emu.http.close()


@pytest.fixture
def page(console: Console) -> Iterator[Page]:
    context = console.browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(STEP_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep_shot(path)


def sign_in(console: Console, page: Page, scope: Scope = Scope.ADMIN) -> None:
    page.goto(f"{console.public}/console/connections")
    assert page.url.startswith(f"{console.public}/console/sign-in")
    page.fill("input[name=api_key]", console.keys[scope])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console.public}/console/connections")


def test_signed_out_every_console_url_goes_to_sign_in(
    console: Console, page: Page, tmp_path: Path
) -> None:
    cid = console.made[0][0]
    for path in ("/console", "/console/connections", f"/console/connections/{cid}"):
        page.goto(console.public + path)
        assert page.url.startswith(f"{console.public}/console/sign-in"), path
    shot(page, tmp_path, "sign-in")


def test_overview_counts_match_status(console: Console, page: Page, tmp_path: Path) -> None:
    sign_in(console, page)
    page.goto(f"{console.public}/console")
    with ThreadPoolExecutor(1) as pool:  # Playwright's loop runs in this thread
        counts = pool.submit(with_runtime, console.env, status).result(30).by_status()
    for name, number in counts.items():
        assert page.get_by_test_id(f"count-{name}").inner_text() == str(number)
    shot(page, tmp_path, "overview")


def test_refresh_updates_the_row_and_the_feed_without_reload(
    console: Console, page: Page, tmp_path: Path
) -> None:
    sign_in(console, page)
    cid = console.made[1][0]
    page.goto(f"{console.public}/console/connections/{cid}")
    marker = page.evaluate("() => (window.__marker = Math.random())")
    before = page.locator('[data-field="last_refresh_at"] time, [data-field="last_refresh_at"]')
    old = before.first.get_attribute("data-ts")
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_function(
        "old => { const t = document.querySelector('[data-field=last_refresh_at] time');"
        " return t && t.dataset.ts !== old; }",
        arg=old,
    )
    page.locator('[data-testid=event-feed] li[data-event="console.action"]').first.wait_for()
    assert page.evaluate("() => window.__marker") == marker  # no reload happened
    shot(page, tmp_path, "connection")


def test_a_revoked_grant_shows_reauth_required_live(
    console: Console, page: Page, tmp_path: Path
) -> None:
    sign_in(console, page)
    cid, grant = console.made[2]
    page.goto(f"{console.public}/console")
    page.locator("#feed-state", has_text="live").wait_for()
    console.emu.http.post(
        "/services/oauth2/revoke", data={"token": grant["refresh_token"]}
    ).raise_for_status()
    context = page.context
    other = context.new_page()
    other.goto(f"{console.public}/console/connections")
    row = other.locator(f'tr[data-connection-id="{cid}"]')
    row.get_by_role("button", name="Refresh").click()
    other.wait_for_selector(f'tr[data-connection-id="{cid}"][data-status="reauth_required"]')
    started = time.monotonic()
    page.locator(
        f'[data-testid=event-feed] li[data-event="connection.reauth_required"]'
        f'[data-connection-id="{cid}"]'
    ).wait_for(timeout=5000)
    assert time.monotonic() - started < 5
    shot(page, tmp_path, "feed")
    other.goto(f"{console.public}/console/connections?status=reauth_required")
    ids = other.locator("[data-testid=connections-table] tbody tr[data-connection-id]")
    assert ids.evaluate_all("rows => rows.map(r => r.dataset.connectionId)") == [cid]
    shot(other, tmp_path, "connections")


def test_without_csrf_a_post_is_refused(console: Console, page: Page) -> None:
    sign_in(console, page)
    cid = console.made[3][0]
    answer = page.request.post(f"{console.public}/console/connections/{cid}/refresh")
    assert answer.status == 403


def test_a_read_key_sees_no_buttons(console: Console, page: Page, tmp_path: Path) -> None:
    sign_in(console, page, Scope.READ)
    table = page.get_by_test_id("connections-table")
    assert table.locator("tbody tr[data-connection-id]").count() >= 3
    for name in ("Check", "Refresh", "Remove"):
        assert page.get_by_role("button", name=name).count() == 0
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{console.public}/console/sign-in")
    shot(page, tmp_path, "signed-out")
