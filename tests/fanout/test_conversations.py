"""Conversations end to end through the API and the engine: mentions and notify levels, unread
counts and badges, clear updates after reading, edits and deletions, the live stream, quiet
while active, and email digests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from tests.conftest import Api, LiveGateway, gateway_settings
from tests.fanout.recording import RecordingDispatcher

from chinwag.fanout import Worker, WorkerOptions
from chinwag.push.model import NotificationKind
from chinwag.store.database import Database
from chinwag.store.schema import devices
from chinwag.web import Services


def _run(db: Database, dispatcher: RecordingDispatcher, digest: float = 0.0) -> None:
    worker = Worker(db, dispatcher, WorkerOptions(email_digest_seconds=digest))
    asyncio.run(worker.run_until_idle(limit_seconds=30, horizon=3.0))


def _device(client: httpx.Client, token: str, platform: str = "apns") -> int:
    response = client.post("/v1/devices", json={"platform": platform, "token": token})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _verified(db: Database, device_id: int) -> None:
    """As if bob had sent back his email code: these tests are about what emails carry
    (verification itself: tests/web/test_device_ownership.py)."""
    with db.write() as conn:
        conn.execute(devices.update().where(devices.c.id == device_id).values(verified=True))


def _send(client: httpx.Client, chat_id: int, body: str) -> int:
    response = client.post(f"/v1/chats/{chat_id}/messages", json={"body": body})
    assert response.status_code == 201, response.text
    return int(response.json()["message"]["id"])


@pytest.fixture
def trio(api: Api) -> tuple[httpx.Client, httpx.Client, httpx.Client, int]:
    return _trio(api)


def _trio(api: Api) -> tuple[httpx.Client, httpx.Client, httpx.Client, int]:
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    _device(bob, "b0" * 32)
    _device(carol, "c0" * 32)
    chat = alice.post("/v1/chats", json={"title": "Team", "members": ["bob", "carol"]}).json()
    return alice, bob, carol, int(chat["id"])


def test_mention_pierces_mute_and_mentions_level_gets_only_mentions(
    trio: tuple[httpx.Client, httpx.Client, httpx.Client, int], db: Database
) -> None:
    """Muted bob hears only '@bob'; carol on 'mentions' hears only '@carol'."""
    alice, bob, carol, chat_id = trio
    assert bob.put(f"/v1/chats/{chat_id}/settings", json={"muted": True}).json()["notify"] == "none"
    settings = carol.put(f"/v1/chats/{chat_id}/settings", json={"notify": "mentions"}).json()
    assert settings["notify"] == "mentions" and settings["muted"] is False
    _send(alice, chat_id, "plain message")
    _send(alice, chat_id, "hey @bob, look")
    _send(alice, chat_id, "and @Carol too")
    dispatcher = RecordingDispatcher()
    _run(db, dispatcher)
    got = sorted((d.token[:2], n.preview) for d, n in dispatcher.sent)
    assert got == [("b0", "hey @bob, look"), ("c0", "and @Carol too")]


def test_unread_counts_badges_and_clear_updates(
    trio: tuple[httpx.Client, httpx.Client, httpx.Client, int], db: Database
) -> None:
    """Unread counts follow the read marker; badges carry the total; reading sends clears."""
    alice, bob, _carol, chat_id = trio
    _device(bob, "b1" * 32)
    first = _send(alice, chat_id, "one")
    _send(alice, chat_id, "two")
    third = _send(alice, chat_id, "three")
    dispatcher = RecordingDispatcher()
    _run(db, dispatcher)
    badges = [n.badge for d, n in dispatcher.sent if d.token == "b0" * 32]
    assert badges == [3, 3, 3]  # all three stored before the worker ran
    assert [c["unread"] for c in bob.get("/v1/chats").json()["chats"]] == [3]
    assert alice.get("/v1/chats").json()["chats"][0]["unread"] == 0  # own messages never unread
    read = bob.post(f"/v1/chats/{chat_id}/read", json={"message_id": first}).json()
    assert read == {"chat_id": chat_id, "last_read_message_id": first, "unread": 2}
    stale = bob.post(f"/v1/chats/{chat_id}/read", json={"message_id": first - 1 or first})
    assert stale.json()["last_read_message_id"] == first  # the marker never moves back
    clears = RecordingDispatcher()
    _run(db, clears)
    assert sorted(d.token[:2] for d, _ in clears.sent) == ["b0", "b1"]
    assert {(n.kind, n.badge, n.message_id) for _, n in clears.sent} == {
        (NotificationKind.CLEAR, 2, first)
    }
    bob.post(f"/v1/chats/{chat_id}/read", json={"message_id": third})
    assert bob.get(f"/v1/chats/{chat_id}").json()["unread"] == 0


def test_deleting_cancels_pending_and_withdraws_delivered(
    trio: tuple[httpx.Client, httpx.Client, httpx.Client, int], db: Database
) -> None:
    """A deleted message's pending pushes are never sent; shown ones get a removal update."""
    alice, bob, _carol, chat_id = trio
    delivered = _send(alice, chat_id, "oops")
    _run(db, RecordingDispatcher())
    pending = _send(alice, chat_id, "never mind")
    assert alice.delete(f"/v1/chats/{chat_id}/messages/{pending}").status_code == 204
    assert alice.delete(f"/v1/chats/{chat_id}/messages/{delivered}").status_code == 204
    assert bob.delete(f"/v1/chats/{chat_id}/messages/{delivered}").status_code == 404
    dispatcher = RecordingDispatcher()
    _run(db, dispatcher)
    assert {(n.kind, n.message_id) for _, n in dispatcher.sent} == {
        (NotificationKind.REMOVAL, delivered)
    }
    assert len(dispatcher.sent) == 2  # bob's and carol's devices
    page = alice.get(f"/v1/messages/{pending}/deliveries").json()
    assert page["fanout"] == "cancelled" and page["deliveries"] == []
    history = bob.get(f"/v1/chats/{chat_id}/messages").json()["messages"]
    assert [(m["deleted"], m["body"]) for m in history] == [(True, ""), (True, "")]


