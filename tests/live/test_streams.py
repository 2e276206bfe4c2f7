"""The live gateway's three transports on SQLite and PostgreSQL: SSE, long poll and WebSocket
resume after a reconnect with nothing lost or repeated; a removed member's open stream stops
getting the chat's events; bad input and bad tokens get the contract's JSON errors."""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import httpx
import pytest
from prometheus_client import REGISTRY
from tests.conftest import Api, LiveGateway
from tests.live.support import (
    Person,
    SseReader,
    chat,
    close_all,
    person,
    send,
    sse,
    wait_until_waiting,
    websocket,
)
from websockets.exceptions import InvalidStatus

from chinwag.live.hub import SQLITE_TICK_SECONDS


def test_sse_resumes_from_last_event_id_with_nothing_lost_or_repeated(
    gateway: LiveGateway, gateway_api: Api
) -> None:
    """Events sent while a client was away arrive after it reconnects with Last-Event-ID, once."""
    alice, bob = person(gateway_api, "alice"), person(gateway_api, "bob")
    chat_id = chat(alice, "Lunch", bob)
    with sse(gateway, bob) as stream:
        for body in ("one", "two"):
            send(alice, chat_id, body)
        seen = stream.wait_for(2)
        assert [(e.kind, e.data["body"]) for e in seen] == [("message", "one"), ("message", "two")]
        resume_from = seen[-1].id
    send(alice, chat_id, "three")  # while bob is away
    with sse(gateway, bob, last_event_id=str(resume_from)) as resumed:
        send(alice, chat_id, "four")
        events = resumed.wait_for(2)
        time_to_repeat = resumed.kinds()  # nothing beyond the two may have come
        assert [e.data["body"] for e in events] == ["three", "four"], events
        assert len(time_to_repeat) == 2
        ids = [e.id for e in events if e.id is not None]
        assert len(ids) == len(events) and ids == sorted(ids) and ids[0] > (resume_from or 0)


def test_a_fresh_sse_client_starts_from_now(gateway: LiveGateway, gateway_api: Api) -> None:
    """Without Last-Event-ID the stream starts at the latest event: no replay of old history."""
    alice, bob = person(gateway_api, "alice"), person(gateway_api, "bob")
    chat_id = chat(alice, "Old", bob)
    send(alice, chat_id, "history")
    with sse(gateway, bob) as stream:
        send(alice, chat_id, "news")
        (event,) = stream.wait_for(1)
        assert event.data["body"] == "news"


def test_long_poll_is_woken_by_the_hub_and_resumes_with_after(
    gateway: LiveGateway, gateway_api: Api
) -> None:
    """A waiting long poll answers as soon as a message is sent; ?after= pages on exactly."""
    alice, bob = person(gateway_api, "alice"), person(gateway_api, "bob")
    chat_id = chat(alice, "Poll", bob)
    start = bob.client.get("/v1/events").json()["last_id"]
    answers: list[httpx.Response] = []
    poll = threading.Thread(
        target=lambda: answers.append(
            bob.client.get("/v1/events", params={"after": start, "wait": 20}, timeout=30)
        )
    )
    poll.start()
    wait_until_waiting(gateway, "longpoll")
    sent_at = time.monotonic()
    send(alice, chat_id, "wake up")
    poll.join(timeout=25)
    assert answers, "the long poll never answered"
    assert time.monotonic() - sent_at < 10  # woken, not timed out (the wait was 20 s)
    page = answers[0].json()
    assert [(e["kind"], e["data"]["body"]) for e in page["events"]] == [("message", "wake up")]
    assert page["last_id"] == page["events"][-1]["id"]
    send(alice, chat_id, "next")
    later = bob.client.get("/v1/events", params={"after": page["last_id"]}).json()
    assert [e["data"]["body"] for e in later["events"]] == ["next"]
    empty = bob.client.get("/v1/events", params={"after": later["last_id"]}).json()
    assert empty == {"events": [], "last_id": later["last_id"]}


def test_websocket_resumes_with_after(gateway: LiveGateway, gateway_api: Api) -> None:
    """WebSocket frames are {id, kind, data}; ?after= resumes with nothing lost or repeated."""
    alice, bob = person(gateway_api, "alice"), person(gateway_api, "bob")
    chat_id = chat(alice, "Sockets", bob)
    with websocket(gateway, bob) as ws:
        send(alice, chat_id, "first")
        frame = ws.next()
        assert set(frame) == {"id", "kind", "data"}
        assert (frame["kind"], frame["data"]["body"]) == ("message", "first")
    send(alice, chat_id, "missed")
    with websocket(gateway, bob, after=frame["id"]) as ws:
        send(alice, chat_id, "live")
        bodies = [ws.next()["data"]["body"], ws.next()["data"]["body"]]
        assert bodies == ["missed", "live"]
        send(alice, chat_id, "then")
        assert ws.next()["data"]["body"] == "then"  # and not a repeat of an earlier one


