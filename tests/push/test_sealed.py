"""Sealing for encrypted devices (push/sealed.py) and its reference decryptor."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chinwag.push.model import Notification, parse_key
from chinwag.push.sealed import NONCE_BYTES, TAG_BYTES, SealedError, open_sealed, seal

NOTE = Notification(
    chat_id=7, message_id=42, chat_title="Climbing", sender_name="Ann", preview="Rope? ☃"
)
RAW_KEY = os.urandom(32)
KEY = base64.b64encode(RAW_KEY).decode()
FULL = {"title": "Climbing", "body": "Ann: Rope? ☃", "chat_id": 7, "message_id": 42}


def test_the_reference_decryptor_opens_a_sealed_notification() -> None:
    """open_sealed(key, seal(key, n)) is the full notification: title, body and ids."""
    assert open_sealed(KEY, seal(RAW_KEY, NOTE)) == FULL


def test_the_documented_layout_opens_without_chinwag() -> None:
    """base64url without padding of nonce (12) ‖ ciphertext ‖ tag (16), AES-256-GCM, no
    associated data, over UTF-8 JSON: what the Swift and Kotlin snippets do."""
    field = seal(RAW_KEY, NOTE)
    assert "=" not in field and "+" not in field and "/" not in field
    raw = base64.urlsafe_b64decode(field + "=" * (-len(field) % 4))
    nonce, rest = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
    plaintext = AESGCM(RAW_KEY).decrypt(nonce, rest, None)
    assert len(rest) == len(plaintext) + TAG_BYTES
    assert json.loads(plaintext.decode("utf-8")) == FULL


def test_every_seal_uses_a_fresh_nonce() -> None:
    """Sealing the same notification twice gives different fields (nonces never repeat)."""
    fields = {seal(RAW_KEY, NOTE) for _ in range(50)}
    assert len(fields) == 50
    assert len({f[:16] for f in fields}) == 50


def test_a_wrong_key_or_an_altered_field_does_not_open() -> None:
    """GCM authenticates: another key, one flipped byte or a truncated field is a SealedError."""
    field = seal(RAW_KEY, NOTE)
    other = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(SealedError):
        open_sealed(other, field)
    raw = bytearray(base64.urlsafe_b64decode(field + "=" * (-len(field) % 4)))
    raw[20] ^= 1
    with pytest.raises(SealedError):
        open_sealed(KEY, base64.urlsafe_b64encode(bytes(raw)).decode())
    with pytest.raises(SealedError):
        open_sealed(KEY, field[:30])


def test_keys_are_32_bytes_in_either_base64_alphabet() -> None:
    """Standard, URL-safe and unpadded base64 of 32 bytes parse; anything else is a ValueError
    whose message does not repeat the key."""
    assert parse_key(KEY) == RAW_KEY
    assert parse_key(base64.urlsafe_b64encode(RAW_KEY).decode().rstrip("=")) == RAW_KEY
    for bad in (base64.b64encode(RAW_KEY[:31]).decode(), KEY + "AAAA", "é" * 44, "!!!!"):
        with pytest.raises(ValueError) as raised:
            parse_key(bad)
        assert bad not in str(raised.value)
