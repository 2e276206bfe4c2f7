"""Android (and any FCM client) over FCM HTTP v1 with a service-account OAuth2 grant.

The legacy FCM API is gone (2024); v1 needs a short-lived OAuth2 access token obtained with a
JWT-bearer grant signed by the service account's RSA key. The token is cached until five minutes
before it expires and refreshed by one caller at a time, so a burst of sends never stampedes the
token endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chinwag.config import ConfigError, FcmSettings
from chinwag.push.base import DEFAULT_NETWORK, BaseSender, Network, provider_ssl_context
from chinwag.push.errors import TransportError, transport_error
from chinwag.push.h2pool import H2Pool, H2Response
from chinwag.push.model import (
    GENERIC_ALERT,
    DeviceTarget,
    Notification,
    NotificationKind,
    Outcome,
    OutcomeKind,
    PayloadMode,
    Platform,
    chat_thread,
    collapse_id,
)
from chinwag.push.outcome import (
    OAUTH_BAD_RESPONSE,
    classify_fcm,
    classify_oauth,
    classify_oauth_transport,
    classify_transport,
    parse_retry_after,
)
from chinwag.push.payload import fit_payload
from chinwag.push.sealed import seal

log = logging.getLogger(__name__)

MESSAGING_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Refresh this long before the access token expires, so no request carries a token that dies
# in flight.
TOKEN_REFRESH_MARGIN = 300.0
# After a refused token grant, answer from memory for this long instead of asking again.
GRANT_REFUSED_HOLD = 60.0
GRANT_RETRY_HOLD = 2.0
# FCM refuses a message whose notification and data exceed 4096 bytes.
MAX_PAYLOAD_BYTES = 4096


@dataclass(frozen=True)
class ServiceAccount:
    project_id: str
    client_email: str
    private_key: str
    token_uri: str

    @classmethod
    def load(cls, path: Path) -> ServiceAccount:
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"FCM credentials {str(path)!r} cannot be read: {exc}") from None
        except ValueError:
            raise ConfigError(f"FCM credentials {str(path)!r} are not JSON") from None
        fields = ("project_id", "client_email", "private_key", "token_uri")
        if not isinstance(values, dict):
            raise ConfigError(f"FCM credentials {str(path)!r} are not a JSON object")
        missing = [name for name in fields if not isinstance(values.get(name), str)]
        if missing:
            raise ConfigError(f"FCM credentials {str(path)!r} lack {missing}")
        account = cls(**{name: values[name] for name in fields})
        try:
            account.signing_key()
        except (ValueError, TypeError):
            raise ConfigError(
                f"FCM credentials {str(path)!r}: private_key is not an RSA key"
            ) from None
        return account

    def signing_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.private_key.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA key")
        return key


class _GrantFailed(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def fcm_message(device: DeviceTarget, notification: Notification) -> dict[str, Any]:
    """The v1 request for one device, as ``fcm_body`` sends it."""
    document: dict[str, Any] = json.loads(fcm_body(device, notification))
    return document


def fcm_body(device: DeviceTarget, notification: Notification) -> bytes:
    """The JSON request body. FCM refuses more than 4096 bytes of notification and data; the
    whole request is held to that (the token and options count too: a few hundred bytes on the
    safe side), the preview shortened first, before it is sealed for an encrypted device."""
    if notification.is_silent:
        return _encode(device, _silent_parts(notification))
    return fit_payload(
        notification,
        lambda fitted: _encode(device, _alert_parts(device, fitted)),
        MAX_PAYLOAD_BYTES,
    )


def _encode(device: DeviceTarget, parts: dict[str, Any]) -> bytes:
    message = {"message": {"token": device.token, **parts}}
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def _ids(notification: Notification) -> dict[str, str]:
    # FCM requires every ``data`` value to be a string.
    data = {"chat_id": str(notification.chat_id), "message_id": str(notification.message_id)}
    if notification.badge is not None:
        data["badge"] = str(notification.badge)
    return data


def _silent_parts(notification: Notification) -> dict[str, Any]:
    """A data-only message: the app updates its badge and cancels the read or deleted message's
    notification itself; nothing is shown. A newer clear of a chat replaces an older one still
    waiting (``collapse_id``); a removal is never collapsed."""
    data = {**_ids(notification), "type": notification.kind.value}
    android: dict[str, Any] = {"priority": "normal"}
    if notification.kind is NotificationKind.CLEAR:
        android["collapse_key"] = collapse_id(notification)
    return {"data": data, "android": android}


def _alert_parts(device: DeviceTarget, notification: Notification) -> dict[str, Any]:
    """An alert. No ``collapse_key``: FCM keeps at most four collapse keys per device, so a key
    per message would drop messages waiting for an offline phone; ``tag`` (per chat) is what
    replaces a shown notification."""
    data = _ids(notification)
    android_notification: dict[str, Any] = {"tag": chat_thread(notification)}
    if notification.mentioned:
        android_notification["notification_priority"] = "PRIORITY_HIGH"
    android: dict[str, Any] = {"priority": "high"}
    if device.payload is PayloadMode.ENCRYPTED:
        # Data only: a notification message is shown by the system while the app is in the
        # background, and the app's FirebaseMessagingService would never see it to decrypt.
        data["type"] = notification.kind.value
        data["alert"] = GENERIC_ALERT
        if device.encryption_key is not None:
            data["encrypted"] = seal(device.encryption_key, notification)
        if notification.mentioned:
            data["mentioned"] = "1"
        return {"data": data, "android": android}
    if device.payload is PayloadMode.FULL:
        shown = {"title": notification.title, "body": notification.body}
    else:
        shown = {"body": GENERIC_ALERT}
    android["notification"] = android_notification
    return {"notification": shown, "data": data, "android": android}


class FcmSender(BaseSender[FcmSettings]):
    """One FCM project (one service account); the registry keeps one per app."""

    platform = Platform.FCM

    def __init__(self, *, settings: FcmSettings, network: Network = DEFAULT_NETWORK) -> None:
        super().__init__(settings=settings, network=network)
        self.account = ServiceAccount.load(settings.credentials)
        self._send_path = f"/v1/projects/{self.account.project_id}/messages:send"
        context = provider_ssl_context(network.ca_file)
        # Sends go through the h2 pool (httpx's HTTP/2 manages only a few hundred a second);
        # the rare token grant keeps httpx, since Google's token host is another origin.
        self._grant_client = httpx.AsyncClient(
            http2=True, verify=context, timeout=httpx.Timeout(network.timeout)
        )
        h2_context = provider_ssl_context(network.ca_file)
        h2_context.set_alpn_protocols(["h2"])
        try:
            self._pool = H2Pool(
                settings.url,
                h2_context,
                max_connections=network.max_connections,
                connect_timeout=network.timeout,
            )
        except ValueError as exc:
            raise ConfigError(f"FCM url {settings.url!r}: {exc}") from None
        self._token_lock = asyncio.Lock()
        self._signing_key = self.account.signing_key()
        self._access_token: str | None = None
        self._token_expires_at = 0.0
        # The last refused grant and until when to repeat its answer instead of asking again,
        # so a broken account or a token endpoint outage is not hammered by every send.
        self._grant_refusal: Outcome | None = None
        self._grant_refused_until = 0.0

    @property
    def connections_opened(self) -> int:
        return self._pool.connections_opened

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        body = fcm_body(device, notification)
        try:
            token = await self._current_token()
            response = await self._post(body, token)
            if response.status == 401:
                # The token may have been revoked or expired early: one fresh token, once.
                token = await self._current_token(stale=token)
                response = await self._post(body, token)
        except _GrantFailed as failure:
            return failure.outcome
        except TransportError as error:
            return classify_transport(error)
        return _outcome_of(response)

    async def _post(self, body: bytes, token: str) -> H2Response:
        headers = [("authorization", f"Bearer {token}"), ("content-type", "application/json")]
        return await self._pool.request(
            "POST", self._send_path, headers, body, time_limit=self.timeout
        )

    async def _current_token(self, *, stale: str | None = None) -> str:
        if self._token_is_fresh(stale):
            assert self._access_token is not None
            return self._access_token
        async with self._token_lock:
            # Another caller may have refreshed while we waited for the lock.
            if self._token_is_fresh(stale):
                assert self._access_token is not None
                return self._access_token
            if self._grant_refusal is not None and time.monotonic() < self._grant_refused_until:
                raise _GrantFailed(self._grant_refusal)
            try:
                self._access_token, self._token_expires_at = await self._grant()
            except _GrantFailed as failure:
                self._grant_refusal = failure.outcome
                self._grant_refused_until = time.monotonic() + _refusal_hold(failure.outcome)
                raise
            self._grant_refusal = None
            return self._access_token

    def _token_is_fresh(self, stale: str | None) -> bool:
        return (
            self._access_token is not None
            and self._access_token != stale
            and time.time() < self._token_expires_at - TOKEN_REFRESH_MARGIN
        )

    async def _grant(self) -> tuple[str, float]:
        now = int(time.time())
        claims = {
            "iss": self.account.client_email,
            "scope": MESSAGING_SCOPE,
            "aud": self.account.token_uri,
            "iat": now,
            "exp": now + 3600,
        }
        assertion = jwt.encode(claims, self._signing_key, algorithm="RS256")
        try:
            response = await self._grant_client.post(
                self.account.token_uri,
                data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion},
            )
        except httpx.HTTPError as exc:
            raise _GrantFailed(classify_oauth_transport(transport_error(exc))) from None
        if response.status_code != 200:
            raise _GrantFailed(_grant_failure(response))
        try:
            answer = response.json()
            token = str(answer["access_token"])
            expires_in = float(answer.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise _GrantFailed(OAUTH_BAD_RESPONSE) from None
        log.info("fcm access token granted for project %s", self.account.project_id)
        return token, time.time() + expires_in

    async def aclose(self) -> None:
        await self._pool.aclose()
        await self._grant_client.aclose()


def _refusal_hold(outcome: Outcome) -> float:
    """How long a refused grant is answered from memory: long when only a human can fix it."""
    if outcome.kind is OutcomeKind.MISCONFIGURED:
        return GRANT_REFUSED_HOLD
    return min(outcome.retry_after or GRANT_RETRY_HOLD, GRANT_REFUSED_HOLD)


def _grant_failure(response: httpx.Response) -> Outcome:
    """Parse the token endpoint's refusal (RFC 6749 ``error``); ``classify_oauth`` decides."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
    error: str | None = None
    with contextlib.suppress(ValueError, AttributeError):
        error = str(json.loads(response.content).get("error", "error"))
    outcome = classify_oauth(status, error, retry_after)
    if outcome.kind is OutcomeKind.MISCONFIGURED:
        log.error("fcm token grant refused: HTTP %s %s", status, outcome.reason)
    return outcome


def _outcome_of(response: H2Response) -> Outcome:
    retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
    if response.status == 200:
        return classify_fcm(200, None, (), retry_after)
    error_status, details = _error_of(response.body)
    return classify_fcm(response.status, error_status, details, retry_after)


def _error_of(content: bytes) -> tuple[str | None, Sequence[Mapping[str, Any]]]:
    """The v1 error's ``status`` and ``details``; tolerant of the non-JSON bodies proxies send."""
    try:
        error = json.loads(content)["error"]
        status = error.get("status")
        details = [item for item in error.get("details", []) if isinstance(item, Mapping)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, ()
    return (status if isinstance(status, str) else None), details
