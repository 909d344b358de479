"""Records <-> Redis hash fields. Secrets are sealed here and nowhere else.

The fields every checked record holds are stored under short names (`SHORT`): a record is a
listpack, so each name is stored in every record, and at a million records the long names
alone were ~80 MB. A record written under the long names (before the short ones) still reads:
a field is looked up by its short name, then its long one; the save script deletes the long
names (`LEGACY`) whenever it writes a record, so a store converges on its own, no migration
step. Fields read by Lua or by other modules (integration, status, rt, at, version,
last_error, refresh_started_at) and the rare ones keep their names.
"""

from __future__ import annotations

import json
from typing import Any

from worker.domain.models import (
    DEFAULT_PROMPT,
    DEFAULT_SCOPES,
    Connection,
    ConnectionStatus,
    ExpirySource,
    Integration,
    IntegrationStatus,
    LastError,
    Provider,
)
from worker.errors import StoreError
from worker.store.counting import COUNTED
from worker.store.crypto import Cipher, Opener

Fields = dict[str, bytes | str]
Raw = dict[bytes, bytes]

_FLOATS = (
    "issued_at",
    "expires_at",
    "lifetime",
    "last_check_at",
    "last_refresh_at",
    "failing_since",
    "escalated_at",
    "refresh_started_at",
)


SHORT = {
    "instance_url": "iu",
    "identity_url": "idu",
    "expiry_source": "xs",
    "failures": "f",
    "issued_at": "ia",
    "expires_at": "xa",
    "lifetime": "lt",
    "last_check_at": "lc",
    "last_refresh_at": "lr",
}
LEGACY = tuple(SHORT)  # the long names a save deletes (a record written before SHORT)
_FLOAT_NAMES = tuple((field, SHORT.get(field, field)) for field in _FLOATS)


def name(field: str) -> str:
    """The name `field` is stored under."""
    return SHORT.get(field, field)


def _get(raw: Raw, field: str) -> bytes | None:
    short = SHORT.get(field)
    value = raw.get(short.encode()) if short else None
    return value if value is not None else raw.get(field.encode())


def _num(value: float | None) -> str:
    return "" if value is None else repr(round(value, 3))


def _text(raw: Raw, field: str) -> str | None:
    value = _get(raw, field)
    return value.decode() if value else None


def _float(raw: Raw, field: str) -> float | None:
    value = _get(raw, field)
    return float(value) if value else None


def _error(raw: Raw) -> LastError | None:
    value = raw.get(b"last_error")
    return LastError.from_dict(json.loads(value)) if value else None


def _attempts(raw: Raw) -> dict[str, Any]:
    value = raw.get(b"attempts")
    if not value:
        return {}
    day, _, count = value.decode().partition(":")
    return {"attempts_day": int(day), "attempts_today": int(count)}


def connection_fields(conn: Connection, cipher: Cipher, since: Connection | None = None) -> Fields:
    """The fields of the hash; an empty string means 'delete this field'. Every field, or,
    with `since` (the record as stored, read at `conn.version`), only those that differ from
    it: a check that finds a token still fresh writes its times, not two re-sealed tokens."""
    if since is not None:
        return _changed_fields(conn, since, cipher)
    fields: Fields = {
        "integration": conn.integration,
        "rt": cipher.seal(conn.refresh_token, f"{conn.id}:rt"),
        "at": _sealed_access(conn, cipher),
        "iu": conn.instance_url or "",
        "idu": conn.identity_url or "",
        "xs": conn.expiry_source.value if conn.expiry_source else "",
        "status": conn.status.value,
        "f": str(conn.failures) if conn.failures else "",  # absent reads as 0
        "attempts": _attempts_field(conn),
        "last_error": json.dumps(conn.last_error.as_dict()) if conn.last_error else "",
    }
    for field, stored_as in _FLOAT_NAMES:
        fields[stored_as] = _num(getattr(conn, field))
    return fields


def _sealed_access(conn: Connection, cipher: Cipher) -> str | bytes:
    return cipher.seal(conn.access_token, f"{conn.id}:at") if conn.access_token else ""


def _attempts_field(conn: Connection) -> str:
    return f"{conn.attempts_day}:{conn.attempts_today}" if conn.attempts_today else ""


