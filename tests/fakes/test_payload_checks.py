"""The fakes refuse what APNs and FCM refuse in the fields private notifications use."""

from __future__ import annotations

from typing import Any

import pytest

from chinwag.fakes.apns import aps_problem
from chinwag.fakes.fcm import message_problem

GOOD_APS: dict[str, Any] = {
    "alert": {"body": "New message"},
    "thread-id": "7",
    "mutable-content": 1,
    "interruption-level": "time-sensitive",
    "badge": 2,
}


def test_apns_fake_accepts_what_apple_documents() -> None:
    """An alert with thread-id, mutable-content 1, a time-sensitive level and a badge is fine."""
    assert aps_problem(GOOD_APS) is None
    assert aps_problem({"content-available": 1}) is None


@pytest.mark.parametrize(
    "change",
    [
        {"thread-id": 7},
        {"thread-id": ""},
        {"interruption-level": "urgent"},
        {"mutable-content": True},
        {"mutable-content": 2},
        {"alert": None},  # mutable-content without an alert: no extension would run
        {"alert": {"body": 5}},
        {"badge": "2"},
    ],
)
def test_apns_fake_refuses_malformed_fields(change: dict[str, Any]) -> None:
    """A numeric or empty thread-id, an unknown interruption level, mutable-content that is not
    1 or has no alert, a non-string alert text or a text badge is refused."""
    aps = {**GOOD_APS, **change}
    if change.get("alert", "") is None:
        del aps["alert"]
    assert aps_problem(aps) is not None


WHERE = "message.android.notification"


def _message(**android: Any) -> dict[str, Any]:
    return {"message": {"token": "t", "data": {"chat_id": "7"}, "android": android}}


def test_fcm_fake_accepts_tag_and_notification_priority() -> None:
    """android.notification with a string tag and PRIORITY_HIGH is fine."""
    good = _message(
        priority="high", notification={"tag": "7", "notification_priority": "PRIORITY_HIGH"}
    )
    assert message_problem(good) is None


@pytest.mark.parametrize(
    ("android", "field"),
    [
        ({"notification": {"tag": 7}}, f"{WHERE}.tag"),
        ({"notification": {"notification_priority": "HIGH"}}, f"{WHERE}.notification_priority"),
        ({"notification": {"interruption_level": "x"}}, "message.android.notification"),
        ({"notification": "x"}, "message.android.notification"),
    ],
)  # fmt: skip
def test_fcm_fake_refuses_malformed_android_notification(
    android: dict[str, Any], field: str
) -> None:
    """A numeric tag, an unknown priority or field, a non-object notification: INVALID_ARGUMENT
    naming the field."""
    problem = message_problem(_message(**android))
    assert problem is not None and problem[0] == field


def test_fcm_fake_refuses_a_message_over_4096_bytes() -> None:
    """FCM refuses a message whose notification and data exceed 4096 bytes."""
    big = {"message": {"token": "t", "data": {"encrypted": "x" * 4100}}}
    assert message_problem(big) == ("message", "Message is too big")
