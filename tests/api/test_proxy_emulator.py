"""The proxy for real: the credentials service, the emulator's REST API and its 401s."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from config.settings import Settings
from tests.api.upstream import asgi
from tests.conftest import Emu
from tests.helpers import connect
from worker.api import proxy
from worker.api.app import make_app
from worker.store.apikeys import Scope

LIMITS = "services/data/v62.0/limits"


@pytest.fixture
def client(settings_for: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(make_app(settings_for(), [proxy])) as test_client:
        yield test_client


def _arrange(client: TestClient, emu: Emu) -> tuple[str, dict[str, Any], str]:
    app: Any = client.app

    async def go() -> tuple[str, dict[str, Any], str]:
        [(connection_id, grant)] = await connect(app.state.runtime, emu)
        key, _ = await app.state.api_keys.create("host-app", Scope.READ)
        return connection_id, grant, key

    return client.portal.call(go)  # type: ignore[union-attr]


def _auth(key: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {key}")]


def test_a_call_reaches_the_org_with_the_stored_token(client: TestClient, emu: Emu) -> None:
    """A fresh token: Salesforce's answer and its Sforce-Limit-Info, no refresh."""
    connection_id, grant, key = _arrange(client, emu)
    answer = asgi(client, "GET", f"/proxy/{connection_id}/{LIMITS}", _auth(key))
    assert answer.status == 200, answer.body
    assert "DailyApiRequests" in answer.json()
    assert answer.header("Sforce-Limit-Info")[0].startswith("api-usage=")
    assert emu.token_calls(grant["grant_id"]) == 0


def test_a_session_salesforce_ended_is_refreshed_once_and_retried(
    client: TestClient, emu: Emu
) -> None:
    """The emulator ends the session early: one refresh through token_rejected, one retry."""
    connection_id, grant, key = _arrange(client, emu)
    emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
    answer = asgi(client, "GET", f"/proxy/{connection_id}/{LIMITS}", _auth(key))
    assert answer.status == 200, answer.body
    assert emu.token_calls(grant["grant_id"]) == 1


def test_the_proxy_is_in_the_openapi_document(settings_for: Callable[..., Settings]) -> None:
    from worker.api import docs  # noqa: PLC0415

    with TestClient(make_app(settings_for(), [proxy, docs])) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/proxy/{id}/{path}"]) == {"get", "post", "put", "patch", "delete", "options"}


def test_an_unknown_connection_is_404(client: TestClient, emu: Emu) -> None:
    _, _, key = _arrange(client, emu)
    answer = asgi(client, "GET", f"/proxy/no-such-connection/{LIMITS}", _auth(key))
    assert (answer.status, answer.json()["error"]) == (404, "not_found")
