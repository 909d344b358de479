"""The two clients: the same requests, sent blocking (`TokenworkerClient`) or with asyncio
(`AsyncTokenworkerClient`). Ids are sent as single path segments, whatever they contain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from worker.client.errors import result
from worker.client.results import Connection, ConnectSession, ConnectSessionStatus, Credentials

DEFAULT_TIMEOUT = 10.0


def _segment(value: str, name: str) -> str:
    """An id as one path segment: `/`, `?`, `#` encoded; `.`/`..` (which URL normalisation
    would swallow) and empty ids refused before anything is sent."""
    if value in ("", ".", ".."):
        raise ValueError(f"{name}: {value!r} is not an id")
    return quote(value, safe="")


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


def _credentials_path(connection_id: str, what: str) -> str:
    return f"/connections/{_segment(connection_id, 'connection_id')}/{what}"


class TokenworkerClient:
    """The API, blocking. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"TokenworkerClient({str(self._http.base_url)!r})"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return result(self._http.request(method, path, **kwargs))

    def credentials(self, connection_id: str, min_ttl: float | None = None) -> Credentials:
        path = _credentials_path(connection_id, "credentials")
        return Credentials.from_json(self._call("GET", path, params=_params(min_ttl=min_ttl)))

    def token_rejected(self, connection_id: str, access_token: str) -> Credentials:
        path = _credentials_path(connection_id, "token-rejected")
        return Credentials.from_json(self._call("POST", path, json={"access_token": access_token}))

    def connect_session(
        self, integration: str, connection_id: str, return_to: str | None = None
    ) -> ConnectSession:
        body = _params(integration=integration, connection_id=connection_id, return_to=return_to)
        return ConnectSession.from_json(self._call("POST", "/connect-sessions", json=body))

    def connect_session_status(self, session_id: str) -> ConnectSessionStatus:
        path = f"/connect-sessions/{_segment(session_id, 'session_id')}"
        return ConnectSessionStatus.from_json(self._call("GET", path))

    def connections(
        self, status: str | None = None, integration: str | None = None, limit: int | None = None
    ) -> Iterator[Connection]:
        """Every matching connection, page after page (`limit`: the page size asked for)."""
        cursor: str | None = None
        while True:
            params = _params(status=status, integration=integration, limit=limit, cursor=cursor)
            page = self._call("GET", "/connections", params=params)
            yield from (Connection.from_json(item) for item in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def connection(self, connection_id: str) -> Connection:
        path = f"/connections/{_segment(connection_id, 'connection_id')}"
        return Connection.from_json(self._call("GET", path))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncTokenworkerClient:
    """The API, for asyncio. Use as an async context manager, or await `aclose()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"AsyncTokenworkerClient({str(self._http.base_url)!r})"

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return result(await self._http.request(method, path, **kwargs))

    async def credentials(self, connection_id: str, min_ttl: float | None = None) -> Credentials:
        path = _credentials_path(connection_id, "credentials")
        data = await self._call("GET", path, params=_params(min_ttl=min_ttl))
        return Credentials.from_json(data)

    async def token_rejected(self, connection_id: str, access_token: str) -> Credentials:
        path = _credentials_path(connection_id, "token-rejected")
        data = await self._call("POST", path, json={"access_token": access_token})
        return Credentials.from_json(data)

    async def connect_session(
        self, integration: str, connection_id: str, return_to: str | None = None
    ) -> ConnectSession:
        body = _params(integration=integration, connection_id=connection_id, return_to=return_to)
        return ConnectSession.from_json(await self._call("POST", "/connect-sessions", json=body))

    async def connect_session_status(self, session_id: str) -> ConnectSessionStatus:
        path = f"/connect-sessions/{_segment(session_id, 'session_id')}"
        return ConnectSessionStatus.from_json(await self._call("GET", path))

    async def connections(
        self, status: str | None = None, integration: str | None = None, limit: int | None = None
    ) -> AsyncIterator[Connection]:
        """Every matching connection, page after page (`limit`: the page size asked for)."""
        cursor: str | None = None
        while True:
            params = _params(status=status, integration=integration, limit=limit, cursor=cursor)
            page = await self._call("GET", "/connections", params=params)
            for item in page["items"]:
                yield Connection.from_json(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def connection(self, connection_id: str) -> Connection:
        path = f"/connections/{_segment(connection_id, 'connection_id')}"
        return Connection.from_json(await self._call("GET", path))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
