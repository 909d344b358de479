"""Redis server-assisted invalidation (CLIENT TRACKING, broadcast mode) for a process's cache.

Redis tells this process the name of every key under `prefix` that anyone writes (a worker's
save, another api process, a delete, an expiry, a script), on a connection subscribed to
`__redis__:invalidate`; `Tracking.run` hands each name to its listener at once. Two dedicated
connections, never shared with the process's pool: `sub` receives the messages, `ctl` holds
the tracking (it ends with `ctl`). Every `HEALTH` s `ctl` asks the server whether it is still
the master: a failover's new master would write keys this tracking never hears of.

Anything that breaks the session (a lost connection, a failover, a server or ACL that refuses
CLIENT TRACKING) tells the listener `lost` before anything else, so it stops trusting what it
kept; a new session begins after `RETRY` s and tells it `started` once tracking is on again.
Redis 6 or later; the ACL user needs `+client|id +client|tracking` and the channel
`&__redis__:invalidate` (deploy/redis-acl.conf).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, Protocol

import structlog

from config.redis_urls import RedisEndpoint
from worker.store import clients

CHANNEL = "__redis__:invalidate"
HEALTH = 1.0  # seconds between the master checks on `ctl`
RETRY = 1.0  # seconds before a new session after one broke (doubling, at most RETRY_MAX)
RETRY_MAX = 30.0
log = structlog.get_logger("tokenworker.tracking")


class Listener(Protocol):
    def tracking_started(self) -> None: ...

    def tracking_lost(self) -> None: ...

    def invalidated(self, keys: Iterable[str] | None) -> None:
        """`keys` were written; None: every key may have changed (FLUSHDB, FLUSHALL)."""


class Tracking:
    def __init__(self, endpoint: RedisEndpoint, prefix: str, listener: Listener) -> None:
        self.endpoint = endpoint
        self.prefix = prefix
        self.listener = listener
        self.sessions = 0  # sessions that reached `started`
        self.on = False

    async def run(self) -> None:
        """Until cancelled: one session after another."""
        delay = RETRY
        while True:
            began = self.sessions
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # redis errors, an ACL refusal, a failover: all alike
                log.warning("api.cache_tracking_lost", problem=type(error).__name__)
            finally:
                self.on = False
                self.listener.tracking_lost()
            delay = RETRY if self.sessions > began else min(RETRY_MAX, delay * 2)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        # RESP2: the messages arrive as plain replies on `sub` (redis-py's RESP3 connections
        # hand push messages to handlers of their own instead).
        client = clients.async_client(
            self.endpoint,
            max_connections=2,
            socket_timeout=None,
            health_check_interval=0,
            protocol=2,
        )
        pool = client.connection_pool
        try:
            sub = await pool.get_connection()  # type: ignore[no-untyped-call]
            ctl = await pool.get_connection()  # type: ignore[no-untyped-call]
            sub_id = await _call(sub, "CLIENT", "ID")
            await _call(sub, "SUBSCRIBE", CHANNEL)
            await _call(ctl, "CLIENT", "TRACKING", "ON", "REDIRECT", sub_id, "BCAST", "PREFIX",
                        self.prefix)  # fmt: skip
            await _require_master(ctl)
            self.on = True
            self.sessions += 1
            self.listener.tracking_started()
            reader = asyncio.ensure_future(self._read(sub))
            try:
                while not reader.done():
                    await asyncio.wait({reader}, timeout=HEALTH)
                    if not reader.done():
                        await _require_master(ctl)
                reader.result()  # its error, if it ended with one
            finally:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
        finally:
            with contextlib.suppress(Exception):
                await pool.disconnect()
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _read(self, sub: Any) -> None:
        while True:
            message = await sub.read_response()
            if not isinstance(message, list) or len(message) != 3:
                continue
            kind, channel, data = message
            if _text(kind) != "message" or _text(channel) != CHANNEL:
                continue
            if data is None:
                self.listener.invalidated(None)
            elif isinstance(data, list):
                self.listener.invalidated(_text(key) for key in data)


async def _call(connection: Any, *args: Any) -> Any:
    await connection.send_command(*args)
    reply = await connection.read_response()
    if isinstance(reply, Exception):
        raise reply
    return reply


async def _require_master(ctl: Any) -> None:
    info = _text(await _call(ctl, "INFO", "replication"))
    if "role:master" not in info:
        raise ConnectionError("the tracked server is no longer the master")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
