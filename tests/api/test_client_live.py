"""The SDK against the real API and the emulator: credentials, the proxy, and TokenworkerAuth
refreshing a session Salesforce ended, once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from config.settings import Settings
from tests.conftest import Emu
from tests.helpers import connect
from worker.api import connections, proxy
from worker.api.app import make_app
from worker.client import NotFoundError, TokenworkerAuth, TokenworkerClient
from worker.store.apikeys import Scope

LIMITS = "/services/data/v62.0/limits"


@pytest.fixture
def app_client(settings_for: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(make_app(settings_for(), [connections, proxy])) as test_client:
        yield test_client


def _arrange(app_client: TestClient, emu: Emu) -> tuple[str, dict[str, Any], TokenworkerClient]:
    app: Any = app_client.app

    async def go() -> tuple[str, dict[str, Any], str]:
        [(connection_id, grant)] = await connect(app.state.runtime, emu)
        key, _ = await app.state.api_keys.create("host-app", Scope.CONNECT)
        return connection_id, grant, key

    connection_id, grant, key = app_client.portal.call(go)  # type: ignore[union-attr]
    transport = app_client._transport  # the app, in process
    return connection_id, grant, TokenworkerClient("http://testserver", key, transport=transport)


def test_credentials_and_the_auth_reach_the_org(app_client: TestClient, emu: Emu) -> None:
    """The SDK reads the token; TokenworkerAuth calls the org with it; no refresh needed."""
    connection_id, grant, tw = _arrange(app_client, emu)
    with tw:
        creds = tw.credentials(connection_id)
        assert creds.instance_url == grant["instance_url"]
        auth = TokenworkerAuth(tw, connection_id)
        with httpx.Client(base_url=creds.instance_url, auth=auth) as salesforce:
            answer = salesforce.get(LIMITS)
        assert answer.status_code == 200
        assert "Sforce-Limit-Info" in answer.headers
        with pytest.raises(NotFoundError):
            tw.credentials("no-such-connection")
    assert emu.token_calls(grant["grant_id"]) == 0


def test_the_auth_refreshes_a_session_salesforce_ended_once(
    app_client: TestClient, emu: Emu
) -> None:
    """Session ended at the org: one report, one refresh, one retry, then 200."""
    connection_id, grant, tw = _arrange(app_client, emu)
    with tw:
        auth = TokenworkerAuth(tw, connection_id)
        with httpx.Client(base_url=grant["instance_url"], auth=auth) as salesforce:
            salesforce.get(LIMITS).raise_for_status()
            emu.post(f"/_admin/grants/{grant['grant_id']}/expire")
            assert salesforce.get(LIMITS).status_code == 200
    assert emu.token_calls(grant["grant_id"]) == 1
