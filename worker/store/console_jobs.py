"""Progress of the console's bulk actions: `<prefix>console:job:<id>` -> a JSON document
{action, actor, target, total, done, outcomes, state}, expiring an hour after its last write,
so any `api` process can answer a poll for a job another one runs."""

from __future__ import annotations

import json
import secrets
from typing import Any

from redis.asyncio import Redis

JOB_TTL = 3600
_ID_CHARS = 22  # token_urlsafe(16)


class ConsoleJobs:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}console:job:"

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(16)

    async def put(self, job_id: str, job: dict[str, Any]) -> None:
        await self._redis.set(self._prefix + job_id, json.dumps(job), ex=JOB_TTL)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        if len(job_id) != _ID_CHARS:
            return None
        raw = await self._redis.get(self._prefix + job_id)
        found: dict[str, Any] | None = json.loads(raw) if raw else None
        return found
