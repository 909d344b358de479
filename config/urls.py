"""URL helpers shared by the settings and the connect flow (no environment here)."""

from __future__ import annotations

from urllib.parse import urlsplit


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL (lower case, default port dropped), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")
