"""The small interface between the fan-out engine and the providers.

The engine hands a sender one ``DeviceTarget`` and one ``Notification``; the sender answers with
an ``Outcome``. A sender never raises for anything a provider or the network does: every failure
is an outcome, classified once (see ``chinwag.push.outcome``), so one bad device can never skip
the rest of a batch.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol
from urllib.parse import urlsplit

# Namespace for the stable per-(message, device) id. Fixed forever: changing it would make a
# re-send after a crash look like a new notification to APNs.
DELIVERY_ID_NAMESPACE = uuid.UUID("6f0e4c8e-5b7a-4e63-9a7e-0c6b1c9d2a11")


def delivery_uuid(message_id: int, device_id: int, kind: str = "alert") -> str:
    """The stable id of one (message, device) pair, sent as ``apns-id`` and collapse keys.

    Silent updates (clear, removal) about the same message get ids of their own.
    """
    name = f"{message_id}:{device_id}" if kind == "alert" else f"{message_id}:{device_id}:{kind}"
    return str(uuid.uuid5(DELIVERY_ID_NAMESPACE, name))


class Platform(StrEnum):
    APNS = "apns"
    FCM = "fcm"
    WEBPUSH = "webpush"
    EMAIL = "email"
    WEBHOOK = "webhook"


class PayloadMode(StrEnum):
    """What a device lets the provider see, chosen at registration (docs/private-notifications.md).

    The decision is the device's; each sender renders it in its provider's shape.
    """

    FULL = "full"  # title, body and ids: the provider sees the message text
    MINIMAL = "minimal"  # ids and a generic alert only; the app fetches the message itself
    ENCRYPTED = "encrypted"  # generic alert + the full notification sealed with the device's key


# The alert text a minimal or encrypted device shows when it shows nothing better.
GENERIC_ALERT = "New message"
# An encrypted device's AES-256-GCM key (chinwag.push.sealed seals with it).
KEY_BYTES = 32


def parse_key(key_b64: str) -> bytes:
    """The 32 key bytes of a base64 (standard or URL-safe, padded or not) text; else ValueError.

    The message says what is wrong, never what the text was: the key is a secret.
    """
    text = key_b64.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(padded.encode("ascii"))
        else:
            raw = base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ValueError("not base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"{len(raw)} bytes, not {KEY_BYTES}")
    return raw


class NotificationKind(StrEnum):
    ALERT = "alert"  # a new message: shown to the user
    CLEAR = "clear"  # silent: the user read up to message_id elsewhere; update badge, clear tray
    REMOVAL = "removal"  # silent: message_id was deleted; withdraw its notification
    VERIFICATION = "verification"  # email only: the code that proves a mailbox (preview = code)


@dataclass(frozen=True, slots=True)
class Notification:
    """What every notification carries (DESIGN.md): title, "<sender>: <preview>", ids.

    ``earlier`` holds (sender, preview) of messages batched into the same email digest, oldest
    first; the main message is the newest.
    """

    chat_id: int
    message_id: int
    chat_title: str
    sender_name: str
    preview: str
    badge: int | None = None
    kind: NotificationKind = NotificationKind.ALERT
    earlier: tuple[tuple[str, str], ...] = ()
    mentioned: bool = False  # the recipient is @mentioned: shown as time-sensitive where possible

    @property
    def title(self) -> str:
        return self.chat_title

    @property
    def body(self) -> str:
        return f"{self.sender_name}: {self.preview}"

    @property
    def is_silent(self) -> bool:
        return self.kind is not NotificationKind.ALERT

    def with_preview(self, preview: str) -> Notification:
        return replace(self, preview=preview)


def chat_thread(notification: Notification) -> str:
    """The group a device shows a chat's notifications under: APNs ``thread-id``, FCM
    ``android.notification.tag``, the Web Push payload's ``tag``. The chat id, as text."""
    return str(notification.chat_id)


def collapse_id(notification: Notification) -> str:
    """The one collapse rule of APNs (``apns-collapse-id``), FCM (``android.collapse_key``) and
    Web Push (``Topic``): a pending notification with the same id is replaced by the newer one.

    An alert collapses per message, so a re-send after a crash replaces the first copy instead
    of showing twice. A clear collapses per chat: the newest read marker says all the older ones
    did. A removal stays per message: a later deletion in the chat must not cancel the
    withdrawal of an earlier one, or the deleted text would stay on the screen.
    """
    if notification.kind is NotificationKind.CLEAR:
        return f"c{notification.chat_id}"
    if notification.kind is NotificationKind.REMOVAL:
        return f"r{notification.message_id}"
    return f"m{notification.message_id}"


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    """One device as a sender needs it.

    ``token`` is the platform's address: an APNs hex token, an FCM registration token, a Web
    Push subscription as JSON text (``{"endpoint":…, "keys": {"p256dh":…, "auth":…}}``), an email
    address, or a webhook URL. ``app`` picks the APNs topic / FCM project when several apps are
    configured.
    """

    device_id: int
    platform: Platform
    token: str
    delivery_id: str
    app: str = "default"
    # A webhook device's own signing key (None: the global CHINWAG_WEBHOOK_SECRET, if any).
    secret: str | None = field(default=None, repr=False)
    payload: PayloadMode = PayloadMode.FULL
    # ENCRYPTED devices: their 32-byte AES-256-GCM key. A secret of the device's owner: never
    # in a repr, a log line or an API answer.
    encryption_key: bytes | None = field(default=None, repr=False)


