"""config/settings.py: one validated, frozen Settings from the environment."""

from __future__ import annotations

import base64
from dataclasses import fields

import pytest

from config.settings import PREFIX, Settings, SettingsError, reference

KEY = bytes(range(32))
OLD_KEY = bytes(range(100, 132))
KEY_TEXT = base64.urlsafe_b64encode(KEY).decode()
OLD_KEY_TEXT = base64.urlsafe_b64encode(OLD_KEY).decode()


def load(**values: str) -> Settings:
    """Settings from a valid key plus `values`, given without the TOKENWORKER_ prefix."""
    env = {"TOKENWORKER_ENCRYPTION_KEYS": KEY_TEXT}
    env.update({PREFIX + name: value for name, value in values.items()})
    return Settings.from_env(env)


class TestDefaults:
    def test_defaults(self) -> None:
        """With only a key set, every other setting takes its documented default."""
        settings = load()
        assert settings.redis_url == "redis://127.0.0.1:6379/0"
        assert settings.broker_url == settings.redis_url
        assert settings.encryption_keys == (KEY,)
        assert settings.refresh_margin == 300.0
        assert settings.default_lifetime == 7200.0
        assert settings.sweep_interval == 60.0
        assert settings.keepalive_interval == 604_800.0
        assert settings.http_timeout == 10.0
        assert (settings.webhook_url, settings.webhook_secret) == ("", "")
        assert settings.log_format == "json"
        assert (settings.retry_base, settings.retry_max) == (30.0, 900.0)
        assert settings.lease_ttl == 30.0
        assert settings.key_prefix == "tw:"
        assert (settings.batch_size, settings.concurrency, settings.sweep_limit) == (
            2000, 100, 50_000,
        )
        assert settings.require_persistence is False
        assert (settings.beat_lock_timeout, settings.ping_interval) == (25, 30.0)
        assert settings.beat_loop_interval == 5

    def test_blank_value_means_default(self) -> None:
        """A variable set to whitespace is treated as unset."""
        assert load(REFRESH_MARGIN="   ").refresh_margin == 300.0

    def test_values_are_parsed_and_stripped(self) -> None:
        """Durations take decimals, counts whole numbers, flags yes/no words; spaces trimmed."""
        settings = load(
            REFRESH_MARGIN=" 1.5 ", BATCH_SIZE="7", REQUIRE_PERSISTENCE="Yes",
            LOG_FORMAT="console", WEBHOOK_URL="https://hooks.example.com/tw",
        )
        assert settings.refresh_margin == 1.5
        assert settings.batch_size == 7
        assert settings.require_persistence is True
        assert settings.log_format == "console"
        assert settings.webhook_url == "https://hooks.example.com/tw"


