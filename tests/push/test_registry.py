"""The sender registry: dispatch by platform and app, UNAVAILABLE, crash containment, metrics."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from chinwag.config import AppSettings, FcmSettings, PushSettings
from chinwag.fakes.apns import FakeApns
from chinwag.fakes.fcm import FakeFcm
from chinwag.fakes.tls import TestPKI, make_pki
from chinwag.push import DeviceTarget, Notification, Outcome, OutcomeKind, Platform, Senders

NOTE = Notification(chat_id=8, message_id=80, chat_title="Team", sender_name="Di", preview="go")
APNS_TOKEN_A = "a" * 64
APNS_TOKEN_B = "b" * 64


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def target(
    platform: Platform, token: str, app: str = "default", device_id: int = 1
) -> DeviceTarget:
    return DeviceTarget(
        device_id, platform, token, f"00000000-0000-4000-8000-{device_id:012d}", app
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_several_apps_reach_their_own_fcm_project_and_apns_topic(
    pki: TestPKI, tmp_path: Path
) -> None:
    """device.app picks the FCM project and the APNs topic; an unknown app is UNAVAILABLE."""

    async def main() -> tuple[list[Outcome], dict[str, int], dict[str, list[str]]]:
        fcm_a = FakeFcm(pki, tmp_path / "a", project_id="project-a")
        fcm_b = FakeFcm(pki, tmp_path / "b", project_id="project-b")
        apns_a = FakeApns(pki, tmp_path / "a", topic="com.example.a")
        apns_b = FakeApns(pki, tmp_path / "b", topic="com.example.b")
        fakes: list[FakeFcm | FakeApns] = [fcm_a, fcm_b, apns_a, apns_b]
        for fake in fakes:
            await fake.start()
        push = PushSettings(
            apps={
                "a": AppSettings("a", apns=apns_a.settings(), fcm=fcm_a.settings()),
                "b": AppSettings("b", apns=apns_b.settings(), fcm=fcm_b.settings()),
            },
            ca_file=pki.ca_file,
        )
        senders = Senders.from_settings(push)
        try:
            outcomes = [
                await senders.send(target(Platform.FCM, "tok-a", "a"), NOTE),
                await senders.send(target(Platform.FCM, "tok-b", "b"), NOTE),
                await senders.send(target(Platform.APNS, APNS_TOKEN_A, "a"), NOTE),
                await senders.send(target(Platform.APNS, APNS_TOKEN_B, "b"), NOTE),
                await senders.send(target(Platform.FCM, "tok-c", "c"), NOTE),
            ]
            counts = {
                "fcm_a": len(fcm_a.accepted),
                "fcm_b": len(fcm_b.accepted),
                "apns_a": len(apns_a.accepted),
                "apns_b": len(apns_b.accepted),
            }
            assert [r.token for r in fcm_a.accepted] == ["tok-a"]
            assert [r.token for r in fcm_b.accepted] == ["tok-b"]
            assert [r.token for r in apns_a.accepted] == [APNS_TOKEN_A]
            assert [r.token for r in apns_b.accepted] == [APNS_TOKEN_B]
            return outcomes, counts, senders.configured()
        finally:
            await senders.aclose()
            for fake in fakes:
                await fake.stop()

    outcomes, counts, configured = asyncio.run(main())
    assert [o.kind for o in outcomes[:4]] == [OutcomeKind.DELIVERED] * 4
    assert counts == {"fcm_a": 1, "fcm_b": 1, "apns_a": 1, "apns_b": 1}
    assert (outcomes[4].kind, outcomes[4].reason) == (
        OutcomeKind.UNAVAILABLE,
        "fcm is not configured for app 'c'",
    )
    assert configured == {"apns": ["a", "b"], "fcm": ["a", "b"], "webhook": ["*"]}


def test_unconfigured_platforms_are_unavailable_with_a_clear_reason() -> None:
    """With no provider settings every platform but webhooks answers UNAVAILABLE, never raises."""

    async def main() -> list[Outcome]:
        senders = Senders.from_settings(PushSettings())
        try:
            return [
                await senders.send(target(Platform.APNS, APNS_TOKEN_A), NOTE),
                await senders.send(target(Platform.WEBPUSH, "{}"), NOTE),
                await senders.send(target(Platform.EMAIL, "a@example.org"), NOTE),
            ]
        finally:
            await senders.aclose()

    apns, webpush, email = asyncio.run(main())
    assert (apns.kind, apns.reason) == (
        OutcomeKind.UNAVAILABLE,
        "apns is not configured for app 'default'",
    )
    assert (webpush.kind, webpush.reason) == (OutcomeKind.UNAVAILABLE, "webpush is not configured")
    assert email.kind is OutcomeKind.UNAVAILABLE
    assert not apns.is_final


def test_broken_provider_settings_answer_misconfigured_and_spare_the_others(
    pki: TestPKI, tmp_path: Path
) -> None:
    """An unreadable FCM credentials file makes FCM MISCONFIGURED; APNs of the same app works."""

    async def main() -> tuple[Outcome, Outcome, dict[str, list[str]]]:
        apns = FakeApns(pki, tmp_path, topic="com.example.chat")
        await apns.start()
        broken = FcmSettings(credentials=tmp_path / "missing.json", url="https://127.0.0.1:1")
        push = PushSettings(
            apps={"default": AppSettings("default", apns=apns.settings(), fcm=broken)},
            ca_file=pki.ca_file,
        )
        senders = Senders.from_settings(push)
        try:
            fcm = await senders.send(target(Platform.FCM, "tok"), NOTE)
            ios = await senders.send(target(Platform.APNS, APNS_TOKEN_A), NOTE)
            return fcm, ios, senders.configured()
        finally:
            await senders.aclose()
            await apns.stop()

    fcm, ios, configured = asyncio.run(main())
    assert fcm.kind is OutcomeKind.MISCONFIGURED and "missing.json" in fcm.reason
    assert ios.kind is OutcomeKind.DELIVERED
    assert "fcm" not in configured


class _ExplodingSender:
    platform = Platform.EMAIL

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        raise RuntimeError("bug in a sender")

    async def aclose(self) -> None:
        raise RuntimeError("bug on close")


def test_a_crashing_sender_is_retry_internal_error_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception inside a sender becomes RETRY internal_error, logged with its traceback."""
    senders = Senders({(Platform.EMAIL, "*"): _ExplodingSender()})
    before = sample("chinwag_push_sends_total", provider="email", outcome="retry")
    with caplog.at_level(logging.ERROR, logger="chinwag.push.registry"):
        outcome = asyncio.run(senders.send(target(Platform.EMAIL, "a@example.org"), NOTE))
        asyncio.run(senders.aclose())
    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "internal_error")
    assert any(r.exc_info and "bug in a sender" in str(r.exc_info[1]) for r in caplog.records)
    assert sample("chinwag_push_sends_total", provider="email", outcome="retry") == before + 1
    assert sample("chinwag_push_in_flight", provider="email") == 0


