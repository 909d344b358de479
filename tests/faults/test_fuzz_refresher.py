"""Scenario 8, fuzzing end to end: arbitrary (status, content type, body) answers from
Salesforce's token and introspection endpoints, through `Refresher.check` with the real store
on the real Redis. The parsers' own properties are in tests/test_responses.py; this checks
what the whole cycle does with what they let through.

Properties: no exception escapes the check (every answer ends in an outcome), and the stored
tokens only ever change to the tokens of a 200 answer that carried them as JSON strings, in the
shape Salesforce tokens have (printable, no spaces, 8 to 4096 characters).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from config.settings import Settings
from tests.conftest import TEST_KEYS
from tests.faults.harness import HTTP_TIMEOUT, LEASE_TTL, Ledger
from worker import events
from worker.embedded import EmbeddedRedis
from worker.models import Connection, Integration, Provider
from worker.outcomes import Outcome
from worker.runtime import Runtime
from worker.salesforce import hosts, signature

pytestmark = pytest.mark.integration

LOGIN = "https://login.salesforce.com"
IDENTITY = f"{LOGIN}/id/00Dfuzz0000000000/005fuzz0000000000"
TOKEN_SHAPE = re.compile(r"^[\x21-\x7e]{8,4096}$")
KNOWN_EVENTS = {
    value for name, value in vars(events).items() if name.isupper() and "." in str(value)
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
tokenish = (
    st.from_regex(r"[\x21-\x7e]{8,60}", fullmatch=True)
    | st.text(max_size=60)
    | st.sampled_from(
        ["", "        ", "00D!AQ", "x" * 5000, "tab\there", "5Aep861\u00e9\u00e9\u00e9\u00e9"]
    )
    | json_values
)
epochs = st.one_of(
    st.integers(-(10**16), 10**16),
    st.integers(0, 10**16).map(str),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
token_objects = st.fixed_dictionaries(
    {},
    optional={
        "access_token": tokenish,
        "refresh_token": tokenish,
        "instance_url": st.sampled_from(
            [
                "https://acme.my.salesforce.com",
                "https://evil.example.com",
                "http://acme.my.salesforce.com",
                "javascript:alert(1)",
                "https://user:pw@acme.my.salesforce.com",
                "",
            ]
        )
        | st.text(max_size=30),
        "id": st.sampled_from([IDENTITY, ""]) | st.text(max_size=30),
        "issued_at": epochs,
        "signature": st.text(max_size=60),
        "expires_in": epochs,
        "scope": st.text(max_size=20),
        "token_type": st.sampled_from(["Bearer", ""]),
        "error": st.sampled_from(
            ["invalid_grant", "invalid_client", "rate_limit_exceeded", "server_error", ""]
        )
        | st.text(max_size=20),
        "error_description": st.text(max_size=60),
        "active": st.booleans() | json_values,
        "exp": epochs,
        "iat": epochs,
    },
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["object", "json", "bytes", "truncated", "html", "big", "deep"]))
    if kind == "object":
        return json.dumps(draw(token_objects)).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "truncated":
        text = json.dumps(draw(token_objects)).encode()
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "html":
        return b"<!DOCTYPE html><html><body><h1>Maintenance</h1></body></html>"
    if kind == "big":
        return b'{"access_token":"' + b"A" * draw(st.integers(60_000, 70_000)) + b'"}'
    if kind == "deep":
        depth = draw(st.integers(500, 5000))
        return b'{"a":' * depth + b"1" + b"}" * depth
    return draw(st.binary(max_size=200))


statuses = st.sampled_from(
    [200, 200, 200, 201, 204, 302, 400, 401, 403, 429, 500, 503]
) | st.integers(100, 599)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json;charset=UTF-8",
        "APPLICATION/JSON",
        "application/problem+json",
        "text/html;charset=UTF-8",
        "text/plain",
        "",
    ]
)
answers = st.tuples(statuses, content_types, bodies())


@st.composite
def valid_token_answers(draw: st.DrawFn, secret: str) -> tuple[int, str, bytes]:
    """A well-formed, correctly signed refresh answer, sometimes rotating the refresh token."""
    issued = str(int(time.time() * 1000))
    body = {
        "access_token": "00Dfuzz!AQ" + secrets.token_urlsafe(48),
        "instance_url": "https://acme.my.salesforce.com",
        "id": IDENTITY,
        "token_type": "Bearer",
        "issued_at": issued,
        "signature": signature.compute(secret, IDENTITY, issued),
    }
    if draw(st.booleans()):
        body["refresh_token"] = "5Aep861" + secrets.token_urlsafe(48)
    return 200, "application/json;charset=UTF-8", json.dumps(body).encode()


@st.composite
def valid_introspections(draw: st.DrawFn) -> tuple[int, str, bytes]:
    """What introspection says about a live or dead token."""
    now = int(time.time())
    active = draw(st.booleans())
    body = {"active": active, "exp": now + draw(st.integers(-600, 7200)), "iat": now - 60}
    return 200, "application/json", json.dumps(body if active else {"active": False}).encode()


SECRET = secrets.token_hex(16)


@pytest.fixture(scope="module")
def fuzz_settings(redis_server: EmbeddedRedis, ledger: Ledger) -> Settings:
    """Settings for runtimes on the suite's Redis under a prefix of this module."""
    prefix = f"z{uuid.uuid4().hex[:8]}:"
    ledger.prefixes.add(prefix)
    ledger.secret(SECRET)
    values = {
        "TOKENWORKER_REDIS_URL": redis_server.url,
        "TOKENWORKER_ENCRYPTION_KEYS": TEST_KEYS,
        "TOKENWORKER_KEY_PREFIX": prefix,
        "TOKENWORKER_HTTP_TIMEOUT": f"{HTTP_TIMEOUT:g}",
        "TOKENWORKER_LEASE_TTL": f"{LEASE_TTL:g}",
        "TOKENWORKER_REFRESH_MARGIN": "300",
        "TOKENWORKER_RETRY_BASE": "2",
        "TOKENWORKER_RETRY_MAX": "60",
    }
    return Settings.from_env(values)


