"""Who is calling: `Authorization: Bearer <API key>`, checked against the hashed keys.

Missing or unknown key: 401 `unauthorized`; a key whose scope is below what the route needs:
403 `forbidden`. The key never reaches a log line or an error message.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from worker.api.errors import ApiError
from worker.store.apikeys import ApiKey, ApiKeys, Scope


async def caller(request: HTTPConnection) -> ApiKey | None:
    """The API key of this request, or None (no header, wrong scheme, unknown key)."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    keys: ApiKeys = request.app.state.api_keys
    return await keys.lookup(key.strip())


async def require(request: HTTPConnection, scope: Scope) -> ApiKey:
    key = await caller(request)
    if key is None:
        raise ApiError(
            401,
            "unauthorized",
            "send an API key as `Authorization: Bearer <key>` (tokenworker api-keys create)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key.scope.allows(scope):
        raise ApiError(
            403, "forbidden", f"this needs an API key with scope {scope.value!r} or above"
        )
    return key
