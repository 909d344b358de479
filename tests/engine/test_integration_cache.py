"""The refresher's integration copy: checks in flight share one read when it runs out, and a
forgotten copy (an operator may have just fixed the integration) is never brought back by a
read that began before the forgetting. Real Redis; the store's read is counted and held."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Emu
from tests.helpers import connect
from worker.engine import refresher as refresher_module
from worker.engine.runtime import Runtime

RuntimeFor = Callable[..., Runtime]


def _counted(rt: Runtime, gate: asyncio.Event | None = None) -> list[str]:
    reads: list[str] = []
    real = rt.store.get_integration

    async def read(name: str) -> Any:
        reads.append(name)
        if gate is not None:
            await gate.wait()
        return await real(name)

    rt.store.get_integration = read  # type: ignore[method-assign]
    return reads


async def test_checks_in_flight_share_one_read(runtime_for: RuntimeFor, emu: Emu) -> None:
    rt = runtime_for()
    try:
        await connect(rt, emu)
        reads = _counted(rt)
        rt.refresher.forget_integration("acme")
        found = await asyncio.gather(*(rt.refresher.integration("acme") for _ in range(50)))
        assert reads == ["acme"]
        assert {i.name if i else None for i in found} == {"acme"}
        await rt.refresher.integration("acme")  # cached now
        assert reads == ["acme"]
    finally:
        await rt.close()


async def test_a_read_begun_before_forget_is_not_cached(runtime_for: RuntimeFor, emu: Emu) -> None:
    rt = runtime_for()
    try:
        await connect(rt, emu)
        rt.refresher.forget_integration("acme")
        gate = asyncio.Event()
        reads = _counted(rt, gate)
        early = asyncio.ensure_future(rt.refresher.integration("acme"))
        await asyncio.sleep(0.05)
        rt.refresher.forget_integration("acme")  # the integration changed meanwhile
        gate.set()
        assert (await early) is not None  # its caller gets what it read
        assert reads == ["acme"]
        await rt.refresher.integration("acme")
        assert reads == ["acme", "acme"]  # but it was not kept: read again
        await rt.refresher.integration("acme")
        assert len(reads) == 2  # that later read's copy is kept
    finally:
        await rt.close()


async def test_a_cancelled_waiter_leaves_the_shared_read_to_the_others(
    runtime_for: RuntimeFor, emu: Emu, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime_for()
    try:
        await connect(rt, emu)
        rt.refresher.forget_integration("acme")
        gate = asyncio.Event()
        reads = _counted(rt, gate)
        first = asyncio.ensure_future(rt.refresher.integration("acme"))
        second = asyncio.ensure_future(rt.refresher.integration("acme"))
        await asyncio.sleep(0.05)
        first.cancel()
        gate.set()
        found = await second
        assert found is not None and found.name == "acme" and reads == ["acme"]
        assert first.cancelled()
        monkeypatch.setattr(refresher_module, "INTEGRATION_CACHE_SECONDS", 0.0)
        await rt.refresher.integration("acme")
        assert len(reads) == 2  # past its age the copy is read again
    finally:
        await rt.close()


async def test_a_read_forgotten_before_it_began_still_answers(
    runtime_for: RuntimeFor, emu: Emu
) -> None:
    """forget_integration between a read being started and its first step (a check that met a
    changed integration, while another check had just missed the cache)."""
    rt = runtime_for()
    try:
        await connect(rt, emu)
        rt.refresher.forget_integration("acme")
        waiting = asyncio.ensure_future(rt.refresher.integration("acme"))
        await asyncio.sleep(0)  # it has started the shared read, which has not run yet
        rt.refresher.forget_integration("acme")
        found = await waiting
        assert found is not None and found.name == "acme"
    finally:
        await rt.close()
