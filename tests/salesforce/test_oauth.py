"""The web-server flow's pieces: PKCE, the authorize URL, the code exchange, identity ids."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import run
from worker.domain.models import Integration, Provider
from worker.errors import PermanentError, TransientError
from worker.salesforce import oauth
from worker.salesforce.client import SalesforceClient

INTEGRATION = Integration(
    "acme",
    Provider.SALESFORCE,
    "the-client-id",
    "the-client-secret",
    "https://login.salesforce.com",
    scopes="api refresh_token id",
    prompt="login consent",
)
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
TOKEN_BODY = {
    "access_token": "00Dxx0000001gEREAY!AQ4AQFakeAccessToken",
    "refresh_token": "5Aep861FakeRefreshTokenValue",
    "instance_url": "https://acme.my.salesforce.com",
    "id": "https://login.salesforce.com/id/00Dxx0000001gEREAY/005xx000001Sv6eAAC",
    "issued_at": "1700000000000",
    "token_type": "Bearer",
}


class TestPkce:
    def test_the_challenge_is_s256_of_the_verifier(self) -> None:
        """RFC 7636's own example: the S256 challenge of its verifier."""
        assert oauth.code_challenge(VERIFIER) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

    def test_new_verifiers_are_long_random_and_valid(self) -> None:
        """Each verifier is new, 43-128 unreserved characters (so it has a challenge)."""
        made = {oauth.new_verifier() for _ in range(50)}
        assert len(made) == 50
        for verifier in made:
            assert 43 <= len(verifier) <= 128
            oauth.code_challenge(verifier)

    def test_a_short_verifier_is_refused(self) -> None:
        """A verifier under 43 characters is not PKCE."""
        with pytest.raises(ValueError, match="43-128"):
            oauth.code_challenge("short")


class TestAuthorizeUrl:
    def test_carries_every_parameter_and_no_secret(self) -> None:
        """code, client_id, callback, state, S256 challenge, the integration's scope and
        prompt; never the client secret or the verifier itself."""
        url = oauth.authorize_url(
            INTEGRATION, "https://acme.my.salesforce.com", "https://tw.example/oauth/callback",
            "the-state", VERIFIER,
        )  # fmt: skip
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
            "https://acme.my.salesforce.com/services/oauth2/authorize"
        )
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert query == {
            "response_type": "code",
            "client_id": "the-client-id",
            "redirect_uri": "https://tw.example/oauth/callback",
            "state": "the-state",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "scope": "api refresh_token id",
            "prompt": "login consent",
        }
        assert "the-client-secret" not in url
        assert VERIFIER not in url

    def test_the_callback_is_the_public_url_plus_its_path(self) -> None:
        """A trailing slash on PUBLIC_URL does not double."""
        assert oauth.callback_url("https://tw.example/") == "https://tw.example/oauth/callback"


def _client(handler: httpx.MockTransport) -> SalesforceClient:
    return SalesforceClient(httpx.AsyncClient(transport=handler), timeout=2)


class TestExchange:
    def test_posts_the_code_grant_to_the_chosen_login_host(self) -> None:
        """authorization_code with code, redirect_uri, code_verifier, client id and secret,
        to the login URL given (the customer's My Domain), parsed like a refresh."""
        seen: list[httpx.Request] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json=TOKEN_BODY)

        async def go() -> object:
            client = _client(httpx.MockTransport(answer))
            try:
                return await oauth.exchange_code(
                    client, INTEGRATION, "https://acme.my.salesforce.com", "the-code",
                    "https://tw.example/oauth/callback", VERIFIER,
                )  # fmt: skip
            finally:
                await client.aclose()

        response = run(go())
        assert str(seen[0].url) == "https://acme.my.salesforce.com/services/oauth2/token"
        form = {k: v[0] for k, v in parse_qs(seen[0].content.decode()).items()}
        assert form == {
            "grant_type": "authorization_code",
            "code": "the-code",
            "redirect_uri": "https://tw.example/oauth/callback",
            "code_verifier": VERIFIER,
            "format": "json",
            "client_id": "the-client-id",
            "client_secret": "the-client-secret",
        }
        assert response.refresh_token == TOKEN_BODY["refresh_token"]  # type: ignore[attr-defined]
        assert response.instance_url == TOKEN_BODY["instance_url"]  # type: ignore[attr-defined]

    def test_an_error_is_classified_and_never_quotes_the_code_or_verifier(self) -> None:
        """Salesforce's invalid_grant comes back as its error class; an answer that echoes
        what we sent has the code and the verifier scrubbed out."""

        def answer(request: httpx.Request) -> httpx.Response:
            sent = request.content.decode()
            return httpx.Response(
                400, json={"error": "invalid_grant", "error_description": f"bad request {sent}"}
            )

        async def go() -> None:
            client = _client(httpx.MockTransport(answer))
            try:
                await oauth.exchange_code(
                    client, INTEGRATION, "https://login.salesforce.com", "code-12345678",
                    "https://tw.example/oauth/callback", VERIFIER,
                )  # fmt: skip
            finally:
                await client.aclose()

        with pytest.raises((PermanentError, TransientError)) as caught:
            run(go())
        assert caught.value.error == "invalid_grant"
        for secret in ("code-12345678", VERIFIER, "the-client-secret"):
            assert secret not in caught.value.error_description
            assert secret not in str(caught.value)


class TestIdentity:
    def test_org_and_user_ids_from_the_id_url(self) -> None:
        """The `id` URL's two path segments; 15- and 18-character org ids are the same org."""
        who = oauth.identity(TOKEN_BODY["id"])
        assert who == oauth.Identity("00Dxx0000001gEREAY", "005xx000001Sv6eAAC")
        short = oauth.identity("https://test.salesforce.com/id/00Dxx0000001gER/005xx000001Sv6e")
        assert short is not None and who is not None and who.same_org(short)
        assert who.key() == short.key()

    @pytest.mark.parametrize(
        "url",
        [
            None,
            "",
            "https://login.salesforce.com/id/",
            "https://login.salesforce.com/id/00Dxx0000001gEREAY",
            "https://login.salesforce.com/id/001xx0000001gEREAY/005xx000001Sv6eAAC",
            "https://login.salesforce.com/x/00Dxx0000001gEREAY/005xx000001Sv6eAAC",
            "https://login.salesforce.com/id/00Dxx0000001gEREAY/005xx000001Sv6eAAC/extra",
        ],
    )
    def test_other_shapes_are_none(self, url: str | None) -> None:
        """Anything but /id/00D.../005... gives no identity (no guessed org)."""
        assert oauth.identity(url) is None
