"""The connections routes over the full app (TestClient), the real emulator and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.test_credentials import calls, expire_soon
from tests.conftest import Emu
from tests.helpers import connect, names_of
from worker.api import events
from worker.domain.models import ConnectionStatus, LastError
from worker.engine.runtime import Runtime
from worker.service import connections as connection_service
from worker.service import management
from worker.store.apikeys import Scope


def one(api: Api, emu: Emu, **kw: Any) -> tuple[str, dict[str, Any]]:
    [(cid, grant)] = api.call(connect, api.rt, emu, 1, *([kw["rotation"]] if kw else []))
    return cid, grant


class TestCredentials:
    def test_a_fresh_read_answers_the_contract_shape_without_salesforce(
        self, api: Api, emu: Emu
    ) -> None:
        """200 with exactly the contract's fields, not cacheable, no call to Salesforce."""
        cid, grant = one(api, emu)
        before = calls(emu)
        answer = api.get(f"/connections/{cid}/credentials", Scope.READ)
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {
            "connection_id", "integration", "provider", "access_token", "instance_url",
            "token_type", "issued_at", "expires_at", "expiry_source",
        }  # fmt: skip
        assert body["access_token"] == grant["access_token"]
        assert body["token_type"] == "Bearer" and body["connection_id"] == cid
        assert answer.headers["cache-control"] == "no-store"
        assert calls(emu) == before

    def test_min_ttl_is_checked(self, api: Api, emu: Emu) -> None:
        """Malformed, negative, unknown parameters and over half the lifetime: 422 naming it."""
        cid, _ = one(api, emu)
        for raw in ("abc", "-1", "inf", "nan", "1e9"):
            bad = api.get(f"/connections/{cid}/credentials?min_ttl={raw}", Scope.READ)
            assert (bad.status_code, bad.json()["field"]) == (422, "min_ttl"), raw
        typo = api.get(f"/connections/{cid}/credentials?min_tll=5", Scope.READ)
        assert (typo.status_code, typo.json()["field"]) == (422, "min_tll")
        long = api.get(f"/connections/{cid}/credentials?min_ttl=3000", Scope.READ)
        assert long.status_code == 422 and long.json()["max_min_ttl"] == 1800
        assert api.get(f"/connections/{cid}/credentials?min_ttl=60", Scope.READ).status_code == 200

    def test_ids_that_are_not_ids_are_refused(self, api: Api) -> None:
        """`..`, a slash (encoded or not), spaces: 400 or 404, JSON, naming the field."""
        dots = api.get("/connections/../credentials", Scope.READ)
        assert dots.status_code in (400, 404) and "error" in dots.json()
        for raw in ("a%20b", "%2E%2E", "-x", "x" * 129, "a%0D%0Ab"):
            bad = api.get(f"/connections/{raw}/credentials", Scope.READ)
            assert bad.status_code == 400, raw
            assert bad.json()["field"] == "connection_id"
        for raw in ("a/b", "a%2Fb"):
            bad = api.get(f"/connections/{raw}/credentials", Scope.READ)
            assert bad.status_code in (400, 404) and bad.json()["error"] in (
                "invalid_request",
                "not_found",
            ), raw

    def test_unknown_is_404_and_dead_is_409_with_last_error(self, api: Api, emu: Emu) -> None:
        assert api.get("/connections/nobody/credentials", Scope.READ).json()["error"] == "not_found"
        cid, _ = one(api, emu)

        async def kill() -> None:
            conn = await api.rt.store.get_connection(cid)
            assert conn is not None
            last = LastError("invalid_grant", "expired access/refresh token", 400, time.time())
            await api.rt.store.save_connection(
                conn.evolve(status=ConnectionStatus.REAUTH_REQUIRED, last_error=last)
            )

        api.call(kill)
        dead = api.get(f"/connections/{cid}/credentials", Scope.READ)
        assert dead.status_code == 409
        assert dead.json()["error"] == "reauth_required"
        assert dead.json()["last_error"]["error"] == "invalid_grant"

    def test_salesforce_down_is_503_with_retry_after(self, api: Api, emu: Emu) -> None:
        cid, _ = one(api, emu)
        api.call(expire_soon, api.rt, cid, 5)
        emu.fault(endpoint="token", mutate="html_503", count=None)
        down = api.get(f"/connections/{cid}/credentials", Scope.READ)
        assert down.status_code == 503
        assert down.json()["error"] == "salesforce_unavailable"
        assert int(down.headers["retry-after"]) >= 1
        assert down.json()["retry_after"] == int(down.headers["retry-after"])


