"""The webhook sender against the webhook receiver fake: signature, body, outcomes, SSRF."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest

from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.h2server import FakeRequest, FakeResponse, H2FakeServer
from chinwag.fakes.tls import TestPKI, make_pki, server_ssl_context
from chinwag.fakes.webhook import FakeWebhookReceiver, WebhookRecord
from chinwag.push.base import Network
from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind, Platform
from chinwag.push.webhook import WebhookSender, WebhookSettings, sign, webhook_body

T = TypeVar("T")
SECRET = "s3cret-for-tests"
NOTE = Notification(chat_id=5, message_id=99, chat_title="Ops", sender_name="Bob", preview="up?")
LOOPBACK = ("127.0.0.1/32",)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def device(url: str, device_id: int = 1) -> DeviceTarget:
    return DeviceTarget(device_id, Platform.WEBHOOK, url, f"delivery-{device_id}")


def run(
    pki: TestPKI,
    scenario: Callable[[FakeWebhookReceiver, WebhookSender], Awaitable[T]],
    *,
    sender_secret: str | None = SECRET,
    allow: Sequence[str] = LOOPBACK,
    timeout: float = 10.0,
) -> T:
    async def main() -> T:
        fake = FakeWebhookReceiver(pki, secret=SECRET)
        await fake.start()
        sender = WebhookSender(
            settings=WebhookSettings(sender_secret),
            network=Network(ca_file=pki.ca_file, allow_private=tuple(allow), timeout=timeout),
        )
        try:
            return await scenario(fake, sender)
        finally:
            await sender.aclose()
            await fake.stop()

    return asyncio.run(main())


def test_delivers_a_signed_json_notification(pki: TestPKI) -> None:
    """The receiver gets the JSON body with every field, a valid HMAC and the delivery id."""

    async def scenario(
        fake: FakeWebhookReceiver, sender: WebhookSender
    ) -> tuple[Outcome, list[WebhookRecord]]:
        return await sender.send(device(fake.hook_url()), NOTE), fake.accepted

    outcome, accepted = run(pki, scenario)
    assert outcome.kind is OutcomeKind.DELIVERED
    [record] = accepted
    assert record.body == {
        "chat_id": 5,
        "message_id": 99,
        "title": "Ops",
        "body": "Bob: up?",
        "sender": "Bob",
        "preview": "up?",
        "delivery_id": "delivery-1",
    }
    assert record.headers["x-chinwag-delivery"] == "delivery-1"
    assert record.headers["content-type"] == "application/json"


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    """The signature header is sha256=<hex HMAC-SHA256(secret, exact bytes sent)>."""
    body = webhook_body(device("https://example.com/h"), NOTE)
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body) == f"sha256={expected}"
    assert json.loads(body)["preview"] == "up?"


def test_wrong_secret_is_rejected_by_the_receiver(pki: TestPKI) -> None:
    """A receiver that cannot verify the signature answers 401, which is not retried."""

    async def scenario(fake: FakeWebhookReceiver, sender: WebhookSender) -> Outcome:
        return await sender.send(device(fake.hook_url()), NOTE)

    outcome = run(pki, scenario, sender_secret="not-the-secret")
    assert (outcome.kind, outcome.status) == (OutcomeKind.REJECTED, 401)


def test_gone_hook_is_token_dead(pki: TestPKI) -> None:
    """A receiver answering 410 Gone retires the device."""

    async def scenario(fake: FakeWebhookReceiver, sender: WebhookSender) -> Outcome:
        fake.dead_urls.add(fake.hook_url("old"))
        return await sender.send(device(fake.hook_url("old")), NOTE)

    outcome = run(pki, scenario)
    assert (outcome.kind, outcome.status) == (OutcomeKind.TOKEN_DEAD, 410)


@pytest.mark.parametrize(("fault", "status"), [("429", 429), ("5xx", 503)])
def test_throttling_and_outages_honour_retry_after(pki: TestPKI, fault: str, status: int) -> None:
    """429 and 503 are RETRY with the receiver's Retry-After."""

    async def scenario(fake: FakeWebhookReceiver, sender: WebhookSender) -> Outcome:
        fake.server.faults = FaultPlan(error_rate=1.0, faults=(fault,), retry_after=4)
        return await sender.send(device(fake.hook_url()), NOTE)

    outcome = run(pki, scenario)
    assert (outcome.kind, outcome.status, outcome.retry_after) == (OutcomeKind.RETRY, status, 4)


