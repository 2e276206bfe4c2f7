"""Signed webhooks: the notification as JSON, POSTed to a URL the user registered.

The receiver proves the request came from us with ``X-Chinwag-Signature: sha256=<hex HMAC of
the raw body>``. The URL is user input, so the SSRF guard checks it before every request and
redirects are never followed (a redirect could point anywhere the guard refused).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from chinwag.push.base import DEFAULT_NETWORK, BaseSender, Network
from chinwag.push.endpoints import Allowance, EndpointClient, resolve_endpoint
from chinwag.push.errors import TransportError
from chinwag.push.model import DeviceTarget, Notification, Outcome, PayloadMode, Platform
from chinwag.push.outcome import (
    classify_transport,
    classify_webhook,
    parse_retry_after,
    refused_locally,
)
from chinwag.push.sealed import seal

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-chinwag-signature"
DELIVERY_HEADER = "x-chinwag-delivery"


def webhook_body(device: DeviceTarget, notification: Notification) -> bytes:
    """The JSON body. A minimal device's receiver gets the ids only; an encrypted one's also the
    full notification sealed with its key (``encrypted``), as the push platforms do."""
    payload: dict[str, Any] = {
        "chat_id": notification.chat_id,
        "message_id": notification.message_id,
    }
    if device.payload is PayloadMode.FULL:
        payload["title"] = notification.title
        payload["body"] = notification.body
        payload["sender"] = notification.sender_name
        payload["preview"] = notification.preview
    elif device.payload is PayloadMode.ENCRYPTED and device.encryption_key is not None:
        payload["encrypted"] = seal(device.encryption_key, notification)
    payload["delivery_id"] = device.delivery_id
    if notification.badge is not None:
        payload["badge"] = notification.badge
    return json.dumps(payload, ensure_ascii=False).encode()


@dataclass(frozen=True)
class WebhookSettings:
    """A webhook needs no credentials; ``secret`` (CHINWAG_WEBHOOK_SECRET) signs the body of
    devices that have no key of their own. None: those go unsigned."""

    secret: str | None = None


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender(BaseSender[WebhookSettings]):
    platform = Platform.WEBHOOK

    def __init__(self, *, settings: WebhookSettings, network: Network = DEFAULT_NETWORK) -> None:
        super().__init__(settings=settings, network=network)
        self._secret = settings.secret
        self._allowance = Allowance.parse(network.allow_private)
        self._client = EndpointClient(network)

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        body = webhook_body(device, notification)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            (DELIVERY_HEADER, device.delivery_id),
        ]
        # The device's own key when it has one (shown once to its owner); else the global one.
        secret = device.secret or self._secret
        if secret is not None:
            headers.append((SIGNATURE_HEADER, sign(secret, body)))
        endpoint = await resolve_endpoint(device.token, self._allowance)
        if isinstance(endpoint, str):
            # The detail (which address, does it resolve) is for operators only: shown to
            # users in last_error it would map the network behind chinwag.
            log.warning("webhook to device %s refused: %s", device.device_id, endpoint)
            return refused_locally("endpoint_refused")
        try:
            response = await self._client.post(endpoint, headers, body)
        except TransportError as error:
            log.info("webhook to device %s unreachable: %s", device.device_id, error.reason)
            return classify_transport(error, user_endpoint=True)
        retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
        return classify_webhook(response.status, retry_after)

    async def aclose(self) -> None:
        await self._client.aclose()
