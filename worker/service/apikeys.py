"""API keys for the `api` process: what `tokenworker api-keys create|list|revoke` do.

The key is returned once, by `create`, and never stored (`worker.store.apikeys` keeps its
SHA-256); `list` shows names, scopes and creation times only.
"""

from __future__ import annotations

from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError
from worker.store.apikeys import ApiKey, ApiKeys, Scope
from worker.store.keys import check_id


def _keys(rt: Runtime) -> ApiKeys:
    return ApiKeys(rt.redis, rt.settings.key_prefix)


def parse_scope(scope: str) -> Scope:
    try:
        return Scope(scope)
    except ValueError:
        allowed = ", ".join(s.value for s in Scope)
        raise InputError(f"--scope {scope!r}: expected one of {allowed}") from None


async def create(rt: Runtime, name: str, scope: str) -> tuple[str, ApiKey]:
    """(the key, its record): the key is shown to the operator once and never again."""
    check_id("--name", name)
    return await _keys(rt).create(name, parse_scope(scope))


async def list_keys(rt: Runtime) -> list[ApiKey]:
    return await _keys(rt).list()


async def revoke(rt: Runtime, name: str) -> None:
    """Revoke by name; requests with that key are refused from the next one on."""
    if not await _keys(rt).revoke(name):
        raise NotFoundError(f"no API key named {name!r}")
