"""Scenario 8, fuzzing end to end: arbitrary (status, content type, body) answers from
Salesforce's token and introspection endpoints, replayed by a real local HTTP server and read
through the production exchange (`AiohttpExchange`, what `Runtime.open` builds), through
`Refresher.check` with the real store on the real Redis. The parsers' own properties are in
tests/salesforce/test_responses.py; this checks what the whole cycle does with what they let
through.

Properties: no exception escapes the check; a forced refresh ends in the RIGHT class for the
answer it got (`_expected`, written from the rules, not from the code: a usable 200 refreshes,
a permanent OAuth code needs re-authorization, a configuration code misconfigures, anything
else is a transient failure), and the "refresh sent" mark is cleared only when the answer
proves the token was not consumed (a 4xx OAuth error body, a 429, a 503); the stored tokens
only ever change to the tokens of a 200 answer that carried them as JSON strings, in the
shape Salesforce tokens have (printable, no spaces, 8 to 4096 characters).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from config.settings import Settings
from tests.conftest import TEST_KEYS
from tests.faults.harness import HTTP_TIMEOUT, LEASE_TTL, Ledger
from worker.dev.embedded import EmbeddedRedis
from worker.domain.models import Connection, Integration, Provider
from worker.domain.outcomes import Outcome
from worker.engine import events
from worker.engine.runtime import Runtime
from worker.salesforce import hosts, signature
from worker.salesforce.client import AiohttpExchange
from worker.salesforce.responses import MAX_BODY_BYTES

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


# 1xx is not a final answer in HTTP: a real server cannot end an exchange with one.
statuses = st.sampled_from(
    [200, 200, 200, 201, 204, 302, 400, 401, 403, 429, 500, 502, 503, 504]
) | st.integers(200, 599)
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
oauth_errors = st.builds(
    lambda error, description: json.dumps(
        {"error": error, "error_description": description}
    ).encode(),
    st.sampled_from(
        [
            "invalid_grant",
            "inactive_user",
            "inactive_org",
            "invalid_token",
            "invalid_client",
            "invalid_client_id",
            "unsupported_grant_type",
            "rate_limit_exceeded",
            "unknown_error",
            "server_error",
        ]
    ),
    st.sampled_from(
        [
            "expired access/refresh token",
            "inactive user",
            "IP restricted or invalid login hours",
            "retry your request",
            "",
        ]
    ),
)
answers = st.tuples(statuses, content_types, bodies() | oauth_errors)


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


def _on_the_wire(answer: tuple[int, str, bytes]) -> tuple[int, str, bytes]:
    """The answer as HTTP can carry it: a 204 or 304 has no body (RFC 9110)."""
    status, content_type, _ = answer
    return (status, content_type, b"") if status in (204, 304) else answer


class _Replay(BaseHTTPRequestHandler):
    """Answers each POST with the answer queued for its path, byte for byte."""

    routes: dict[str, tuple[int, str, bytes]] = {}
    cut = False  # close the connection mid-body (Content-Length promises more)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        status, content_type, body = _on_the_wire(self.routes[self.path])
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if 300 <= status < 400:
            self.send_header("Location", "http://127.0.0.2:9/steal")
        cut = self.cut and self.path == hosts.TOKEN_PATH
        self.send_header("Content-Length", str(len(body) + (100 if cut else 0)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def replay() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def _one_check(
    settings_: Settings,
    login: str,
    token_answer: tuple[int, str, bytes],
    introspect_answer: tuple[int, str, bytes],
    force: bool,
    cut: bool,
) -> tuple[Connection, Connection, Any, list[dict[str, Any]]]:
    _Replay.routes = {hosts.TOKEN_PATH: token_answer, hosts.INTROSPECT_PATH: introspect_answer}
    _Replay.cut = cut
    rt = Runtime.open(settings_)
    assert isinstance(rt.client.exchange, AiohttpExchange)  # what production uses
    try:
        now = time.time()
        # Its own integration: a configuration verdict of one example must not pause the next.
        name = f"fuzz-{uuid.uuid4().hex[:8]}"
        await rt.store.save_integration(
            Integration(name, Provider.SALESFORCE, "3MVG9fuzz", SECRET, login)
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
        from worker.engine.events import read_events  # noqa: PLC0415

        emitted = [e for _, e in await read_events(rt.redis, rt.store.keys, limit=50)]
        return before, after, result, [e for e in emitted if e.get("connection_id") == before.id]
    finally:
        await rt.close()


_PERMANENT = {"inactive_user", "inactive_org", "invalid_token"}
_CONFIG = {
    "invalid_client_id",
    "invalid_client",
    "unauthorized_client",
    "oauth_flow_disabled",
    "app_blocked",
    "invalid_app_access",
    "unsupported_grant_type",
    "invalid_request",
    "invalid_scope",
    "access_denied",
}


def _oauth_error(content_type: str, body: bytes) -> tuple[str, str] | None:
    if "json" not in content_type.lower():
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return None
    description = data.get("error_description")
    return data["error"], description if isinstance(description, str) else ""


def _expected(answer: tuple[int, str, bytes], cut: bool) -> tuple[set[Outcome], bool | None]:
    """The outcomes a forced refresh may end in for this token answer, and whether the sent
    mark must be kept (None: either; the loser of a concurrent refresh decides by asking)."""
    status, content_type, body = _on_the_wire(answer)
    if cut or 300 <= status < 400 or len(body) > MAX_BODY_BYTES:
        return {Outcome.FAILED}, True  # no complete answer: Salesforce may have rotated
    if status == 200:
        offered, _ = _tokens_offered(answer)
        usable = "json" in content_type.lower() and offered
        if usable and TOKEN_SHAPE.match(next(iter(offered))):
            # Refreshed, or a bad signature (the token is then discarded, never used).
            return {Outcome.REFRESHED, Outcome.FAILED}, False
        return {Outcome.FAILED}, True  # a 200 we cannot use came after the rotation
    oauth = _oauth_error(content_type, body)
    # Only a 4xx OAuth error, a 429 or a 503 proves the token unconsumed (whatever the class).
    kept = not (status in (429, 503) or (400 <= status < 500 and oauth is not None))
    if oauth is not None:
        code, text = oauth[0].lower(), oauth[1].lower()
        if code == "invalid_grant" and "authorization code" in text:
            return {Outcome.FAILED}, None
        if code == "invalid_grant" and ("ip restricted" in text or "login hours" in text):
            return {Outcome.MISCONFIGURED}, None
        if code == "invalid_grant" or code in _PERMANENT:
            return {Outcome.REAUTH_REQUIRED}, kept
        if code in _CONFIG:
            return {Outcome.MISCONFIGURED}, None
    return {Outcome.FAILED}, kept


def _check_class(
    result: Any, after: Connection, token_answer: tuple[int, str, bytes], cut: bool
) -> None:
    outcomes, mark_kept = _expected(token_answer, cut)
    assert result.outcome in outcomes, (result, token_answer[:2], token_answer[2][:200])
    if mark_kept is not None:
        kept = after.refresh_started_at is not None
        assert kept is mark_kept, (result, token_answer[:2], token_answer[2][:200])
    if outcomes == {Outcome.REFRESHED, Outcome.FAILED} and result.outcome is Outcome.FAILED:
        # A usable 200 fails only its signature check; the tokens it carried are not used.
        assert result.error is not None and result.error["error"] == "signature_invalid"


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    token_answer=answers | valid_token_answers(SECRET),
    introspect_answer=answers | valid_introspections(),
    force=st.booleans(),
    cut=st.integers(0, 9).map(lambda n: n == 0),  # one in ten: closed mid-body
)
def test_no_answer_escapes_classification_or_plants_a_token(
    fuzz_settings: Settings,
    replay: str,
    token_answer: tuple[int, str, bytes],
    introspect_answer: tuple[int, str, bytes],
    force: bool,
    cut: bool,
) -> None:
    """Whatever Salesforce answers, the check ends in the outcome its class calls for, the
    sent mark goes only with an answer that proves the token unconsumed, and stored tokens
    change only to the token-shaped strings of a 200 answer."""
    before, after, result, emitted = asyncio.run(
        _one_check(fuzz_settings, replay, token_answer, introspect_answer, force, cut)
    )
    event(result.outcome.value + " " + str((result.error or {}).get("error")))
    if force:
        _check_class(result, after, token_answer, cut)
    else:
        assert result.outcome is not Outcome.ERROR, result
    offered_access, offered_refresh = _tokens_offered(token_answer)
    if cut:
        offered_access, offered_refresh = set(), set()
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
        assert hosts.instance_url_problem(after.instance_url, replay) is None, after.instance_url
    assert {e["event"] for e in emitted} <= KNOWN_EVENTS, emitted
    text = json.dumps(emitted) + json.dumps(result.as_dict())
    assert before.refresh_token not in text and SECRET not in text
