"""Quiet hours in the policy, case by case (chinwag.fanout.policy): when a window holds an alert
and until when — across midnight, over both DST nights, in the user's own zone — which alerts it
holds, which mentions break through, and which deferred alerts collapse into a later one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

import pytest

from chinwag.fanout import policy
from chinwag.fanout.policy import QuietHours, SendTimeFacts
from chinwag.store.states import DeliveryKind, NotifyLevel

NIGHT = QuietHours(time(22, 0), time(7, 0), "Europe/Berlin")
OFFICE = QuietHours(time(9, 0), time(17, 0), "Europe/Berlin")


def utc(text: str) -> float:
    """An instant written as UTC wall time, e.g. "2026-07-01 21:30"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class WindowCase:
    name: str
    quiet: QuietHours | None
    now: str  # UTC
    until: str | None  # UTC


# Berlin is UTC+2 in summer (CEST), UTC+1 in winter (CET); in 2026 the clocks go forward on
# 29 March at 02:00 and back on 25 October at 03:00.
WINDOW_CASES = [
    WindowCase("no quiet hours", None, "2026-07-01 21:30", None),
    WindowCase("23:30, before midnight", NIGHT, "2026-07-01 21:30", "2026-07-02 05:00"),
    WindowCase("06:59, after midnight", NIGHT, "2026-07-02 04:59", "2026-07-02 05:00"),
    WindowCase("22:00 is inside", NIGHT, "2026-07-01 20:00", "2026-07-02 05:00"),
    WindowCase("07:00 is outside", NIGHT, "2026-07-02 05:00", None),
    WindowCase("noon", NIGHT, "2026-07-02 10:00", None),
    WindowCase("21:59", NIGHT, "2026-07-01 19:59", None),
    WindowCase("same-day window, inside", OFFICE, "2026-07-01 08:00", "2026-07-01 15:00"),
    WindowCase("same-day window, before", OFFICE, "2026-07-01 06:59", None),
    WindowCase("same-day window, after", OFFICE, "2026-07-01 15:00", None),
    # 23:00 CET to 07:00 CEST: seven hours, the clocks skip one.
    WindowCase("spring-forward night", NIGHT, "2026-03-28 22:00", "2026-03-29 05:00"),
    WindowCase("spring-forward, after the jump", NIGHT, "2026-03-29 01:30", "2026-03-29 05:00"),
    # 23:00 CEST to 07:00 CET: nine hours, the clocks repeat one.
    WindowCase("fall-back night", NIGHT, "2026-10-24 21:00", "2026-10-25 06:00"),
    WindowCase("fall-back, in the repeated hour", NIGHT, "2026-10-25 01:30", "2026-10-25 06:00"),
    # An end the clocks skip (02:30) is read by the clock before the jump: 02:30 CET.
    WindowCase(
        "end in the skipped hour",
        QuietHours(time(22, 0), time(2, 30), "Europe/Berlin"),
        "2026-03-29 00:50",
        "2026-03-29 01:30",
    ),
    # An end the clocks repeat (02:30) is its first occurrence; the second pass is outside.
    WindowCase(
        "end in the repeated hour, first pass",
        QuietHours(time(22, 0), time(2, 30), "Europe/Berlin"),
        "2026-10-25 00:10",
        "2026-10-25 00:30",
    ),
    WindowCase(
        "end in the repeated hour, second pass",
        QuietHours(time(22, 0), time(2, 30), "Europe/Berlin"),
        "2026-10-25 01:10",
        None,
    ),
    WindowCase(
        "the user's zone, not the server's",
        QuietHours(time(22, 0), time(7, 0), "America/New_York"),
        "2026-07-02 03:00",
        "2026-07-02 11:00",
    ),
    WindowCase(
        "a zone east of the date line",
        QuietHours(time(22, 0), time(7, 0), "Pacific/Auckland"),
        "2026-07-01 11:00",
        "2026-07-01 19:00",
    ),
]


@pytest.mark.parametrize("case", WINDOW_CASES, ids=lambda case: case.name)
def test_quiet_until(case: WindowCase) -> None:
    """Inside the window: its end in the user's zone, as UTC epoch seconds; outside: None."""
    expected = None if case.until is None else utc(case.until)
    assert policy.quiet_until(case.quiet, utc(case.now)) == expected


def test_parse_reads_the_users_columns() -> None:
    """The users table's "HH:MM" columns make a window; any of them null makes none."""
    assert QuietHours.parse("22:00", "07:00", "Europe/Berlin") == NIGHT
    assert QuietHours.parse(None, None, None) is None
    assert QuietHours.parse("22:00", None, "Europe/Berlin") is None


IN_WINDOW = utc("2026-07-01 23:00")  # 01:00 in Berlin


def _facts(**changes: object) -> SendTimeFacts:
    facts = SendTimeFacts(
        kind=DeliveryKind.ALERT,
        platform="apns",
        device_active=True,
        device_owner_id=7,
        recipient_id=7,
        is_member=True,
        notify_level=NotifyLevel.ALL,
        mentioned=False,
        message_deleted=False,
        quiet_when_active=False,
        last_active_at=None,
        quiet_hours=NIGHT,
        mentions_break_through=False,
    )
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


@dataclass(frozen=True)
class DeferCase:
    name: str
    changes: dict[str, object]
    deferred: bool


DEFER_CASES = [
    DeferCase("apns alert", {}, True),
    DeferCase("fcm alert", {"platform": "fcm"}, True),
    DeferCase("web push alert", {"platform": "webpush"}, True),
    DeferCase("email still goes", {"platform": "email"}, False),
    DeferCase("webhook still goes", {"platform": "webhook"}, False),
    DeferCase("a clear is silent", {"kind": DeliveryKind.CLEAR}, False),
    DeferCase("a removal is silent", {"kind": DeliveryKind.REMOVAL}, False),
    DeferCase("mention, no break-through", {"mentioned": True}, True),
    DeferCase("mention breaks through", {"mentioned": True, "mentions_break_through": True}, False),
    DeferCase("break-through needs a mention", {"mentions_break_through": True}, True),
    DeferCase("no quiet hours", {"quiet_hours": None}, False),
    DeferCase("outside the window", {"quiet_hours": OFFICE}, False),
]


@pytest.mark.parametrize("case", DEFER_CASES, ids=lambda case: case.name)
def test_deferred_until(case: DeferCase) -> None:
    """Phone and browser alerts wait for the window's end; the rest, and breaking mentions, go."""
    until = policy.deferred_until(_facts(**case.changes), IN_WINDOW)
    assert until == (utc("2026-07-02 05:00") if case.deferred else None)


@dataclass(frozen=True)
class Row:
    id: int
    device_id: int
    chat_id: int
    message_id: int


def test_collapse_keeps_the_latest_alert_per_device_and_chat() -> None:
    """Per device and chat only the newest message stays deferred, whatever the row order."""
    rows = [
        Row(id=1, device_id=10, chat_id=1, message_id=100),
        Row(id=2, device_id=11, chat_id=1, message_id=100),  # another device: its own
        Row(id=3, device_id=10, chat_id=2, message_id=101),  # another chat: its own
        Row(id=5, device_id=10, chat_id=1, message_id=103),
        Row(id=4, device_id=10, chat_id=1, message_id=102),
        Row(id=6, device_id=11, chat_id=1, message_id=99),
    ]
    assert policy.collapsed_by_quiet_hours(rows) == {1, 4, 6}
    assert policy.collapsed_by_quiet_hours([rows[0]]) == set()
