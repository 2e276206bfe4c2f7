"""Silent updates (clear, removal) and email digests through each provider and its fake."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

from chinwag.fakes.suite import FakeProviders
from chinwag.push import Senders
from chinwag.push.model import (
    DeviceTarget,
    Notification,
    NotificationKind,
    OutcomeKind,
    Platform,
    delivery_uuid,
)

NOTE = Notification(
    chat_id=3, message_id=9, chat_title="Crew", sender_name="Ann", preview="latest", badge=2
)


def _target(platform: Platform, token: str, kind: str = "alert") -> DeviceTarget:
    return DeviceTarget(1, platform, token, delivery_uuid(9, 1, kind))


def test_silent_updates_reach_fcm_and_web_push_without_a_visible_notification(
    tmp_path: Path,
) -> None:
    """A CLEAR goes to FCM as a data-only message and to Web Push as a typed payload."""

    async def scenario() -> None:
        fakes = FakeProviders(tmp_path)
        await fakes.start()
        senders = Senders.from_settings(fakes.settings())
        try:
            clear = replace(NOTE, kind=NotificationKind.CLEAR, preview="", badge=0)
            subscription = fakes.webpush.new_subscription()
            fcm = await senders.send(_target(Platform.FCM, "fcm-token-0123456789", "clear"), clear)
            push = await senders.send(
                _target(Platform.WEBPUSH, json.dumps(subscription), "clear"), clear
            )
            assert fcm.kind is push.kind is OutcomeKind.DELIVERED
            message = fakes.fcm.accepted[0].message
            assert "notification" not in message
            assert message["data"] == {
                "chat_id": "3",
                "message_id": "9",
                "badge": "0",
                "type": "clear",
            }
            assert fakes.webpush.accepted[0].payload == {
                "type": "clear",
                "chat_id": 3,
                "message_id": 9,
                "badge": 0,
            }
        finally:
            await senders.aclose()
            await fakes.stop()

    asyncio.run(scenario())


def test_email_digest_lists_earlier_messages_before_the_newest(tmp_path: Path) -> None:
    """A digest email has one line per batched message, oldest first, and the usual headers."""

    async def scenario() -> None:
        fakes = FakeProviders(tmp_path)
        await fakes.start()
        senders = Senders.from_settings(fakes.settings())
        try:
            digest = replace(NOTE, earlier=(("Ann", "first"), ("Bo", "second")))
            outcome = await senders.send(_target(Platform.EMAIL, "crew@example.com"), digest)
            assert outcome.kind is OutcomeKind.DELIVERED
            message = fakes.smtp.accepted[0].message
            assert message["Subject"] == "Crew"
            assert message["X-Chinwag-Message-Id"] == "9"
            assert message.get_content().splitlines() == ["Ann: first", "Bo: second", "Ann: latest"]
        finally:
            await senders.aclose()
            await fakes.stop()

    asyncio.run(scenario())
