"""Integrations (connected apps): add or update one, list them."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from worker.domain.models import ConnectionStatus, Integration, IntegrationStatus, Provider
from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError
from worker.salesforce.hosts import DEFAULT_LOGIN_URLS, normalize_login_url
from worker.service.transfer import iter_connections
from worker.store.keys import check_id


@dataclass(frozen=True)
class Added:
    integration: Integration
    resumed: int  # connections rescheduled for a check now (an update resumes them)

    def as_dict(self) -> dict[str, Any]:
        return {**self.integration.public(), "resumed": self.resumed}


async def add(
    rt: Runtime, name: str, provider: str, client_id: str, secret: str, login_url: str | None
) -> Added:
    """Add or update an integration; an update resumes its paused connections."""
    check_id("integration name", name)
    try:
        kind = Provider(provider)
    except ValueError:
        raise InputError(
            f"--provider {provider!r}: expected salesforce or salesforce-sandbox"
        ) from None
    if not client_id.strip():
        raise InputError("--client-id: expected the connected app's consumer key")
    if not secret:
        raise InputError("client secret: the variable, file or stdin given is empty")
    url = normalize_login_url(login_url) if login_url else DEFAULT_LOGIN_URLS[kind]
    existing = await rt.store.get_integration(name)
    integration = Integration(
        name=name,
        provider=kind,
        client_id=client_id.strip(),
        client_secret=secret,
        login_url=url,
        status=IntegrationStatus.ACTIVE,
        introspection_available=existing.introspection_available if existing else True,
    )
    if existing is not None:  # an update keeps the connect-flow options it does not change
        integration = replace(
            integration,
            scopes=existing.scopes,
            prompt=existing.prompt,
            ask_domain=existing.ask_domain,
        )
    await rt.store.save_integration(integration)
    resumed = await resume(rt, name) if existing is not None else 0
    return Added(integration, resumed)


async def resume(rt: Runtime, name: str) -> int:
    """Schedule every non-dead connection of an integration for a check now; how many."""
    now = time.time()
    count = 0
    # An unreadable record cannot be resumed; `status` reports it, so skip it here.
    async for conn in iter_connections(rt.store, unreadable=lambda _id, _error: None):
        if conn.integration == name and conn.status is not ConnectionStatus.REAUTH_REQUIRED:
            await rt.store.schedule(conn.id, now)
            count += 1
    return count


async def list_all(rt: Runtime) -> list[Integration]:
    return await rt.store.list_integrations()


async def require(rt: Runtime, name: str) -> None:
    """NotFoundError unless an integration `name` exists (its secret is not decrypted)."""
    if not await rt.redis.sismember(rt.store.keys.integrations, name):
        raise NotFoundError(f"no integration {name!r}")
