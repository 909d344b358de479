"""config/logging.py: secrets never reach a log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from config.logging import (
    REDACTED,
    SECRET_KEYS,
    configure,
    redact,
    redact_exception,
    redact_text,
)

# 00D + 15 alphanumerics (an 18-character org id), "!", then 40 token characters.
ACCESS_TOKEN = "00D5g000004XyZaEAK!" + "AQ4AQHeM9n_kp2.R7sVbXcLqWzT8yUdNfGh3JmPa"
REFRESH_TOKEN = "5Aep861TNHzAqJZ7fZrH0bP2YXr.rXbqWVB8wz_9lCW6Tw3Xk0DgG"


def run(event_dict: dict[str, object]) -> dict[str, object]:
    return dict(redact(None, "info", dict(event_dict)))


@pytest.mark.parametrize("key", sorted(SECRET_KEYS))
def test_secret_named_keys_are_masked(key: str) -> None:
    """Every secret-named field is replaced, whatever its value looks like."""
    assert run({key: "plain-value", "event": "x"})[key] == REDACTED


@pytest.mark.parametrize("key", ["Authorization", "ACCESS_TOKEN", "Client_Secret"])
def test_secret_names_match_case_insensitively(key: str) -> None:
    """A secret name in another case is still masked."""
    assert run({key: "Bearer abc"})[key] == REDACTED


def test_non_string_secret_values_are_masked() -> None:
    """A secret field holding a non-string (bytes, a tuple of keys) is masked too."""
    assert run({"encryption_keys": (b"k" * 32,)})["encryption_keys"] == REDACTED


def test_access_token_inside_a_message_is_masked() -> None:
    """A Salesforce access token embedded in free text is cut out; the rest stays."""
    result = run({"event": f"call failed with Bearer {ACCESS_TOKEN} for c-1"})
    assert result["event"] == f"call failed with Bearer {REDACTED} for c-1"


def test_access_token_after_punctuation_is_masked() -> None:
    """A token right after '=' or a quote is still found."""
    text = f"access_token={ACCESS_TOKEN}&x=1 '{ACCESS_TOKEN}'"
    assert ACCESS_TOKEN not in redact_text(text)
    assert ACCESS_TOKEN[:18] not in redact_text(text)


def test_refresh_token_inside_a_message_is_masked() -> None:
    """A Salesforce-shaped refresh token in any string field is masked."""
    result = run({"detail": f"re-imported {REFRESH_TOKEN}"})
    assert result["detail"] == f"re-imported {REDACTED}"


def test_ordinary_fields_are_untouched() -> None:
    """Ids, numbers and ordinary text pass through unchanged."""
    fields: dict[str, object] = {
        "event": "token.refreshed",
        "connection_id": "00D5g000004XyZaEAK",
        "attempt": 3,
        "next_attempt_at": 1_800_000_000.5,
        "error_description": "expired access/refresh token",
    }
    assert run(fields) == fields


def test_empty_secret_is_left_empty() -> None:
    """An empty or None secret field stays as it is: there is nothing to hide."""
    assert run({"refresh_token": None, "client_secret": ""}) == {
        "refresh_token": None, "client_secret": "",
    }


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The configured JSON logging, its output captured (restored afterwards)."""
    root = logging.getLogger()
    handlers, level, before = root.handlers[:], root.level, structlog.get_config()
    configure("json")
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**before)


def test_every_path_into_a_log_line_is_redacted(captured: io.StringIO) -> None:
    """A structlog event's field, a standard-library record's message (Celery's, say) and a
    traceback rendered at the end all come out without the token."""
    structlog.get_logger("tokenworker.test").info("event", detail=f"got {ACCESS_TOKEN}")
    logging.getLogger("celery.test").warning("task failed for %s", REFRESH_TOKEN)
    try:
        raise ValueError(f"bad token {ACCESS_TOKEN}")
    except ValueError:
        structlog.get_logger("tokenworker.test").exception("crashed")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["event", f"task failed for {REDACTED}", "crashed"]
    assert "ValueError: bad token [redacted]" in lines[2]["exception"]
    assert ACCESS_TOKEN not in captured.getvalue() and REFRESH_TOKEN not in captured.getvalue()


def test_text_rendered_after_redaction_is_redacted_too() -> None:
    """The traceback and the stack are rendered after the fields were redacted."""
    rendered = {"exception": f"ValueError: {ACCESS_TOKEN}", "stack": f"x = '{REFRESH_TOKEN}'"}
    out = redact_exception(None, "error", dict(rendered))
    assert out == {"exception": f"ValueError: {REDACTED}", "stack": f"x = '{REDACTED}'"}
