"""Apple Push Notification service: the HTTP/2 provider API with token (JWT) authentication.

One ``ApnsSender`` per app (per ``ApnsSettings``). It keeps a few HTTP/2 connections open and
multiplexes every notification over them as streams, as many at once as its caller starts (the
registry bounds them per provider).

Provider tokens: Apple rejects a JWT older than an hour and answers TooManyProviderTokenUpdates
to a provider that changes it more often than every 20 minutes, so one JWT per signing key is
shared by every sender in the process and replaced after 40 minutes. An ExpiredProviderToken
answer forces a replacement and one immediate re-send, but only when the JWT in use is at least
20 minutes old; a younger JWT called expired means the clock or the key is wrong, and the answer
stands as MISCONFIGURED (see ``chinwag.push.outcome``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chinwag.config import ApnsSettings
from chinwag.push.base import DEFAULT_NETWORK, BaseSender, Network, provider_ssl_context
from chinwag.push.errors import TransportError
from chinwag.push.h2pool import H2Pool, H2Response, PreparedHeaders
from chinwag.push.model import (
    GENERIC_ALERT,
    DeviceTarget,
    Notification,
    Outcome,
    PayloadMode,
    Platform,
    chat_thread,
    collapse_id,
)
from chinwag.push.outcome import (
    classify_apns,
    classify_transport,
    parse_retry_after,
    refused_locally,
)
from chinwag.push.payload import fit_payload
from chinwag.push.sealed import seal

MAX_PAYLOAD_BYTES = 4096
TOKEN_REFRESH_AFTER = 40 * 60.0
TOKEN_MIN_LIFETIME = 20 * 60.0
EXPIRATION_SECONDS = 24 * 3600
# Device tokens are 32 bytes today; Apple reserves the right to make them longer.
_DEVICE_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")


# --- provider tokens ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderToken:
    value: str
    issued_at: float


@dataclass(frozen=True)
class SigningKey:
    """An APNs .p8 key with the ids that go into its JWTs."""

    key_id: str
    team_id: str
    private_key: ec.EllipticCurvePrivateKey
    # Which key signs: two .p8 files under one key id (only ever in tests) never share a JWT.
    fingerprint: str

    @classmethod
    def load(cls, settings: ApnsSettings) -> SigningKey:
        """Read the .p8 file Apple issues (PKCS#8 PEM, P-256). Raises OSError / ValueError."""
        key = serialization.load_pem_private_key(settings.key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError(f"{settings.key_file} is not an APNs .p8 key (P-256 EC private key)")
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fingerprint = hashlib.sha256(public).hexdigest()[:16]
        return cls(settings.key_id, settings.team_id, key, fingerprint)

    @property
    def slot(self) -> tuple[str, str, str]:
        return (self.key_id, self.team_id, self.fingerprint)


class ProviderTokens:
    """The process's provider JWTs, one per (key id, team id), shared by every sender."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # workers may run several event loops in threads
        self._tokens: dict[tuple[str, str, str], ProviderToken] = {}
        self.issued = 0

    def current(self, key: SigningKey) -> ProviderToken:
        token = self._tokens.get(key.slot)
        if token is not None and self._fresh(token):
            return token
        with self._lock:
            token = self._tokens.get(key.slot)
            if token is None or not self._fresh(token):
                token = self._issue(key)
                self._tokens[key.slot] = token
            return token

    def expire(self, key: SigningKey, rejected: ProviderToken) -> bool:
        """Apple called ``rejected`` expired. True when a different JWT is now available."""
        with self._lock:
            token = self._tokens.get(key.slot)
            if token is not None and token.value != rejected.value:
                return True  # another request already replaced it
            if self._clock() - rejected.issued_at < TOKEN_MIN_LIFETIME:
                return False
            self._tokens.pop(key.slot, None)
            return True

    def _fresh(self, token: ProviderToken) -> bool:
        age = self._clock() - token.issued_at
        # A JWT from the future (the wall clock went back) would be refused by Apple.
        return -60 <= age < TOKEN_REFRESH_AFTER

    def _issue(self, key: SigningKey) -> ProviderToken:
        now = self._clock()
        value = jwt.encode(
            {"iss": key.team_id, "iat": int(now)},
            key.private_key,
            algorithm="ES256",
            headers={"kid": key.key_id},
        )
        self.issued += 1
        return ProviderToken(value, now)


PROVIDER_TOKENS = ProviderTokens()


# --- payload ---------------------------------------------------------------------------------


def apns_payload(device: DeviceTarget, notification: Notification) -> bytes:
    """The JSON payload, at most 4096 bytes: the preview is shortened (with "…") to fit, before
    it is sealed for an encrypted device."""
    if device.payload is PayloadMode.ENCRYPTED and device.encryption_key is not None:
        # Sealed with a fresh nonce for each device: never shared.
        return fit_payload(notification, lambda fitted: _render(device, fitted), MAX_PAYLOAD_BYTES)
    return _shared_payload(device.payload, notification)


# The devices of one fan-out share few notifications (one per message, kind and badge) and a
# full or minimal payload depends on nothing else: each is rendered once, not once per device
# (json.dumps was 8% of the worker's event loop at 0 ms provider latency, bench.stages).
@functools.lru_cache(maxsize=256)
def _shared_payload(mode: PayloadMode, notification: Notification) -> bytes:
    unsealed = DeviceTarget(0, Platform.APNS, "", "", payload=mode)
    return fit_payload(notification, lambda fitted: _render(unsealed, fitted), MAX_PAYLOAD_BYTES)


def _render(device: DeviceTarget, notification: Notification) -> bytes:
    if notification.is_silent:
        return _render_silent(notification)
    aps: dict[str, Any] = {"sound": "default", "thread-id": chat_thread(notification)}
    document: dict[str, Any] = {"aps": aps}
    if device.payload is PayloadMode.FULL:
        aps["alert"] = {"title": notification.title, "body": notification.body}
    else:
        aps["alert"] = {"body": GENERIC_ALERT}
    if device.payload is PayloadMode.ENCRYPTED and device.encryption_key is not None:
        # The app's Notification Service Extension decrypts and replaces the generic text.
        aps["mutable-content"] = 1
        document["encrypted"] = seal(device.encryption_key, notification)
    if notification.badge is not None:
        aps["badge"] = notification.badge
    if notification.mentioned:
        aps["interruption-level"] = "time-sensitive"
    document["chat_id"] = notification.chat_id
    document["message_id"] = notification.message_id
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _render_silent(notification: Notification) -> bytes:
    """A background push: the app updates its badge and removes read or deleted notifications
    without alerting the user. It carries ids only, whatever the device's payload mode."""
    aps: dict[str, Any] = {"content-available": 1}
    if notification.badge is not None:
        aps["badge"] = notification.badge
    document = {
        "aps": aps,
        "type": notification.kind.value,
        "chat_id": notification.chat_id,
        "message_id": notification.message_id,
    }
    return json.dumps(document, separators=(",", ":")).encode()


# --- the sender ------------------------------------------------------------------------------


class ApnsSender(BaseSender[ApnsSettings]):
    """Sends to one app's devices (one APNs topic) over long-lived HTTP/2 connections.

    ``tokens`` is the process's JWT cache unless a test brings its own (with its own clock).
    """

    platform = Platform.APNS

    def __init__(
        self,
        *,
        settings: ApnsSettings,
        network: Network = DEFAULT_NETWORK,
        tokens: ProviderTokens | None = None,
    ) -> None:
        super().__init__(settings=settings, network=network)
        self._key = SigningKey.load(settings)
        self._tokens = tokens if tokens is not None else PROVIDER_TOKENS
        context = provider_ssl_context(network.ca_file)
        context.set_alpn_protocols(["h2"])
        self._pool = H2Pool(
            settings.url,
            context,
            max_connections=network.max_connections,
            connect_timeout=network.timeout,
        )
        # The headers every notification repeats, per JWT: {(JWT, silent): prepared}.
        self._prepared: dict[tuple[str, bool], PreparedHeaders] = {}

    @property
    def connections_opened(self) -> int:
        return self._pool.connections_opened

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        if not _DEVICE_TOKEN.fullmatch(device.token):
            # Never put a malformed token into a URL path; Apple would say the same.
            return refused_locally("BadDeviceToken")
        payload = apns_payload(device, notification)
        token = self._tokens.current(self._key)
        outcome = await self._post(device, notification, payload, token)
        if outcome.reason == "ExpiredProviderToken" and self._tokens.expire(self._key, token):
            token = self._tokens.current(self._key)
            outcome = await self._post(device, notification, payload, token)
        return outcome

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def _post(
        self,
        device: DeviceTarget,
        notification: Notification,
        payload: bytes,
        token: ProviderToken,
    ) -> Outcome:
        headers = [
            ("apns-expiration", str(int(time.time()) + EXPIRATION_SECONDS)),
            # A re-sent alert replaces its first copy; a newer clear replaces an older one.
            ("apns-collapse-id", collapse_id(notification)),
        ]
        try:
            response = await self._pool.send(
                self._prepared_headers(token, notification.is_silent),
                f"/3/device/{device.token.lower()}",
                payload,
                time_limit=self.timeout,
                headers=headers,
                unindexed=[("apns-id", device.delivery_id)],
            )
        except TransportError as error:
            return classify_transport(error)
        return _outcome_of(response)

    def _prepared_headers(self, token: ProviderToken, silent: bool) -> PreparedHeaders:
        prepared = self._prepared.get((token.value, silent))
        if prepared is None:
            if any(jwt != token.value for jwt, _ in self._prepared):
                self._prepared.clear()  # a new JWT: the old one's headers are never sent again
            prepared = self._pool.prepare(
                "POST",
                [
                    ("authorization", f"bearer {token.value}"),
                    ("apns-topic", self.settings.topic),
                    # Apple requires background pushes to be sent with priority 5.
                    ("apns-push-type", "background" if silent else "alert"),
                    ("apns-priority", "5" if silent else "10"),
                ],
            )
            self._prepared[(token.value, silent)] = prepared
        return prepared


def _outcome_of(response: H2Response) -> Outcome:
    if response.status == 200:
        return classify_apns(200, None, None)
    reason: str | None = None
    try:
        document = json.loads(response.body) if response.body else None
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("reason"), str):
        reason = document["reason"]
    retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
    return classify_apns(response.status, reason, retry_after)
