"""A live stream lives only as long as the token it was opened with: signing out, or a password
change that revokes the other sessions, closes their open streams at once on every transport,
while the user's remaining sessions stay connected (and are told)."""

from __future__ import annotations

import threading

import httpx
import pytest
from tests.conftest import Api, LiveGateway
from tests.live.support import Person, chat, person, send, sse, wait_until_waiting, websocket
from tests.support.processes import wait_until
from websockets.exceptions import ConnectionClosed

PASSWORD = "correct horse"


def second_session(api: Api, who: Person) -> Person:
    """The same user signed in again (another device): a token of its own."""
    token = api.anonymous.post(
        "/v1/tokens", json={"username": who.name, "password": PASSWORD}
    ).json()["token"]
    return Person(who.name, token, api.server.client(token))


def test_sign_out_closes_that_tokens_streams_and_no_other(
    gateway: LiveGateway, gateway_api: Api
) -> None:
    alice, bob = person(gateway_api, "alice"), person(gateway_api, "bob")
    bob_phone = second_session(gateway_api, bob)
    chat_id = chat(alice, "Lunch", bob)
    with (
        sse(gateway, bob) as laptop_sse,
        websocket(gateway, bob) as laptop_ws,
        sse(gateway, bob_phone) as phone_sse,
    ):
        send(alice, chat_id, "before")
        laptop_sse.wait_for(1)
        assert laptop_ws.next_matching(lambda f: f["kind"] == "message")["data"]["body"] == "before"
        polls: list[httpx.Response] = []
        start = bob.client.get("/v1/events").json()["last_id"]
        poll = threading.Thread(
            target=lambda: polls.append(
                bob.client.get("/v1/events", params={"after": start, "wait": 25}, timeout=40)
            )
        )
        poll.start()
        wait_until_waiting(gateway, "longpoll")

        assert bob.client.delete("/v1/tokens/current").status_code == 204

        wait_until(laptop_sse.ended.is_set, 15, "the signed-out SSE stream to end")
        assert laptop_sse.error is None  # ended cleanly: the chunked body's last chunk came
        with pytest.raises(ConnectionClosed) as closed:
            laptop_ws.next_matching(lambda f: False)  # frames until the server closes it
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "signed out")
        poll.join(timeout=15)
        assert not poll.is_alive() and polls[0].status_code == 200
        assert [e["kind"] for e in polls[0].json()["events"]] == []  # answered at once, empty
        assert [e.kind for e in laptop_sse.events] == ["message"]  # nothing after the sign-out

        # The phone's session is untouched: it is told, and messages keep coming.
        send(alice, chat_id, "after")
        events = phone_sse.wait_for(3)
        assert [e.kind for e in events] == ["message", "signed_out", "message"], events
        assert events[2].data["body"] == "after"
        assert phone_sse.status == 200 and not phone_sse.ended.is_set()
    # And the revoked token cannot open a new stream.
    refused = httpx.get(
        f"{gateway.url}/v1/events", headers={"Authorization": f"Bearer {bob.token}"}, timeout=10
    )
    assert refused.status_code == 401, refused.text


def test_password_change_closes_the_other_sessions_streams(
    gateway: LiveGateway, gateway_api: Api
) -> None:
    alice = person(gateway_api, "alice")
    thief = second_session(gateway_api, alice)
    with sse(gateway, alice) as mine, websocket(gateway, thief) as theirs:
        changed = alice.client.put(
            "/v1/me/password",
            json={"old_password": PASSWORD, "new_password": "new battery staple"},
        )
        assert changed.status_code == 204, changed.text
        with pytest.raises(ConnectionClosed) as closed:
            theirs.next_matching(lambda f: False)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        (told,) = mine.wait_for(1)
        # The thief's token and the one the account was created with: every other session.
        assert told.kind == "signed_out" and len(told.data["token_ids"]) == 2, told
        assert not mine.ended.is_set()
