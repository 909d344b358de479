"""The host-app SDK (worker/client): every route's shape against a fake API, errors as typed
exceptions, and TokenworkerAuth's one retry on a rejected token (never a loop)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from worker.client import (
    AsyncTokenworkerClient,
    AuthError,
    ConnectSession,
    ConnectSessionStatus,
    Credentials,
    InvalidRequestError,
    NotFoundError,
    ReauthRequiredError,
    TokenworkerAPIError,
    TokenworkerAuth,
    TokenworkerClient,
    UnavailableError,
)

BASE = "http://tokenworker.test"
KEY = "tw_secret-api-key"
INSTANCE = "https://acme.my.salesforce.com"
FAR = 4_102_444_800.0  # 2100-01-01: a token far from expiry
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
WRONG_API = [
    {
        "message": "This session is not valid for use with the REST API",
        "errorCode": "INVALID_SESSION_ID",
    }
]


class FakeApi:
    """tokenworker's HTTP API as DESIGN.md "Serving host applications" shapes it."""

    def __init__(self, connections: int = 5) -> None:
        self.token = "tok-1"
        self.expires_at = FAR
        self.calls: list[httpx.Request] = []
        self.rejected: list[str] = []
        self.ids = [f"c{n}" for n in range(connections)]

    def credentials(self, connection_id: str) -> dict[str, Any]:
        return {
            "connection_id": connection_id,
            "integration": "acme",
            "provider": "salesforce",
            "access_token": self.token,
            "instance_url": INSTANCE,
            "token_type": "Bearer",
            "issued_at": 1_700_000_000.0,
            "expires_at": self.expires_at,
            "expiry_source": "introspection",
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return _error(401, "unauthorized", "send an API key")
        path, method = request.url.raw_path.decode().split("?")[0], request.method
        parts = path.strip("/").split("/")
        if parts[0] == "connections" and len(parts) == 3:
            return self._connection(method, parts[1], parts[2], request)
        if parts[0] == "connections":
            return self._listing(request) if len(parts) == 1 else self._show(parts[1])
        if parts == ["connect-sessions"] and method == "POST":
            body = json.loads(request.content)
            if not body.get("integration"):
                problem = "integration: expected a name"
                return _error(422, "invalid_request", problem, field="integration")
            return httpx.Response(
                201, json={"id": "cs_1", "connect_url": f"{BASE}/connect/cs_1", "expires_at": 1.5}
            )
        if parts[0] == "connect-sessions":
            return httpx.Response(
                200,
                json={
                    "id": parts[1],
                    "status": "failed",
                    "connection_id": "cust-42",
                    "integration": "acme",
                    "expires_at": 1.5,
                    "error": "access_denied",
                    "error_description": "end-user denied authorization",
                },
            )
        return _error(404, "not_found", "no route")

    def _connection(
        self, method: str, connection_id: str, what: str, request: httpx.Request
    ) -> httpx.Response:
        if connection_id == "dead":
            last = {"error": "invalid_grant", "error_description": "expired access/refresh token"}
            return _error(409, "reauth_required", "re-authorize", last_error=last)
        if connection_id == "down":
            return _error(503, "salesforce_unavailable", "later", headers={"Retry-After": "7"})
        if connection_id != "cust-42":
            return _error(404, "not_found", f"no connection {connection_id!r}")
        if what == "token-rejected" and method == "POST":
            reported = json.loads(request.content)["access_token"]
            self.rejected.append(reported)
            if reported == self.token:
                self.token = f"tok-{len(self.rejected) + 1}"
        return httpx.Response(200, json=self.credentials(connection_id))

    def _listing(self, request: httpx.Request) -> httpx.Response:
        query = parse_qs(request.url.query.decode())
        limit = int(query.get("limit", ["2"])[0])
        after = query.get("cursor", [""])[0]
        rest = [i for i in self.ids if i > after]
        page = rest[:limit]
        more = len(rest) > limit
        items = [self._public(i) for i in page]
        return httpx.Response(200, json={"items": items, "next_cursor": page[-1] if more else None})

    def _show(self, connection_id: str) -> httpx.Response:
        if connection_id not in self.ids:
            return _error(404, "not_found", f"no connection {connection_id!r}")
        return httpx.Response(200, json=self._public(connection_id))

    @staticmethod
    def _public(connection_id: str) -> dict[str, Any]:
        return {
            "id": connection_id,
            "integration": "acme",
            "status": "active",
            "instance_url": INSTANCE,
            "expires_at": FAR,
            "last_error": None,
            "failures": 0,
            "has_access_token": True,
        }


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    return httpx.Response(
        status, json={"error": code, "message": message, **extra}, headers=headers
    )


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def tw(api: FakeApi) -> TokenworkerClient:
    return TokenworkerClient(BASE, KEY, timeout=5, transport=httpx.MockTransport(api))


class TestRoutes:
    def test_credentials_are_typed_and_min_ttl_is_sent(
        self, tw: TokenworkerClient, api: FakeApi
    ) -> None:
        """GET /connections/{id}/credentials?min_ttl=S -> Credentials."""
        creds = tw.credentials("cust-42", min_ttl=600)
        assert creds == Credentials.from_json(api.credentials("cust-42"))
        assert (creds.access_token, creds.instance_url, creds.expires_at) == (
            "tok-1",
            INSTANCE,
            FAR,
        )
        assert api.calls[-1].url.path == "/connections/cust-42/credentials"
        assert api.calls[-1].url.params["min_ttl"] == "600"
        tw.credentials("cust-42")
        assert "min_ttl" not in api.calls[-1].url.params

    def test_token_rejected_posts_the_token(self, tw: TokenworkerClient, api: FakeApi) -> None:
        """POST /connections/{id}/token-rejected {access_token} -> the new Credentials."""
        assert tw.token_rejected("cust-42", "tok-1").access_token == "tok-2"
        assert api.calls[-1].method == "POST"
        assert json.loads(api.calls[-1].content) == {"access_token": "tok-1"}

    def test_connect_session_and_its_status(self, tw: TokenworkerClient, api: FakeApi) -> None:
        """POST /connect-sessions -> ConnectSession; GET /connect-sessions/{id} -> its status."""
        made = tw.connect_session("acme", "cust-42", return_to="https://app.example/done")
        assert made == ConnectSession("cs_1", f"{BASE}/connect/cs_1", 1.5)
        assert json.loads(api.calls[-1].content) == {
            "integration": "acme",
            "connection_id": "cust-42",
            "return_to": "https://app.example/done",
        }
        tw.connect_session("acme", "cust-43")
        assert "return_to" not in json.loads(api.calls[-1].content)
        status = tw.connect_session_status("cs_1")
        assert isinstance(status, ConnectSessionStatus)
        assert (status.status, status.connection_id, status.error) == (
            "failed",
            "cust-42",
            "access_denied",
        )
        assert status.extra["integration"] == "acme"

    def test_connections_iterate_every_page(self, tw: TokenworkerClient, api: FakeApi) -> None:
        """GET /connections pages are followed through next_cursor; filters are sent."""
        found = [c.id for c in tw.connections(status="active", integration="acme", limit=2)]
        assert found == api.ids
        pages = [c for c in api.calls if c.url.path == "/connections"]
        assert len(pages) == 3
        assert [p.url.params.get("cursor") for p in pages] == [None, "c1", "c3"]
        assert all(p.url.params["status"] == "active" for p in pages)

    def test_one_connection(self, tw: TokenworkerClient) -> None:
        conn = tw.connection("c3")
        assert (conn.id, conn.status, conn.instance_url) == ("c3", "active", INSTANCE)
        assert conn.extra["has_access_token"] is True

    @pytest.mark.parametrize("weird", ["a/b", "x?y", "a#b", "%2e%2e", "caf\u00e9"])
    def test_ids_are_one_path_segment(
        self, tw: TokenworkerClient, api: FakeApi, weird: str
    ) -> None:
        """An id never changes the route it is sent to."""
        with pytest.raises(NotFoundError):
            tw.credentials(weird)
        assert api.calls[-1].url.raw_path.decode().count("/") == 3

    @pytest.mark.parametrize("bad", ["", ".", ".."])
    def test_ids_a_url_would_normalise_away_are_refused(
        self, tw: TokenworkerClient, api: FakeApi, bad: str
    ) -> None:
        with pytest.raises(ValueError, match="not an id"):
            tw.credentials(bad)
        assert api.calls == []


class TestErrors:
    def test_reauth_required_carries_last_error(self, tw: TokenworkerClient) -> None:
        with pytest.raises(ReauthRequiredError) as raised:
            tw.credentials("dead")
        assert raised.value.status == 409
        assert raised.value.error == "reauth_required"
        assert raised.value.last_error == {
            "error": "invalid_grant",
            "error_description": "expired access/refresh token",
        }

    def test_unavailable_carries_retry_after(self, tw: TokenworkerClient) -> None:
        with pytest.raises(UnavailableError) as raised:
            tw.credentials("down")
        assert (raised.value.status, raised.value.retry_after) == (503, 7.0)

    def test_not_found_invalid_and_auth(self, api: FakeApi, tw: TokenworkerClient) -> None:
        with pytest.raises(NotFoundError) as missing:
            tw.connection("nope")
        assert missing.value.error == "not_found"
        with pytest.raises(InvalidRequestError) as invalid:
            tw.connect_session("", "cust-42")
        assert invalid.value.field == "integration"
        wrong = TokenworkerClient(BASE, "tw_wrong", transport=httpx.MockTransport(api))
        with pytest.raises(AuthError) as refused:
            wrong.credentials("cust-42")
        assert refused.value.status == 401

    def test_a_body_that_is_not_the_api_s_still_raises_the_base(self) -> None:
        """A proxy's HTML 502 in front of the API: TokenworkerAPIError with http_502."""
        transport = httpx.MockTransport(lambda _: httpx.Response(502, text="<html>bad gateway"))
        with pytest.raises(TokenworkerAPIError) as raised:
            TokenworkerClient(BASE, KEY, transport=transport).credentials("cust-42")
        assert (raised.value.status, raised.value.error) == (502, "http_502")

    def test_no_key_or_token_in_reprs_messages_or_logs(
        self, tw: TokenworkerClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The API key and tokens never appear in a repr, an error message, or httpx's log."""
        caplog.set_level(logging.DEBUG)
        creds = tw.credentials("cust-42")
        with pytest.raises(ReauthRequiredError) as raised:
            tw.credentials("dead")
        shown = " ".join(
            [repr(tw), repr(creds), str(creds), str(raised.value), repr(TokenworkerAuth(tw, "x"))]
        )
        shown += caplog.text
        assert KEY not in shown
        assert "tok-1" not in shown

    def test_context_managers_close_the_http_client(self, api: FakeApi) -> None:
        with TokenworkerClient(BASE, KEY, transport=httpx.MockTransport(api)) as tw:
            tw.credentials("cust-42")
        assert tw._http.is_closed

        async def go() -> bool:
            async with AsyncTokenworkerClient(BASE, KEY, transport=httpx.MockTransport(api)) as atw:
                await atw.credentials("cust-42")
            return atw._http.is_closed

        assert asyncio.run(go())


class TestAsyncClient:
    def test_the_same_routes_as_coroutines(self, api: FakeApi) -> None:
        async def go() -> None:
            async with AsyncTokenworkerClient(BASE, KEY, transport=httpx.MockTransport(api)) as tw:
                assert (await tw.credentials("cust-42", min_ttl=60)).access_token == "tok-1"
                assert (await tw.token_rejected("cust-42", "tok-1")).access_token == "tok-2"
                assert (await tw.connect_session("acme", "cust-42")).id == "cs_1"
                assert (await tw.connect_session_status("cs_1")).status == "failed"
                assert [c.id async for c in tw.connections(limit=2)] == api.ids
                assert (await tw.connection("c0")).id == "c0"
                with pytest.raises(UnavailableError):
                    await tw.credentials("down")

        asyncio.run(go())


class Salesforce:
    """A REST API that accepts only live tokens and answers Salesforce's 401 otherwise."""

    def __init__(self, live: set[str], policy: bool = False) -> None:
        self.live = live
        self.policy = policy
        self.seen: list[tuple[str, bytes]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.seen.append((token, request.content))
        if token not in self.live:
            return httpx.Response(401, json=INVALID_SESSION)
        if self.policy:
            return httpx.Response(401, json=WRONG_API)
        return httpx.Response(
            200, json={"ok": True}, headers={"Sforce-Limit-Info": "api-usage=1/15000"}
        )


def _salesforce(tw: TokenworkerClient, sf: Salesforce) -> httpx.Client:
    return httpx.Client(
        base_url=INSTANCE, auth=TokenworkerAuth(tw, "cust-42"), transport=httpx.MockTransport(sf)
    )


class TestAuth:
    def test_it_just_works_and_reuses_a_fresh_token(
        self, tw: TokenworkerClient, api: FakeApi
    ) -> None:
        """The Bearer token is added; a token far from expiry is not asked for twice."""
        sf = Salesforce({"tok-1"})
        with _salesforce(tw, sf) as client:
            assert client.get("/services/data/v62.0/limits").json() == {"ok": True}
            client.get("/services/data/v62.0/limits")
        assert [t for t, _ in sf.seen] == ["tok-1", "tok-1"]
        assert len([c for c in api.calls if c.url.path.endswith("/credentials")]) == 1

    def test_a_token_near_expiry_is_asked_for_again(
        self, tw: TokenworkerClient, api: FakeApi
    ) -> None:
        api.expires_at = 0.0
        with _salesforce(tw, Salesforce({"tok-1"})) as client:
            client.get("/a")
            client.get("/b")
        assert len([c for c in api.calls if c.url.path.endswith("/credentials")]) == 2

    def test_a_rejected_token_is_reported_and_the_request_retried_once(
        self, tw: TokenworkerClient, api: FakeApi
    ) -> None:
        """401 INVALID_SESSION_ID: token_rejected(tok-1), then the same request with tok-2."""
        sf = Salesforce({"tok-2"})
        with _salesforce(tw, sf) as client:
            answer = client.post("/services/data/v62.0/sobjects/Account", json={"Name": "Acme"})
        assert answer.status_code == 200
        assert api.rejected == ["tok-1"]
        assert [t for t, _ in sf.seen] == ["tok-1", "tok-2"]
        assert sf.seen[0][1] == sf.seen[1][1] == b'{"Name":"Acme"}'

    def test_a_second_401_is_returned_without_another_report(
        self, tw: TokenworkerClient, api: FakeApi
    ) -> None:
        """No loop: two requests, one report, Salesforce's 401 to the caller."""
        sf = Salesforce(set())
        with _salesforce(tw, sf) as client:
            answer = client.get("/services/data/v62.0/limits")
        assert answer.status_code == 401
        assert len(sf.seen) == 2
        assert api.rejected == ["tok-1"]

    def test_the_policy_401_is_returned_untouched(
        self, tw: TokenworkerClient, api: FakeApi
    ) -> None:
        """Not valid for use with the REST API: one request, no report."""
        sf = Salesforce({"tok-1"}, policy=True)
        with _salesforce(tw, sf) as client:
            assert client.get("/services/data/v62.0/limits").status_code == 401
        assert len(sf.seen) == 1
        assert api.rejected == []

    def test_no_token_goes_to_another_host(self, tw: TokenworkerClient) -> None:
        sf = Salesforce({"tok-1"})
        with _salesforce(tw, sf) as client, pytest.raises(ValueError, match="not the instance_url"):
            client.get("https://evil.example/services/data")
        assert sf.seen == []

    def test_the_async_flow_retries_once_too(self, api: FakeApi) -> None:
        sf = Salesforce({"tok-2"})

        async def go() -> int:
            async with AsyncTokenworkerClient(BASE, KEY, transport=httpx.MockTransport(api)) as tw:
                auth = TokenworkerAuth(tw, "cust-42")
                async with httpx.AsyncClient(
                    base_url=INSTANCE, auth=auth, transport=httpx.MockTransport(sf)
                ) as client:
                    return (await client.get("/services/data/v62.0/limits")).status_code

        assert asyncio.run(go()) == 200
        assert api.rejected == ["tok-1"]
        assert [t for t, _ in sf.seen] == ["tok-1", "tok-2"]

    def test_a_client_of_the_wrong_kind_is_refused(self, tw: TokenworkerClient) -> None:
        async def go() -> None:
            async with httpx.AsyncClient(
                base_url=INSTANCE,
                auth=TokenworkerAuth(tw, "cust-42"),
                transport=httpx.MockTransport(Salesforce(set())),
            ) as client:
                await client.get("/x")

        with pytest.raises(TypeError, match="AsyncTokenworkerClient"):
            asyncio.run(go())
