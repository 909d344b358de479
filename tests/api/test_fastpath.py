"""worker.api.fastpath: the credentials read skips Starlette's router and answers exactly what
the router would, errors included; everything else still goes through the router."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from config.settings import Settings
from tests.api.conftest import Api
from tests.conftest import Emu
from tests.helpers import connect
from worker.api import connections
from worker.api.app import make_app
from worker.api.fastpath import FastRoute
from worker.api.server import MODULES, build_app
from worker.domain.models import ConnectionStatus, LastError
from worker.store.apikeys import Scope

ROUTE = FastRoute("GET", "/connections/", "/credentials", "id", connections.credentials)
COMPARED_HEADERS = ("content-type", "cache-control", "retry-after", "www-authenticate")


def test_the_route_matches_one_id_only() -> None:
    assert ROUTE.match("/connections/c-1/credentials") == "c-1"
    for path in (
        "/connections/credentials",
        "/connections//credentials",
        "/connections/a/b/credentials",
        "/connections/c-1/credentials/",
        "/connections/c-1",
        "/integrations/c-1/credentials",
    ):
        assert ROUTE.match(path) is None, path


def _routed_only() -> list[ModuleType]:
    """The same route modules with the fast path left out: the router serves everything."""
    plain = ModuleType("connections_routed")
    plain.routes = connections.routes  # type: ignore[attr-defined]
    return [plain if module is connections else module for module in MODULES]


@pytest.fixture
def routed(settings_for: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(make_app(settings_for(), _routed_only())) as client:
        yield client


def _answer(response: Any) -> tuple[int, dict[str, str], Any]:
    headers = {name: response.headers.get(name) for name in COMPARED_HEADERS}
    return response.status_code, headers, response.json()


def test_every_answer_is_the_routers(api: Api, routed: TestClient, emu: Emu) -> None:
    [(cid, _)] = api.call(connect, api.rt, emu)
    [(dead, _)] = api.call(connect, api.rt, emu)

    async def reauth() -> None:
        conn = await api.rt.store.get_connection(dead)
        assert conn is not None
        error = LastError("invalid_grant", "expired access/refresh token", 400, 1.0)
        await api.rt.store.save_connection(
            conn.evolve(status=ConnectionStatus.REAUTH_REQUIRED, last_error=error)
        )

    api.call(reauth)
    read = api.auth(Scope.READ)
    cases: list[tuple[str, dict[str, str]]] = [
        (f"/connections/{cid}/credentials", read),
        (f"/connections/{cid}/credentials?min_ttl=60", read),
        (f"/connections/{cid}/credentials?min_ttl=nan", read),
        (f"/connections/{cid}/credentials?min_ttl=3000", read),
        (f"/connections/{cid}/credentials?min_tll=5", read),
        (f"/connections/{cid}/credentials", {}),
        (f"/connections/{cid}/credentials", {"Authorization": "Bearer tw_wrong"}),
        (f"/connections/{cid}/credentials", {"Authorization": "Basic abc"}),
        ("/connections/nobody/credentials", read),
        ("/connections/a%20b/credentials", read),
        ("/connections/%2E%2E/credentials", read),
        (f"/connections/{dead}/credentials", read),
    ]
    for path, headers in cases:
        fast = _answer(api.client.get(path, headers=headers))
        slow = _answer(routed.get(path, headers=headers))
        assert fast == slow, path
    statuses = {api.client.get(path, headers=h).status_code for path, h in cases}
    assert statuses == {200, 400, 401, 404, 409, 422}  # the cases cover every answer


def test_the_fast_path_serves_without_the_router_and_passes_the_rest_on(
    settings_for: Callable[..., Settings], emu: Emu
) -> None:
    """With the credentials route taken out of the router, reads still answer (the fast path
    served them); HEAD, other methods and other paths still reach the router."""
    app = build_app(settings_for())
    app.router.routes = [
        r
        for r in app.router.routes
        if not (isinstance(r, Route) and r.path == "/connections/{id}/credentials")
    ]
    with TestClient(app) as client:
        api = Api(client)
        [(cid, _)] = api.call(connect, api.rt, emu)
        assert api.get(f"/connections/{cid}/credentials", Scope.READ).status_code == 200
        head = client.head(f"/connections/{cid}/credentials", headers=api.auth(Scope.READ))
        assert head.status_code == 404  # the router's answer: it no longer has the route
        assert api.post(f"/connections/{cid}/credentials").status_code == 404
        assert api.get(f"/connections/{cid}").status_code == 200


def test_a_credentials_answer_is_encoded_as_jsonresponse_would(api: Api, emu: Emu) -> None:
    """The hand-built 200 (connections.NoStoreJSON): Starlette's JSON bytes and media type,
    a correct Content-Length and no-store."""
    [(cid, _)] = api.call(connect, api.rt, emu)
    answer = api.get(f"/connections/{cid}/credentials", Scope.READ)
    assert answer.status_code == 200
    assert answer.content == JSONResponse(answer.json()).body
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["content-length"] == str(len(answer.content))
    assert answer.headers["cache-control"] == "no-store"
