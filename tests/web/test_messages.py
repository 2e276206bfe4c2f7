"""Messages over HTTP: send, idempotent client_id, the original route, history, deliveries."""

from __future__ import annotations

import sqlalchemy as sa
from tests.conftest import Api, LiveServer
from tests.web.support import assert_error, at_once, chat_of, row_counts

from chinwag.config import Settings
from chinwag.store.database import Database
from chinwag.store.schema import messages, outbox
from chinwag.web import Services


def send(client: object, chat_id: int, body: str, client_id: str | None = None) -> int:
    payload = {"body": body} if client_id is None else {"body": body, "client_id": client_id}
    response = client.post(f"/v1/chats/{chat_id}/messages", json=payload)  # type: ignore[attr-defined]
    assert response.status_code == 201, response.text
    message_id: int = response.json()["message"]["id"]
    return message_id


def test_send_returns_message_and_chat(api: Api, db: Database, rung: list[int]) -> None:
    """A send is 201 with {message, chat}, one message row and one pending outbox row."""
    alice = api.user("alice", display_name="Alice A.")
    chat_id = chat_of(alice, title="Lunch")
    response = alice.post(f"/v1/chats/{chat_id}/messages", json={"body": "noon?"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"message", "chat"}
    message = body["message"]
    assert message["chat_id"] == chat_id and message["body"] == "noon?"
    assert message["sender"] == "alice" and message["sender_display_name"] == "Alice A."
    assert message["client_id"] is None and message["created_at"]
    assert body["chat"]["id"] == chat_id and body["chat"]["title"] == "Lunch"
    assert rung == [message["id"]]
    with db.read() as conn:
        rows = conn.execute(sa.select(outbox.c.message_id, outbox.c.state)).all()
    assert [tuple(r) for r in rows] == [(message["id"], "pending")]


def test_send_answer_counts_the_senders_unread_messages(api: Api) -> None:
    """The chat in a send's answer carries the sender's unread count: the others' messages
    after their read marker, never their own (the one just sent included)."""
    alice, bob = api.user("alice"), api.user("bob")
    chat_id = chat_of(alice, "bob")
    send(bob, chat_id, "one")
    send(bob, chat_id, "two")
    mine = alice.post(f"/v1/chats/{chat_id}/messages", json={"body": "mine"})
    assert mine.status_code == 201, mine.text
    assert mine.json()["chat"]["unread"] == 2
    again = alice.post(f"/v1/chats/{chat_id}/messages", json={"body": "mine", "client_id": "c"})
    assert again.json()["chat"]["unread"] == 2
    answer = bob.post(f"/v1/chats/{chat_id}/messages", json={"body": "three"})
    assert answer.json()["chat"]["unread"] == 2  # alice's two, not bob's three
    assert bob.get(f"/v1/chats/{chat_id}").json()["unread"] == 2


def test_same_client_id_returns_the_first_message(api: Api, db: Database, rung: list[int]) -> None:
    """Resending a client_id returns the first message: one message, one outbox row, one ring."""
    alice = api.user("alice")
    chat_id = chat_of(alice)
    first = alice.post(f"/v1/chats/{chat_id}/messages", json={"body": "hi", "client_id": "c-1"})
    assert first.status_code == 201
    before = row_counts(db)
    for body in ("hi", "a different body"):
        again = alice.post(f"/v1/chats/{chat_id}/messages", json={"body": body, "client_id": "c-1"})
        assert again.status_code == 201, again.text
        assert again.json()["message"] == first.json()["message"]
    assert row_counts(db) == before
    assert before["messages"] == 1 and before["outbox"] == 1
    assert rung == [first.json()["message"]["id"]]


def test_client_id_is_scoped_to_chat_and_sender(api: Api, db: Database) -> None:
    """Another chat, or another sender in the same chat, may reuse a client_id."""
    alice, bob = api.user("alice"), api.user("bob")
    one, two = chat_of(alice, "bob"), chat_of(alice, title="Other")
    ids = {
        send(alice, one, "x", "same"),
        send(alice, two, "x", "same"),
        send(bob, one, "x", "same"),
    }
    assert len(ids) == 3
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one() == 3
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one() == 3


def test_message_body_limits(api: Api, db: Database) -> None:
    """An empty, blank or over-long body is a 422 and writes nothing; 4000 characters is fine."""
    alice = api.user("alice")
    chat_id = chat_of(alice)
    before = row_counts(db)
    for body in ("", "   \n", "x" * 4001):
        response = alice.post(f"/v1/chats/{chat_id}/messages", json={"body": body})
        assert_error(response, 422, "invalid_input")
    assert row_counts(db) == before
    send(alice, chat_id, "x" * 4000)


def test_original_groupchat_send_route(api: Api, rung: list[int]) -> None:
    """POST /groupchat/send finds the chat by id, id as text, or title, and sends like /messages."""
    alice, bob = api.user("alice"), api.user("bob")
    chat_id = chat_of(alice, "bob", title="Lunch")
    chat_of(bob, title="Private")
    sent = []
    for conversation in (chat_id, str(chat_id), "Lunch"):
        response = alice.post(
            "/groupchat/send", json={"conversation": conversation, "message": "hello"}
        )
        assert response.status_code == 201, response.text
        assert response.json()["chat"]["id"] == chat_id
        assert response.json()["message"]["body"] == "hello"
        sent.append(response.json()["message"]["id"])
    assert len(set(sent)) == 3 and rung == sent
    history = alice.get(f"/v1/chats/{chat_id}/messages").json()["messages"]
    assert [m["id"] for m in history] == sent
    for conversation in ("Private", "No such chat", 0, -1, 2**63, "99999", "²", "9" * 5000):
        response = alice.post(
            "/groupchat/send", json={"conversation": conversation, "message": "x"}
        )
        assert_error(response, 404, "not_found")
    assert rung == sent


def test_history_pages_walk_every_message_once_in_order(api: Api) -> None:
    """Following `next` as `before` visits every message of the chat exactly once, in order."""
    alice = api.user("alice")
    chat_id, other = chat_of(alice), chat_of(alice, title="Other")
    sent = []
    for i in range(11):
        sent.append(send(alice, chat_id, f"m{i}"))
        send(alice, other, f"noise {i}")
    for limit in (1, 3, 11, 50):
        seen: list[int] = []
        before: int | None = None
        pages = 0
        while True:
            params = {"limit": limit} if before is None else {"limit": limit, "before": before}
            page = alice.get(f"/v1/chats/{chat_id}/messages", params=params)
            assert page.status_code == 200, page.text
            ids = [m["id"] for m in page.json()["messages"]]
            assert ids == sorted(ids) and len(ids) <= limit
            seen[:0] = ids  # each page is older than the last, oldest first within a page
            pages += 1
            before = page.json()["next"]
            if before is None:
                break
        assert seen == sent, limit
        assert pages == -(-len(sent) // limit)


def test_history_defaults_and_empty_chat(api: Api) -> None:
    """An empty chat has no messages and no next page; the default page is the newest 50."""
    alice = api.user("alice")
    chat_id = chat_of(alice)
    empty = alice.get(f"/v1/chats/{chat_id}/messages")
    assert empty.status_code == 200 and empty.json() == {"messages": [], "next": None}
    sent = [send(alice, chat_id, f"m{i}") for i in range(51)]
    page = alice.get(f"/v1/chats/{chat_id}/messages").json()
    assert [m["id"] for m in page["messages"]] == sent[1:]
    assert page["next"] == sent[1]


def test_deliveries_visible_to_members_and_sender_only(api: Api) -> None:
    """Members and the sender see a message's deliveries; anyone else gets a 404."""
    alice, bob, eve = api.user("alice"), api.user("bob"), api.user("eve")
    chat_id = chat_of(alice, "bob")
    message_id = send(alice, chat_id, "hello")
    for client in (alice, bob):
        page = client.get(f"/v1/messages/{message_id}/deliveries")
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["message_id"] == message_id and body["fanout"] == "pending"
        assert body["deliveries"] == [] and body["summary"] == {} and body["next"] is None
    hidden = assert_error(eve.get(f"/v1/messages/{message_id}/deliveries"), 404, "not_found")
    missing = assert_error(eve.get(f"/v1/messages/{message_id + 1000}/deliveries"), 404)
    assert hidden["message"].replace(str(message_id), "#") == missing["message"].replace(
        str(message_id + 1000), "#"
    )
    assert alice.delete(f"/v1/chats/{chat_id}/members/alice").status_code == 204
    assert alice.get(f"/v1/messages/{message_id}/deliveries").status_code == 200


def test_send_succeeds_when_the_doorbell_fails(db: Database) -> None:
    """A doorbell that raises does not fail the send: the outbox row is there for the sweep."""

    def broken_doorbell(message_id: int) -> None:
        raise ConnectionError("queue down")

    live = LiveServer(Services(Settings(database_url=db.url), db, ring_doorbell=broken_doorbell))
    try:
        alice = Api(live).user("alice")
        chat_id = chat_of(alice)
        message_id = send(alice, chat_id, "still stored")
        with db.read() as conn:
            state = conn.execute(
                sa.select(outbox.c.state).where(outbox.c.message_id == message_id)
            ).scalar_one()
        assert state == "pending"
    finally:
        live.stop()


def test_concurrent_sends_with_one_client_id(api: Api, db: Database, rung: list[int]) -> None:
    """Eight simultaneous sends with one client_id store one message and ring once."""
    token = api.user("alice").headers["Authorization"].removeprefix("Bearer ")
    chat_id = chat_of(api.server.client(token))
    responses = at_once(
        8,
        lambda i: api.server.client(token).post(
            f"/v1/chats/{chat_id}/messages", json={"body": "once", "client_id": "retry-1"}
        ),
    )
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    ids = {r.json()["message"]["id"] for r in responses}
    assert len(ids) == 1 and rung == list(ids)
    counts = row_counts(db)
    assert counts["messages"] == 1 and counts["outbox"] == 1