class TestMalformedValues:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("REFRESH_MARGIN", "abc"),
            ("REFRESH_MARGIN", "-5"),
            ("REFRESH_MARGIN", "0"),
            ("DEFAULT_LIFETIME", "nan"),
            ("HTTP_TIMEOUT", "inf"),
            ("KEEPALIVE_INTERVAL", "7d"),
            ("REDIS_URL", "http://x"),
            ("REDIS_URL", "localhost:6379"),
            ("BROKER_URL", "amqp://guest@rabbit//"),
            ("BATCH_SIZE", "0"),
            ("CONCURRENCY", "1.5"),
            ("SWEEP_LIMIT", "lots"),
            ("RATE_LIMIT", "-1"),
            ("RATE_LIMIT", "100/s"),
            ("RATE_LIMIT", "inf"),
            ("RATE_LIMIT", "1e-20"),
            ("LOG_FORMAT", "xml"),
            ("REQUIRE_PERSISTENCE", "maybe"),
            ("WEBHOOK_URL", "ftp://hooks.example.com"),
            ("WEBHOOK_URL", "https://"),
        ],
    )
    def test_malformed_value_names_the_variable(self, name: str, value: str) -> None:
        """Each malformed value raises SettingsError naming its TOKENWORKER_ variable."""
        with pytest.raises(SettingsError, match=PREFIX + name):
            load(**{name: value})

    @pytest.mark.parametrize(
        "keys",
        [
            pytest.param("a", id="one base64 character"),
            pytest.param("not base64 at all!", id="garbage"),
            pytest.param("ключ", id="non-ascii"),
            pytest.param(base64.urlsafe_b64encode(b"k" * 16).decode(), id="16 bytes"),
            pytest.param(base64.urlsafe_b64encode(b"k" * 64).decode(), id="64 bytes"),
            pytest.param(",", id="only commas"),
        ],
    )
    def test_bad_key_names_the_variable(self, keys: str) -> None:
        """A key that is not 32 bytes of URL-safe base64 names TOKENWORKER_ENCRYPTION_KEYS."""
        with pytest.raises(SettingsError, match=f"{PREFIX}ENCRYPTION_KEYS"):
            Settings.from_env({f"{PREFIX}ENCRYPTION_KEYS": keys})

    def test_bad_key_message_says_which_key(self) -> None:
        """With several keys the message says which one is wrong, not what it is."""
        bad = base64.urlsafe_b64encode(b"k" * 16).decode()
        with pytest.raises(SettingsError, match="key #2 decodes to 16 bytes") as caught:
            Settings.from_env({f"{PREFIX}ENCRYPTION_KEYS": f"{KEY_TEXT},{bad}"})
        assert KEY_TEXT not in str(caught.value)
        assert bad not in str(caught.value)


class TestKeys:
    def test_keys_are_required(self) -> None:
        """Without TOKENWORKER_ENCRYPTION_KEYS the worker refuses to start."""
        with pytest.raises(SettingsError, match=f"{PREFIX}ENCRYPTION_KEYS is required"):
            Settings.from_env({})

    def test_keys_optional_when_not_required(self) -> None:
        """require_keys=False (commands that never decrypt) accepts no keys."""
        assert Settings.from_env({}, require_keys=False).encryption_keys == ()

    def test_several_keys_keep_their_order(self) -> None:
        """Comma-separated keys, spaces allowed, are kept in order: the first encrypts."""
        settings = load(ENCRYPTION_KEYS=f" {KEY_TEXT} , {OLD_KEY_TEXT} ,")
        assert settings.encryption_keys == (KEY, OLD_KEY)


class TestCrossChecks:
    def test_broker_defaults_to_redis_url(self) -> None:
        """Without TOKENWORKER_BROKER_URL the broker is the store Redis."""
        settings = load(REDIS_URL="rediss://store:6380/2")
        assert settings.broker_url == "rediss://store:6380/2"

    def test_explicit_broker_is_kept(self) -> None:
        """An explicit broker URL is used as given."""
        settings = load(REDIS_URL="redis://store:6379/0", BROKER_URL="redis://broker:6379/1")
        assert settings.broker_url == "redis://broker:6379/1"

    @pytest.mark.parametrize(("lease", "timeout"), [("20", "10"), ("5", "10")])
    def test_lease_must_exceed_two_http_timeouts(self, lease: str, timeout: str) -> None:
        """A lease no longer than two HTTP timeouts is refused, naming both variables."""
        with pytest.raises(SettingsError, match=f"{PREFIX}LEASE_TTL") as caught:
            load(LEASE_TTL=lease, HTTP_TIMEOUT=timeout)
        assert f"{PREFIX}HTTP_TIMEOUT" in str(caught.value)

    def test_lease_just_over_two_http_timeouts_is_accepted(self) -> None:
        """A lease a little longer than two HTTP timeouts is fine."""
        assert load(LEASE_TTL="20.5", HTTP_TIMEOUT="10").lease_ttl == 20.5

    def test_retry_base_must_not_exceed_retry_max(self) -> None:
        """A first backoff longer than the longest backoff is refused."""
        with pytest.raises(SettingsError, match=f"{PREFIX}RETRY_BASE"):
            load(RETRY_BASE="600", RETRY_MAX="60")