def _changed_fields(conn: Connection, since: Connection, cipher: Cipher) -> Fields:
    """connection_fields for what `conn` changed of `since`, each encoded as a full save
    encodes it (the two must agree field for field: tests/store/test_record_layout.py)."""
    fields: Fields = {}
    if conn.integration != since.integration:
        fields["integration"] = conn.integration
    if conn.refresh_token != since.refresh_token:
        fields["rt"] = cipher.seal(conn.refresh_token, f"{conn.id}:rt")
    if conn.access_token != since.access_token:
        fields["at"] = _sealed_access(conn, cipher)
    if conn.instance_url != since.instance_url:
        fields["iu"] = conn.instance_url or ""
    if conn.identity_url != since.identity_url:
        fields["idu"] = conn.identity_url or ""
    if conn.expiry_source is not since.expiry_source:
        fields["xs"] = conn.expiry_source.value if conn.expiry_source else ""
    if conn.status is not since.status:
        fields["status"] = conn.status.value
    if conn.failures != since.failures:
        fields["f"] = str(conn.failures) if conn.failures else ""
    if (conn.attempts_day, conn.attempts_today) != (since.attempts_day, since.attempts_today):
        fields["attempts"] = _attempts_field(conn)
    if conn.last_error != since.last_error:
        fields["last_error"] = json.dumps(conn.last_error.as_dict()) if conn.last_error else ""
    for field, stored_as in _FLOAT_NAMES:
        value = getattr(conn, field)
        if value != getattr(since, field):
            fields[stored_as] = _num(value)
    return fields


def connection_from_raw(connection_id: str, raw: Raw, cipher: Opener) -> Connection:
    """The record, or StoreError naming the id and what is wrong with the stored hash (a
    missing refresh token, a malformed field, a key nobody holds): callers report it and go
    on, where a KeyError or ValueError would end a fleet-wide command or a whole batch.
    Fields it does not know (the fleet's `counted` flag) are ignored. With a HeaderCheck
    for `cipher` it finds every such problem but a tampered ciphertext, decrypting nothing."""
    sealed_refresh = raw.get(b"rt")
    if not sealed_refresh:
        names = (key.decode(errors="replace") for key in raw)
        present = ", ".join(sorted(n for n in names if n != COUNTED)) or "none"
        raise StoreError(
            f"{connection_id}: incomplete record: no refresh token (field 'rt'; fields present: "
            f"{present}); remove it with `tokenworker connections remove {connection_id}`"
        )
    try:
        return _connection(connection_id, raw, sealed_refresh, cipher)
    except (ValueError, TypeError, KeyError) as error:  # only plain fields reach here
        raise StoreError(
            f"{connection_id}: malformed record ({type(error).__name__}: {error})"
        ) from None


def _connection(connection_id: str, raw: Raw, sealed_refresh: bytes, cipher: Opener) -> Connection:
    sealed_access = raw.get(b"at")
    source = _text(raw, "expiry_source")
    floats: dict[str, Any] = {field: _float(raw, field) for field in _FLOATS}
    return Connection(
        id=connection_id,
        integration=_text(raw, "integration") or "",
        refresh_token=cipher.open(sealed_refresh, f"{connection_id}:rt"),
        access_token=cipher.open(sealed_access, f"{connection_id}:at") if sealed_access else None,
        instance_url=_text(raw, "instance_url"),
        identity_url=_text(raw, "identity_url"),
        expiry_source=ExpirySource(source) if source else None,
        status=ConnectionStatus(_text(raw, "status") or "active"),
        version=int(raw.get(b"version", b"0")),
        failures=int(_get(raw, "failures") or b"0"),
        **_attempts(raw),
        last_error=_error(raw),
        **floats,
    )


def integration_fields(integration: Integration, cipher: Cipher) -> Fields:
    return {
        "provider": integration.provider.value,
        "client_id": integration.client_id,
        "secret": cipher.seal(integration.client_secret, f"int:{integration.name}:secret"),
        "login_url": integration.login_url,
        "status": integration.status.value,
        "introspection": "1" if integration.introspection_available else "0",
        "last_error": json.dumps(integration.last_error.as_dict())
        if integration.last_error
        else "",
        "scopes": integration.scopes,
        "prompt": integration.prompt,
        "ask_domain": "1" if integration.ask_domain else "0",
    }


def integration_from_raw(name: str, raw: Raw, cipher: Opener) -> Integration:
    return Integration(
        name=name,
        provider=Provider(_text(raw, "provider")),
        client_id=_text(raw, "client_id") or "",
        client_secret=cipher.open(raw[b"secret"], f"int:{name}:secret"),
        login_url=_text(raw, "login_url") or "",
        status=IntegrationStatus(_text(raw, "status") or "active"),
        last_error=_error(raw),
        introspection_available=raw.get(b"introspection", b"1") == b"1",
        version=int(raw.get(b"version", b"0")),
        scopes=_text(raw, "scopes") or DEFAULT_SCOPES,
        prompt=_text(raw, "prompt") or DEFAULT_PROMPT,
        ask_domain=raw.get(b"ask_domain", b"0") == b"1",
    )
