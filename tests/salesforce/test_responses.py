"""worker/salesforce/responses.py: Salesforce's answers as typed results or classified errors."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.answers import IntrospectionResult, TokenResponse
from worker.errors import (
    ConfigurationError,
    PermanentError,
    RateLimitedError,
    SalesforceError,
    TransientError,
)
from worker.salesforce.responses import (
    decode_json_object,
    epoch_seconds,
    error_from_response,
    parse_introspection,
    parse_retry_after,
    parse_token_response,
)

JSON = "application/json;charset=UTF-8"
# Salesforce's own example of a refresh_token grant answer: no expires_in, issued_at in ms.
SALESFORCE_SAMPLE = (
    b'{"access_token":"00Dx...!AQ...","signature":"SSSb...=","scope":"id api refresh_token",'
    b'"instance_url":"https://yourInstance.salesforce.com/",'
    b'"id":"https://login.salesforce.com/id/00Dx.../005x...","token_type":"Bearer",'
    b'"issued_at":"1278448384422"}'
)


def token_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": "00Dxx0000001gPL!AQ-access", "token_type": "Bearer"}
    body.update(fields)
    return {key: value for key, value in body.items() if value is not None}


class TestEpochSeconds:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param(1_800_000_000, 1_800_000_000.0, id="seconds int"),
            pytest.param(1_800_000_000.5, 1_800_000_000.5, id="seconds float"),
            pytest.param("1800000000", 1_800_000_000.0, id="seconds string"),
            pytest.param(" 1800000000 ", 1_800_000_000.0, id="padded string"),
            pytest.param("1278448384422", 1_278_448_384.422, id="ms string"),
            pytest.param(1_800_000_000_000, 1_800_000_000.0, id="ms int"),
            pytest.param(1_800_000_000_000.0, 1_800_000_000.0, id="ms float"),
        ],
    )
    def test_seconds_and_milliseconds(self, value: Any, expected: float) -> None:
        """Seconds and milliseconds, as strings or numbers, come back as float seconds."""
        assert epoch_seconds(value) == pytest.approx(expected)

    @pytest.mark.parametrize(
        "value",
        [None, "", "   ", "yesterday", "12:00", [], {}, b"1800000000", object()],
    )
    def test_garbage_is_none(self, value: Any) -> None:
        """Anything that is not a number or a numeric string is None."""
        assert epoch_seconds(value) is None

    @pytest.mark.parametrize("value", [True, False])
    def test_bool_is_none(self, value: bool) -> None:
        """JSON true/false is not a timestamp, though bool is an int in Python."""
        assert epoch_seconds(value) is None

    @pytest.mark.parametrize(
        "value", [float("nan"), float("inf"), float("-inf"), "nan", "inf", "-Infinity", "1e400"]
    )
    def test_non_finite_is_none(self, value: Any) -> None:
        """NaN and infinities, as floats or strings, are None."""
        assert epoch_seconds(value) is None

    @pytest.mark.parametrize(
        "value",
        [0, -1, 100, 946_684_799, 32_503_680_001, 32_503_680_001_000, "-1800000000"],
        ids=["zero", "negative", "tiny", "before 2000", "after 3000", "ms after 3000", "neg str"],
    )
    def test_out_of_range_is_none(self, value: Any) -> None:
        """Timestamps before 2000 or after 3000 are garbage, not dates."""
        assert epoch_seconds(value) is None

    def test_integer_too_large_for_a_float_is_none(self) -> None:
        """An integer beyond float range (JSON allows it) is None, not an OverflowError."""
        assert epoch_seconds(10**400) is None


class TestParseTokenResponse:
    def test_salesforce_sample_without_expires_in(self) -> None:
        """Salesforce's documented sample parses: ms issued_at, no expires_in, no refresh_token."""
        response = parse_token_response(decode_json_object(SALESFORCE_SAMPLE, JSON, 200))
        assert response.issued_at == pytest.approx(1_278_448_384.422)
        assert replace(response, issued_at=None) == TokenResponse(
            access_token="00Dx...!AQ...",
            refresh_token=None,
            instance_url="https://yourInstance.salesforce.com/",
            identity_url="https://login.salesforce.com/id/00Dx.../005x...",
            issued_at=None,
            issued_at_raw="1278448384422",
            signature="SSSb...=",
            expires_in=None,
            scope="id api refresh_token",
        )

    def test_issued_at_ms_string_keeps_the_raw_text(self) -> None:
        """issued_at as a ms string becomes seconds, and its raw text is kept for the signature."""
        response = parse_token_response(token_body(issued_at="1800000000123"))
        assert response.issued_at == pytest.approx(1_800_000_000.123)
        assert response.issued_at_raw == "1800000000123"

    @pytest.mark.parametrize(
        "access_token",
        [None, "", "   ", "\t\n", "short", "has a space inside it", 12345678901, ["00D!x"]],
        ids=["missing", "empty", "spaces", "whitespace", "too short", "inner space", "int", "list"],
    )
    def test_unusable_access_token_is_transient(self, access_token: Any) -> None:
        """A token answer without a usable access_token is a TransientError, never stored."""
        with pytest.raises(TransientError) as caught:
            parse_token_response(token_body(access_token=access_token), http_status=200)
        assert caught.value.http_status == 200
        assert type(caught.value) is TransientError

    def test_missing_access_token_key_is_transient(self) -> None:
        """A body with no access_token key at all is a TransientError."""
        with pytest.raises(TransientError):
            parse_token_response({"token_type": "Bearer"})

    def test_rotated_refresh_token_is_returned(self) -> None:
        """With rotation on, the new refresh token is returned."""
        response = parse_token_response(token_body(refresh_token="5Aep861-rotated-token"))
        assert response.refresh_token == "5Aep861-rotated-token"

    def test_refresh_token_is_optional(self) -> None:
        """Without rotation there is no refresh token, and that is not an error."""
        assert parse_token_response(token_body()).refresh_token is None

    @pytest.mark.parametrize(
        ("expires_in", "expected"),
        [(3600, 3600.0), ("7200", 7200.0), (0, None), (-5, None), (True, None), ("soon", None)],
    )
    def test_expires_in_is_positive_seconds_or_none(self, expires_in: Any, expected: Any) -> None:
        """expires_in, when a provider sends it, is positive seconds; anything else is None."""
        assert parse_token_response(token_body(expires_in=expires_in)).expires_in == expected


