"""The Web Push sender against the Web Push fake: aes128gcm, VAPID, outcomes, SSRF guard."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chinwag.config import ConfigError, WebPushSettings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.tls import TestPKI, make_pki
from chinwag.fakes.webpush import FakeWebPush, WebPushRecord
from chinwag.push.base import Network
from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind, Platform
from chinwag.push.webpush import WebPushSender, b64url_decode, webpush_payload

T = TypeVar("T")
NOTE = Notification(
    chat_id=42, message_id=7, chat_title="Climbing", sender_name="Ada", preview="Hi"
)
LOOPBACK = ("127.0.0.1/32",)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def vapid(tmp_path_factory: pytest.TempPathFactory) -> WebPushSettings:
    path = tmp_path_factory.mktemp("vapid") / "vapid.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return WebPushSettings(vapid_private_key=path, vapid_subject="mailto:ops@example.com")


def device(subscription: dict[str, Any] | str, device_id: int = 1) -> DeviceTarget:
    token = subscription if isinstance(subscription, str) else json.dumps(subscription)
    return DeviceTarget(device_id, Platform.WEBPUSH, token, f"delivery-{device_id}")


def run(
    pki: TestPKI,
    vapid: WebPushSettings,
    scenario: Callable[[FakeWebPush, WebPushSender], Awaitable[T]],
    *,
    allow: Sequence[str] = LOOPBACK,
    timeout: float = 10.0,
) -> T:
    async def main() -> T:
        fake = FakeWebPush(pki)
        await fake.start()
        sender = WebPushSender(
            settings=vapid,
            network=Network(ca_file=pki.ca_file, allow_private=tuple(allow), timeout=timeout),
        )
        try:
            return await scenario(fake, sender)
        finally:
            await sender.aclose()
            await fake.stop()

    return asyncio.run(main())


def test_delivers_an_encrypted_payload_the_browser_can_read(
    pki: TestPKI, vapid: WebPushSettings
) -> None:
    """The fake decrypts exactly title, body, chat_id, message_id and sees TTL/Urgency/Topic."""

    async def scenario(
        fake: FakeWebPush, sender: WebPushSender
    ) -> tuple[Outcome, list[WebPushRecord]]:
        note = Notification(42, 7, "Climbing", "Ada", "Hi ☃", badge=2)
        return await sender.send(device(fake.new_subscription()), note), fake.accepted

    outcome, accepted = run(pki, vapid, scenario)
    assert (outcome.kind, outcome.status) == (OutcomeKind.DELIVERED, 201)
    [record] = accepted
    assert record.payload == {
        "title": "Climbing",
        "body": "Ada: Hi ☃",
        "chat_id": 42,
        "message_id": 7,
        "tag": "42",  # the service worker's showNotification tag: per chat
        "badge": 2,
    }
    assert record.headers["ttl"] == "86400"
    assert record.headers["urgency"] == "high"
    assert record.headers["topic"] == "chat-42"
    assert record.headers["content-encoding"] == "aes128gcm"


def test_vapid_token_names_the_push_service_and_our_key(
    pki: TestPKI, vapid: WebPushSettings
) -> None:
    """The VAPID JWT's aud is the endpoint's origin, exp is within 24 h, k is our public key."""

    async def scenario(fake: FakeWebPush, sender: WebPushSender) -> tuple[str, str]:
        await sender.send(device(fake.new_subscription()), NOTE)
        return fake.accepted[0].headers["authorization"], fake.url

    authorization, origin = run(pki, vapid, scenario)
    token = authorization.split("t=", 1)[1].split(",", 1)[0]
    key = authorization.rsplit("k=", 1)[1]
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
    claims = jwt.decode(token, public, algorithms=["ES256"], audience=origin)
    assert claims["sub"] == "mailto:ops@example.com"


def test_unknown_and_expired_subscriptions_are_token_dead(
    pki: TestPKI, vapid: WebPushSettings
) -> None:
    """404 (unknown) and 410 (expired) subscriptions are TOKEN_DEAD."""

    async def scenario(fake: FakeWebPush, sender: WebPushSender) -> tuple[Outcome, Outcome]:
        expired = fake.new_subscription()
        fake.dead_tokens.add(expired["endpoint"])
        unknown = dict(fake.new_subscription(), endpoint=f"{fake.url}/push/nobody")
        return await sender.send(device(expired), NOTE), await sender.send(device(unknown), NOTE)

    expired, unknown = run(pki, vapid, scenario)
    assert (expired.kind, expired.status) == (OutcomeKind.TOKEN_DEAD, 410)
    assert (unknown.kind, unknown.status) == (OutcomeKind.TOKEN_DEAD, 404)


def test_payload_encrypted_for_another_browser_is_rejected(
    pki: TestPKI, vapid: WebPushSettings
) -> None:
    """Encrypting with the wrong user-agent keys fails decryption at the service: REJECTED."""

    async def scenario(fake: FakeWebPush, sender: WebPushSender) -> Outcome:
        mine, theirs = fake.new_subscription(), fake.new_subscription()
        crossed = {"endpoint": mine["endpoint"], "keys": theirs["keys"]}
        return await sender.send(device(crossed), NOTE)

    outcome = run(pki, vapid, scenario)
    assert (outcome.kind, outcome.status) == (OutcomeKind.REJECTED, 400)


def test_malformed_subscription_is_token_dead_without_a_request(
    pki: TestPKI, vapid: WebPushSettings
) -> None:
    """A subscription that cannot be parsed can never be delivered: TOKEN_DEAD, nothing sent."""

    async def scenario(fake: FakeWebPush, sender: WebPushSender) -> tuple[list[Outcome], int]:
        bad = [
            "not json",
            json.dumps({"endpoint": f"{fake.url}/push/x"}),
            json.dumps({"endpoint": "x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}),
            json.dumps({"endpoint": "x", "keys": {"p256dh": "BA" + "A" * 85, "auth": "A" * 22}}),
        ]
        outcomes = [await sender.send(device(token), NOTE) for token in bad]
        return outcomes, fake.server.stats.requests

    outcomes, requests = run(pki, vapid, scenario)
    assert {o.kind for o in outcomes} == {OutcomeKind.TOKEN_DEAD}
    assert requests == 0


def test_private_endpoint_is_refused_unless_allowed(pki: TestPKI, vapid: WebPushSettings) -> None:
    """Without an allowance the loopback fake is REJECTED endpoint_refused; a CIDR admits it."""

    async def scenario(fake: FakeWebPush, sender: WebPushSender) -> tuple[Outcome, int]:
        return await sender.send(device(fake.new_subscription()), NOTE), len(fake.accepted)

    refused, accepted = run(pki, vapid, scenario, allow=())
    assert (refused.kind, refused.reason) == (OutcomeKind.REJECTED, "endpoint_refused")
    assert accepted == 0
    allowed, accepted = run(pki, vapid, scenario, allow=("127.0.0.0/8",))
    assert allowed.kind is OutcomeKind.DELIVERED and accepted == 1


@pytest.mark.parametrize(("fault", "status"), [("429", 429), ("5xx", 503)])
def test_throttling_and_outages_honour_retry_after(
    pki: TestPKI, vapid: WebPushSettings, fault: str, status: int
) -> None:
    """429 and 503 from the push service are RETRY with the Retry-After seconds."""

    async def scenario(fake: FakeWebPush, sender: WebPushSender) -> Outcome:
        fake.server.faults = FaultPlan(error_rate=1.0, faults=(fault,), retry_after=9)
        return await sender.send(device(fake.new_subscription()), NOTE)

    outcome = run(pki, vapid, scenario)
    assert (outcome.kind, outcome.status, outcome.retry_after) == (OutcomeKind.RETRY, status, 9)


def test_dropped_connection_and_stall_are_retry(pki: TestPKI, vapid: WebPushSettings) -> None:
    """A cut connection and a stalled answer (past the timeout) are RETRY, then delivery resumes."""

    async def scenario(fake: FakeWebPush, sender: WebPushSender) -> list[Outcome]:
        subscription = device(fake.new_subscription())
        outcomes = []
        for fault in ("drop", "stall"):
            fake.server.faults = FaultPlan(error_rate=1.0, faults=(fault,), stall_seconds=5)
            outcomes.append(await sender.send(subscription, NOTE))
        fake.server.faults = FaultPlan()
        outcomes.append(await sender.send(subscription, NOTE))
        return outcomes

    drop, stall, after = run(pki, vapid, scenario, timeout=0.3)
    assert drop.kind is OutcomeKind.RETRY
    # Users see one generic reason (last_error); the timeout itself is in the log only.
    assert (stall.kind, stall.reason) == (OutcomeKind.RETRY, "endpoint unreachable")
    assert after.kind is OutcomeKind.DELIVERED


def test_fake_refuses_a_push_without_vapid(pki: TestPKI) -> None:
    """The fake is strict: no VAPID authorization → 401, as real push services answer."""

    async def scenario() -> int:
        fake = FakeWebPush(pki)
        await fake.start()
        try:
            endpoint = fake.new_subscription()["endpoint"]
            verify = ssl.create_default_context(cafile=str(pki.ca_file))
            async with httpx.AsyncClient(http2=True, verify=verify) as client:
                response = await client.post(
                    endpoint, content=b"x", headers={"ttl": "60", "content-encoding": "aes128gcm"}
                )
            return response.status_code
        finally:
            await fake.stop()

    assert asyncio.run(scenario()) == 401


def test_unusable_vapid_key_is_a_config_error(tmp_path: Path) -> None:
    """A VAPID key that is missing or not P-256 fails loudly at construction."""
    with pytest.raises(ConfigError):
        WebPushSender(settings=WebPushSettings(tmp_path / "missing.pem", "mailto:x@example.com"))
    other = tmp_path / "p384.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="P-256"):
        WebPushSender(settings=WebPushSettings(other, "mailto:x@example.com"))


def test_long_message_is_shortened_to_fit_one_push(pki: TestPKI, vapid: WebPushSettings) -> None:
    """A 10 KB preview is cut (with "…") so the encrypted body stays within 4096 bytes."""

    async def scenario(fake: FakeWebPush, sender: WebPushSender) -> tuple[Outcome, dict[str, Any]]:
        note = Notification(42, 7, "Climbing", "Ada", "ü" * 10_000)
        outcome = await sender.send(device(fake.new_subscription()), note)
        return outcome, fake.accepted[0].payload if fake.accepted else {}

    outcome, payload = run(pki, vapid, scenario)
    assert outcome.kind is OutcomeKind.DELIVERED
    assert payload["body"].startswith("Ada: üü") and payload["body"].endswith("…")
    huge = Notification(1, 2, "t" * 9000, "s" * 9000, "p" * 9000)
    assert len(webpush_payload(device("{}"), huge)) <= 3993
