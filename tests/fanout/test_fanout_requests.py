"""The chat layer asks the engine through the outbox, with a kind, and never writes deliveries:
reads queue a clear fan-out, deletions a removal (or cancel a fan-out not begun), a change of
quiet hours a reconsider of the deferred alerts; the engine expands them by its policy."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from tests.conftest import Api
from tests.fanout.recording import RecordingDispatcher

import chinwag.chat
from chinwag.fanout import Worker
from chinwag.fanout.outbox import claim_outbox, expand_batch
from chinwag.push.model import NotificationKind
from chinwag.store.database import Database
from chinwag.store.schema import deliveries, outbox
from chinwag.store.states import DeliveryKind, DeliveryStatus, OutboxState


def _run(db: Database, dispatcher: RecordingDispatcher) -> None:
    asyncio.run(Worker(db, dispatcher).run_until_idle(limit_seconds=30, horizon=3.0))


def _fanouts(db: Database, message_id: int) -> list[tuple[str, int, str]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(outbox.c.kind, outbox.c.user_id, outbox.c.state)
            .where(outbox.c.message_id == message_id)
            .order_by(outbox.c.id)
        ).all()
    return [(row.kind, row.user_id, row.state) for row in rows]


def _deliveries(db: Database, message_id: int) -> list[tuple[str, str]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.kind, deliveries.c.status)
            .where(deliveries.c.message_id == message_id)
            .order_by(deliveries.c.id)
        ).all()
    return [(row.kind, row.status) for row in rows]


def _pair(api: Api) -> tuple[httpx.Client, httpx.Client, int, int]:
    alice, bob = api.user("alice"), api.user("bob")
    bob_id = int(bob.get("/v1/me").json()["id"])
    created = bob.post("/v1/devices", json={"platform": "apns", "token": "b0" * 32})
    assert created.status_code == 201, created.text
    chat = alice.post("/v1/chats", json={"title": "Pair", "members": ["bob"]}).json()
    return alice, bob, int(chat["id"]), bob_id


def _send(client: httpx.Client, chat_id: int, body: str) -> int:
    response = client.post(f"/v1/chats/{chat_id}/messages", json={"body": body})
    assert response.status_code == 201, response.text
    return int(response.json()["message"]["id"])


def test_reading_queues_a_clear_fanout_that_the_engine_expands(api: Api, db: Database) -> None:
    """A read writes a clear outbox row for the reader, no delivery; the worker turns it into
    a clear delivery for the reader's device."""
    alice, bob, chat_id, bob_id = _pair(api)
    message_id = _send(alice, chat_id, "hello")
    _run(db, RecordingDispatcher())
    assert bob.post(f"/v1/chats/{chat_id}/read", json={"message_id": message_id}).is_success
    assert _fanouts(db, message_id)[1] == (DeliveryKind.CLEAR, bob_id, OutboxState.PENDING)
    assert _deliveries(db, message_id) == [(DeliveryKind.ALERT, DeliveryStatus.DELIVERED)]
    dispatcher = RecordingDispatcher()
    _run(db, dispatcher)
    assert [n.kind for _, n in dispatcher.sent] == [NotificationKind.CLEAR]
    assert _fanouts(db, message_id)[1][2] == OutboxState.DONE


def test_a_reader_without_an_active_device_queues_no_clear(api: Api, db: Database) -> None:
    """A clear could reach nobody: the read moves the marker and queues nothing; once the
    reader has a device again, the next read queues its clear."""
    alice, bob, chat_id, bob_id = _pair(api)
    (device,) = bob.get("/v1/devices").json()["devices"]
    assert bob.delete(f"/v1/devices/{device['id']}").is_success
    first = _send(alice, chat_id, "hello")
    read = bob.post(f"/v1/chats/{chat_id}/read", json={"message_id": first})
    assert read.status_code == 200 and read.json()["unread"] == 0, read.text
    assert [kind for kind, _, _ in _fanouts(db, first)] == [DeliveryKind.ALERT]
    assert bob.post("/v1/devices", json={"platform": "apns", "token": "b1" * 32}).is_success
    second = _send(alice, chat_id, "again")
    assert bob.post(f"/v1/chats/{chat_id}/read", json={"message_id": second}).is_success
    assert _fanouts(db, second)[1] == (DeliveryKind.CLEAR, bob_id, OutboxState.PENDING)


def test_reading_again_after_rejoining_asks_nothing_twice(api: Api, db: Database) -> None:
    """A member removed and added back reads the same message again: one clear fan-out, and
    the read still succeeds."""
    alice, bob, chat_id, _bob_id = _pair(api)
    message_id = _send(alice, chat_id, "hello")
    read = {"message_id": message_id}
    assert bob.post(f"/v1/chats/{chat_id}/read", json=read).is_success
    assert alice.delete(f"/v1/chats/{chat_id}/members/bob").is_success
    assert alice.post(f"/v1/chats/{chat_id}/members", json={"username": "bob"}).is_success
    again = bob.post(f"/v1/chats/{chat_id}/read", json=read)
    assert again.status_code == 200, again.text
    kinds = [kind for kind, _, _ in _fanouts(db, message_id)]
    assert kinds == [DeliveryKind.ALERT, DeliveryKind.CLEAR]