class TestTokenRejected:
    def test_needs_connect_scope_and_refreshes_the_stored_token(self, api: Api, emu: Emu) -> None:
        cid, grant = one(api, emu)
        body = {"access_token": grant["access_token"]}
        refused = api.post(f"/connections/{cid}/token-rejected", Scope.READ, json=body)
        assert refused.status_code == 403
        fresh = api.post(f"/connections/{cid}/token-rejected", Scope.CONNECT, json=body)
        assert fresh.status_code == 200
        assert fresh.json()["access_token"] != grant["access_token"]
        assert emu.token_calls(grant["grant_id"]) == 1
        again = api.post(f"/connections/{cid}/token-rejected", Scope.CONNECT, json=body)
        assert again.json()["access_token"] == fresh.json()["access_token"]
        assert emu.token_calls(grant["grant_id"]) == 1

    def test_bad_bodies(self, api: Api, emu: Emu) -> None:
        """Non-JSON 400; not an object 400; unknown, missing, mistyped fields 422 naming the
        field; over 64 KB 413. Nothing is refreshed."""
        cid, grant = one(api, emu)
        path = f"/connections/{cid}/token-rejected"
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"content": b"{not json"}, 400, "body"),
            ({"json": ["access_token"]}, 400, "body"),
            ({"json": {"access_token": "x", "extra": 1}}, 422, "extra"),
            ({"json": {}}, 422, "access_token"),
            ({"json": {"access_token": 42}}, 422, "access_token"),
            ({"json": {"access_token": ""}}, 422, "access_token"),
            ({"json": {"access_token": "x" * 70_000}}, 413, "body"),
            # a declared length over the cap is refused before the body is read
            ({"content": b"{}", "headers": {"content-length": "70000"}}, 413, "body"),
            # and a chunked body (no declared length) is cut off as it streams in
            ({"content": iter([b'{"access_token": "', b"x" * 70_000, b'"}'])}, 413, "body"),
        ]
        for kw, status, field in cases:
            answer = api.post(path, Scope.CONNECT, **kw)
            assert (answer.status_code, answer.json().get("field")) == (status, field), kw.keys()
        assert emu.token_calls(grant["grant_id"]) == 0


