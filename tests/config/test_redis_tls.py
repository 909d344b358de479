"""TLS to a managed Redis: the settings (files checked at start), the kwargs every kind of
client gets (config/redis_tls.py), and a real TLS redis-server that requires a client
certificate."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.celery import celery_config
from config.redis_tls import celery_tls, endpoint_kwargs
from config.redis_urls import safe
from config.settings import Settings, SettingsError
from tests.config.test_settings import load
from tests.conftest import TEST_KEYS
from tests.processes import cli
from tests.tls_redis import DEBIAN_REDIS, TlsRedis, make_certs
from worker.dev.embedded import free_port
from worker.engine.runtime import redis_client

STORE = "rediss://tokenworker:s3cret-pw@redis.example.com:6380/0"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    make_certs(directory)
    return directory


class TestSettings:
    def test_files_are_checked_at_start_naming_the_setting(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match=r"TOKENWORKER_REDIS_CA=.*no such file"):
            load(REDIS_URL=STORE, REDIS_CA=str(tmp_path / "missing.pem"))
        with pytest.raises(SettingsError, match=r"TOKENWORKER_REDIS_KEY=.*no such file"):
            load(REDIS_URL=STORE, REDIS_KEY=str(tmp_path))  # a directory is not a key file

    def test_an_unreadable_file_is_refused(
        self, certs: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # os.access answers for this user; root reads every file, so ask as if it could not.
        locked = certs / "locked.pem"
        locked.write_text("x")
        monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != str(locked))
        with pytest.raises(SettingsError, match=r"TOKENWORKER_REDIS_CA=.*not readable"):
            load(REDIS_URL=STORE, REDIS_CA=str(locked))

    def test_a_client_certificate_needs_its_key(self, certs: Path) -> None:
        with pytest.raises(SettingsError, match="REDIS_CERT and TOKENWORKER_REDIS_KEY go"):
            load(REDIS_URL=STORE, REDIS_CERT=str(certs / "client.pem"))

    def test_the_redis_password_never_shows_in_repr(self) -> None:
        settings = load(REDIS_URL=STORE)
        assert "s3cret-pw" not in repr(settings)
        assert "tokenworker:***@redis.example.com:6380" in repr(settings)

    def test_safe_keeps_everything_but_the_password(self) -> None:
        assert safe(STORE) == "rediss://tokenworker:***@redis.example.com:6380/0"
        assert safe("redis://:pw@h/1") == "redis://:***@h/1"
        assert safe("redis://h:6379/0") == "redis://h:6379/0"


class TestKwargs:
    def test_plain_redis_gets_nothing(self) -> None:
        settings = load()
        assert endpoint_kwargs(settings.store_endpoint) == {}
        assert celery_tls(settings) == {}
        assert "broker_use_ssl" not in celery_config(settings)

    def test_tls_files_without_a_rediss_url_are_refused(self, certs: Path) -> None:
        """Plaintext while the operator believes TLS is on is worse than not starting."""
        for url in ("redis://h:6379/0", "redis+sentinel://s1:26379/master/0"):
            with pytest.raises(SettingsError, match="neither TOKENWORKER_REDIS_URL nor"):
                load(REDIS_URL=url, REDIS_CA=str(certs / "ca.pem"))

    def test_rediss_is_always_verified_against_the_ca(self, certs: Path) -> None:
        settings = load(
            REDIS_URL=STORE,
            REDIS_CA=str(certs / "ca.pem"),
            REDIS_CERT=str(certs / "client.pem"),
            REDIS_KEY=str(certs / "client.key"),
        )
        expected = {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_ca_certs": str(certs / "ca.pem"),
            "ssl_certfile": str(certs / "client.pem"),
            "ssl_keyfile": str(certs / "client.key"),
        }
        assert endpoint_kwargs(settings.store_endpoint) == expected
        config = celery_config(settings)  # the broker defaults to the store URL
        assert config["broker_use_ssl"] == expected == config["redis_backend_use_ssl"]

    def test_the_url_decides_per_client(self) -> None:
        settings = load(REDIS_URL=STORE, BROKER_URL="redis://broker:6379/1")
        assert endpoint_kwargs(settings.store_endpoint) == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        assert endpoint_kwargs(settings.broker_endpoint) == {}
        assert celery_tls(settings) == {}


@pytest.fixture(scope="module")
def mutual_tls() -> Iterator[TlsRedis]:
    if not os.access(DEBIAN_REDIS, os.X_OK):
        pytest.skip(f"{DEBIAN_REDIS} (Debian's redis-server, with TLS) is not installed")
    server = TlsRedis(client_auth="yes").start()
    yield server
    server.stop()


def _settings(server: TlsRedis, **extra: str) -> Settings:
    env = {"REDIS_URL": server.url, "REDIS_CA": str(server.certs.ca), **extra}
    return load(**env)


@pytest.mark.integration
async def test_runtime_client_presents_the_client_certificate(mutual_tls: TlsRedis) -> None:
    """A Redis that requires client certificates serves the runtime's client with
    TOKENWORKER_REDIS_CERT/KEY and refuses it without them."""
    certs = mutual_tls.certs
    good = _settings(mutual_tls, REDIS_CERT=str(certs.client_cert), REDIS_KEY=str(certs.client_key))
    client = redis_client(good.store_endpoint)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    bare = _settings(mutual_tls)
    client = redis_client(bare.store_endpoint)
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()


@pytest.mark.integration
def test_a_server_outside_the_ca_is_refused(mutual_tls: TlsRedis, certs: Path) -> None:
    """TOKENWORKER_REDIS_CA is what the server is checked against: another CA fails."""
    other = _settings(mutual_tls, REDIS_CA=str(certs / "ca.pem"))
    client = redis.Redis.from_url(other.redis_url, **endpoint_kwargs(other.store_endpoint))  # type: ignore[arg-type]
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client.ping()


@pytest.fixture(scope="module")
def acl_tls() -> Iterator[TlsRedis]:
    if not os.access(DEBIAN_REDIS, os.X_OK):
        pytest.skip(f"{DEBIAN_REDIS} (Debian's redis-server, with TLS) is not installed")
    server = TlsRedis().start()
    yield server
    server.stop()


@pytest.mark.integration
def test_the_acl_password_never_reaches_cli_output(acl_tls: TlsRedis) -> None:
    """`health` and `status` over TLS as the ACL user, and `health` with the store down:
    the password is in no output; the unreachable message names the URL without it."""
    env = dict(os.environ)
    env.update(
        TOKENWORKER_REDIS_URL=acl_tls.url,
        TOKENWORKER_ENCRYPTION_KEYS=TEST_KEYS,
        **acl_tls.tls_env(),
    )
    runs = [cli(env, "health", "--readiness"), cli(env, "status")]
    down = dict(env, TOKENWORKER_REDIS_URL=acl_tls.url.replace(str(acl_tls.port), str(free_port())))
    runs.append(cli(down, "health", "--readiness"))
    for done in runs:
        assert acl_tls.password not in done.stdout + done.stderr, done.args
    assert runs[0].returncode == 0, runs[0].stdout + runs[0].stderr
    assert runs[2].returncode == 3 and "rediss://tokenworker:***@127.0.0.1" in runs[2].stderr
