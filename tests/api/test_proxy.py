"""The proxy: forwards to the stored instance_url only, with the token, streaming both ways;
retries a rejected token once and never loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.testclient import TestClient

from config.settings import Settings
from tests.api.upstream import INVALID_SESSION, Upstream, asgi
from worker.api import proxy
from worker.api.app import make_app
from worker.engine.runtime import Runtime
from worker.errors import ReauthRequired
from worker.store.apikeys import Scope

CONNECTION = "cust-42"


@dataclass(frozen=True)
class Token:
    access_token: str
    instance_url: str


class FakeTokens:
    """The credentials service as the proxy sees it: tok-1, then tok-2 once tok-1 is reported."""

    def __init__(self, instance_url: str) -> None:
        self.instance_url = instance_url
        self.current = "tok-1"
        self.reads = 0
        self.rejected: list[str] = []
        self.dead = False

    async def credentials(
        self, rt: Runtime, connection_id: str, min_ttl: float | None = None
    ) -> Token:
        assert connection_id == CONNECTION
        self.reads += 1
        return Token(self.current, self.instance_url)

    async def token_rejected(self, rt: Runtime, connection_id: str, access_token: str) -> Token:
        self.rejected.append(access_token)
        if self.dead:
            raise ReauthRequired(connection_id, {"error": "invalid_grant"})
        if access_token == self.current:
            self.current = f"tok-{len(self.rejected) + 1}"
        return Token(self.current, self.instance_url)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.release.set()
    server.stop()


@pytest.fixture
def tokens(upstream: Upstream) -> FakeTokens:
    return FakeTokens(upstream.url)


@pytest.fixture
def client(settings_for: Callable[..., Settings], tokens: FakeTokens) -> Iterator[TestClient]:
    module = SimpleNamespace(
        routes=lambda: proxy.routes(tokens, replay_cap=1024), shutdown=proxy.shutdown
    )
    with TestClient(make_app(settings_for(), [module])) as test_client:  # type: ignore[list-item]
        yield test_client


@pytest.fixture
def key(client: TestClient) -> str:
    async def go() -> str:
        made, _ = await client.app.state.api_keys.create("host-app", Scope.READ)  # type: ignore[attr-defined]
        return str(made)

    return client.portal.call(go)  # type: ignore[union-attr]


def auth(key: str, *more: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {key}"), *more]


ECHO = f"/proxy/{CONNECTION}/services/data/v62.0/echo"


class TestForwarding:
    def test_path_query_and_token_reach_the_instance_url(
        self, client: TestClient, key: str, upstream: Upstream
    ) -> None:
        """The path (still encoded), the query string and the Bearer token arrive as sent."""
        target = f"{ECHO}/a%2Fb/joe%40example.com?q=SELECT+Id+FROM+Account&x=%2F"
        answer = asgi(client, "GET", target, auth(key))
        assert answer.status == 200, answer.body
        [seen] = upstream.seen
        assert seen.target == (
            "/services/data/v62.0/echo/a%2Fb/joe%40example.com?q=SELECT+Id+FROM+Account&x=%2F"
        )
        assert seen.header("Authorization") == ["Bearer tok-1"]

    def test_a_body_and_method_are_forwarded(
        self, client: TestClient, key: str, upstream: Upstream
    ) -> None:
        """A PATCH with a JSON body arrives as a PATCH with the same bytes."""
        body = b'{"Name": "Acme"}'
        headers = auth(key, ("Content-Type", "application/json"), ("Content-Length", "16"))
        answer = asgi(client, "PATCH", ECHO, headers, [body])
        assert answer.json() == {"method": "PATCH", "body": body.decode()}
        assert upstream.seen[0].header("Content-Type") == ["application/json"]

    def test_salesforce_headers_come_back_and_hop_by_hop_ones_do_not(
        self, client: TestClient, key: str
    ) -> None:
        """Sforce-Limit-Info and other end-to-end headers pass; hop-by-hop and cookies do not."""
        answer = asgi(client, "GET", ECHO, auth(key))
        assert answer.header("Sforce-Limit-Info") == ["api-usage=7/15000"]
        assert answer.header("X-Kept") == ["yes"]
        assert answer.header("Content-Type") == ["application/json; charset=utf-8"]
        for name in ("Keep-Alive", "X-Upstream-Hop", "Proxy-Authenticate", "Set-Cookie"):
            assert answer.header(name) == [], name
        assert "X-Upstream-Hop" not in " ".join(answer.header("Connection"))

    def test_our_api_key_cookies_and_hop_by_hop_headers_never_reach_salesforce(
        self, client: TestClient, key: str, upstream: Upstream
    ) -> None:
        """Only end-to-end headers cross; the API key goes nowhere, whatever header holds it."""
        sent = auth(
            key,
            ("Cookie", "session=ours"),
            ("X-Api-Key", key),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-Custom", "kept"),
        )
        assert asgi(client, "GET", ECHO, sent).status == 200
        [seen] = upstream.seen
        names = {name.lower() for name, _ in seen.headers}
        assert key not in repr(seen.headers)
        assert seen.header("X-Custom") == ["kept"]
        assert seen.header("Authorization") == ["Bearer tok-1"]
        dropped = {"cookie", "x-api-key", "x-secret-hop", "keep-alive", "te", "trailer"}
        assert not names & (dropped | {"upgrade", "proxy-authorization"})
        assert "x-secret-hop" not in " ".join(seen.header("Connection")).lower()

    def test_the_answer_streams_before_salesforce_has_finished(
        self, client: TestClient, key: str, upstream: Upstream
    ) -> None:
        """The caller gets the first bytes while the upstream still holds the rest back."""
        answer = asgi(
            client, "GET", f"/proxy/{CONNECTION}/stream", auth(key),
            on_first_body=upstream.release.set,
        )  # fmt: skip
        assert answer.body == b"first,second"

    def test_a_large_body_streams_to_salesforce(
        self, client: TestClient, key: str, upstream: Upstream
    ) -> None:
        """A body over the replay cap reaches Salesforce before the caller has sent all of it."""

        async def wait_for_upstream() -> None:
            assert await asyncio.to_thread(upstream.first_bytes.wait, 10)

        chunks = [b"a" * 800, b"b" * 800, b"c" * 800]
        answer = asgi(
            client, "POST", ECHO, auth(key), chunks, before_last_chunk=wait_for_upstream
        )
        assert answer.status == 200
        assert upstream.seen[0].body == b"".join(chunks)

    def test_the_route_needs_an_api_key(self, client: TestClient, upstream: Upstream) -> None:
        """No key: 401, and nothing is sent."""
        assert asgi(client, "GET", ECHO).status == 401
        assert upstream.seen == []


ESCAPES = [
    "../x",
    "services/../../x",
    "%2e%2e/x",
    "%2E%2E%2Fx",
    "services/%2e%2e%2f%2e%2e/x",
    "%252e%252e/x",
    "./x",
    "/evil.example/x",
    "%2Fevil.example/x",
    "https://evil.example/x",
    "https:%2F%2Fevil.example/x",
    "http:evil.example",
    "javascript:alert(1)",
    "user@evil.example/x",
    "@evil.example",
    "..\\x",
    "%5c%5cevil.example",
    "x%00y",
    "x%0d%0aHost:%20evil.example",
    "services//x",
]


class TestEscapes:
    @pytest.mark.parametrize("path", ESCAPES)
    def test_an_escape_is_refused_before_anything_is_sent(
        self, client: TestClient, key: str, upstream: Upstream, tokens: FakeTokens, path: str
    ) -> None:
        """400 invalid_request naming the path; no credentials read, nothing sent upstream."""
        answer = asgi(client, "GET", f"/proxy/{CONNECTION}/{path}", auth(key))
        assert answer.status == 400, (path, answer.body)
        assert answer.json()["error"] == "invalid_request"
        assert answer.json()["field"] == "path"
        assert upstream.seen == []
        assert tokens.reads == 0


class TestRejectedToken:
    def test_an_expired_token_is_reported_and_the_request_sent_once_more(
        self, client: TestClient, key: str, upstream: Upstream, tokens: FakeTokens
    ) -> None:
        """INVALID_SESSION_ID: token_rejected with the token used, then one retry, same body."""
        upstream.live = {"tok-2"}
        answer = asgi(client, "POST", ECHO, auth(key), [b'{"a": 1}'])
        assert answer.status == 200
        assert tokens.rejected == ["tok-1"]
        assert [s.header("Authorization") for s in upstream.seen] == [
            ["Bearer tok-1"],
            ["Bearer tok-2"],
        ]
        assert [s.body for s in upstream.seen] == [b'{"a": 1}', b'{"a": 1}']

    def test_a_second_401_is_passed_back_without_another_refresh(
        self, client: TestClient, key: str, upstream: Upstream, tokens: FakeTokens
    ) -> None:
        """No refresh loop: two requests upstream, one report, Salesforce's 401 to the caller."""
        upstream.live = set()
        answer = asgi(client, "GET", ECHO, auth(key))
        assert answer.status == 401
        assert answer.json() == INVALID_SESSION
        assert len(upstream.seen) == 2
        assert tokens.rejected == ["tok-1"]

    def test_a_grant_that_died_answers_reauth_required(
        self, client: TestClient, key: str, upstream: Upstream, tokens: FakeTokens
    ) -> None:
        """The refresh after a 401 finds the grant revoked: 409 with last_error, no retry."""
        upstream.live = set()
        tokens.dead = True
        answer = asgi(client, "GET", ECHO, auth(key))
        assert answer.status == 409
        assert answer.json()["last_error"] == {"error": "invalid_grant"}
        assert len(upstream.seen) == 1

    def test_the_policy_401_is_passed_back_and_never_refreshed(
        self, client: TestClient, key: str, upstream: Upstream, tokens: FakeTokens
    ) -> None:
        """Not valid for use with the REST API: one request, no report, the 401 as it was."""
        upstream.policy = True
        answer = asgi(client, "GET", ECHO, auth(key))
        assert answer.status == 401
        assert "not valid for use with the REST API" in answer.json()[0]["message"]
        assert len(upstream.seen) == 1
        assert tokens.rejected == []

    def test_a_streamed_body_is_reported_but_not_resent(
        self, client: TestClient, key: str, upstream: Upstream, tokens: FakeTokens
    ) -> None:
        """Over the replay cap the body cannot be sent twice: report, then pass the 401 back."""
        upstream.live = {"tok-2"}
        answer = asgi(client, "POST", ECHO, auth(key), [b"x" * 800, b"y" * 800])
        assert answer.status == 401
        assert len(upstream.seen) == 1
        assert tokens.rejected == ["tok-1"]


def test_the_session_is_closed_on_shutdown(
    settings_for: Callable[..., Settings], tokens: FakeTokens, upstream: Upstream
) -> None:
    """The process's one ClientSession is made on first use and closed with the app."""
    module = SimpleNamespace(routes=lambda: proxy.routes(tokens), shutdown=proxy.shutdown)
    app = make_app(settings_for(), [module])  # type: ignore[list-item]
    with TestClient(app) as client:
        made: Any = client.portal.call(app.state.api_keys.create, "k", Scope.READ)  # type: ignore[union-attr]
        asgi(client, "GET", ECHO, auth(made[0]))
        asgi(client, "GET", ECHO, auth(made[0]))
        session = app.state.proxy_http
    assert session.closed
    assert len(upstream.seen) == 2