class OutcomeKind(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # try again later, not before retry_after if given
    TOKEN_DEAD = "token_dead"  # the device is gone: deactivate it, never retry
    REJECTED = "rejected"  # our payload is wrong: no retry, loud error
    MISCONFIGURED = "misconfigured"  # our credentials/settings are wrong: no retry, alert
    UNAVAILABLE = "unavailable"  # no sender configured for this platform/app: stays pending


# What to do about each class, as a device's owner is told (POST /v1/devices/{id}/test). Here, by
# the classes, because the domain may read push.model but not the classification tables.
ADVICE: Mapping[OutcomeKind, str] = {
    OutcomeKind.DELIVERED: "nothing: {provider} accepted the notification for this device",
    OutcomeKind.RETRY: "{provider} is failing or slow for now; chinwag will retry",
    OutcomeKind.TOKEN_DEAD: "the app must register again: {provider} says this token is gone",
    OutcomeKind.REJECTED: "{provider} refused the notification itself; tell the operator "
    "(a chinwag bug or an unusual device)",
    OutcomeKind.MISCONFIGURED: "the operator's credentials for {provider} are refused; "
    "tell the operator",
    OutcomeKind.UNAVAILABLE: "{provider} is not configured on this server; tell the operator",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    reason: str = ""  # short provider code, e.g. "BadDeviceToken", "UNREGISTERED", "http_503"
    retry_after: float | None = None  # seconds, from the provider's Retry-After
    status: int | None = None  # provider HTTP status (or SMTP code) when there was one

    @property
    def is_final(self) -> bool:
        return self.kind not in (OutcomeKind.RETRY, OutcomeKind.UNAVAILABLE)


class Sender(Protocol):
    """One provider. ``send`` is safe to call concurrently; it bounds its own in-flight work."""

    platform: Platform

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome: ...

    async def aclose(self) -> None: ...


class Dispatcher(Protocol):
    """What the fan-out engine sends through: every platform, routed (see ``push.registry``).

    It bounds the sends in flight per platform; ``free_slots`` says how many more would start
    at once, so that the engine never claims a delivery that would wait idle for a slot.
    """

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome: ...

    def free_slots(self, platform: Platform) -> int: ...

    def slot_limit(self, platform: Platform) -> int: ...

    async def aclose(self) -> None: ...


# --- user-supplied endpoints (webhook URLs, Web Push endpoints): the rules without the network.
# The domain checks a URL against them when a device is registered; the senders check again,
# with the name resolved, before every request (``chinwag.push.endpoints``).

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that resolve to this machine on every resolver, refused even when we do not resolve.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


@dataclass(frozen=True)
class Allowance:
    """The parsed ``CHINWAG_ALLOW_PRIVATE_ENDPOINTS``: host names and networks."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, allow: Iterable[str]) -> Allowance:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in allow:
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def is_public(address: IPAddress) -> bool:
    """False for every address a server of ours could be reached at from inside."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


@dataclass(frozen=True)
class ParsedEndpoint:
    host: str
    port: int
    literal: IPAddress | None


def parse_endpoint(url: str) -> ParsedEndpoint | str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "endpoint is not a valid URL"
    if parts.scheme != "https":
        return "endpoint must use https"
    host = parts.hostname
    if not host:
        return "endpoint has no host"
    if parts.username is not None or parts.password is not None:
        return "endpoint must not carry credentials"
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    return ParsedEndpoint(host=host, port=port or 443, literal=literal)


def address_refusal(host: str, addresses: Sequence[IPAddress], allowance: Allowance) -> str | None:
    for address in addresses:
        if not is_public(address) and not allowance.allows_address(address):
            return f"endpoint host {host!r} is at non-public address {address}"
    return None


def precheck_endpoint(url: str, allowance: Allowance, resolve: bool) -> ParsedEndpoint | str | None:
    """Everything decidable without DNS: an error, None (fine), or the endpoint to resolve."""
    parsed = parse_endpoint(url)
    if isinstance(parsed, str):
        return parsed
    if allowance.allows_host(parsed.host):
        return None
    if parsed.literal is not None:
        return address_refusal(parsed.host, [parsed.literal], allowance)
    name = parsed.host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"endpoint host {parsed.host!r} is this machine"
    return parsed if resolve else None


def endpoint_refusal(url: str, allow: Sequence[str]) -> str | None:
    """Why ``url`` may never be a device's endpoint, from what the URL itself shows (no DNS);
    None when it may."""
    verdict = precheck_endpoint(url, Allowance.parse(allow), resolve=False)
    return verdict if isinstance(verdict, str) else None
