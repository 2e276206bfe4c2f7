"""Quiet hours end to end: the API, the worker with the real senders, and the local fakes over
TLS, on SQLite and PostgreSQL. Time is a clock the test sets, never waited for: during bob's
window his phone's alerts are deferred with the time they go and his email still goes; at the
window's end only the latest alert per chat rings, with the badge of that moment; a mention
breaks through when he allows it; turning quiet hours off sends what waited at the next step."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.conftest import Api

from chinwag.fakes.suite import RunningFakes
from chinwag.fanout import Worker
from chinwag.fanout.deliveries import next_due_at
from chinwag.push.registry import Senders
from chinwag.store.database import Database

BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}
APNS_TOKEN = "b0" * 32


class Night:
    """A moment inside bob's 22:00-07:00 window in Berlin (before 04:00, so that moving the end
    earlier still leaves it inside), and the window's end. Soon after now and within a day of
    it: every row the API writes now is already due by this clock, and the worker's pruning of
    day-old events keeps today's."""

    def __init__(self) -> None:
        soon = datetime.now(BERLIN) + timedelta(minutes=10)
        if soon.hour >= 22 or soon.hour < 4:
            late = soon
        else:
            late = datetime.combine(soon.date(), time(23, 0), tzinfo=BERLIN)
        ends_on = late.date() + timedelta(days=1) if late.hour >= 22 else late.date()
        self.late = late.timestamp()
        self.end = datetime.combine(ends_on, time(7, 0), tzinfo=BERLIN).timestamp()


@pytest.fixture
def night() -> Night:
    return Night()


def run_worker(db: Database, fakes: RunningFakes, now: float) -> None:
    """One worker with the real senders, at ``now`` by its clock, until nothing is due."""

    async def main() -> None:
        senders = Senders.from_settings(fakes.providers.settings())
        try:
            worker = Worker(db, senders, wall_clock=lambda: now)
            await worker.run_until_idle(limit_seconds=30, horizon=1.0)
        finally:
            await senders.aclose()

    asyncio.run(main())


def apns_alerts(fakes: RunningFakes) -> list[tuple[int, int]]:
    """(message id, badge) of each alert the fake APNs accepted, in order; silent updates left
    out."""
    return [
        (int(r.payload["message_id"]), int(r.payload["aps"]["badge"]))
        for r in list(fakes.providers.apns.accepted)
        if r.headers.get("apns-push-type") == "alert"
    ]


def emails(fakes: RunningFakes) -> int:
    return len(fakes.providers.smtp.accepted)


def _send(client: httpx.Client, chat_id: int, body: str) -> int:
    response = client.post(f"/v1/chats/{chat_id}/messages", json={"body": body})
    assert response.status_code == 201, response.text
    return int(response.json()["message"]["id"])


def _chat(alice: httpx.Client, title: str, *members: str) -> int:
    response = alice.post("/v1/chats", json={"title": title, "members": list(members)})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _phone(client: httpx.Client, token: str = APNS_TOKEN) -> None:
    response = client.post("/v1/devices", json={"platform": "apns", "token": token})
    assert response.status_code == 201, response.text


def _quiet(client: httpx.Client, **settings: Any) -> None:
    response = client.put("/v1/me/settings", json=settings)
    assert response.status_code == 200, response.text


def apns_row(alice: httpx.Client, message_id: int) -> dict[str, Any]:
    rows = alice.get(f"/v1/messages/{message_id}/deliveries").json()["deliveries"]
    (row,) = [r for r in rows if r["platform"] == "apns"]
    return dict(row)


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_phone_alerts_wait_for_the_window_end_collapsed_per_chat_with_the_badge_of_then(
    web_api: Api, db: Database, fakes: RunningFakes, night: Night
) -> None:
    """In the window APNs alerts are deferred with their time and email goes; at the end the
    latest alert of each chat rings once, with the badge counted when it is sent."""
    alice, bob = web_api.user("alice"), web_api.user("bob")
    _phone(bob)
    email = bob.post("/v1/devices", json={"platform": "email", "token": "bob@example.com"})
    assert email.status_code == 201, email.text
    _quiet(bob, quiet_hours=NIGHT)
    team, family = _chat(alice, "Team", "bob"), _chat(alice, "Family", "bob")
    first, second = _send(alice, team, "one"), _send(alice, team, "two")
    other = _send(alice, family, "three")

    run_worker(db, fakes, night.late)
    assert apns_alerts(fakes) == [] and emails(fakes) == 3
    collapsed = apns_row(alice, first)
    assert (collapsed["status"], collapsed["last_error"]) == (
        "skipped",
        "collapsed into a later message",
    )
    for message_id in (second, other):
        row = apns_row(alice, message_id)
        assert row["status"] == "deferred" and row["attempts"] == 0
        assert epoch(row["deferred_until"]) == night.end
    summary = alice.get(f"/v1/messages/{second}/deliveries").json()["summary"]
    assert summary == {"deferred": 1, "delivered": 1}
    # The worker sleeps until the window's end, not in a loop over the deferred rows.
    assert next_due_at(db, night.late) == night.end

    # Bob reads the team's first message on his laptop: the badge at the end is 2, not 3.
    read = bob.post(f"/v1/chats/{team}/read", json={"message_id": first})
    assert read.status_code == 200, read.text
    run_worker(db, fakes, night.late + 60)
    assert apns_alerts(fakes) == []  # the clear went (silent); the alerts still wait

    run_worker(db, fakes, night.end + 1)
    assert sorted(apns_alerts(fakes)) == [(second, 2), (other, 2)]
    assert emails(fakes) == 3
    assert apns_row(alice, second)["status"] == "delivered"
    assert apns_row(alice, second)["deferred_until"] is None
    assert apns_row(alice, first)["status"] == "skipped"


