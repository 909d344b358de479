"""Redis server-assisted invalidation (CLIENT TRACKING, broadcast mode) for a process's cache.

Redis tells this process the name of every key under `prefix` that anyone writes (a worker's
save, another api process, a delete, an expiry, a script), on a connection subscribed to
`__redis__:invalidate`; `Tracking.run` hands each name to its listener at once. Two dedicated
connections, never shared with the process's pool: `sub` receives the messages, `ctl` holds
the tracking (it ends with `ctl`). Every `HEALTH` s `sub` is pinged and `ctl` asks the server
whether it is still the master (a failover's new master would write keys this tracking never
hears of); an answer later than `ANSWER` s (a hung server, a connection dropped without a
word) ends the session.

Anything that breaks the session (a lost connection, a failover, a server or ACL that refuses
CLIENT TRACKING) tells the listener `lost` before anything else, so it stops trusting what it
kept; a new session begins after `RETRY` s and tells it `started` once tracking is on again.
Redis 6 or later; the ACL user needs `+client|id +client|tracking` and the channel
`&__redis__:invalidate` (deploy/redis-acl.conf).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any, Protocol

import structlog

from config.redis_urls import RedisEndpoint
from worker.store import clients

CHANNEL = "__redis__:invalidate"
HEALTH = 1.0  # seconds between the checks of both connections (PING on `sub`, role on `ctl`)
ANSWER = 2.0  # seconds an answer may take before the session counts as broken
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
        self._pong = 0.0  # monotonic time of the last PING answered on `sub`

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
            socket_connect_timeout=ANSWER,
            health_check_interval=0,
            protocol=2,
        )
        pool = client.connection_pool
        try:
            async with asyncio.timeout(4 * ANSWER):
                sub = await pool.get_connection()  # type: ignore[no-untyped-call]
                ctl = await pool.get_connection()  # type: ignore[no-untyped-call]
                sub_id = await _call(sub, "CLIENT", "ID")
                await _call(sub, "SUBSCRIBE", CHANNEL)
                await _call(ctl, "CLIENT", "TRACKING", "ON", "REDIRECT", sub_id, "BCAST",
                            "PREFIX", self.prefix)  # fmt: skip
                await _require_master(ctl)
            self.sessions += 1
            self.listener.tracking_started()
            self._pong = time.monotonic()
            reader = asyncio.ensure_future(self._read(sub))
            try:
                while not reader.done():
                    await asyncio.wait({reader}, timeout=HEALTH)
                    if not reader.done():
                        await self._check(sub, ctl)
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

    async def _check(self, sub: Any, ctl: Any) -> None:
        """Both connections still answer, and `ctl`'s server is still the master. A hung
        server or a silently dropped connection must end the session, not leave the listener
        trusting entries no report will ever invalidate."""
        if time.monotonic() - self._pong > HEALTH + ANSWER:
            raise ConnectionError("no answer on the invalidation connection")
        await sub.send_command("PING")  # answered as a message: _read notes its time
        async with asyncio.timeout(ANSWER):
            await _require_master(ctl)

    async def _read(self, sub: Any) -> None:
        while True:
            message = await sub.read_response()
            if not isinstance(message, list) or not message:
                continue
            kind = _text(message[0])
            if kind == "pong":
                self._pong = time.monotonic()
                continue
            if kind != "message" or len(message) != 3 or _text(message[1]) != CHANNEL:
                continue
            data = message[2]
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
