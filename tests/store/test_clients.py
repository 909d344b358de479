"""The client factory: plain URLs stay redis-py's, a Sentinel URL gives a Sentinel-managed
client; the settings refuse a malformed Sentinel URL at start, naming what was expected."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel
from celery import Celery

from config.celery import celery_config
from config.redis_urls import RedisEndpoint, safe
from config.settings import Settings, SettingsError
from worker.dev.embedded import EmbeddedRedis
from worker.store import clients

URL = "redis+sentinel://:data%40pw@127.0.0.1:26001,127.0.0.2/tw-master/3"


def test_a_sentinel_url_gives_clients_managed_by_the_sentinels() -> None:
    endpoint = RedisEndpoint(URL, sentinel_password="s3cret")
    sync = clients.sync_client(endpoint, socket_timeout=1)
    pool = sync.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "tw-master" and pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "data@pw"
    manager = pool.sentinel_manager
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in manager.sentinels
    ] == [("127.0.0.1", 26001), ("127.0.0.2", 26379)]
    assert manager.sentinels[0].connection_pool.connection_kwargs["password"] == "s3cret"
    sync.close()
    aio = clients.async_client(endpoint, socket_timeout=1)
    assert isinstance(aio.connection_pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert aio.connection_pool.max_connections == 64


@pytest.mark.integration
def test_closing_a_client_closes_its_connections(redis_server: EmbeddedRedis) -> None:
    """The exporter and every SSE stream make a client of their own: closing it must close
    its connections, not leave them to the garbage collector."""
    watcher = redis.Redis.from_url(redis_server.url)

    def connected() -> int:
        return int(watcher.info("clients")["connected_clients"])

    async def go(before: int) -> tuple[int, int]:
        client = clients.async_client(RedisEndpoint(redis_server.url), socket_timeout=2)
        await asyncio.gather(*(client.ping() for _ in range(5)))
        during = connected()
        await client.aclose()
        # the server notices closed sockets on its next event-loop turn: wait, bounded
        deadline = time.monotonic() + 3.0
        while connected() > before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return during, connected()

    before = connected()
    during, after = asyncio.run(go(before))
    watcher.close()
    assert during > before and after <= before


def test_the_broker_maps_onto_kombus_sentinel_transport() -> None:
    settings = Settings.from_env(
        {"TOKENWORKER_REDIS_URL": URL, "TOKENWORKER_SENTINEL_PASSWORD": "s3cret"},
        require_keys=False,
    )
    config = celery_config(settings)
    assert config["broker_url"] == (
        "sentinel://:data%40pw@127.0.0.1:26001/3;sentinel://:data%40pw@127.0.0.2:26379/3"
    )
    # Celery's result backend reads the credentials from the first URL, and Celery's
    # censored dump (celery inspect conf, celery report) masks only the first one.
    assert config["result_backend"] == (
        "sentinel://:data%40pw@127.0.0.1:26001/3;sentinel://127.0.0.2:26379/3"
    )
    app = Celery(set_as_current=False)
    app.conf.update(config)
    dump = app.conf.humanize(with_defaults=False, censored=True)
    assert "data%40pw" not in dump and "data@pw" not in dump and "s3cret" not in dump
    options = config["broker_transport_options"]
    assert options["master_name"] == "tw-master"
    assert options["sentinel_kwargs"] == {"password": "s3cret"}
    assert config["result_backend_transport_options"]["master_name"] == "tw-master"
    assert "s3cret" not in repr(settings) and "data%40pw" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://127.0.0.1:26379", "master name is missing"),
        ("redis+sentinel://127.0.0.1:x/m", "has no valid port"),
        ("redis+sentinel://127.0.0.1:\u00b2/m", "has no valid port"),
        ("redis+sentinel://127.0.0.1/m/\u00b2", "is not a number"),
        ("redis+sentinel://127.0.0.1/m/zero", "is not a number"),
        ("redis+sentinel://a,,b/m", "is not host:port"),
        ("http://127.0.0.1", "got scheme 'http'"),
    ],
)
def test_a_malformed_url_fails_at_start_naming_the_setting(url: str, problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"TOKENWORKER_BROKER_URL": url}, require_keys=False)
    assert "TOKENWORKER_BROKER_URL" in str(raised.value) and problem in str(raised.value)
    assert "MASTER_NAME" in str(raised.value)


@pytest.mark.parametrize(("raw", "value"), [("auto", None), ("0", 0), ("2", 2)])
def test_min_replicas_is_auto_or_a_count(raw: str, value: int | None) -> None:
    settings = Settings.from_env({"TOKENWORKER_MIN_REPLICAS": raw}, require_keys=False)
    assert settings.min_replicas == value


@pytest.mark.parametrize("raw", ["-1", "17", "one", "\u00b2"])
def test_min_replicas_out_of_range_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="auto, or a whole number from 0 to 16"):
        Settings.from_env({"TOKENWORKER_MIN_REPLICAS": raw}, require_keys=False)


def test_safe_hides_the_password_of_every_form() -> None:
    assert safe(URL) == "redis+sentinel://:***@127.0.0.1:26001,127.0.0.2/tw-master/3"
    assert safe("redis://u:p@h:1/0") == "redis://u:***@h:1/0"
    assert safe("redis://h:1/0") == "redis://h:1/0"


async def test_commands_are_packed_in_c_byte_for_byte_as_redis_py_packs_them(
    redis_server: EmbeddedRedis,
) -> None:
    """The store's connections pack with hiredis (a sixth of redis-py's CPU for a save's ~60
    arguments), writing exactly what redis-py's own packer writes, refusing what it refuses,
    and splitting a command given with its subcommand; the commands still run."""
    from redis.asyncio.connection import Connection  # noqa: PLC0415
    from redis.exceptions import DataError  # noqa: PLC0415

    client = clients.async_client(RedisEndpoint(redis_server.url), socket_timeout=2)
    try:
        connection = client.connection_pool.make_connection()
        assert isinstance(connection, clients._HiredisPacking)
        reference = Connection()
        for args in [
            ("EVALSHA", "ab" * 20, 2, "tw:c:1", b"tw:due", 1764000000.123456, 0.1 + 0.2, -3),
            ("SET", "é", b"\x00\xff", 10**20),
            ("CONFIG GET", "maxmemory"),
            (b"CLIENT SETNAME", bytearray(b"w1"), memoryview(b"x")),
        ]:
            packed = b"".join(connection.pack_command(*args))
            assert packed == b"".join(reference.pack_command(*args)), args
        for bad in (None, True):
            with pytest.raises(DataError):
                connection.pack_command("SET", "k", bad)
        await client.set("tw:packing", 1.5)
        assert await client.config_get("maxmemory") is not None
        assert await client.get("tw:packing") == b"1.5"
    finally:
        await client.delete("tw:packing")
        await client.aclose()
