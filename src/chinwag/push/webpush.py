"""Browsers over Web Push: RFC 8030 delivery, RFC 8291 aes128gcm encryption, RFC 8292 VAPID.

The device token is the browser's subscription (endpoint + the user agent's P-256 key and auth
secret). The endpoint is chosen by the browser vendor, i.e. by whoever registered the device, so
the SSRF guard checks it before every request.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from chinwag.config import WebPushSettings
from chinwag.push.base import DEFAULT_NETWORK, BaseSender, Network
from chinwag.push.endpoints import Allowance, EndpointClient, resolve_endpoint
from chinwag.push.errors import TransportError
from chinwag.push.model import (
    GENERIC_ALERT,
    DeviceTarget,
    Notification,
    Outcome,
    PayloadMode,
    Platform,
    chat_thread,
)
from chinwag.push.outcome import (
    classify_transport,
    classify_webpush,
    parse_retry_after,
    refused_locally,
)
from chinwag.push.payload import fit_payload
from chinwag.push.sealed import seal
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
# RFC 8030 limits Topic to 32 characters of the URL-safe base64 alphabet.
TOPIC_MAX = 32


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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


def webpush_payload(device: DeviceTarget, notification: Notification) -> bytes:
    """The JSON the service worker receives, shortened (preview first, before sealing) to fit
    one push message."""
    return fit_payload(notification, lambda fitted: _render(device, fitted), MAX_PLAINTEXT)


def _render(device: DeviceTarget, notification: Notification) -> bytes:
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
    payload: dict[str, Any]
    if device.payload is PayloadMode.FULL:
        payload = {"title": notification.title, "body": notification.body}
    else:
        payload = {"body": GENERIC_ALERT}
    if device.payload is PayloadMode.ENCRYPTED and device.encryption_key is not None:
        payload["encrypted"] = seal(device.encryption_key, notification)
    payload["chat_id"] = notification.chat_id
    payload["message_id"] = notification.message_id
    # The service worker's showNotification tag: a chat's notifications replace each other.
    payload["tag"] = chat_thread(notification)
    if notification.badge is not None:
        payload["badge"] = notification.badge
    return json.dumps(payload, ensure_ascii=False).encode()


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


class WebPushSender(BaseSender[WebPushSettings]):
    platform = Platform.WEBPUSH

    def __init__(self, *, settings: WebPushSettings, network: Network = DEFAULT_NETWORK) -> None:
        super().__init__(settings=settings, network=network)
        self.vapid = Vapid(vapid_key_of(settings), settings.vapid_subject)
        self._allowance = Allowance.parse(network.allow_private)
        self._client = EndpointClient(network)

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        subscription = Subscription.parse(device.token)
        if subscription is None:
            # It can never be delivered to; deactivating it is the only useful answer.
            return refused_locally("invalid_subscription")
        endpoint = await resolve_endpoint(subscription.endpoint, self._allowance)
        if isinstance(endpoint, str):
            # The detail (which address, does it resolve) is for operators only: shown to
            # users in last_error it would map the network behind chinwag.
            log.warning("web push to device %s refused: %s", device.device_id, endpoint)
            return refused_locally("endpoint_refused")
        body = encrypt_for(subscription, webpush_payload(device, notification))
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
        except TransportError as error:
            log.info("web push to device %s unreachable: %s", device.device_id, error.reason)
            return classify_transport(error, user_endpoint=True)
        retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
        return classify_webpush(response.status, retry_after)

    async def aclose(self) -> None:
        await self._client.aclose()
