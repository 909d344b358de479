"""structlog setup: JSON lines in production, readable lines on a terminal, secrets redacted.

Celery's and the standard library's own log records go through the same processors
(`ProcessorFormatter`), so a worker's output is one consistent stream.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from config.redaction import REDACTED, SECRET_NAMES, redact_text

SECRET_KEYS = SECRET_NAMES  # one set: the event builder refuses the same names


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask secret-named fields and anything shaped like a Salesforce token."""
    for key, value in list(event_dict.items()):
        if key.lower() in SECRET_KEYS and value:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
    return event_dict


def redact_exception(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """What was rendered after `redact` ran: the traceback (format_exc_info; it may quote a
    token) and the stack (StackInfoRenderer); every other field went through `redact` on its
    way in, structlog's events and the stdlib's alike."""
    for key in ("exception", "stack"):
        text = event_dict.get(key)
        if isinstance(text, str):
            event_dict[key] = redact_text(text)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        redact,
    ]


def configure(log_format: str = "json", level: int = logging.INFO) -> None:
    """Configure structlog and the root logger once per process."""
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    shared = _shared_processors()
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_exception,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
