"""Every configured sender, chosen by the device's platform and app, with metrics around them.

This is the one place the fan-out engine calls. It never raises for a device: an absent provider
answers UNAVAILABLE (the delivery stays pending with a clear reason), a provider whose settings
are present but broken answers MISCONFIGURED, and an unexpected exception inside a sender is
logged with its traceback and answered RETRY, so one bug cannot stop a batch.

It also owns the in-flight limit of each provider (``chinwag.push.slots``): every send holds a
slot of its platform, and the engine asks ``free_slots`` before it claims deliveries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import cache, partial

from prometheus_client import Counter, Gauge, Histogram

from chinwag.config import ConfigError, PushSettings
from chinwag.push.base import Network
from chinwag.push.model import (
    DeviceTarget,
    Notification,
    Outcome,
    OutcomeKind,
    Platform,
    Sender,
)
from chinwag.push.slots import ProviderSlots

log = logging.getLogger(__name__)

SENDS = Counter(
    "chinwag_push_sends_total",
    "Notifications handed to a provider, by outcome",
    ["provider", "outcome"],
)
SEND_SECONDS = Histogram(
    "chinwag_push_send_seconds",
    "Time from handing a notification to a provider to its outcome",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("chinwag_push_in_flight", "Notifications in flight to a provider", ["provider"])
TOKEN_DEAD = Counter(
    "chinwag_push_token_dead_total", "Devices a provider reported gone", ["provider"]
)


# labels() looks the child up under a lock on every call; a send needs three of them.
@cache
def _sends(provider: str, outcome: str) -> Counter:
    return SENDS.labels(provider, outcome)


@cache
def _in_flight(provider: str) -> Gauge:
    return IN_FLIGHT.labels(provider)


@cache
def _send_seconds(provider: str) -> Histogram:
    return SEND_SECONDS.labels(provider)


# Platforms whose sender depends on the device's app (APNs topic, FCM project).
_PER_APP = (Platform.APNS, Platform.FCM)
# Platforms with one sender for every app; stored under this key.
_ANY_APP = "*"


class _Broken:
    """Settings present but unusable (unreadable key file, bad URL): say so on every send."""

    def __init__(self, platform: Platform, problem: str) -> None:
        self.platform = platform
        self.problem = problem

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        return Outcome(OutcomeKind.MISCONFIGURED, reason=self.problem)

    async def aclose(self) -> None:
        return None


class Senders:
    def __init__(
        self,
        senders: Mapping[tuple[Platform, str], Sender],
        *,
        slots: ProviderSlots | None = None,
    ) -> None:
        self._senders = dict(senders)
        self.slots = slots if slots is not None else ProviderSlots.from_max_in_flight()

    @classmethod
    def from_settings(cls, push: PushSettings) -> Senders:
        """One sender per configured provider; APNs and FCM once per app."""
        from chinwag.push.apns import ApnsSender
        from chinwag.push.email import EmailSender
        from chinwag.push.fcm import FcmSender
        from chinwag.push.webhook import WebhookSender, WebhookSettings
        from chinwag.push.webpush import WebPushSender

        senders: dict[tuple[Platform, str], Sender] = {}

        def add(platform: Platform, app: str, build: Callable[[], Sender]) -> None:
            try:
                senders[(platform, app)] = build()
            except (ConfigError, OSError, ValueError) as exc:
                # One bad provider must not take the others down with it.
                log.error("push provider %s for app %r is misconfigured: %s", platform, app, exc)
                senders[(platform, app)] = _Broken(platform, f"misconfigured: {exc}")

        network = Network(ca_file=push.ca_file, allow_private=push.allow_private_endpoints)
        for name, app in push.apps.items():
            if (apns := app.apns) is not None:
                add(Platform.APNS, name, partial(ApnsSender, settings=apns, network=network))
            if (fcm := app.fcm) is not None:
                add(Platform.FCM, name, partial(FcmSender, settings=fcm, network=network))
        if (webpush := push.webpush) is not None:
            add(
                Platform.WEBPUSH, _ANY_APP, lambda: WebPushSender(settings=webpush, network=network)
            )
        if (smtp := push.smtp) is not None:
            add(Platform.EMAIL, _ANY_APP, lambda: EmailSender(settings=smtp, network=network))
        # A webhook needs no credentials, so it is always on; unsigned without a secret.
        if push.webhook_secret is None:
            log.warning("CHINWAG_WEBHOOK_SECRET is not set: webhooks are sent unsigned")
        webhook = WebhookSettings(secret=push.webhook_secret)
        add(Platform.WEBHOOK, _ANY_APP, lambda: WebhookSender(settings=webhook, network=network))
        return cls(senders, slots=ProviderSlots.from_max_in_flight(push.max_in_flight))

    def sender_for(self, device: DeviceTarget) -> Sender | None:
        app = device.app if device.platform in _PER_APP else _ANY_APP
        return self._senders.get((device.platform, app))

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        sender = self.sender_for(device)
        provider = device.platform.value
        if sender is None:
            if device.platform in _PER_APP:
                reason = f"{provider} is not configured for app {device.app!r}"
            else:
                reason = f"{provider} is not configured"
            _sends(provider, OutcomeKind.UNAVAILABLE.value).inc()
            return Outcome(OutcomeKind.UNAVAILABLE, reason=reason)
        async with self.slots[device.platform]:
            in_flight = _in_flight(provider)
            in_flight.inc()
            started = time.perf_counter()
            try:
                outcome = await sender.send(device, notification)
            except Exception:
                log.exception(
                    "push sender %s failed on device %s (delivery %s)",
                    provider,
                    device.device_id,
                    device.delivery_id,
                )
                outcome = Outcome(OutcomeKind.RETRY, reason="internal_error")
            finally:
                in_flight.dec()
                _send_seconds(provider).observe(time.perf_counter() - started)
        _sends(provider, outcome.kind.value).inc()
        if outcome.kind is OutcomeKind.TOKEN_DEAD:
            TOKEN_DEAD.labels(provider).inc()
        return outcome

    def free_slots(self, platform: Platform) -> int:
        """Sends of ``platform`` that would start now without waiting for a slot."""
        return self.slots.free(platform)

    def slot_limit(self, platform: Platform) -> int:
        return self.slots.limit(platform)

    def configured(self) -> dict[str, list[str]]:
        """Platform -> apps served (``*`` for platforms that do not depend on the app)."""
        found: dict[str, list[str]] = {}
        for platform, app in sorted(self._senders):
            if not isinstance(self._senders[(platform, app)], _Broken):
                found.setdefault(platform.value, []).append(app)
        return found

    async def aclose(self) -> None:
        for (platform, app), sender in self._senders.items():
            try:
                await sender.aclose()
            except Exception:
                log.exception("closing push sender %s for app %r failed", platform, app)
