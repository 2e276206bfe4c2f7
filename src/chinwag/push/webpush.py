"""Browsers over Web Push: RFC 8030 delivery, RFC 8291 aes128gcm encryption, RFC 8292 VAPID.

The device token is the browser's subscription (endpoint + the user agent's P-256 key and auth
secret). The endpoint is chosen by the browser vendor, i.e. by whoever registered the device, so
the SSRF guard checks it before every request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from chinwag.config import WebPushSettings
from chinwag.push.endpoints import (
    UNREACHABLE,
    Allowance,
    EndpointClient,
    EndpointUnavailable,
    resolve_endpoint,
)
from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind, Platform
from chinwag.push.outcome import classify_webpush, connection_failure, parse_retry_after
from chinwag.push.vapid import application_server_key, vapid_key_of

log = logging.getLogger(__name__)

# How long a push service keeps an undelivered message for an offline browser.
MESSAGE_TTL_SECONDS = 86400
# RFC 8292 caps a VAPID token at 24 h; we sign for 12 h and reuse each token for 1 h per origin.
VAPID_LIFETIME = 12 * 3600
VAPID_REUSE = 3600
# Push services accept 4096 bytes of encrypted body; aes128gcm adds an 86-byte header, a
# padding delimiter and a 16-byte tag to a single record.
MAX_PLAINTEXT = 4096 - 86 - 1 - 16
ELLIPSIS = "…"
# RFC 8030 limits Topic to 32 characters of the URL-safe base64 alphabet.
TOPIC_MAX = 32


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Subscription:
    endpoint: str
    p256dh: bytes
    auth: bytes

    @classmethod
    def parse(cls, token: str) -> Subscription | None:
        try:
            value = json.loads(token)
            keys = value["keys"]
            subscription = cls(
                endpoint=str(value["endpoint"]),
                p256dh=b64url_decode(str(keys["p256dh"])),
                auth=b64url_decode(str(keys["auth"])),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if len(subscription.auth) != 16:
            return None
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), subscription.p256dh)
        except ValueError:
            return None  # not a point on P-256: no key agreement is possible
        return subscription


def webpush_payload(notification: Notification) -> bytes:
    """The JSON the service worker receives, shortened (preview first) to fit one push message."""
    payload = _render(notification)
    if len(payload) <= MAX_PLAINTEXT:
        return payload
    if len(_render(notification.with_preview(ELLIPSIS))) > MAX_PLAINTEXT:
        # Even an empty preview does not fit: the title or sender name is huge. Cap both.
        notification = replace(
            notification,
            chat_title=_cut(notification.chat_title, 200),
            sender_name=_cut(notification.sender_name, 100),
        )
    low, high = 0, len(notification.preview)  # invariant: a prefix of `low` characters fits
    while low < high:
        middle = (low + high + 1) // 2
        candidate = notification.with_preview(_cut(notification.preview, middle))
        if len(_render(candidate)) <= MAX_PLAINTEXT:
            low = middle
        else:
            high = middle - 1
    return _render(notification.with_preview(_cut(notification.preview, low)))


def _render(notification: Notification) -> bytes:
    if notification.is_silent:
        # The service worker closes the notifications of read or deleted messages itself.
        silent: dict[str, Any] = {
            "type": notification.kind.value,
            "chat_id": notification.chat_id,
            "message_id": notification.message_id,
        }
        if notification.badge is not None:
            silent["badge"] = notification.badge
        return json.dumps(silent).encode()
    payload: dict[str, Any] = {
        "title": notification.title,
        "body": notification.body,
        "chat_id": notification.chat_id,
        "message_id": notification.message_id,
    }
    if notification.badge is not None:
        payload["badge"] = notification.badge
    return json.dumps(payload, ensure_ascii=False).encode()


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[:length].rstrip() + ELLIPSIS


def encrypt_for(subscription: Subscription, plaintext: bytes) -> bytes:
    """RFC 8291: a fresh sender key and salt per message; keyid carries the sender's key."""
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    encrypted: bytes = http_ece.encrypt(
        plaintext,
        salt=os.urandom(16),
        private_key=ephemeral,
        dh=subscription.p256dh,
        auth_secret=subscription.auth,
        version="aes128gcm",
    )
    return encrypted


def topic_for(chat_id: int) -> str:
    return f"chat-{chat_id}"[:TOPIC_MAX]


class Vapid:
    """The application server's identity: one P-256 key, one signed token per push service."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        self._key = key
        self.subject = subject
        self.public_key = application_server_key(key)
        self._tokens: dict[str, tuple[str, float]] = {}

    def authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._tokens.get(audience)
        if cached is None or now - cached[1] > VAPID_REUSE:
            claims = {"aud": audience, "exp": int(now) + VAPID_LIFETIME, "sub": self.subject}
            cached = (jwt.encode(claims, self._key, algorithm="ES256"), now)
            self._tokens[audience] = cached
        return f"vapid t={cached[0]}, k={self.public_key}"


class WebPushSender:
    platform = Platform.WEBPUSH

    def __init__(
        self,
        settings: WebPushSettings,
        ca_file: Path | None = None,
        allow_private: Sequence[str] = (),
        max_in_flight: int = 500,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.vapid = Vapid(vapid_key_of(settings), settings.vapid_subject)
        self._allowance = Allowance.parse(allow_private)
        self._client = EndpointClient(ca_file, timeout=timeout)
        self._in_flight = asyncio.Semaphore(max_in_flight)

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        subscription = Subscription.parse(device.token)
        if subscription is None:
            # It can never be delivered to; deactivating it is the only useful answer.
            return Outcome(OutcomeKind.TOKEN_DEAD, reason="invalid_subscription")
        async with self._in_flight:
            endpoint = await resolve_endpoint(subscription.endpoint, self._allowance)
            if isinstance(endpoint, str):
                # The detail (which address, does it resolve) is for operators only: shown to
                # users in last_error it would map the network behind chinwag.
                log.warning("web push to device %s refused: %s", device.device_id, endpoint)
                return Outcome(OutcomeKind.REJECTED, reason="endpoint_refused")
            body = encrypt_for(subscription, webpush_payload(notification))
            headers = [
                ("authorization", self.vapid.authorization(subscription.endpoint)),
                ("content-encoding", "aes128gcm"),
                ("content-type", "application/octet-stream"),
                ("content-length", str(len(body))),
                ("ttl", str(MESSAGE_TTL_SECONDS)),
                ("urgency", "normal" if notification.is_silent else "high"),
                ("topic", topic_for(notification.chat_id)),
            ]
            try:
                response = await self._client.post(endpoint, headers, body)
            except EndpointUnavailable as exc:
                log.info("web push to device %s unreachable: %s", device.device_id, exc.reason)
                return connection_failure(UNREACHABLE)
        retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
        return classify_webpush(response.status, retry_after)

    async def aclose(self) -> None:
        await self._client.aclose()