class TestManagement:
    def test_list_pages_by_cursor_and_filters(self, api: Api, emu: Emu) -> None:
        """Every connection exactly once across pages; filters apply; no token in a row."""
        made = api.call(connect, api.rt, emu, 5)
        ids, seen, cursor = sorted(cid for cid, _ in made), [], None
        while True:
            query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = api.get("/connections", Scope.READ, params=query).json()
            seen += [row["id"] for row in page["items"]]
            assert all(
                "access_token" not in row and "refresh_token" not in row for row in page["items"]
            )
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids
        assert api.get("/connections?status=reauth_required", Scope.READ).json()["items"] == []
        assert len(api.get("/connections?integration=acme", Scope.READ).json()["items"]) == 5
        for query, field in (
            ("status=dead", "status"),
            ("limit=0", "limit"),
            ("cursor=..", "cursor"),
            ("x=1", "x"),
        ):
            bad = api.get(f"/connections?{query}", Scope.READ)
            assert (bad.status_code, bad.json()["field"]) == (422, field), query

    def test_show_is_the_cli_object_without_secrets(self, api: Api, emu: Emu) -> None:
        cid, grant = one(api, emu)
        answer = api.get(f"/connections/{cid}", Scope.READ)
        assert answer.json() == api.call(connection_service.show, api.rt, cid).as_dict()
        assert grant["access_token"] not in answer.text
        assert grant["refresh_token"] not in answer.text
        assert api.get("/connections/nobody", Scope.READ).status_code == 404

    def test_delete_revokes_at_salesforce_then_deletes(self, api: Api, emu: Emu) -> None:
        cid, grant = one(api, emu)
        assert api.delete(f"/connections/{cid}", Scope.CONNECT).status_code == 403
        answer = api.delete(f"/connections/{cid}")
        assert answer.status_code == 200
        assert answer.json() == {"connection_id": cid, "removed": True, "revocation": "revoked"}
        assert emu.grant(grant["grant_id"])["revoked"] is True
        assert api.get(f"/connections/{cid}", Scope.READ).status_code == 404
        assert "connection.removed" in api.call(names_of, api.rt)
        assert api.delete(f"/connections/{cid}").status_code == 404

    def test_a_failed_revocation_deletes_nothing(self, api: Api, emu: Emu) -> None:
        """503 and the record stays; revoke=false then deletes without asking Salesforce."""
        cid, grant = one(api, emu)
        emu.fault(endpoint="revoke", mutate="html_503", count=None)
        down = api.delete(f"/connections/{cid}")
        assert down.status_code == 503 and down.json()["error"] == "salesforce_unavailable"
        assert api.get(f"/connections/{cid}", Scope.READ).status_code == 200
        emu.clear_faults()
        forced = api.delete(f"/connections/{cid}?revoke=false")
        assert forced.json()["revocation"] == "not_attempted"
        assert emu.grant(grant["grant_id"])["revoked"] is False

    def test_an_already_dead_grant_is_removed(self, api: Api, emu: Emu) -> None:
        """Salesforce's 400 (it does not know the token): the grant is dead; the record goes."""
        cid, _ = one(api, emu)
        error = '{"error":"unsupported_token_type","error_description":"invalid token"}'
        emu.fault(endpoint="revoke", mutate="error", status=400, body=error)
        gone = api.delete(f"/connections/{cid}")
        assert gone.json()["revocation"] == "already_invalid"

    def test_refresh_is_admin_and_inline(self, api: Api, emu: Emu) -> None:
        cid, grant = one(api, emu)
        assert api.post(f"/connections/{cid}/refresh", Scope.CONNECT).status_code == 403
        answer = api.post(f"/connections/{cid}/refresh")
        assert answer.status_code == 200
        assert answer.json()["outcome"] == "refreshed"
        assert emu.token_calls(grant["grant_id"]) == 1
        assert api.post("/connections/nobody/refresh").status_code == 404

    def test_integrations_carry_no_secret(self, api: Api, emu: Emu) -> None:
        one(api, emu)
        answer = api.get("/integrations", Scope.READ)
        [integration] = answer.json()["items"]
        assert integration["name"] == "acme" and "client_secret" not in integration
        secret = api.call(api.rt.store.get_integration, "acme").client_secret
        assert secret not in answer.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/connections/x/credentials"),
        ("POST", "/connections/x/token-rejected"),
        ("GET", "/connections"),
        ("GET", "/connections/x"),
        ("DELETE", "/connections/x"),
        ("POST", "/connections/x/refresh"),
        ("GET", "/integrations"),
        ("GET", "/events"),
        ("GET", "/events/stream"),
    ],
)
def test_every_route_needs_a_key(api: Api, method: str, path: str) -> None:
    """No key: 401 before anything else is looked at."""
    answer = api.client.request(method, path)
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"


async def test_concurrent_admin_refreshes_make_one_token_call(
    runtime_for: Callable[..., Runtime], emu: Emu
) -> None:
    """Two refreshes asked at once: one is sent, the other is answered by it."""

    rt = runtime_for()
    try:
        [(cid, grant)] = await connect(rt, emu)
        results = await asyncio.gather(*(management.refresh_connection(rt, cid) for _ in range(2)))
        assert sorted(r.outcome.value for r in results) == ["refreshed", "superseded"]
        assert emu.token_calls(grant["grant_id"]) == 1
    finally:
        await rt.close()


def test_event_streams_are_capped(api: Api) -> None:
    """Past MAX_STREAMS open streams a new one is refused with 503 and Retry-After."""
    api.client.app.state.open_streams = events.MAX_STREAMS  # type: ignore[attr-defined]
    refused = api.get("/events/stream", Scope.READ)
    assert refused.status_code == 503 and refused.json()["error"] == "too_many_streams"
    assert refused.headers["retry-after"] == "5"