class TestSecretsStayHidden:
    def test_repr_hides_keys_and_webhook_secret(self) -> None:
        """repr() shows how many keys and whether a secret is set, never their values."""
        settings = load(
            ENCRYPTION_KEYS=f"{KEY_TEXT},{OLD_KEY_TEXT}", WEBHOOK_SECRET="whsec-do-not-print"
        )
        shown = repr(settings)
        for key, text in ((KEY, KEY_TEXT), (OLD_KEY, OLD_KEY_TEXT)):
            assert text not in shown
            assert repr(key) not in shown
        assert "whsec-do-not-print" not in shown
        assert "<2 keys>" in shown
        assert "<set>" in shown

    def test_repr_says_when_webhook_secret_is_unset(self) -> None:
        """Without a webhook secret repr says so."""
        assert "'webhook_secret': '<unset>'" in repr(load())


class TestReference:
    def test_lists_every_variable_once(self) -> None:
        """reference() has one row per setting, named as from_env reads it."""
        names = [row[0] for row in reference()]
        expected = [PREFIX + item.metadata["env"] for item in fields(Settings)]
        assert names == expected
        assert len(set(names)) == len(names)
        assert {f"{PREFIX}REDIS_URL", f"{PREFIX}ENCRYPTION_KEYS", f"{PREFIX}LEASE_TTL"} <= set(
            names
        )

    def test_every_row_has_a_meaning(self) -> None:
        """Each variable is documented with a non-empty sentence."""
        assert all(meaning.strip() for _, _, meaning in reference())

    def test_defaults_are_shown(self) -> None:
        """Defaults appear as text; empty defaults are shown as blank."""
        rows = {name: default for name, default, _ in reference()}
        assert rows[f"{PREFIX}REFRESH_MARGIN"] == "300.0"
        assert rows[f"{PREFIX}BROKER_URL"] == ""
        assert rows[f"{PREFIX}ENCRYPTION_KEYS"] == ""


