"""Encryption at rest: AES-256-GCM under rotatable keys.

A sealed value is `b"\\x01" + key_id(4) + nonce(12) + ciphertext + tag(16)`: 33 bytes over the
plaintext, small enough that a connection hash stays in Redis's compact encoding. The key id
(first 4 bytes of SHA-256 of the key) tells which key opened it, so rotation knows what is left
to re-encrypt. The associated data binds a ciphertext to its record and field: a value copied
onto another connection does not decrypt.

Keys use Fernet's format (32 random bytes, URL-safe base64) so existing tooling can make them;
the 32 bytes are used whole as the AES-256 key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from worker.errors import DecryptionError

VERSION = b"\x01"
_HEADER = 1 + 4 + 12
SEALED_MIN = _HEADER + 16  # the shortest sealed value (an empty secret)


def generate_key() -> str:
    """A new key, printable and ready for TOKENWORKER_ENCRYPTION_KEYS."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


def check_sealed(sealed: bytes, context: str, held: frozenset[bytes]) -> bytes:
    """The key id of a sealed value, or DecryptionError when it is no sealed secret or was
    sealed under a key not `held`: all a reader can tell without decrypting (a tampered
    ciphertext passes; only `open` finds that)."""
    if len(sealed) < SEALED_MIN or sealed[:1] != VERSION:
        raise DecryptionError(f"{context}: stored value is not a sealed secret")
    if sealed[1:5] not in held:
        raise DecryptionError(
            f"{context}: sealed under key id {sealed[1:5].hex()}, which is not among "
            "TOKENWORKER_ENCRYPTION_KEYS (add the old key back after the new one)"
        )
    return sealed[1:5]


class Opener(Protocol):
    def open(self, sealed: bytes, context: str) -> str: ...


class HeaderCheck:
    """Stands in for a Cipher where a record is checked, not read: `open` raises what
    Cipher.open would for a value that is no sealed secret or under a key not held, and
    otherwise returns "" without decrypting anything."""

    def __init__(self, held: frozenset[bytes]) -> None:
        self.held = held

    def open(self, sealed: bytes, context: str) -> str:
        check_sealed(sealed, context, self.held)
        return ""


class Cipher:
    """Seals with the first key; opens with any of them."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._primary_id = key_id(keys[0])
        self._primary = AESGCM(keys[0])
        self._by_id = {key_id(key): AESGCM(key) for key in keys}

    def seal(self, plaintext: str, context: str) -> bytes:
        nonce = os.urandom(12)
        body = self._primary.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return VERSION + self._primary_id + nonce + body

    @property
    def key_ids(self) -> frozenset[bytes]:
        return frozenset(self._by_id)

    def open(self, sealed: bytes, context: str) -> str:
        aead = self._by_id[check_sealed(sealed, context, self.key_ids)]
        try:
            plain = aead.decrypt(sealed[5:_HEADER], sealed[_HEADER:], context.encode("utf-8"))
        except InvalidTag:
            raise DecryptionError(
                f"{context}: stored secret failed authentication (tampered or moved)"
            ) from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:  # its message would quote bytes of the secret
            raise DecryptionError(f"{context}: stored secret is not UTF-8 text") from None

    def is_current(self, sealed: bytes) -> bool:
        """True when the value is already sealed under the first key."""
        return sealed[1:5] == self._primary_id
