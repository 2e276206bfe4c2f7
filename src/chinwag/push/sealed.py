"""Encrypted notifications: the full notification sealed with the device's own key.

A device registered with ``"payload": "encrypted"`` gave us 32 random bytes (base64). The
provider then sees a generic alert and one field, ``encrypted``:

    base64url(nonce ‖ ciphertext ‖ tag)   (no padding; nonce 12 random bytes, tag 16 bytes)

AES-256-GCM, no associated data, over the UTF-8 JSON of the full notification
(``{"title", "body", "chat_id", "message_id"}``). ``open_sealed`` is the reference decryptor:
the tests open every sealed field with it, and docs/private-notifications.md shows the same
steps in Swift and Kotlin.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chinwag.push.model import Notification, parse_key

NONCE_BYTES = 12
TAG_BYTES = 16


class SealedError(ValueError):
    """A sealed field that cannot be opened: wrong key, altered, or not a sealed field."""


def sealed_document(notification: Notification) -> dict[str, Any]:
    """What an encrypted device decrypts: the notification as a full device would get it."""
    return {
        "title": notification.title,
        "body": notification.body,
        "chat_id": notification.chat_id,
        "message_id": notification.message_id,
    }


def seal(key: bytes, notification: Notification) -> str:
    """The ``encrypted`` field for ``notification``: a fresh random nonce every time."""
    plaintext = json.dumps(
        sealed_document(notification), ensure_ascii=False, separators=(",", ":")
    ).encode()
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + AESGCM(key).encrypt(nonce, plaintext, None)
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def open_sealed(key_b64: str, field: str) -> dict[str, Any]:
    """The reference decryptor: the notification a device recovers from its ``encrypted`` field.

    ``key_b64`` is the key as the device registered it. Raises ``SealedError`` when the field
    was not sealed with that key or was altered on the way (GCM authenticates it).
    """
    key = parse_key(key_b64)
    try:
        raw = base64.urlsafe_b64decode(field + "=" * (-len(field) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SealedError("not base64url") from exc
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise SealedError("too short to be sealed")
    nonce, ciphertext = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, None)
    except InvalidTag as exc:
        raise SealedError("the tag does not verify: wrong key or altered") from exc
    document = json.loads(plaintext)
    if not isinstance(document, dict):
        raise SealedError("not a notification")
    return document
