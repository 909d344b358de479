"""Every Redis client of tokenworker is made here, from a `RedisEndpoint` (the settings' URL).

A plain URL (`redis://`, `rediss://`, `unix://`) is redis-py's `from_url`. A Sentinel URL asks
the sentinels for the master and gets a client whose pool follows a failover by itself: on a
ConnectionError, or a write refused by a demoted master (ReadOnlyError, turned into a
ConnectionError by redis-py's Sentinel-managed connections), it disconnects and asks the
sentinels again. Callers treat `STORE_DOWN` as "the store is away for a moment" in every case.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.redis_tls import endpoint_kwargs
from config.redis_urls import RedisEndpoint, Sentinel

# The store is away (a restart, a failover, a demoted master refusing writes): wait for it.
# Sentinel's MasterNotFoundError is a ConnectionError.
STORE_DOWN = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)


class _HiredisPacking:
    """Commands packed by hiredis in C: byte for byte what redis-py's asyncio connection
    writes with its pure-Python packer (which joins the buffer once per argument), at a sixth
    of the CPU for a connection save's ~60 arguments (the largest share of redis-py's time
    in a worker's profile). Mixed in front of whatever connection class the pool uses."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:  # a command name given with its subcommand: sent as two words
            args = (*first.split(), *args[1:])
        packed: Any = args  # hiredis' stub lists memoryview; 3.5 refuses it at run time
        try:
            return [hiredis.pack_command(packed)]
        except TypeError:  # a bytearray or memoryview (hiredis takes neither), or a bad value
            pass
        plain: Any = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
        try:
            return [hiredis.pack_command(plain)]
        except TypeError as error:  # None, a bool, ...: redis-py's own error for them
            raise DataError(str(error)) from None


def _packing_in_c(pool: Any) -> None:
    """Make the connections `pool` opens from now on pack their commands with hiredis."""
    base = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})


class _BlockingSentinelPool(redis.asyncio.sentinel.SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel-managed pool that waits for a free connection instead of raising."""


def connection_kwargs(endpoint: RedisEndpoint) -> dict[str, Any]:
    """Keyword arguments every connection to `endpoint` gets (the single place: TLS joins
    here). Timeouts are the caller's."""
    return dict(endpoint_kwargs(endpoint))


def sync_client(endpoint: RedisEndpoint, **options: Any) -> redis.Redis:
    """A blocking client; `options` are redis-py's (socket_timeout, ...)."""
    group = endpoint.sentinel
    if group is None:
        return redis.Redis.from_url(endpoint.url, **connection_kwargs(endpoint), **options)
    sentinels = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(group.sentinels), sentinel_kwargs=_sentinel_kwargs(endpoint, options)
    )
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        group.master, **_master_kwargs(endpoint, group), **options
    )
    return client


def async_client(
    endpoint: RedisEndpoint, *, max_connections: int = 64, timeout: float = 20, **options: Any
) -> redis.asyncio.Redis:
    """An asyncio client on a blocking pool: hundreds of concurrent checks wait for one of
    `max_connections` connections (up to `timeout` s) instead of failing with
    MaxConnectionsError, which redis-py's default async pool raises when it runs out."""
    group = endpoint.sentinel
    if group is None:
        pool = BlockingConnectionPool.from_url(
            endpoint.url,
            max_connections=max_connections,
            timeout=timeout,
            **connection_kwargs(endpoint),
            **options,
        )
        _packing_in_c(pool)
        # from_pool: the client owns its pool, so aclose() closes the connections too (the
        # exporter and each SSE stream make a client of their own).
        return redis.asyncio.Redis.from_pool(pool)
    sentinels = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(group.sentinels), sentinel_kwargs=_sentinel_kwargs(endpoint, options)
    )
    client: redis.asyncio.Redis = sentinels.master_for(
        group.master,
        connection_pool_class=_BlockingSentinelPool,
        max_connections=max_connections,
        timeout=timeout,
        **_master_kwargs(endpoint, group),
        **options,
    )
    _packing_in_c(client.connection_pool)
    return client


def _master_kwargs(endpoint: RedisEndpoint, group: Sentinel) -> dict[str, Any]:
    found: dict[str, Any] = {"db": group.db, **connection_kwargs(endpoint)}
    if group.username:
        found["username"] = group.username
    if group.password is not None:
        found["password"] = group.password
    return found


def _sentinel_kwargs(endpoint: RedisEndpoint, options: dict[str, Any]) -> dict[str, Any]:
    """The sentinels' own connections: their password, and the caller's timeouts (a dead
    sentinel must not hang a probe)."""
    found: dict[str, Any] = {
        name: options[name]
        for name in ("socket_timeout", "socket_connect_timeout")
        if options.get(name) is not None  # None: the caller bounds its own commands
    }
    found.setdefault("socket_timeout", 2.0)
    found.setdefault("socket_connect_timeout", 2.0)
    if endpoint.sentinel_password:
        found["password"] = endpoint.sentinel_password
    return found