def test_dropped_connection_and_stall_are_retry(pki: TestPKI) -> None:
    """A cut connection and a stalled answer are RETRY; the next send is delivered."""

    async def scenario(fake: FakeWebhookReceiver, sender: WebhookSender) -> list[Outcome]:
        outcomes = []
        for fault in ("drop", "stall"):
            fake.server.faults = FaultPlan(error_rate=1.0, faults=(fault,), stall_seconds=30)
            outcomes.append(await sender.send(device(fake.hook_url()), NOTE))
        fake.server.faults = FaultPlan()
        outcomes.append(await sender.send(device(fake.hook_url()), NOTE))
        return outcomes

    # The timeout must outlast a TLS handshake on a loaded machine, or the healthy last send
    # would time out too; the stall outlasts the timeout by far.
    drop, stall, after = run(pki, scenario, timeout=3.0)
    assert drop.kind is OutcomeKind.RETRY
    # Users see one generic reason (last_error); the timeout itself is in the log only.
    assert (stall.kind, stall.reason) == (OutcomeKind.RETRY, "endpoint unreachable")
    assert after.kind is OutcomeKind.DELIVERED


def test_private_url_is_refused_unless_allowed(pki: TestPKI) -> None:
    """Loopback without allowance is REJECTED endpoint_refused and nothing is sent."""

    async def scenario(fake: FakeWebhookReceiver, sender: WebhookSender) -> tuple[Outcome, int]:
        outcome = await sender.send(device(fake.hook_url()), NOTE)
        return outcome, fake.server.stats.requests

    refused, requests = run(pki, scenario, allow=())
    assert (refused.kind, refused.reason, requests) == (
        OutcomeKind.REJECTED,
        "endpoint_refused",
        0,
    )
    delivered, requests = run(pki, scenario, allow=("127.0.0.0/8",))
    assert (delivered.kind, requests) == (OutcomeKind.DELIVERED, 1)


def test_plain_http_url_is_refused(pki: TestPKI) -> None:
    """A webhook URL must be https even when its address is allowed."""

    async def scenario(fake: FakeWebhookReceiver, sender: WebhookSender) -> Outcome:
        return await sender.send(device(fake.hook_url().replace("https:", "http:")), NOTE)

    outcome = run(pki, scenario)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.REJECTED, "endpoint_refused")


def test_redirects_are_not_followed(pki: TestPKI) -> None:
    """A 307 to elsewhere is not followed (it could bypass the SSRF guard): REJECTED/misconfig."""
    hits: list[str] = []

    async def redirecting(request: FakeRequest) -> FakeResponse:
        hits.append(request.path)
        return FakeResponse(307, {"location": "https://169.254.169.254/latest/meta-data/"})

    async def main() -> Outcome:
        server = H2FakeServer(redirecting, server_ssl_context(pki))
        await server.start()
        sender = WebhookSender(
            settings=WebhookSettings(SECRET),
            network=Network(ca_file=pki.ca_file, allow_private=tuple(LOOPBACK)),
        )
        try:
            return await sender.send(device(f"{server.url}/hook"), NOTE)
        finally:
            await sender.aclose()
            await server.stop()

    outcome = asyncio.run(main())
    assert outcome.kind is not OutcomeKind.DELIVERED and outcome.is_final
    assert hits == ["/hook"]


def test_http1_only_receiver_gets_the_webhook(pki: TestPKI) -> None:
    """A receiver that does not offer HTTP/2 is reached over HTTP/1.1, signature intact."""
    received: list[tuple[bytes, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        assert match is not None
        received.append((head, await reader.readexactly(int(match.group(1)))))
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> list[Outcome]:
        context = server_ssl_context(pki, alpn=("http/1.1",))
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        sender = WebhookSender(
            settings=WebhookSettings(SECRET),
            network=Network(ca_file=pki.ca_file, allow_private=tuple(LOOPBACK)),
        )
        try:
            url = f"https://127.0.0.1:{port}/hook?x=1"
            return [await sender.send(device(url), NOTE) for _ in range(2)]
        finally:
            await sender.aclose()
            server.close()
            await server.wait_closed()

    outcomes = asyncio.run(main())
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 2
    head, body = received[0]
    assert head.startswith(b"POST /hook?x=1 HTTP/1.1")
    signature = re.search(rb"(?im)^x-chinwag-signature:\s*(\S+)", head)
    assert signature is not None and signature.group(1).decode() == sign(SECRET, body)