def test_a_mention_rings_in_quiet_hours_only_for_who_lets_mentions_break_through(
    web_api: Api, db: Database, fakes: RunningFakes, night: Night
) -> None:
    """Bob lets mentions break through and his mention rings at once; carol does not, and hers
    waits; a plain message waits for both."""
    alice, bob, carol = web_api.user("alice"), web_api.user("bob"), web_api.user("carol")
    _phone(bob, "b0" * 32)
    _phone(carol, "c0" * 32)
    _quiet(bob, quiet_hours=NIGHT, mentions_break_through=True)
    _quiet(carol, quiet_hours=NIGHT)
    chat = _chat(alice, "Team", "bob", "carol")
    plain = _send(alice, chat, "good night")
    mention = _send(alice, chat, "@bob @carol the server is down")

    run_worker(db, fakes, night.late)
    rang = [(r.token[:2], int(r.payload["message_id"])) for r in fakes.providers.apns.accepted]
    assert rang == [("b0", mention)]
    rows = alice.get(f"/v1/messages/{mention}/deliveries").json()["deliveries"]
    assert sorted((r["user"], r["status"]) for r in rows) == [
        ("bob", "delivered"),
        ("carol", "deferred"),
    ]
    # Bob's plain message still waits: the mention rang at once, so nothing deferred is later.
    assert [
        r["status"]
        for r in alice.get(f"/v1/messages/{plain}/deliveries").json()["deliveries"]
        if r["user"] == "bob"
    ] == ["deferred"]


def test_quiet_hours_null_turns_them_off_and_what_waited_goes_at_the_next_step(
    web_api: Api, db: Database, fakes: RunningFakes, night: Night
) -> None:
    """Deferred alerts go at the worker's next step once quiet hours are turned off, still
    inside the old window."""
    alice, bob = web_api.user("alice"), web_api.user("bob")
    _phone(bob)
    _quiet(bob, quiet_hours=NIGHT)
    chat = _chat(alice, "Team", "bob")
    message_id = _send(alice, chat, "late news")
    run_worker(db, fakes, night.late)
    assert apns_row(alice, message_id)["status"] == "deferred"
    # Nothing was sent, yet alice's live delivery panel was told.
    events = alice.get("/v1/events", params={"after": 0}).json()["events"]
    panels = [e["data"] for e in events if e["kind"] == "delivery"]
    assert panels == [{"message_id": message_id, "chat_id": chat, "summary": {"deferred": 1}}]

    off = bob.put("/v1/me/settings", json={"quiet_hours": None})
    assert off.status_code == 200 and off.json()["quiet_hours"] is None
    run_worker(db, fakes, night.late + 60)
    assert apns_alerts(fakes) == [(message_id, 1)]
    row = apns_row(alice, message_id)
    assert (row["status"], row["attempts"]) == ("delivered", 1)


def test_moving_the_window_end_defers_what_waits_to_the_new_end(
    web_api: Api, db: Database, fakes: RunningFakes, night: Night
) -> None:
    """Each change of quiet hours asks the policy again: a deferred alert follows the window's
    end as it moves, earlier twice in a row, and nothing rings before it."""
    alice, bob = web_api.user("alice"), web_api.user("bob")
    _phone(bob)
    _quiet(bob, quiet_hours=NIGHT)
    message_id = _send(alice, _chat(alice, "Team", "bob"), "late news")
    run_worker(db, fakes, night.late)
    assert epoch(apns_row(alice, message_id)["deferred_until"]) == night.end
    for end, hours_earlier in (("06:00", 1), ("05:00", 2)):
        _quiet(bob, quiet_hours={**NIGHT, "end": end})
        run_worker(db, fakes, night.late + 60)
        row = apns_row(alice, message_id)
        assert row["status"] == "deferred" and row["attempts"] == 0
        assert epoch(row["deferred_until"]) == night.end - 3600 * hours_earlier
    assert apns_alerts(fakes) == []
