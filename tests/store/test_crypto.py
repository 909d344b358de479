"""worker/store/crypto.py: AES-256-GCM at rest under rotatable keys."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import DecryptionError
from worker.store.crypto import Cipher, generate_key

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))
CONTEXT = "conn:c-1:refresh_token"
SECRET = "5Aep861TNHzAqJZ7fZrH0bP2YXr.rXbqWVB8wz_9lCW6Tw3Xk0DgGjKWaM1bXrYkQnJq"


def test_round_trip() -> None:
    """What is sealed opens to the same text under the same context."""
    cipher = Cipher((NEW_KEY,))
    assert cipher.open(cipher.seal(SECRET, CONTEXT), CONTEXT) == SECRET


@given(plaintext=st.text(max_size=300))
def test_round_trip_any_text(plaintext: str) -> None:
    """Any Unicode text survives a seal and open."""
    cipher = Cipher((NEW_KEY,))
    assert cipher.open(cipher.seal(plaintext, CONTEXT), CONTEXT) == plaintext


def test_ciphertext_never_contains_the_plaintext() -> None:
    """The sealed bytes do not contain the secret, nor do two seals of it look alike."""
    cipher = Cipher((NEW_KEY,))
    first, second = cipher.seal(SECRET, CONTEXT), cipher.seal(SECRET, CONTEXT)
    assert SECRET.encode() not in first
    assert SECRET[:8].encode() not in first
    assert first != second


def test_context_binding() -> None:
    """A value copied onto another record or field does not open there."""
    cipher = Cipher((NEW_KEY,))
    sealed = cipher.seal(SECRET, CONTEXT)
    with pytest.raises(DecryptionError, match="failed authentication"):
        cipher.open(sealed, "conn:c-2:refresh_token")
    with pytest.raises(DecryptionError):
        cipher.open(sealed, "conn:c-1:access_token")


def test_tampered_ciphertext_fails() -> None:
    """Flipping one bit of the ciphertext makes it unopenable."""
    cipher = Cipher((NEW_KEY,))
    sealed = bytearray(cipher.seal(SECRET, CONTEXT))
    sealed[20] ^= 0x01
    with pytest.raises(DecryptionError):
        cipher.open(bytes(sealed), CONTEXT)


@pytest.mark.parametrize("stored", [b"", b"plain-old-token", b"\x02" + b"\x00" * 40])
def test_unsealed_values_fail(stored: bytes) -> None:
    """Bytes that are not a sealed secret (too short, wrong version) raise DecryptionError."""
    with pytest.raises(DecryptionError, match="not a sealed secret"):
        Cipher((NEW_KEY,)).open(stored, CONTEXT)


class TestRotation:
    def test_old_key_second_still_opens(self) -> None:
        """After rotation the old key, listed second, still opens what it sealed."""
        sealed = Cipher((OLD_KEY,)).seal(SECRET, CONTEXT)
        assert Cipher((NEW_KEY, OLD_KEY)).open(sealed, CONTEXT) == SECRET

    def test_is_current_until_resealed(self) -> None:
        """A value sealed under the old key is not current until resealed with the new one."""
        rotated = Cipher((NEW_KEY, OLD_KEY))
        sealed = Cipher((OLD_KEY,)).seal(SECRET, CONTEXT)
        assert rotated.is_current(sealed) is False
        resealed = rotated.seal(rotated.open(sealed, CONTEXT), CONTEXT)
        assert rotated.is_current(resealed) is True
        assert Cipher((NEW_KEY,)).open(resealed, CONTEXT) == SECRET

    def test_first_key_seals(self) -> None:
        """New values are sealed under the first key, so the new key alone opens them."""
        sealed = Cipher((NEW_KEY, OLD_KEY)).seal(SECRET, CONTEXT)
        assert Cipher((NEW_KEY,)).open(sealed, CONTEXT) == SECRET
        with pytest.raises(DecryptionError):
            Cipher((OLD_KEY,)).open(sealed, CONTEXT)

    def test_unknown_key_id_names_no_key_material(self) -> None:
        """A value under a dropped key fails with advice, and no key bytes in the message."""
        sealed = Cipher((OLD_KEY,)).seal(SECRET, CONTEXT)
        with pytest.raises(DecryptionError, match="not among") as caught:
            Cipher((NEW_KEY,)).open(sealed, CONTEXT)
        message = str(caught.value)
        for key in (OLD_KEY, NEW_KEY):
            assert key.hex() not in message
            assert base64.urlsafe_b64encode(key).decode() not in message
            assert repr(key) not in message
        assert SECRET not in message


@given(plaintext=st.text(max_size=500))
def test_sealed_size_overhead_is_33_bytes(plaintext: str) -> None:
    """Version, key id, nonce and tag add exactly 33 bytes to the UTF-8 plaintext."""
    sealed = Cipher((NEW_KEY,)).seal(plaintext, CONTEXT)
    assert len(sealed) == len(plaintext.encode("utf-8")) + 33


def test_no_keys_is_refused() -> None:
    """A cipher needs at least one key."""
    with pytest.raises(ValueError, match="at least one"):
        Cipher(())


def test_generated_key_is_32_bytes_of_url_safe_base64() -> None:
    """generate_key() makes a Fernet-format key usable as an AES-256 key."""
    key = base64.urlsafe_b64decode(generate_key())
    assert len(key) == 32
    assert Cipher((key,)).open(Cipher((key,)).seal("x", CONTEXT), CONTEXT) == "x"
