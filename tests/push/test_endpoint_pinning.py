"""User-supplied endpoints (security finding 3): resolved once, checked, connected to at the
checked address (DNS rebinding), per-device webhook keys, and errors that tell users nothing
about the network."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from chinwag.fakes.tls import TestPKI, make_pki
from chinwag.fakes.webhook import FakeWebhookReceiver
from chinwag.push.base import Network
from chinwag.push.endpoints import UNREACHABLE
from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind, Platform
from chinwag.push.webhook import WebhookSender, WebhookSettings, sign, webhook_body

NOTE = Notification(chat_id=5, message_id=9, chat_title="Ops", sender_name="Bob", preview="up?")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


class RebindingLoop(asyncio.SelectorEventLoop):
    """A resolver that answers "localhost" with 127.0.0.1 the first time and with 127.0.0.2
    (where nothing listens) afterwards: the DNS-rebinding attack, on loopback. Only the name
    service is replaced; sockets, TLS and HTTP/2 are real."""

    lookups = 0

    async def getaddrinfo(self, host: Any, port: Any, **kwargs: Any) -> Any:
        if host == "localhost":
            RebindingLoop.lookups += 1
            address = "127.0.0.1" if RebindingLoop.lookups == 1 else "127.0.0.2"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 443)))]
        return await super().getaddrinfo(host, port, **kwargs)


def test_the_connection_goes_to_the_address_that_was_checked(pki: TestPKI) -> None:
    """A name that resolves elsewhere on a second lookup is still reached at the checked address:
    one lookup per send, and TLS and Host keep the name."""

    async def main() -> tuple[Outcome, int, str]:
        fake = FakeWebhookReceiver(pki)
        await fake.start()
        url = fake.hook_url().replace("127.0.0.1", "localhost")
        sender = WebhookSender(
            settings=WebhookSettings(),
            network=Network(ca_file=pki.ca_file, allow_private=("localhost",)),
        )
        try:
            outcome = await sender.send(DeviceTarget(1, Platform.WEBHOOK, url, "d-1"), NOTE)
        finally:
            await sender.aclose()
            await fake.stop()
        host = fake.accepted[0].url if fake.accepted else ""
        return outcome, RebindingLoop.lookups, host

    RebindingLoop.lookups = 0
    with asyncio.Runner(loop_factory=RebindingLoop) as runner:
        outcome, lookups, reached = runner.run(main())
    assert outcome.kind is OutcomeKind.DELIVERED, outcome
    assert lookups == 1
    assert reached.startswith("https://127.0.0.1:")


def test_an_unreachable_endpoint_reads_the_same_whatever_the_cause(pki: TestPKI) -> None:
    """Refused, reset or timed out: last_error says only "endpoint unreachable" (no port scan)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def main() -> Outcome:
        sender = WebhookSender(
            settings=WebhookSettings(),
            network=Network(ca_file=pki.ca_file, allow_private=("127.0.0.1/32",)),
        )
        try:
            target = DeviceTarget(1, Platform.WEBHOOK, f"https://127.0.0.1:{closed_port}/", "d")
            return await sender.send(target, NOTE)
        finally:
            await sender.aclose()

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.reason, outcome.status) == (OutcomeKind.RETRY, UNREACHABLE, None)


def test_a_device_secret_signs_its_webhooks_instead_of_the_global_one(pki: TestPKI) -> None:
    """A device registered with its own key is signed with it; the global key is the fallback."""

    async def main() -> tuple[Outcome, Outcome, dict[str, str]]:
        fake = FakeWebhookReceiver(pki, secret="global-key")
        await fake.start()
        fake.hook_secrets[fake.hook_url("own")] = "device-key"
        sender = WebhookSender(
            settings=WebhookSettings("global-key"),
            network=Network(ca_file=pki.ca_file, allow_private=("127.0.0.1/32",)),
        )
        try:
            own = DeviceTarget(1, Platform.WEBHOOK, fake.hook_url("own"), "d1", secret="device-key")
            old = DeviceTarget(2, Platform.WEBHOOK, fake.hook_url("old"), "d2")
            first, second = await sender.send(own, NOTE), await sender.send(old, NOTE)
        finally:
            await sender.aclose()
            await fake.stop()
        return first, second, fake.accepted[0].headers

    own, fallback, headers = asyncio.run(main())
    assert own.kind is fallback.kind is OutcomeKind.DELIVERED
    body = webhook_body(DeviceTarget(1, Platform.WEBHOOK, "x", "d1"), NOTE)
    assert headers["x-chinwag-signature"] == sign("device-key", body)
