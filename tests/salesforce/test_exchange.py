"""The Salesforce client's I/O seam: proxies for the aiohttp exchange, observers that fail."""

from __future__ import annotations

import json
from urllib.parse import quote_plus, urlencode

import httpx
import pytest

from tests.helpers import SANDBOX_INTEGRATION
from worker.salesforce.client import AiohttpExchange, SalesforceClient, form_quote

INTEGRATION = SANDBOX_INTEGRATION


def test_https_proxy_is_used_and_no_proxy_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "acme.my.salesforce.com")
    exchange = AiohttpExchange()
    via = exchange._proxy_of("https://test.salesforce.com/services/oauth2/token")
    assert via == "http://proxy.internal:3128"
    assert exchange._proxy_of("https://acme.my.salesforce.com/services/oauth2/token") is None


def test_no_proxy_configured_means_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert AiohttpExchange()._proxy_of("https://test.salesforce.com/x") is None


async def test_a_failing_observer_never_costs_the_answer() -> None:
    """Observers (metrics) run before the caller saves the answer: one that raises is logged
    and the token response still reaches the caller."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = {"active": True, "exp": 1_900_000_000, "iat": 1_899_990_000}
        return httpx.Response(
            200,
            content=json.dumps(body).encode(),
            headers={"content-type": "application/json;charset=UTF-8"},
        )

    def broken(call: str, seconds: float, status: int) -> None:
        raise RuntimeError("metrics bug")

    client = SalesforceClient(httpx.AsyncClient(transport=httpx.MockTransport(answer)), 5.0)
    client.observers.append(broken)
    facts = await client.introspect(INTEGRATION, "00Dxx!access")
    assert facts.active is True and facts.exp == 1_900_000_000
    await client.aclose()


@pytest.mark.parametrize(
    "form",
    [
        {"token": "00Dxx!AQ4.k_q+3/z=", "token_type_hint": "access_token"},
        {"grant_type": "refresh_token", "refresh_token": "5Aep8 61&x=é", "format": "json"},
        {},
    ],
)
async def test_the_form_body_is_what_urlencode_makes_of_form_and_credentials(
    form: dict[str, str],
) -> None:
    """The client credentials are encoded once per client; the body must not change."""
    sent: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(200, content=b"{}", headers={"content-type": "application/json"})

    client = SalesforceClient(httpx.AsyncClient(transport=httpx.MockTransport(answer)), 5.0)
    odd = INTEGRATION.__class__(**{**INTEGRATION.__dict__, "client_secret": "s3cr=t&+ é"})
    for integration in (INTEGRATION, odd, INTEGRATION):
        await client._post(integration, "/services/oauth2/token", form, admitted=True)
        credentials = {"client_id": integration.client_id}
        credentials["client_secret"] = integration.client_secret
        assert sent[-1] == urlencode({**form, **credentials}).encode()
    await client.aclose()


def test_form_quote_is_quote_plus() -> None:
    """Every ASCII character alone and inside a token, and non-ASCII text, quoted byte for byte
    as quote_plus quotes them (the body Salesforce parses must not change)."""
    samples = [chr(code) for code in range(0x180)]
    samples += [f"00Dxx!AQ{chr(code)}k_q.3~-" for code in range(128)]
    samples += ["", "5Aep8 61&x=é", "a+b c/d?e#f%g", "日本 語", "\x00\x7f"]
    for value in samples:
        assert form_quote(value) == quote_plus(value), repr(value)
