"""Start-up and readiness checks of the store Redis: it must persist and must not evict."""

from __future__ import annotations

from typing import Any

import redis


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _config(client: redis.Redis, name: str) -> str:
    found: dict[Any, Any] = dict(client.config_get(name))
    return next((_text(v) for k, v in found.items() if _text(k) == name), "")


def persistence_problems(client: redis.Redis) -> list[str]:
    """What is wrong with the store's durability settings; empty when all is well."""
    try:
        appendonly = _config(client, "appendonly")
        policy = _config(client, "maxmemory-policy")
    except redis.ResponseError:
        return [
            "cannot read CONFIG (managed Redis?): make sure AOF is on and "
            "maxmemory-policy is noeviction"
        ]
    problems = []
    if appendonly != "yes":
        problems.append(
            "appendonly is off: a restart loses every token refreshed since the "
            "last snapshot (set `appendonly yes`, see deploy/redis.conf)"
        )
    if policy != "noeviction":
        problems.append(
            f"maxmemory-policy is {policy!r}: Redis may evict connections and "
            "locks under memory pressure (set `maxmemory-policy noeviction`)"
        )
    return problems