def test_only_the_sender_edits(
    trio: tuple[httpx.Client, httpx.Client, httpx.Client, int],
) -> None:
    """The sender edits (history shows it); another member gets 403."""
    alice, bob, _carol, chat_id = trio
    message_id = _send(alice, chat_id, "teh typo")
    url = f"/v1/chats/{chat_id}/messages/{message_id}"
    assert bob.patch(url, json={"body": "hijack"}).status_code == 403
    edited = alice.patch(url, json={"body": "the typo"})
    assert edited.status_code == 200, edited.text
    (message,) = bob.get(f"/v1/chats/{chat_id}/messages").json()["messages"]
    assert message["body"] == "the typo" and message["edited_at"] is not None


def test_long_poll_sees_chat_events_and_own_delivery_updates(
    gateway_api: Api, db: Database
) -> None:
    """Members see message/edit/delete/read events; outsiders see none; senders see delivery
    (the long poll of the live gateway, which serves /v1/events)."""
    alice, bob, _carol, chat_id = _trio(gateway_api)
    outsider = gateway_api.user("mallory")
    start = bob.get("/v1/events").json()["last_id"]
    outsider_start = outsider.get("/v1/events").json()["last_id"]
    message_id = _send(alice, chat_id, "hello @bob")
    alice.patch(f"/v1/chats/{chat_id}/messages/{message_id}", json={"body": "hello again"})
    bob.post(f"/v1/chats/{chat_id}/read", json={"message_id": message_id})
    _run(db, RecordingDispatcher())
    seen = bob.get("/v1/events", params={"after": start}).json()["events"]
    assert [e["kind"] for e in seen] == ["message", "message_edited", "read"]
    assert seen[0]["data"]["body"] == "hello @bob" and seen[0]["data"]["sender"] == "alice"
    own = alice.get("/v1/events", params={"after": start}).json()["events"]
    delivery = [e for e in own if e["kind"] == "delivery"]
    assert delivery and delivery[-1]["data"]["summary"] == {"delivered": 2}
    assert outsider.get("/v1/events", params={"after": outsider_start}).json()["events"] == []
    waited = time.monotonic()
    empty = bob.get("/v1/events", params={"after": seen[-1]["id"], "wait": 1}).json()
    assert empty["events"] == [] and time.monotonic() - waited >= 0.9