class TestRanges:
    """Every number has an allowed range: values that parse but cannot work (milliseconds
    typed as seconds, 1e23, 1e308) are refused at start, naming the variable and the range."""

    @pytest.mark.parametrize(
        ("name", "value", "allowed"),
        [
            ("LEASE_TTL", "30000", "more than 0 and at most 600 seconds"),
            ("LEASE_TTL", "1e23", "at most 600 seconds"),
            ("LEASE_TTL", "1e308", "at most 600 seconds"),
            ("SWEEP_INTERVAL", "1e308", "at least 1 and at most 3600 seconds"),
            ("SWEEP_INTERVAL", "0.5", "at least 1 and at most 3600 seconds"),
            ("SWEEP_LIMIT", str(10**23), "a whole number from 1 to 1000000"),
            ("BATCH_SIZE", "1000000", "a whole number from 1 to 50000"),
            ("CONCURRENCY", "100000", "a whole number from 1 to 10000"),
            ("REFRESH_MARGIN", "86401", "at most 86400 seconds"),
            ("DEFAULT_LIFETIME", "7200000", "at most 86400 seconds"),
            ("KEEPALIVE_INTERVAL", "1e10", "at most 31536000 seconds"),
            ("HTTP_TIMEOUT", "10000", "at most 120 seconds"),
            ("RETRY_BASE", "3600", "at most 1800 seconds"),
            ("RETRY_MAX", "86400", "at most 1800 seconds"),
            ("ESCALATE_AFTER", "1000000", "a whole number from 1 to 1000"),
            ("ESCALATE_AFTER_FAILING", "1e9", "at most 2592000 seconds"),
            ("DAILY_ATTEMPT_CAP", "1000000", "a whole number from 1 to 10000"),
            ("RATE_LIMIT", "1e23", "from 0.01 to 100000 calls per second"),
            ("LEASE_TTL", "nan", "at most 600 seconds"),
            ("SWEEP_INTERVAL", "-inf", "at most 3600 seconds"),
            ("API_CREDENTIALS_CACHE_AGE", "2", "0 (off) to 1 seconds"),
            ("API_CREDENTIALS_CACHE_AGE", "-0.5", "0 (off) to 1 seconds"),
            ("API_CREDENTIALS_CACHE_AGE", "nan", "0 (off) to 1 seconds"),
            ("API_CREDENTIALS_CACHE_ENTRIES", "0", "a whole number from 1 to 1000000"),
            ("WORKER_NICE", "20", "from 0 (as started) to 19 (the lowest priority)"),
            ("WORKER_NICE", "-5", "from 0 (as started) to 19 (the lowest priority)"),
        ],
    )
    def test_out_of_range_names_variable_and_range(
        self, name: str, value: str, allowed: str
    ) -> None:
        """The message names the variable, echoes the value and states the allowed range."""
        with pytest.raises(SettingsError) as caught:
            load(**{name: value})
        message = str(caught.value)
        assert message.startswith(f"{PREFIX}{name}={value!r}: expected "), message
        assert message.endswith(allowed), message

    def test_small_test_values_stay_valid(self) -> None:
        """What tests and the demo use (2 s sweeps, 5 s margins, 2 s retry base) is accepted,
        and so is each upper bound itself."""
        small = load(
            SWEEP_INTERVAL="1", REFRESH_MARGIN="5", RETRY_BASE="2", RETRY_MAX="60",
            HTTP_TIMEOUT="2", LEASE_TTL="5", DEFAULT_LIFETIME="20",
        )  # fmt: skip
        assert (small.sweep_interval, small.refresh_margin, small.retry_base) == (1, 5, 2)
        top = load(
            LEASE_TTL="600", HTTP_TIMEOUT="120", SWEEP_INTERVAL="3600", SWEEP_LIMIT="1000000"
        )
        assert (top.lease_ttl, top.sweep_limit) == (600, 1_000_000)
        assert (load().worker_nice, load(WORKER_NICE="19").worker_nice) == (0, 19)
        assert load(API_CREDENTIALS_CACHE_AGE="0").api_credentials_cache_age == 0.0  # off

    def test_every_default_is_inside_its_range(self) -> None:
        """Each default parses under its own rule (the ranges never refuse a default)."""
        for item in fields(Settings):
            if isinstance(item.default, (int, float)) and not isinstance(item.default, bool):
                parsed = item.metadata["parse"](item.metadata["env"], str(item.default))
                assert parsed == item.default, item.name

    def test_the_reference_states_each_range(self) -> None:
        """reference() (and so deploy/CONFIGURATION.md) says what each number may be."""
        rows = {name: meaning for name, _, meaning in reference()}
        assert "Allowed: more than 0 and at most 600 seconds." in rows[f"{PREFIX}LEASE_TTL"]
        assert "Allowed: a whole number from 1 to 1000000." in rows[f"{PREFIX}SWEEP_LIMIT"]

    @pytest.mark.parametrize(
        ("name", "value"),
        [("BEAT_LOCK_TIMEOUT", "1e308"), ("BEAT_LOCK_TIMEOUT", "1"), ("PING_INTERVAL", "1e308"),
         ("PING_INTERVAL", "nan"), ("PING_INTERVAL", "0.01")],
    )  # fmt: skip
    def test_ops_settings_have_ranges_too(self, name: str, value: str) -> None:
        """HA beat and ping timing refuse values beat or liveness could not live with."""
        with pytest.raises(SettingsError, match=rf"{PREFIX}{name}=.*and at most 3600 seconds"):
            Settings.from_env({PREFIX + name: value}, require_keys=False)
        small = Settings.from_env({f"{PREFIX}PING_INTERVAL": "0.3"}, require_keys=False)
        assert small.ping_interval == 0.3

    def test_the_beat_lock_timeout_is_whole_seconds(self) -> None:
        """A fraction is dropped (the lock's expiry is set in seconds); the beat renews at
        least every fifth of it, every second to every 5 s."""
        assert load(BEAT_LOCK_TIMEOUT="4.9").beat_lock_timeout == 4
        assert [load(BEAT_LOCK_TIMEOUT=t).beat_loop_interval for t in ("2", "4", "12", "3600")] == [
            1, 1, 2, 5,
        ]
