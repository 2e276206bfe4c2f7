"""What each sender renders for a full, minimal or encrypted device, and the collapse rule."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace

import pytest

from chinwag.config import SmtpSettings
from chinwag.push.apns import MAX_PAYLOAD_BYTES as APNS_MAX
from chinwag.push.apns import apns_payload
from chinwag.push.email import PRIVATE_SUBJECT, EmailSender
from chinwag.push.fcm import MAX_PAYLOAD_BYTES as FCM_MAX
from chinwag.push.fcm import fcm_message
from chinwag.push.model import (
    GENERIC_ALERT,
    DeviceTarget,
    Notification,
    NotificationKind,
    PayloadMode,
    Platform,
    collapse_id,
)
from chinwag.push.sealed import open_sealed
from chinwag.push.webhook import webhook_body
from chinwag.push.webpush import MAX_PLAINTEXT, webpush_payload

NOTE = Notification(
    chat_id=7, message_id=42, chat_title="Climbing", sender_name="Ann", preview="Rope?", badge=3
)
RAW_KEY = os.urandom(32)
KEY = base64.b64encode(RAW_KEY).decode()
HUGE = replace(NOTE, chat_title="T" * 3000, sender_name="N" * 3000, preview="漢" * 4000)


def _device(platform: Platform, mode: PayloadMode, token: str = "t" * 64) -> DeviceTarget:
    key = RAW_KEY if mode is PayloadMode.ENCRYPTED else None
    return DeviceTarget(1, platform, token, "d-1", payload=mode, encryption_key=key)


def test_collapse_rule_alert_per_message_clear_per_chat_removal_per_message() -> None:
    """collapse_id: an alert per message, a clear per chat, a removal per message."""
    assert collapse_id(NOTE) == "m42"
    assert collapse_id(replace(NOTE, message_id=43)) == "m43"
    clear = replace(NOTE, kind=NotificationKind.CLEAR)
    assert collapse_id(clear) == collapse_id(replace(clear, message_id=99)) == "c7"
    assert collapse_id(replace(NOTE, kind=NotificationKind.REMOVAL)) == "r42"


def test_apns_full_shows_text_without_mutable_content() -> None:
    """A full device's APNs alert carries title and body, thread-id, and no mutable-content."""
    aps = json.loads(apns_payload(_device(Platform.APNS, PayloadMode.FULL), NOTE))["aps"]
    assert aps["alert"] == {"title": "Climbing", "body": "Ann: Rope?"}
    assert aps["thread-id"] == "7" and "mutable-content" not in aps


@pytest.mark.parametrize("mode", [PayloadMode.FULL, PayloadMode.MINIMAL, PayloadMode.ENCRYPTED])
def test_silent_updates_carry_ids_only_in_every_mode(mode: PayloadMode) -> None:
    """Clear and removal updates carry no text and no sealed field, whatever the mode."""
    for kind in (NotificationKind.CLEAR, NotificationKind.REMOVAL):
        note = replace(NOTE, kind=kind, preview="")
        apns = apns_payload(_device(Platform.APNS, mode), note).decode()
        fcm = json.dumps(fcm_message(_device(Platform.FCM, mode), note))
        web = webpush_payload(_device(Platform.WEBPUSH, mode), note).decode()
        for text in (apns, fcm, web):
            assert "Climbing" not in text and "Ann" not in text and "encrypted" not in text


def test_encrypted_payloads_fit_every_provider_limit() -> None:
    """A huge title, sender and body sealed for APNs, FCM and Web Push stay within 4096 bytes
    (3993 for Web Push before its own encryption) and still open."""
    apns = apns_payload(_device(Platform.APNS, PayloadMode.ENCRYPTED), HUGE)
    assert len(apns) <= APNS_MAX
    message = fcm_message(_device(Platform.FCM, PayloadMode.ENCRYPTED), HUGE)["message"]
    assert len(json.dumps({"data": message["data"]}).encode()) <= FCM_MAX
    web = webpush_payload(_device(Platform.WEBPUSH, PayloadMode.ENCRYPTED), HUGE)
    assert len(web) <= MAX_PLAINTEXT
    for field in (
        json.loads(apns)["encrypted"],
        message["data"]["encrypted"],
        json.loads(web)["encrypted"],
    ):
        assert open_sealed(KEY, field)["body"].endswith("…")


def test_full_fcm_messages_are_fitted_too() -> None:
    """A full device's FCM notification is shortened to FCM's 4096 bytes (it never was)."""
    message = fcm_message(_device(Platform.FCM, PayloadMode.FULL), HUGE)["message"]
    counted = {"notification": message["notification"], "data": message["data"]}
    assert len(json.dumps(counted, ensure_ascii=False).encode()) <= FCM_MAX
    assert message["notification"]["body"].endswith("…")


def test_fcm_encrypted_is_data_only_with_the_generic_alert() -> None:
    """An encrypted FCM device gets a data message (its app decrypts), high priority."""
    message = fcm_message(_device(Platform.FCM, PayloadMode.ENCRYPTED), NOTE)["message"]
    assert set(message) == {"token", "data", "android"}
    assert message["android"] == {"priority": "high"}
    data = message["data"]
    assert data["alert"] == GENERIC_ALERT and data["type"] == "alert"
    assert {data["chat_id"], data["message_id"], data["badge"]} == {"7", "42", "3"}
    assert all(isinstance(value, str) for value in data.values())


def test_minimal_webhook_is_ids_only_and_encrypted_adds_the_sealed_field() -> None:
    """A minimal webhook body has ids, delivery id and badge; an encrypted one also the field."""
    minimal = json.loads(webhook_body(_device(Platform.WEBHOOK, PayloadMode.MINIMAL), NOTE))
    assert minimal == {"chat_id": 7, "message_id": 42, "delivery_id": "d-1", "badge": 3}
    sealed = json.loads(webhook_body(_device(Platform.WEBHOOK, PayloadMode.ENCRYPTED), NOTE))
    assert open_sealed(KEY, sealed.pop("encrypted"))["body"] == "Ann: Rope?"
    assert sealed == minimal


@pytest.mark.parametrize("mode", [PayloadMode.MINIMAL, PayloadMode.ENCRYPTED])
def test_private_email_has_no_content(mode: PayloadMode) -> None:
    """A minimal or encrypted email device's mail: generic subject and text, ids in headers; a
    digest says how many messages, not what they said."""
    sender = EmailSender(settings=SmtpSettings("smtp://mail.example.com", "chat@example.com"))
    device = _device(Platform.EMAIL, mode, token="bob@example.com")
    digest = replace(NOTE, earlier=(("Bea", "first"), ("Cy", "second")))
    for note, count in ((NOTE, "a new message"), (digest, "3 new messages")):
        mail = sender.message_for(device, note)
        text = mail.as_string()
        assert mail["Subject"] == PRIVATE_SUBJECT
        assert mail["X-Chinwag-Message-Id"] == "42" and mail["X-Chinwag-Chat-Id"] == "7"
        assert count in mail.get_content()
        for secret in ("Climbing", "Ann", "Rope", "Bea", "first", "second"):
            assert secret not in text


def test_device_repr_never_shows_the_key() -> None:
    """A DeviceTarget in a log line or a traceback shows its mode, never its key or secret."""
    device = replace(_device(Platform.WEBHOOK, PayloadMode.ENCRYPTED), secret="whsec_abc")
    text = repr(device)
    assert "encrypted" in text
    assert repr(RAW_KEY) not in text and "whsec_abc" not in text
