"""Every console page in a real browser on the emulator demo's data (worker.dev.demo's seed:
its integration, clients and ten customers, one revoked): a screenshot of each page at laptop
width, no page wider than a phone (390 px) at phone width, the bulk refresh of a selection
showing its progress, a re-test answering in place, and the buttons working from the keyboard.

    TOKENWORKER_CONSOLE_SHOTS=docs/console pytest tests/browser/test_console_pages.py

also writes the screenshots there (the README's Console section uses them).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import process_env, with_runtime
from worker.dev.demo import _seed as demo_seed
from worker.dev.embedded import EmbeddedRedis, free_port
from worker.dev.emulator.server import EmulatorThread
from worker.engine.runtime import Runtime
from worker.service import checks
from worker.store.apikeys import ApiKeys, Scope

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(
        "chromium not found: browser tests NOT run (apt-get install chromium)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page  # noqa: E402

from tests.browser.harness import api_and_browser  # noqa: E402

SHOTS = os.environ.get("TOKENWORKER_CONSOLE_SHOTS")
STEP_MS = 10_000
PHONE = {"width": 390, "height": 844}


@dataclass
class Site:
    public: str
    key: str
    revoked: str
    browser: Browser


@pytest.fixture(scope="module")
def site(
    redis_server: EmbeddedRedis, emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = process_env(
        redis_server.url, redis_server.url, f"d{uuid.uuid4().hex[:8]}:", public_url=public
    )

    async def arrange(rt: Runtime) -> tuple[str, str]:
        grants = await demo_seed(rt.settings, emulator.base_url)
        async with httpx.AsyncClient(base_url=emulator.base_url) as admin:
            await admin.post(f"/_admin/grants/{grants[-1]['grant_id']}/revoke")
        revoked = f"customer-{len(grants):02d}"
        dispatch = checks.InlineDispatch(rt)
        ids = [f"customer-{n:02d}" for n in range(1, len(grants) + 1)]
        await dispatch.check_many(ids, force=False, on_progress=lambda *_: None)
        key, _ = await ApiKeys(rt.redis, rt.settings.key_prefix).create("ops-admin", Scope.ADMIN)
        return key, revoked

    key, revoked = with_runtime(env, arrange)
    log = tmp_path_factory.mktemp("console-pages") / "api.log"
    with api_and_browser(env, port, log) as (_, browser):
        yield Site(public, key, revoked, browser)


def _page(site: Site, viewport: dict[str, int]) -> Page:
    context = site.browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(STEP_MS)
    return context.new_page()


def _sign_in(site: Site, page: Page) -> None:
    page.goto(f"{site.public}/console/sign-in")
    page.fill("input[name=api_key]", site.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.public}/console")


def _save(page: Page, tmp_path: Path, name: str, keep: bool = True) -> None:
    """A full-page PNG under tmp_path; also under SHOTS when set and `keep` (laptop width)."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if SHOTS and keep:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SHOTS) / path.name)


def _pages(site: Site) -> dict[str, str]:
    return {
        "overview": "/console",
        "connections": "/console/connections",
        "connection": f"/console/connections/{site.revoked}",
        "live-failures": "/console/events",
        "integrations": "/console/integrations",
    }


def test_every_page_at_laptop_and_phone_width(site: Site, tmp_path: Path) -> None:
    for viewport, suffix in (({"width": 1280, "height": 800}, ""), (PHONE, "-phone")):
        page = _page(site, viewport)
        try:
            page.goto(f"{site.public}/console/sign-in")
            _save(page, tmp_path, "sign-in" + suffix, keep=not suffix)
            _sign_in(site, page)
            for name, path in _pages(site).items():
                page.goto(site.public + path)
                page.locator("main h1").first.wait_for()
                if name in ("overview", "live-failures"):
                    page.locator("#feed-state", has_text="live").wait_for()
                wide = page.evaluate("() => document.documentElement.scrollWidth")
                assert wide <= viewport["width"], f"{name} is {wide} px wide at {viewport}"
                _save(page, tmp_path, name + suffix, keep=not suffix)
        finally:
            page.context.close()


def test_bulk_refresh_of_a_selection_shows_progress(site: Site) -> None:
    page = _page(site, {"width": 1280, "height": 800})
    try:
        _sign_in(site, page)
        page.goto(f"{site.public}/console/connections?status=active")
        for cid in ("customer-03", "customer-04"):
            page.get_by_label(f"Select {cid}").check()
        page.get_by_role("button", name="Refresh 2 selected").click()
        done = page.locator('[data-testid=bulk-progress][data-state="done"]')
        done.wait_for(timeout=30_000)
        assert "2/2" in done.inner_text() and "refreshed 2" in done.inner_text()
    finally:
        page.context.close()


def test_retest_and_keyboard_only_check(site: Site) -> None:
    page = _page(site, {"width": 1280, "height": 800})
    try:
        _sign_in(site, page)
        page.goto(f"{site.public}/console/integrations")
        page.get_by_role("button", name="Re-test").click()
        result = page.locator('tr[data-integration="demo"] [data-field="result"]')
        result.filter(has_text="check of").wait_for(timeout=20_000)
        page.goto(f"{site.public}/console/connections/customer-05")
        page.get_by_role("button", name="Check").focus()
        page.keyboard.press("Enter")
        page.locator('[data-field="result"].ok').wait_for(timeout=20_000)
        hover = page.locator('[data-field="expires_at"] time')
        assert hover.get_attribute("title") == hover.get_attribute("datetime")
        assert (hover.get_attribute("title") or "").endswith("Z")
    finally:
        page.context.close()