class TestParseIntrospection:
    def test_inactive(self) -> None:
        """active: false is an inactive result with no expiry."""
        result = parse_introspection({"active": False, "exp": 1_800_000_000})
        assert result == IntrospectionResult(active=False)

    def test_active_with_exp_in_seconds(self) -> None:
        """active: true with exp and iat in seconds."""
        result = parse_introspection({"active": True, "exp": 1_800_003_600, "iat": 1_800_000_000})
        assert result == IntrospectionResult(active=True, exp=1_800_003_600.0, iat=1_800_000_000.0)

    def test_active_with_exp_in_milliseconds(self) -> None:
        """exp in milliseconds is read as seconds."""
        result = parse_introspection({"active": True, "exp": 1_800_003_600_000})
        assert result.exp == 1_800_003_600.0

    def test_active_with_garbage_exp(self) -> None:
        """An unreadable exp is None, not an error: the caller refreshes to be safe."""
        assert parse_introspection({"active": True, "exp": "soon"}).exp is None

    @pytest.mark.parametrize("body", [{}, {"active": "true"}, {"active": 1}, {"active": None}])
    def test_missing_or_non_boolean_active_is_transient(self, body: dict[str, Any]) -> None:
        """Without a boolean 'active' the answer is a TransientError."""
        with pytest.raises(TransientError):
            parse_introspection(body, http_status=200)


class TestDecodeJsonObject:
    def test_json_object(self) -> None:
        """A JSON object under a JSON content type (with charset) is returned as a dict."""
        assert decode_json_object(b'{"active": true}', JSON, 200) == {"active": True}

    @pytest.mark.parametrize(
        ("content_type", "named"),
        [("text/html; charset=UTF-8", "text/html"), ("text/plain", "text/plain"),
         ("", "no content type")],
    )
    def test_non_json_content_type_is_transient(self, content_type: str, named: str) -> None:
        """A non-JSON content type is a TransientError naming what came instead."""
        with pytest.raises(TransientError) as caught:
            decode_json_object(b'{"active": true}', content_type, 503)
        assert named in caught.value.error_description
        assert caught.value.http_status == 503

    @pytest.mark.parametrize("body", [b"", b"{", b"<html>", b"\xff\xfe\x00garbage"])
    def test_invalid_json_is_transient(self, body: bytes) -> None:
        """A body that is not JSON is a TransientError."""
        with pytest.raises(TransientError, match="not valid JSON"):
            decode_json_object(body, JSON, 200)

    @pytest.mark.parametrize("body", [b"[]", b'["access_token"]', b"null", b"42", b'"x"'])
    def test_non_object_json_is_transient(self, body: bytes) -> None:
        """JSON that is not an object (an array, a scalar) is a TransientError."""
        with pytest.raises(TransientError, match="not an object"):
            decode_json_object(body, JSON, 200)

    def test_deeply_nested_json_is_transient(self) -> None:
        """A pathologically nested body is a TransientError, not a RecursionError."""
        with pytest.raises(TransientError):
            decode_json_object(b"[" * 5000, JSON, 200)


