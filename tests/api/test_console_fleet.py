"""The console's fleet pages over the full app, the real emulator and Redis: sorting and
paging the connections table, the integrations page and its re-test, the bulk refresh with
its progress, the live failures page; each action refused without CSRF or an admin key."""

from __future__ import annotations

import re
import time
from typing import Any

from tests.api.conftest import Api
from tests.api.test_console import events_named, sign_in
from tests.conftest import Emu
from tests.helpers import connect
from worker.domain.models import ConnectionStatus, LastError
from worker.engine.events import CONSOLE_ACTION
from worker.store.apikeys import Scope

ROW = re.compile(r'<tr data-connection-id="([^"]+)"')


def _ids(text: str) -> list[str]:
    return ROW.findall(text)


def _error_at(api: Api, cid: str, at: float) -> None:
    async def go() -> None:
        conn = await api.rt.store.get_connection(cid)
        assert conn is not None
        await api.rt.store.save_connection(conn.evolve(last_error=LastError("x", "y", 400, at)))

    api.call(go)


def _wait_job(api: Api, job: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found: dict[str, Any] = api.client.get(f"/console/bulk/{job}").json()
        if found["state"] != "running":
            return found
        time.sleep(0.1)
    raise AssertionError("the bulk job did not finish in 30 s")


class TestSorting:
    def test_by_last_error_both_ways_and_by_next_check(self, api: Api, emu: Emu) -> None:
        made = [cid for cid, _ in api.call(connect, api.rt, emu, 3)]
        for n, cid in enumerate(made):
            _error_at(api, cid, 1_700_000_000.0 + n)
        sign_in(api)
        newest = api.client.get("/console/connections?sort=-last_error").text
        assert _ids(newest) == made[::-1]
        assert 'aria-sort="descending"' in newest
        assert _ids(api.client.get("/console/connections?sort=last_error").text) == made
        soonest = api.client.get("/console/connections?sort=next_check").text
        cells = re.findall(r'data-field="next_check_at"><time [^>]*data-ts="([^"]+)"', soonest)
        times = [float(t) for t in cells]
        assert len(times) == 3 and times == sorted(times)

    def test_reauth_required_by_next_check_is_shown_by_id_and_says_so(
        self, api: Api, emu: Emu
    ) -> None:
        """Never scheduled, they have no next check: the page lists them by id, not an empty
        walk of the due schedule."""
        made = [cid for cid, _ in api.call(connect, api.rt, emu, 3)]

        async def park() -> None:
            for cid in made[1:]:
                conn = await api.rt.store.get_connection(cid)
                assert conn is not None
                parked = conn.evolve(status=ConnectionStatus.REAUTH_REQUIRED)
                await api.rt.store.save_connection(parked, None)

        api.call(park)
        sign_in(api)
        page = api.client.get("/console/connections?status=reauth_required&sort=next_check").text
        assert _ids(page) == sorted(made[1:])
        assert "have no next check" in page and 'aria-sort="ascending"' in page
        failing = api.client.get("/console/connections?status=failing&sort=next_check").text
        assert "have no next check" not in failing

    def test_bad_sort_or_cursor_is_a_clear_error(self, api: Api) -> None:
        sign_in(api)
        answer = api.client.get("/console/connections?sort=size")
        assert answer.status_code == 200 and "sort: expected one of" in answer.text
        answer = api.client.get("/console/connections?sort=next_check&cursor=soon")
        assert "cursor" in answer.text and 'role="alert"' in answer.text


class TestIntegrations:
    def test_the_page_shows_status_login_url_introspection_and_counts(
        self, api: Api, emu: Emu
    ) -> None:
        api.call(connect, api.rt, emu, 2)
        sign_in(api)
        page = api.client.get("/console/integrations").text
        assert 'data-integration="acme"' in page
        assert emu.base_url in page and "available" in page and "2 active" in page
        assert ">Re-test</button>" in page
        sign_in(api, Scope.READ)
        assert "<button" not in api.client.get("/console/integrations").text.split("Sign out")[1]

    def test_retest_checks_a_connection_and_says_who(self, api: Api, emu: Emu) -> None:
        api.call(connect, api.rt, emu, 1)
        csrf = sign_in(api)
        url = "/console/integrations/acme/retest"
        assert api.client.post(url).status_code == 403  # no CSRF token
        answer = api.client.post(url, headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert found["ok"] and found["integration"]["status"] == "active"
        [event] = [e for e in events_named(api, CONSOLE_ACTION) if e["action"] == "retest"]
        assert event["actor"] == "k-admin" and event["integration"] == "acme"
        missing = api.client.post(
            "/console/integrations/nope/retest", headers={"X-CSRF-Token": csrf}
        )
        assert missing.status_code == 404


class TestBulk:
    def test_a_selection_is_refreshed_with_progress(self, api: Api, emu: Emu) -> None:
        made = [cid for cid, _ in api.call(connect, api.rt, emu, 3)]
        csrf = sign_in(api)
        headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        answer = api.client.post("/console/bulk/refresh", data={"ids": ",".join(made[:2])},
                                 headers=headers)  # fmt: skip
        assert answer.status_code == 202, answer.text
        job = _wait_job(api, answer.json()["job"])
        assert (job["state"], job["done"], job["total"]) == ("done", 2, 2)
        assert job["outcomes"] == {"refreshed": 2}
        actions = [e for e in events_named(api, CONSOLE_ACTION) if e["action"] == "bulk_refresh"]
        assert [e["outcome"] for e in actions] == ["started", "done"]
        assert {e["actor"] for e in actions} == {"k-admin"}

    def test_an_integrations_failing_connections_only(self, api: Api, emu: Emu) -> None:
        api.call(connect, api.rt, emu, 2)
        csrf = sign_in(api)
        headers = {"X-CSRF-Token": csrf}
        answer = api.client.post("/console/bulk/refresh", data={"integration": "acme"},
                                 headers=headers)  # fmt: skip
        job = _wait_job(api, answer.json()["job"])
        assert (job["state"], job["total"], job["outcomes"]) == ("done", 0, {})

    def test_refused_without_csrf_for_a_read_key_and_for_bad_input(
        self, api: Api, emu: Emu
    ) -> None:
        csrf = sign_in(api)
        assert api.client.post("/console/bulk/refresh", data={"ids": "a"}).status_code == 403
        both = api.client.post("/console/bulk/refresh", data={"ids": "a", "integration": "acme"},
                               headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert both.status_code == 422 and "one of them" in both.json()["message"]
        assert api.client.get("/console/bulk/not-a-job").status_code == 404
        read_csrf = sign_in(api, Scope.READ)
        refused = api.client.post("/console/bulk/refresh", data={"ids": "a"},
                                  headers={"X-CSRF-Token": read_csrf})  # fmt: skip
        assert refused.status_code == 403


def test_the_live_failures_page_starts_filtered_to_failures(api: Api) -> None:
    sign_in(api)
    page = api.client.get("/console/events").text
    assert 'value="@alerts" selected' in page and 'data-testid="event-feed"' in page
    assert "connection.reauth_required" in page  # in the filter and the alerts list
    # the page's title is its only heading (no "Live events" under "Live failures"); the
    # overview's feed, one section among others, keeps its own
    assert page.count("<h1>Live failures</h1>") == 1 and "<h2>" not in page
    assert "<h2>Live events</h2>" in api.client.get("/console").text