def test_deleting_before_expansion_cancels_and_asks_for_no_removal(
    api: Api, db: Database, rung: list[int]
) -> None:
    """A message deleted before its fan-out began: the fan-out is cancelled, nothing else is
    queued, and the doorbell is not rung for it."""
    alice, _bob, chat_id, _bob_id = _pair(api)
    message_id = _send(alice, chat_id, "oops")
    rung.clear()
    assert alice.delete(f"/v1/chats/{chat_id}/messages/{message_id}").status_code == 204
    assert _fanouts(db, message_id) == [(DeliveryKind.ALERT, 0, OutboxState.CANCELLED)]
    assert rung == []


@pytest.mark.parametrize("sent", [False, True], ids=["waiting", "delivered"])
def test_deleting_after_expansion_queues_a_removal_for_the_engine(
    api: Api, db: Database, sent: bool
) -> None:
    """A message deleted after its deliveries were written: the chat layer leaves them alone and
    queues a removal; the engine skips the waiting alerts and withdraws the delivered ones."""
    alice, _bob, chat_id, _bob_id = _pair(api)
    message_id = _send(alice, chat_id, "oops")
    if sent:
        _run(db, RecordingDispatcher())
    else:
        (claim,) = claim_outbox(db, "test", time.time(), 60, 1)
        expand_batch(db, claim, "test", time.time(), 60, 100)
    before = _deliveries(db, message_id)
    assert alice.delete(f"/v1/chats/{chat_id}/messages/{message_id}").status_code == 204
    assert _deliveries(db, message_id) == before  # the chat layer wrote none
    assert _fanouts(db, message_id)[1] == (DeliveryKind.REMOVAL, 0, OutboxState.PENDING)
    dispatcher = RecordingDispatcher()
    _run(db, dispatcher)
    if sent:
        assert [n.kind for _, n in dispatcher.sent] == [NotificationKind.REMOVAL]
        assert _deliveries(db, message_id) == [
            (DeliveryKind.ALERT, DeliveryStatus.DELIVERED),
            (DeliveryKind.REMOVAL, DeliveryStatus.DELIVERED),
        ]
    else:
        assert dispatcher.sent == []
        assert _deliveries(db, message_id) == [(DeliveryKind.ALERT, DeliveryStatus.SKIPPED)]


def test_changing_quiet_hours_queues_a_reconsider_only_when_alerts_wait(
    api: Api, db: Database, rung: list[int]
) -> None:
    """A quiet hours change with a deferred alert writes one reconsider row (re-armed by the
    next change) and rings the doorbell, leaving the delivery to the engine, which sends it."""
    alice, bob, chat_id, bob_id = _pair(api)
    night = {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}
    assert bob.put("/v1/me/settings", json={"quiet_hours": night}).is_success
    message_id = _send(alice, chat_id, "late")
    assert _fanouts(db, message_id) == [(DeliveryKind.ALERT, 0, OutboxState.PENDING)]
    (claim,) = claim_outbox(db, "test", time.time(), 60, 1)
    expand_batch(db, claim, "test", time.time(), 60, 100)
    later = time.time() + 3600  # as if the worker had deferred it to the window's end
    with db.write() as conn:
        conn.execute(
            deliveries.update().values(status=DeliveryStatus.DEFERRED, next_attempt_at=later)
        )
    rung.clear()
    assert bob.put("/v1/me/settings", json={"quiet_hours": None}).is_success
    assert bob.put("/v1/me/settings", json={"mentions_break_through": True}).is_success
    assert rung == [message_id, message_id]
    assert _fanouts(db, message_id) == [
        (DeliveryKind.ALERT, 0, OutboxState.DONE),
        (DeliveryKind.RECONSIDER, bob_id, OutboxState.PENDING),
    ]
    with db.read() as conn:
        assert conn.execute(sa.select(deliveries.c.next_attempt_at)).scalar() == later
    dispatcher = RecordingDispatcher()
    _run(db, dispatcher)
    assert [n.message_id for _, n in dispatcher.sent] == [message_id]
    assert _deliveries(db, message_id) == [(DeliveryKind.ALERT, DeliveryStatus.DELIVERED)]
    assert _fanouts(db, message_id)[1] == (DeliveryKind.RECONSIDER, bob_id, OutboxState.DONE)
    rung.clear()
    assert bob.put("/v1/me/settings", json={"quiet_hours": night}).is_success
    assert rung == []  # nothing waits: nothing to reconsider


def test_the_chat_layer_never_writes_deliveries() -> None:
    """No module of chinwag.chat inserts, updates or deletes delivery rows: only the engine does."""
    chat = Path(chinwag.chat.__file__).parent
    writes = re.compile(r"\bdeliveries\.(insert|update|delete)\(")
    offenders = [path.name for path in sorted(chat.glob("*.py")) if writes.search(path.read_text())]
    assert offenders == []
