"""worker/salesforce/signature.py: base64(HMAC-SHA256(client_secret, id + issued_at))."""

from __future__ import annotations

import base64
import hashlib
import hmac

from worker.salesforce.signature import compute, is_valid

SECRET = "8F2D1C9A0B7E6D5C4B3A29180F7E6D5C"
IDENTITY = "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001Sv6eAAC"
ISSUED = "1800000000125"
EXPECTED = base64.b64encode(
    hmac.new(SECRET.encode(), (IDENTITY + ISSUED).encode(), hashlib.sha256).digest()
).decode()


def test_known_vector() -> None:
    """compute() is standard base64 of HMAC-SHA256(secret, id + issued_at)."""
    assert compute(SECRET, IDENTITY, ISSUED) == EXPECTED


def test_matching_signature_is_valid() -> None:
    """The signature Salesforce would send for these values verifies."""
    assert is_valid(SECRET, IDENTITY, ISSUED, EXPECTED)


def test_tampered_identity_url_fails() -> None:
    """Changing the identity URL breaks the signature."""
    assert not is_valid(SECRET, IDENTITY.replace("005xx", "005yy"), ISSUED, EXPECTED)


def test_tampered_issued_at_fails() -> None:
    """Changing issued_at (even to the same instant in seconds) breaks the signature."""
    assert not is_valid(SECRET, IDENTITY, "1800000000126", EXPECTED)
    assert not is_valid(SECRET, IDENTITY, "1800000000", EXPECTED)


def test_wrong_secret_fails() -> None:
    """A signature made with another client's secret fails."""
    assert not is_valid("another-secret", IDENTITY, ISSUED, EXPECTED)


def test_url_safe_encoding_fails() -> None:
    """Only standard base64 matches; a URL-safe rendering of the same MAC does not."""
    digest = hmac.new(SECRET.encode(), (IDENTITY + ISSUED).encode(), hashlib.sha256).digest()
    url_safe = base64.urlsafe_b64encode(digest).decode()
    assert url_safe != EXPECTED  # this vector contains '+' or '/'
    assert not is_valid(SECRET, IDENTITY, ISSUED, url_safe)


def test_missing_identity_url_fails() -> None:
    """Without an identity URL nothing can be verified: not valid."""
    assert not is_valid(SECRET, None, ISSUED, EXPECTED)


def test_missing_issued_at_fails() -> None:
    """Without issued_at nothing can be verified: not valid."""
    assert not is_valid(SECRET, IDENTITY, None, EXPECTED)


def test_non_ascii_signature_fails_without_raising() -> None:
    """A hostile signature with non-ASCII characters is simply invalid, not a TypeError."""
    assert not is_valid(SECRET, IDENTITY, ISSUED, "sïgnature")
