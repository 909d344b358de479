"""worker.service.apikeys: what `tokenworker api-keys create|list|revoke` call."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from worker.engine.runtime import Runtime
from worker.errors import InputError, NotFoundError
from worker.service import apikeys
from worker.store.apikeys import ApiKeys, Scope


async def test_create_list_revoke(runtime_for: Callable[..., Runtime]) -> None:
    """The key is returned once and works; list shows no key; revoke ends it."""

    rt = runtime_for()
    try:
        key, record = await apikeys.create(rt, "billing-app", "connect")
        assert record.as_dict()["scope"] == "connect" and key.startswith("tw_")
        found = await ApiKeys(rt.redis, rt.settings.key_prefix).lookup(key)
        assert found is not None and found.scope is Scope.CONNECT
        listed = [k.as_dict() for k in await apikeys.list_keys(rt)]
        assert [k["name"] for k in listed] == ["billing-app"] and key not in repr(listed)
        await apikeys.revoke(rt, "billing-app")
        assert await ApiKeys(rt.redis, rt.settings.key_prefix).lookup(key) is None
        with pytest.raises(NotFoundError):
            await apikeys.revoke(rt, "billing-app")
    finally:
        await rt.close()


async def test_bad_input_names_the_option(runtime_for: Callable[..., Runtime]) -> None:
    rt = runtime_for()
    try:
        with pytest.raises(InputError, match="--scope"):
            await apikeys.create(rt, "x", "root")
        with pytest.raises(InputError, match="--name"):
            await apikeys.create(rt, "bad name", "read")
        await apikeys.create(rt, "x", "read")
        with pytest.raises(InputError, match="--name"):
            await apikeys.create(rt, "x", "read")
    finally:
        await rt.close()
