"""The application server's VAPID key (RFC 8292): generated, loaded, and published.

A browser subscribes with the server's public key (``applicationServerKey``) and its push service
then accepts only pushes signed by the matching private key, so every web and worker process of
one deployment must use the same key. Where the key lives is decided in ``chinwag.bootstrap``:
the operator's PEM file (``CHINWAG_VAPID_PRIVATE_KEY``) or, by default, one generated here and
kept in the database.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chinwag.config import ConfigError, WebPushSettings


def generate_vapid_pem() -> bytes:
    """A new P-256 private key in unencrypted PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_vapid_key(pem: bytes, where: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 key in ``pem``; ``where`` names its origin in errors (never the key itself)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"VAPID key {where} is unusable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"VAPID key {where} must be a P-256 EC key")
    return key


def vapid_key_of(settings: WebPushSettings) -> ec.EllipticCurvePrivateKey:
    """The key the settings name: the operator's file, else the generated key's PEM."""
    if settings.vapid_private_key is not None:
        path = settings.vapid_private_key
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"VAPID key {str(path)!r} is unusable: {exc}") from None
        return load_vapid_key(pem, repr(str(path)))
    if settings.vapid_private_pem is None:
        raise ConfigError("no VAPID key: the generated key was not loaded from the database")
    return load_vapid_key(settings.vapid_private_pem, "(generated, in the database)")


def application_server_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as browsers want it: base64url (unpadded) of the uncompressed point."""
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
