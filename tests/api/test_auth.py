"""API keys: hashed at rest, shown once, scopes ordered read < connect < admin."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from config.settings import Settings
from worker.api.app import json, make_app
from worker.api.auth import require
from worker.store.apikeys import Scope


async def _needs_admin(request: Request) -> object:
    key = await require(request, Scope.ADMIN)
    return json({"name": key.name})


async def _needs_read(request: Request) -> object:
    key = await require(request, Scope.READ)
    return json({"name": key.name})


PROBE = SimpleNamespace(routes=lambda: [Route("/admin", _needs_admin), Route("/read", _needs_read)])


@pytest.fixture
def client(settings_for: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(make_app(settings_for(), [PROBE])) as test_client:  # type: ignore[list-item]
        yield test_client


def _create(client: TestClient, name: str, scope: Scope) -> str:
    async def go() -> str:
        key, _ = await client.app.state.api_keys.create(name, scope)  # type: ignore[attr-defined]
        return str(key)

    return client.portal.call(go)  # type: ignore[union-attr]


class TestRequire:
    def test_missing_or_unknown_key_is_401_json(self, client: TestClient) -> None:
        """No header, a wrong scheme and an unknown key all answer 401 `unauthorized`."""
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer tw_nope"}):
            answer = client.get("/read", headers=headers)
            assert answer.status_code == 401, headers
            assert answer.json()["error"] == "unauthorized"
            assert answer.headers["www-authenticate"] == "Bearer"

    def test_a_lower_scope_is_403_and_a_higher_one_passes(self, client: TestClient) -> None:
        """A read key may read but not act; an admin key may do both."""
        read = _create(client, "reader", Scope.READ)
        admin = _create(client, "ops", Scope.ADMIN)
        assert client.get("/read", headers={"Authorization": f"Bearer {read}"}).json() == {
            "name": "reader"
        }
        refused = client.get("/admin", headers={"Authorization": f"Bearer {read}"})
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
        assert client.get("/admin", headers={"Authorization": f"Bearer {admin}"}).status_code == 200

    def test_the_key_is_stored_hashed_and_revocable(self, client: TestClient) -> None:
        """Redis holds no plaintext key; a revoked key is refused at once."""
        key = _create(client, "temp", Scope.READ)
        redis = client.app.state.runtime.redis  # type: ignore[attr-defined]

        async def everything() -> bytes:
            dump = b""
            async for name in redis.scan_iter(match="*"):
                kind = await redis.type(name)
                if kind == b"hash":
                    dump += b"".join(k + v for k, v in (await redis.hgetall(name)).items())
            return dump

        assert key.encode() not in client.portal.call(everything)  # type: ignore[union-attr]
        assert client.portal.call(client.app.state.api_keys.revoke, "temp")  # type: ignore[union-attr,attr-defined]
        assert client.get("/read", headers={"Authorization": f"Bearer {key}"}).status_code == 401