def error_body(error: str, description: str | None = None) -> bytes:
    body = {"error": error}
    if description is not None:
        body["error_description"] = description
    return json.dumps(body).encode()


class TestErrorFromResponse:
    """One case per row of the token-endpoint error table (reference, section 5)."""

    @pytest.mark.parametrize(
        ("error", "description", "expected"),
        [
            pytest.param("invalid_grant", "expired access/refresh token", PermanentError,
                         id="expired access/refresh token"),
            pytest.param("invalid_grant", "authentication failure", PermanentError,
                         id="authentication failure"),
            pytest.param("invalid_grant", "inactive user", PermanentError, id="inactive user"),
            pytest.param("invalid_grant", "inactive organization", PermanentError,
                         id="inactive organization"),
            pytest.param("invalid_grant", "ip restricted", ConfigurationError,
                         id="ip restricted"),
            pytest.param("invalid_grant", "IP restricted or invalid login hours",
                         ConfigurationError, id="ip restricted or login hours"),
            pytest.param("invalid_grant", "expired authorization code", TransientError,
                         id="expired authorization code"),
            pytest.param("invalid_client_id", "client identifier invalid", ConfigurationError,
                         id="invalid_client_id"),
            pytest.param("invalid_client", "invalid client credentials", ConfigurationError,
                         id="invalid_client"),
            pytest.param("unsupported_grant_type", "grant type not supported",
                         ConfigurationError, id="unsupported_grant_type"),
            pytest.param("invalid_request", "missing parameter", ConfigurationError,
                         id="invalid_request"),
            pytest.param("rate_limit_exceeded", "number of logins exceeded", RateLimitedError,
                         id="rate_limit_exceeded"),
            pytest.param("unknown_error", "retry your request", TransientError,
                         id="unknown_error"),
            pytest.param("inactive_user", "user is inactive", PermanentError,
                         id="inactive_user code"),
            pytest.param("inactive_org", "org is locked, closed, or suspended", PermanentError,
                         id="inactive_org code"),
        ],
    )
    def test_table_row(self, error: str, description: str, expected: type) -> None:
        """Each documented error lands in its class, carrying Salesforce's own words."""
        result = error_from_response(400, error_body(error, description), JSON)
        assert type(result) is expected
        assert (result.error, result.error_description, result.http_status) == (
            error, description, 400,
        )

    @pytest.mark.parametrize(
        ("status", "body", "content_type", "proves"),
        [
            pytest.param(400, error_body("invalid_grant", "expired authorization code"), JSON,
                         True, id="400 invalid_grant"),
            pytest.param(401, error_body("invalid_client", "invalid client credentials"), JSON,
                         True, id="401 invalid_client"),
            pytest.param(400, error_body("rate_limit_exceeded", "logins exceeded"), JSON, True,
                         id="400 rate_limit_exceeded"),
            pytest.param(429, b"", "", True, id="429 without body"),
            pytest.param(503, b"<html>Maintenance</html>", "text/html", True,
                         id="503 maintenance page"),
            pytest.param(503, error_body("server_error", "down"), JSON, True, id="503 oauth"),
            pytest.param(500, error_body("unknown_error", "retry your request"), JSON, False,
                         id="500 unknown_error"),
            pytest.param(502, b"<html>Bad gateway</html>", "text/html", False, id="502 html"),
            pytest.param(504, b"", "", False, id="504 gateway timeout"),
            pytest.param(403, b"<html>blocked</html>", "text/html", False, id="403 waf page"),
            pytest.param(400, b'{"error": 1}', JSON, False, id="400 no oauth body"),
            pytest.param(302, b"", "", False, id="302"),
            pytest.param(201, b"{}", JSON, False, id="201"),
        ],
    )
    def test_only_a_refusal_proves_the_token_unconsumed(
        self, status: int, body: bytes, content_type: str, proves: bool
    ) -> None:
        """Only an OAuth error from the token endpoint (4xx) or a 429/503 turn-away proves
        that the refresh token was not consumed; anything else may come after a rotation."""
        assert error_from_response(status, body, content_type).proves_unconsumed is proves

    def test_errors_made_elsewhere_never_prove_anything(self) -> None:
        """A timeout or reset error (no answer at all) keeps the mark by default."""
        assert TransientError("timeout", "no complete answer").proves_unconsumed is False

    def test_class_does_not_depend_on_status(self) -> None:
        """The class follows error + description, not the HTTP status."""
        body = error_body("invalid_grant", "expired access/refresh token")
        assert type(error_from_response(401, body, JSON)) is PermanentError

    def test_503_html_page_is_transient(self) -> None:
        """A 503 maintenance page in HTML is transient, described as unexpected."""
        body = b"<html><body><h1>Service Unavailable</h1></body></html>"
        result = error_from_response(503, body, "text/html; charset=UTF-8")
        assert type(result) is TransientError
        assert result.error == "unexpected_response"
        assert "text/html" in result.error_description
        assert result.http_status == 503

    def test_json_without_error_field_is_transient(self) -> None:
        """A JSON error body without an 'error' string is transient and unexpected."""
        result = error_from_response(500, b'{"message": "boom"}', JSON)
        assert (type(result), result.error) == (TransientError, "unexpected_response")

    def test_retry_after_is_carried(self) -> None:
        """The Retry-After the caller parsed rides on the error."""
        result = error_from_response(503, b"", "text/plain", retry_after=120.0)
        assert result.retry_after == 120.0

    def test_long_fields_are_truncated(self) -> None:
        """A huge error or description is cut, so events stay small."""
        result = error_from_response(400, error_body("x" * 1000, "y" * 5000), JSON)
        assert (len(result.error), len(result.error_description)) == (200, 500)

    def test_deeply_nested_error_body_is_transient(self) -> None:
        """A pathologically nested error body is classified, not a RecursionError."""
        result = error_from_response(500, b"[" * 5000, JSON)
        assert isinstance(result, TransientError)


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            (None, None),
            ("120", 120.0),
            (" 30 ", 30.0),
            ("0", 0.0),
            ("1.5", 1.5),
            ("Wed, 21 Oct 2026 07:28:00 GMT", None),
            ("-5", None),
            ("nan", None),
            ("inf", None),
            ("", None),
            ("999999", 86400.0),
        ],
    )
    def test_delta_seconds_only(self, header: str | None, expected: float | None) -> None:
        """Delta-seconds are read and capped at a day; dates, negatives and garbage are None."""
        assert parse_retry_after(header) == expected


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)
FIELD_NAMES = st.sampled_from([
    "access_token", "refresh_token", "instance_url", "id", "issued_at", "signature",
    "expires_in", "scope", "error", "error_description", "active", "exp",
])
OBJECT_BODIES = st.dictionaries(FIELD_NAMES | st.text(max_size=8), JSON_VALUES, max_size=6).map(
    lambda data: json.dumps(data).encode()
)
BODIES = st.binary(max_size=300) | OBJECT_BODIES | JSON_VALUES.map(lambda v: json.dumps(v).encode())
CONTENT_TYPES = st.sampled_from(
    ["application/json", JSON, "text/html", "text/plain", ""]
) | st.text(max_size=30)
STATUSES = st.integers(min_value=100, max_value=599)


class TestHostileAnswers:
    @settings(max_examples=300)
    @given(body=BODIES, content_type=CONTENT_TYPES, status=STATUSES)
    def test_error_from_response_always_classifies(
        self, body: bytes, content_type: str, status: int
    ) -> None:
        """Any body, content type and status yields a SalesforceError subclass."""
        assert isinstance(error_from_response(status, body, content_type), SalesforceError)

    @settings(max_examples=300)
    @given(body=BODIES, content_type=CONTENT_TYPES, status=STATUSES)
    def test_token_parsing_yields_a_token_or_a_transient_error(
        self, body: bytes, content_type: str, status: int
    ) -> None:
        """Any answer parses to a TokenResponse with a real access_token, or TransientError."""
        try:
            response = parse_token_response(decode_json_object(body, content_type, status), status)
        except TransientError:
            return
        assert response.access_token.strip() == response.access_token != ""
