"""The gateway's limits and its WebSocket conversation: the per-user cap (429), typing frames that
reach the other members and are never stored, error frames for bad client frames, slow readers
disconnected (and resuming from the log), dead connections dropped, and its metrics."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable

import sqlalchemy as sa
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import Api, LiveGateway
from tests.live.support import chat, person, send, sse, websocket
from tests.support.processes import wait_until
from tests.web.support import assert_error

from chinwag.chat import events
from chinwag.live.hub import SAFETY_TAIL_SECONDS
from chinwag.store.database import Database
from chinwag.store.schema import events as events_table


def test_per_user_cap_answers_429_until_a_stream_closes(
    start_gateway: Callable[..., LiveGateway],
) -> None:
    """Past CHINWAG_STREAMS_PER_USER open streams the next one is a 429 rate_limited, on every
    transport; other users are unaffected, and closing one makes room."""
    gateway = start_gateway(streams_per_user=2)
    api = Api(gateway)
    bob, carol = person(api, "bob"), person(api, "carol")
    with sse(gateway, bob) as first, websocket(gateway, bob):
        refused = bob.client.get("/v1/events", headers={"Accept": "text/event-stream"})
        error = assert_error(refused, 429, "rate_limited")
        assert "2" in error["message"] and refused.headers["Retry-After"]
        assert_error(bob.client.get("/v1/events", params={"wait": 1}), 429, "rate_limited")
        from websockets.exceptions import InvalidStatus

        try:
            with websocket(gateway, bob):
                raise AssertionError("a third connection was accepted")
        except InvalidStatus as exc:
            assert exc.response.status_code == 429
        with sse(gateway, carol) as other:
            assert other.status == 200
        first.close()
        hub = gateway.gateway.hub
        wait_until(
            lambda: len(hub.subscribers.get(first_user_id(hub, "bob"), ())) < 2, 15, "a slot"
        )
        with sse(gateway, bob) as again:
            assert again.status == 200


def first_user_id(hub: object, username: str) -> int:
    for user_id, subscribers in getattr(hub, "subscribers").items():  # noqa: B009
        if any(s.user.username == username for s in subscribers):
            return int(user_id)
    return -1


def event_rows(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one())


def test_typing_reaches_the_other_members_at_once_and_is_not_stored(
    gateway: LiveGateway, gateway_api: Api, db: Database
) -> None:
    """A member's typing frame: a typing event (id null) to the chat's other connected members,
    not to the typist or outsiders, and no row in the events table."""
    alice, bob, carol = (person(gateway_api, name) for name in ("alice", "bob", "carol"))
    chat_id = chat(alice, "Typing", bob)
    rows_before = event_rows(db)
    with (
        websocket(gateway, alice) as typist,
        websocket(gateway, bob) as member,
        websocket(gateway, carol) as outsider,
    ):
        sent = time.monotonic()
        typist.send({"type": "typing", "chat_id": chat_id})
        frame = member.next(timeout=5)
        # Handed over at once, not found by the log's safety tail (typing is never stored).
        assert time.monotonic() - sent < SAFETY_TAIL_SECONDS
        assert frame == {
            "id": None,
            "kind": "typing",
            "data": {
                "chat_id": chat_id,
                "user_id": frame["data"]["user_id"],
                "username": "alice",
                "display_name": "alice",
            },
        }
        # The next thing alice and carol see is a later event, not the typing event.
        send(alice, chat_id, "here it is")
        assert typist.next()["kind"] == "message"
        own = chat(carol, "Carol's")
        assert outsider.next() == {
            "id": outsider_frame_id(db, own),
            "kind": "member_added",
            "data": {"chat_id": own, "members": [{"user_id": 3, "username": "carol"}]},
        }
        assert event_rows(db) == rows_before + 2  # the message and carol's chat: no typing


def outsider_frame_id(db: Database, chat_id: int) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.max(events_table.c.id)).where(events_table.c.chat_id == chat_id)
            ).scalar_one()
        )


def test_bad_client_frames_get_error_frames_and_the_connection_lives_on(
    gateway: LiveGateway, gateway_api: Api
) -> None:
    """Malformed JSON, binary, unknown types and a non-member's typing: an error frame each; the
    connection keeps delivering events."""
    alice, carol = person(gateway_api, "alice"), person(gateway_api, "carol")
    chat_id = chat(alice, "Private")
    with websocket(gateway, carol) as ws, websocket(gateway, alice) as member:
        cases: list[tuple[object, str]] = [
            ("{not json", "bad_request"),
            ('["typing"]', "bad_request"),
            ({"type": "dance"}, "bad_request"),
            ({"type": "typing", "chat_id": "one"}, "bad_request"),
            ({"type": "typing", "chat_id": True}, "bad_request"),
            ({"type": "typing", "chat_id": chat_id}, "not_found"),  # not carol's chat
            ({"type": "typing", "chat_id": 2**70}, "not_found"),
            ("[" * 50_000, "bad_request"),  # too deep for the JSON parser
        ]
        for frame, code in cases:
            ws.send(frame)
            answer = ws.next()
            assert answer["id"] is None and answer["kind"] == "error", answer
            assert answer["data"]["code"] == code, (frame, answer)
        ws.connection.send(b"\x00\x01binary")
        assert ws.next()["data"]["code"] == "bad_request"
        own = chat(carol, "Mine")
        assert ws.next()["data"]["chat_id"] == own  # still delivering
        send(alice, chat_id, "carol never sees this")
        assert member.next_matching(lambda f: f["kind"] == "message")["data"]["chat_id"] == chat_id


def dropped() -> float:
    return REGISTRY.get_sample_value("chinwag_live_slow_consumers_dropped_total") or 0.0


def test_slow_reader_is_disconnected_and_resumes_from_the_log(
    start_gateway: Callable[..., LiveGateway], db: Database
) -> None:
    """A client that stops reading is dropped once its queue overflows; reconnecting with its
    Last-Event-ID brings every event it had not read, so nothing is lost."""
    gateway = start_gateway(stream_queue_size=4)
    api = Api(gateway)
    bob = person(api, "bob")
    bob_id = gateway.client(bob.token).get("/v1/me").json()["id"]
    host, port = gateway.url.removeprefix("http://").split(":")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window: writes stall
    slow.settimeout(30)
    slow.connect((host, int(port)))
    slow.sendall(
        f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {bob.token}\r\nLast-Event-ID: 0\r\n\r\n".encode()
    )
    assert slow.recv(64).startswith(b"HTTP/1.1 200")
    before = dropped()
    total = 120
    for i in range(total):  # 120 times 64 KB: far more than the socket buffers hold
        with db.write() as conn:
            events.append(conn, "delivery", {"n": i, "pad": "x" * 65536}, user_id=bob_id)
    wait_until(lambda: dropped() > before, 30, "the slow reader to be dropped")
    received = b""
    while chunk := slow.recv(1 << 16):  # the server closed it: the reader reaches the end
        received += chunk
    slow.close()
    # Complete frames only (the body is chunked, a chunk per write, each holding whole frames).
    frames = re.findall(rb"id: (\d+)\nevent: delivery\ndata: ([^\n]*)\n\n", received)
    ids = [int(frame_id) for frame_id, _ in frames]
    seen = [json.loads(data)["n"] for _, data in frames]
    assert seen == list(range(len(seen))) and len(seen) < total, ids
    last_seen, numbers_seen = (ids[-1] if ids else 0), len(seen)
    with sse(gateway, bob, last_event_id=str(last_seen)) as resumed:
        wait_until(
            lambda: len(resumed.events) >= total - numbers_seen or resumed.ended.is_set(),
            30,
            "the rest",
        )
        assert not resumed.ended.is_set(), (len(resumed.events), resumed.status)
        rest = resumed.events
        numbers = [e.data["n"] for e in rest if e.kind == "delivery"]
        assert numbers == list(range(numbers_seen, total)), (ids, [e.id for e in rest][:5])


def test_idle_streams_get_heartbeats_and_metrics_show_the_gateway(
    gateway: LiveGateway, gateway_api: Api
) -> None:
    """Idle SSE streams get a comment every heartbeat; /metrics (the existing route) shows open
    connections by transport, events fanned out and their latency."""
    alice, bob = person(gateway_api, "alice"), person(gateway_api, "bob")
    chat_id = chat(alice, "Metrics", bob)
    with sse(gateway, bob) as stream, websocket(gateway, alice) as ws:
        wait_until(lambda: ": keep-alive" in stream.comments, 10, "a heartbeat comment")
        send(alice, chat_id, "counted")
        stream.wait_for(1)
        ws.next_matching(lambda f: f["kind"] == "message")
        text = gateway.client().get("/metrics").text
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        assert samples[("chinwag_live_connections", (("transport", "sse"),))] >= 1
        assert samples[("chinwag_live_connections", (("transport", "ws"),))] >= 1
        assert samples[("chinwag_live_events_fanned_out_total", ())] >= 2
        assert samples[("chinwag_live_fanout_seconds_count", ())] >= 2
        assert ("chinwag_live_slow_consumers_dropped_total", ()) in samples
        assert any(name == "chinwag_http_request_seconds_count" for name, _ in samples)


def test_accepted_connections_inherit_the_dead_peer_timeout() -> None:
    """Connections accepted on the gateway's socket carry keepalive and TCP_USER_TIMEOUT, which
    is what drops a vanished client within a minute (Linux)."""
    from chinwag.live.server import DEAD_PEER_SECONDS, listening_socket

    if not hasattr(socket, "TCP_USER_TIMEOUT"):
        import pytest

        pytest.skip("TCP_USER_TIMEOUT is Linux's")
    listener = listening_socket("127.0.0.1", 0)
    client = socket.create_connection(listener.getsockname(), timeout=5)
    accepted, _ = listener.accept()
    try:
        assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        user_timeout = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert user_timeout == DEAD_PEER_SECONDS * 1000
    finally:
        for sock in (accepted, client, listener):
            sock.close()