class SseReader:
    """Reads a real text/event-stream response in a thread, collecting (id, kind, data)."""

    def __init__(self, url: str, token: str, last_event_id: int | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.events: list[tuple[int, str, dict[str, object]]] = []
        self.opened = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self._thread.start()

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            self._read_events(url, headers)
        except httpx.HTTPError:
            if not self._stop.is_set():  # closing the client ends the read on purpose
                raise

    def _read_events(self, url: str, headers: dict[str, str]) -> None:
        with self._client.stream("GET", url, headers=headers) as response:
            event: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith(":"):
                    self.opened.set()  # the stream's first line is a comment
                if not line:
                    if "data" in event:
                        data = json.loads(event["data"])
                        self.events.append((int(event["id"]), event["event"], data))
                    event = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(": ")
                    event[field] = value

    def wait_open(self, timeout: float = 10) -> None:
        assert self.opened.wait(timeout), "the stream did not open"

    def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"only {self.events}"
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._client.close()


@pytest.fixture
def second_gateway(db: Database) -> Iterator[LiveGateway]:
    live = LiveGateway(Services(gateway_settings(db), db))
    yield live
    live.stop()


def test_stream_resumes_across_two_gateway_processes(
    gateway_api: Api, gateway: LiveGateway, second_gateway: LiveGateway
) -> None:
    """SSE from gateway A sees a send made on B; a reconnect to B with Last-Event-ID resumes."""
    api = gateway_api
    alice = api.user("alice")
    token = api.anonymous.post(
        "/v1/tokens", json={"username": "alice", "password": "correct horse"}
    ).json()["token"]
    api.user("bob")
    bob_on_b = second_gateway.client(
        api.anonymous.post(
            "/v1/tokens", json={"username": "bob", "password": "correct horse"}
        ).json()["token"]
    )
    chat_id = alice.post("/v1/chats", json={"title": "Two", "members": ["bob"]}).json()["id"]
    reader = SseReader(f"{gateway.url}/v1/events", token)
    try:
        reader.wait_open()
        _send(bob_on_b, chat_id, "first")
        reader.wait_for(1)
        first_id, kind, data = reader.events[0]
        assert kind == "message" and data["body"] == "first"
    finally:
        reader.close()
    _send(bob_on_b, chat_id, "while you were away")
    resumed = SseReader(f"{second_gateway.url}/v1/events", token, last_event_id=first_id)
    try:
        resumed.wait_for(1)
        assert resumed.events[0][2]["body"] == "while you were away"
    finally:
        resumed.close()


def test_quiet_while_active_holds_mobile_push_but_not_email(gateway_api: Api, db: Database) -> None:
    """With quiet_when_active and a live stream open, APNs is skipped and email still goes."""
    alice, bob = gateway_api.user("alice"), gateway_api.user("bob")
    _device(bob, "b0" * 32)
    _verified(db, _device(bob, "bob@example.com", platform="email"))
    chat_id = alice.post("/v1/chats", json={"title": "Q", "members": ["bob"]}).json()["id"]
    assert bob.put("/v1/me/settings", json={"quiet_when_active": True}).status_code == 200
    with bob.stream("GET", "/v1/events", headers={"Accept": "text/event-stream"}) as stream:
        next(stream.iter_lines())  # the stream is open: bob counts as active
        message_id = _send(alice, chat_id, "you are here anyway")
    dispatcher = RecordingDispatcher()
    _run(db, dispatcher)
    assert [d.platform.value for d, _ in dispatcher.sent] == ["email"]
    rows = alice.get(f"/v1/messages/{message_id}/deliveries").json()["deliveries"]
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(skipped) == 1 and "active" in skipped[0]["last_error"]


def test_email_digest_batches_messages_within_the_window(api: Api, db: Database) -> None:
    """Three messages in quick succession: one email at once, then one digest with two more."""
    alice, bob = api.user("alice"), api.user("bob")
    _verified(db, _device(bob, "bob@example.com", platform="email"))
    chat_id = alice.post("/v1/chats", json={"title": "D", "members": ["bob"]}).json()["id"]
    _send(alice, chat_id, "first")
    dispatcher = RecordingDispatcher()
    _run(db, dispatcher, digest=1.0)
    _send(alice, chat_id, "second")
    _send(alice, chat_id, "third")
    _run(db, dispatcher, digest=1.0)
    assert [(n.preview, n.earlier) for _, n in dispatcher.sent] == [
        ("first", ()),
        ("third", (("alice", "second"),)),
    ]
    assert len(dispatcher.times[next(iter(dispatcher.times))]) == 2
    statuses = [
        alice.get(f"/v1/chats/{chat_id}/messages").json()["messages"][i]["id"] for i in range(3)
    ]
    for message_id in statuses:
        summary = alice.get(f"/v1/messages/{message_id}/deliveries").json()["summary"]
        assert summary == {"delivered": 1}
