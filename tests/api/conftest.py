"""An app with every route module on the test Redis, and keys of each scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from starlette.testclient import TestClient

from config.settings import Settings
from worker.api.server import build_app
from worker.engine.runtime import Runtime
from worker.store.apikeys import Scope

T = TypeVar("T")


class Api:
    """A TestClient on the full app, plus helpers that run on the app's own event loop."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.keys = {scope: self.call(self._key, scope) for scope in Scope}

    @property
    def rt(self) -> Runtime:
        runtime: Runtime = self.client.app.state.runtime  # type: ignore[attr-defined]
        return runtime

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.client.portal.call(fn, *args)  # type: ignore[union-attr]

    async def _key(self, scope: Scope) -> str:
        key, _ = await self.client.app.state.api_keys.create(f"k-{scope.value}", scope)  # type: ignore[attr-defined]
        return str(key)

    def auth(self, scope: Scope = Scope.ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def get(self, path: str, scope: Scope = Scope.ADMIN, **kw: Any) -> Any:
        return self.client.get(path, headers={**self.auth(scope), **kw.pop("headers", {})}, **kw)

    def post(self, path: str, scope: Scope = Scope.ADMIN, **kw: Any) -> Any:
        return self.client.post(path, headers={**self.auth(scope), **kw.pop("headers", {})}, **kw)

    def delete(self, path: str, scope: Scope = Scope.ADMIN, **kw: Any) -> Any:
        return self.client.delete(path, headers=self.auth(scope), **kw)


@pytest.fixture
def api(settings_for: Callable[..., Settings]) -> Iterator[Api]:
    with TestClient(build_app(settings_for())) as client:
        yield Api(client)