def _tokens_offered(answer: tuple[int, str, bytes]) -> tuple[set[str], set[str]]:
    """The access and refresh tokens a token answer carried as JSON strings in a 200."""
    status, _, body = answer
    if status != 200:
        return set(), set()
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return set(), set()
    if not isinstance(data, dict):
        return set(), set()

    def pick(name: str) -> set[str]:
        value = data.get(name)
        return {value} if isinstance(value, str) else set()

    return pick("access_token"), pick("refresh_token")


async def _one_check(
    settings_: Settings,
    token_answer: tuple[int, str, bytes],
    introspect_answer: tuple[int, str, bytes],
    force: bool,
) -> tuple[Connection, Connection, Any, list[dict[str, Any]]]:
    routes = {hosts.TOKEN_PATH: token_answer, hosts.INTROSPECT_PATH: introspect_answer}

    def answer(request: httpx.Request) -> httpx.Response:
        status, content_type, body = routes[request.url.path]
        headers = {"content-type": content_type} if content_type else {}
        if 300 <= status < 400:
            headers["location"] = "http://127.0.0.2:9/steal"
        return httpx.Response(status, headers=headers, content=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer), follow_redirects=False)
    rt = Runtime.open(settings_, http=http)
    try:
        now = time.time()
        # Its own integration: a configuration verdict of one example must not pause the next.
        name = f"fuzz-{uuid.uuid4().hex[:8]}"
        await rt.store.save_integration(
            Integration(name, Provider.SALESFORCE, "3MVG9fuzz", SECRET, LOGIN)
        )
        before = Connection(
            id=f"f-{uuid.uuid4().hex[:12]}",
            integration=name,
            refresh_token="5Aep861" + secrets.token_urlsafe(48),
            access_token="00Dfuzz!AQ" + secrets.token_urlsafe(48),
            instance_url="https://acme.my.salesforce.com",
            issued_at=now - 3000,
            expires_at=now + 600,
            last_refresh_at=now - 3000,
        )
        before = await rt.store.save_connection(before, now)
        result = await rt.refresher.check(before.id, force=force)
        after = await rt.store.get_connection(before.id)
        assert after is not None
        from worker.events import read_events  # noqa: PLC0415

        emitted = [e for _, e in await read_events(rt.redis, rt.store.keys, limit=50)]
        return before, after, result, [e for e in emitted if e.get("connection_id") == before.id]
    finally:
        await rt.close()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    token_answer=answers | valid_token_answers(SECRET),
    introspect_answer=answers | valid_introspections(),
    force=st.booleans(),
)
def test_no_answer_escapes_classification_or_plants_a_token(
    fuzz_settings: Settings,
    token_answer: tuple[int, str, bytes],
    introspect_answer: tuple[int, str, bytes],
    force: bool,
) -> None:
    """Whatever Salesforce answers, the check ends in an outcome, and stored tokens change
    only to the token-shaped strings of a 200 answer."""
    before, after, result, emitted = asyncio.run(
        _one_check(fuzz_settings, token_answer, introspect_answer, force)
    )
    assert isinstance(result.outcome, Outcome)
    event(result.outcome.value + " " + str((result.error or {}).get("error")))
    offered_access, offered_refresh = _tokens_offered(token_answer)
    assert after.access_token in {before.access_token} | offered_access
    assert after.refresh_token in {before.refresh_token} | offered_refresh
    for value, was in (
        (after.access_token, before.access_token),
        (after.refresh_token, before.refresh_token),
    ):
        if value != was:
            assert value is not None and TOKEN_SHAPE.match(value), repr(value)[:80]
    if after.instance_url != before.instance_url:
        assert after.instance_url is not None
        assert hosts.instance_url_problem(after.instance_url, LOGIN) is None, after.instance_url
    assert {e["event"] for e in emitted} <= KNOWN_EVENTS, emitted
    text = json.dumps(emitted) + json.dumps(result.as_dict())
    assert before.refresh_token not in text and SECRET not in text