def test_removed_member_stops_getting_the_chat_at_once(
    gateway: LiveGateway, gateway_api: Api
) -> None:
    """Bob's open stream gets member_removed, then none of the chat's events; others still come."""
    alice, bob = person(gateway_api, "alice"), person(gateway_api, "bob")
    team = chat(alice, "Team", bob)
    other = chat(alice, "Other", bob)
    with sse(gateway, bob) as stream, websocket(gateway, bob) as ws:
        send(alice, team, "before")
        stream.wait_for(1)
        assert ws.next()["data"]["body"] == "before"
        assert alice.client.delete(f"/v1/chats/{team}/members/bob").status_code == 204
        send(alice, team, "after you left")
        send(alice, other, "still here")
        events = stream.wait_for(3)
        assert [e.kind for e in events] == ["message", "member_removed", "message"], events
        assert events[1].data["chat_id"] == team
        assert events[2].data["body"] == "still here"  # the chat's message never came
        removed = ws.next()
        assert (removed["kind"], removed["data"]["chat_id"]) == ("member_removed", team)
        assert ws.next()["data"]["body"] == "still here"
        # Added back: the chat's events flow again on the same open stream.
        added = alice.client.post(f"/v1/chats/{team}/members", json={"username": "bob"})
        assert added.status_code == 200, added.text
        send(alice, team, "welcome back")
        assert ws.next()["kind"] == "member_added"
        assert ws.next()["data"]["body"] == "welcome back"


BAD_CURSORS = [
    "abc",
    "-1",
    "1.5",
    "9223372036854775808",
    "99999999999999999999",
    "1 2",
    "0x1f",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit, not to us
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_bad_cursor_is_a_400_json_error(
    gateway: LiveGateway, gateway_api: Api, cursor: str
) -> None:
    """Last-Event-ID or ?after= that is not a non-negative 64-bit integer: 400, never a 500."""
    from tests.web.support import assert_error

    bob = person(gateway_api, "bob")
    if cursor.isascii():  # a header value is ASCII; the query takes any text
        as_sse = {"Accept": "text/event-stream", "Last-Event-ID": cursor}
        assert_error(bob.client.get("/v1/events", headers=as_sse), 400, "bad_request")
    assert_error(bob.client.get("/v1/events", params={"after": cursor}), 400, "bad_request")
    with pytest.raises(InvalidStatus) as refused, websocket(gateway, bob, quote(cursor)):
        pass
    assert refused.value.response.status_code == 400


def test_unknown_token_is_a_401_json_error(gateway: LiveGateway, gateway_api: Api) -> None:
    """No token, or one that does not exist: 401 in the contract's shape on all transports."""
    from tests.web.support import assert_error

    anonymous = gateway.client()
    assert_error(anonymous.get("/v1/events"), 401, "unauthorized")
    stranger = gateway.client("cw_not-a-token")
    headers = {"Accept": "text/event-stream"}
    assert_error(stranger.get("/v1/events", headers=headers), 401, "unauthorized")
    assert_error(
        anonymous.get("/v1/events", params={"access_token": "cw_nope"}), 401, "unauthorized"
    )
    nobody = Person("nobody", "cw_nope", anonymous)
    with pytest.raises(InvalidStatus) as refused, websocket(gateway, nobody):
        pass
    assert refused.value.response.status_code == 401


def test_database_reads_do_not_grow_with_connections(
    gateway: LiveGateway, gateway_api: Api
) -> None:
    """Thirty open streams get a message from one tail read per wake-up, not one per stream."""
    alice = person(gateway_api, "alice")
    people = [person(gateway_api, f"user{i}") for i in range(3)]
    chat_id = chat(alice, "Crowd", *people)
    readers = [SseReader(gateway.url, people[i % 3].token) for i in range(30)]
    try:
        before = tail_reads()
        started = time.monotonic()
        send(alice, chat_id, "to all of you")
        for reader in readers:
            reader.wait_for(1)
        elapsed = time.monotonic() - started
        reads = tail_reads() - before
        # At most one read per tick on SQLite (fewer, on notifications, on PostgreSQL), however
        # many streams; thirty polling streams would read thirty times per tick.
        assert reads <= elapsed / SQLITE_TICK_SECONDS + 3, (reads, elapsed)
    finally:
        close_all(readers)


def tail_reads() -> float:
    return REGISTRY.get_sample_value("chinwag_live_tail_reads_total") or 0.0
