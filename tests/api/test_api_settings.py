"""The api process's settings: defaults, and malformed values refused naming the variable."""

from __future__ import annotations

import pytest

from config.settings import Settings, SettingsError
from tests.conftest import TEST_KEYS

BASE = {"TOKENWORKER_ENCRYPTION_KEYS": TEST_KEYS}


def settings(**values: str) -> Settings:
    return Settings.from_env({**BASE, **{f"TOKENWORKER_{k}": v for k, v in values.items()}})


def test_defaults() -> None:
    found = settings()
    assert (found.api_host, found.api_port) == ("127.0.0.1", 8080)
    assert (found.public_url, found.allowed_return_origins) == ("http://127.0.0.1:8080", ())


def test_origins_are_normalised_and_only_origins() -> None:
    found = settings(ALLOWED_RETURN_ORIGINS=" https://App.Example.com , http://localhost:3000/ ")
    assert found.allowed_return_origins == ("https://app.example.com", "http://localhost:3000")
    for bad in ("https://a.com/path", "ftp://a.com", "https://a.com?x=1", "a.com", "https://u@a.com",
                "https://a.com:99999"):  # fmt: skip
        with pytest.raises(SettingsError, match="TOKENWORKER_ALLOWED_RETURN_ORIGINS"):
            settings(ALLOWED_RETURN_ORIGINS=bad)


def test_public_url_host_and_port() -> None:
    assert settings(PUBLIC_URL="https://tw.example.com/").public_url == "https://tw.example.com"
    for name, bad in (
        ("PUBLIC_URL", "tw.example.com"),
        ("PUBLIC_URL", "https://tw.example.com/?a=b"),
        ("API_HOST", "0.0.0.0/8"),
        ("API_PORT", "0"),
        ("API_PORT", "70000"),
    ):
        with pytest.raises(SettingsError, match=f"TOKENWORKER_{name}"):
            settings(**{name: bad})
