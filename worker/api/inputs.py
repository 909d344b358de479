"""Request input, checked before any work: path ids, query parameters and JSON bodies.

Every refusal names the field: an id that is not an id (`/`, `..`, control characters) 400;
a body over MAX_BODY bytes 413; a body that is not a JSON object 400; an unknown, missing or
mistyped field (body or query) 422. Nothing here echoes more than a short prefix of a value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from starlette.requests import Request

from worker.api.errors import ApiError, invalid
from worker.errors import InputError
from worker.store.keys import check_id

MAX_BODY = 64 * 1024
NO_QUERY: Mapping[str, str] = MappingProxyType({})


def path_id(request: Request, field: str = "connection_id", param: str = "id") -> str:
    try:
        return check_id(field, request.path_params[param])
    except InputError as error:
        raise ApiError(400, "invalid_request", str(error), field=field) from None


def query(request: Request, allowed: set[str]) -> Mapping[str, str]:
    """The query parameters, refusing unknown ones (a typo must not be silently ignored)."""
    if not request.scope["query_string"]:
        return NO_QUERY  # the common case, without parsing
    for name in request.query_params:
        if name not in allowed:
            raise invalid(name, f"no such parameter (allowed: {', '.join(sorted(allowed))})")
    return request.query_params


def number(raw: str | None, field: str, low: float, high: float) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise invalid(field, f"a number of seconds from {low:g} to {high:g}")
    return value


def whole(raw: str | None, field: str, low: int, high: int, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise invalid(field, f"a whole number from {low} to {high}")
    return int(raw)


def flag(raw: str | None, field: str, default: bool) -> bool:
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise invalid(field, "true or false")


async def json_object(
    request: Request, fields: Mapping[str, type], required: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The body as a JSON object with only `fields` (name -> type), `required` present."""
    body = await _read_capped(request)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_request", "body: expected JSON", field="body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "body: expected a JSON object", field="body")
    for name, value in data.items():
        kind = fields.get(name)
        if kind is None:
            raise invalid(name, f"no such field (allowed: {', '.join(sorted(fields))})")
        if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
            raise invalid(name, kind.__name__)
    for name in sorted(required - data.keys()):
        raise invalid(name, f"a {fields[name].__name__} (required)")
    return data


async def _read_capped(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY:
            raise _too_large()
    return bytes(body)


def _too_large() -> ApiError:
    return ApiError(
        413, "payload_too_large", f"body: expected at most {MAX_BODY} bytes", field="body"
    )
