"""Connection.evolve: what dataclasses.replace would build, without running __init__."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from worker.domain.models import Connection, ConnectionStatus, LastError


def _conn() -> Connection:
    error = LastError("invalid_grant", "expired", 400, 1.0)
    return Connection(id="c", integration="acme", refresh_token="rt", last_error=error, failures=2)


def test_evolve_builds_what_replace_builds_and_leaves_the_original() -> None:
    conn = _conn()
    changes = {"status": ConnectionStatus.FAILING, "failures": 3, "access_token": "at"}
    evolved = conn.evolve(**changes)
    assert evolved == replace(conn, **changes)
    assert hash(evolved) == hash(replace(conn, **changes))
    assert type(evolved) is Connection
    assert conn.failures == 2 and conn.access_token is None  # the original is untouched
    for f in fields(Connection):
        assert getattr(evolved, f.name) == changes.get(f.name, getattr(conn, f.name))


def test_evolve_refuses_a_field_the_record_does_not_have() -> None:
    with pytest.raises(TypeError, match="expires_in"):
        _conn().evolve(expires_in=3600)


def test_an_evolved_record_stays_frozen() -> None:
    evolved = _conn().evolve(failures=0)
    with pytest.raises(AttributeError):
        evolved.failures = 1  # type: ignore[misc]


def test_healthy_clears_the_failure_bookkeeping() -> None:
    healthy = _conn().evolve(failing_since=5.0, attempts_today=3).healthy(9.0, expires_at=99.0)
    assert (healthy.status, healthy.failures, healthy.failing_since) == (
        ConnectionStatus.ACTIVE,
        0,
        None,
    )
    assert (healthy.attempts_today, healthy.last_check_at, healthy.expires_at) == (0, 9.0, 99.0)
    assert healthy.last_error == _conn().last_error