def test_metrics_count_outcomes_latency_and_dead_tokens(pki: TestPKI, tmp_path: Path) -> None:
    """Sends, their latency histogram and dead tokens are counted per provider."""

    async def main() -> None:
        fcm = FakeFcm(pki, tmp_path, project_id="metrics")
        await fcm.start()
        fcm.dead_tokens.add("dead")
        push = PushSettings(
            apps={"default": AppSettings("default", fcm=fcm.settings())}, ca_file=pki.ca_file
        )
        senders = Senders.from_settings(push)
        try:
            for token in ("t1", "t2", "dead"):
                await senders.send(target(Platform.FCM, token), NOTE)
        finally:
            await senders.aclose()
            await fcm.stop()

    names = {
        "delivered": ("chinwag_push_sends_total", {"provider": "fcm", "outcome": "delivered"}),
        "dead": ("chinwag_push_token_dead_total", {"provider": "fcm"}),
        "timed": ("chinwag_push_send_seconds_count", {"provider": "fcm"}),
    }
    before = {key: sample(name, **labels) for key, (name, labels) in names.items()}
    asyncio.run(main())
    after = {key: sample(name, **labels) for key, (name, labels) in names.items()}
    assert after["delivered"] - before["delivered"] == 2
    assert after["dead"] - before["dead"] == 1
    assert after["timed"] - before["timed"] == 3
    assert sample("chinwag_push_in_flight", provider="fcm") == 0
