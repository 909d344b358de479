"""Arranging scenarios: an integration at the emulator and connections imported from grants."""

from __future__ import annotations

import json
import uuid
from typing import Any

from worker.domain.models import Integration, Provider
from worker.engine.runtime import Runtime
from worker.service import connections, integrations

# A sandbox integration for tests that need one without a store or an emulator.
SANDBOX_INTEGRATION = Integration(
    name="acme",
    provider=Provider.SANDBOX,
    client_id="3MVG9-acme",
    client_secret="acme-secret",
    login_url="https://test.salesforce.com",
)


async def connect(
    rt: Runtime,
    emu: Any,
    count: int = 1,
    rotation: bool = False,
    lifetime: float | None = None,
    introspect: bool = True,
    name: str = "acme",
) -> list[tuple[str, dict[str, Any]]]:
    """An integration named `name` at the emulator, and `count` imported connections
    with ids unique to this call."""
    tag = uuid.uuid4().hex[:6]
    client_id, secret = emu.client(rotation=rotation, introspect=introspect)
    await integrations.add(rt, name, "salesforce", client_id, secret, emu.base_url)
    grants = emu.grants(client_id, count, lifetime)
    lines = [
        json.dumps(
            {
                "id": f"c-{tag}-{n}",
                "integration": name,
                "refresh_token": g["refresh_token"],
                "access_token": g["access_token"],
                "instance_url": g["instance_url"],
                "issued_at": g["issued_at"],
            }
        )
        for n, g in enumerate(grants)
    ]
    report = await connections.import_lines(rt, lines, skip_invalid=False)
    assert report.created == count, report.problems
    return [(f"c-{tag}-{n}", g) for n, g in enumerate(grants)]


async def events_of(rt: Runtime) -> list[dict[str, Any]]:
    from worker.engine.events import read_events  # noqa: PLC0415

    return [event for _, event in await read_events(rt.redis, rt.store.keys, limit=1000)]


async def names_of(rt: Runtime) -> list[str]:
    return [event["event"] for event in await events_of(rt)]
