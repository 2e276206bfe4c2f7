"""Chats over HTTP: create, list, get, members in and out, the per-member mute setting."""

from __future__ import annotations

from tests.conftest import Api
from tests.web.support import assert_error, at_once, chat_of, row_counts

from chinwag.store.database import Database


def member_names(chat: dict[str, object]) -> list[str]:
    members = chat["members"]
    assert isinstance(members, list)
    return [m["username"] for m in members]


def test_create_chat_includes_the_creator(api: Api) -> None:
    """POST /v1/chats answers 201 with the chat and its members, the creator among them, once."""
    alice = api.user("alice")
    api.user("bob")
    response = alice.post(
        "/v1/chats", json={"title": "  Lunch  ", "members": ["bob", "BOB", "alice"]}
    )
    assert response.status_code == 201, response.text
    chat = response.json()
    assert chat["title"] == "Lunch"
    assert chat["muted"] is False
    assert member_names(chat) == ["alice", "bob"]


def test_unknown_member_is_422_and_no_chat_is_created(api: Api, db: Database) -> None:
    """Naming a user that does not exist refuses the whole chat: 422 and no rows written."""
    alice = api.user("alice")
    api.user("bob")
    before = row_counts(db)
    response = alice.post("/v1/chats", json={"title": "Lunch", "members": ["bob", "nobody"]})
    error = assert_error(response, 422, "invalid_input")
    assert "nobody" not in error["message"]  # nor which names exist (security finding 9)
    assert_error(alice.post("/v1/chats", json={"title": "x", "members": ["not a name"]}), 422)
    assert_error(alice.post("/v1/chats", json={"title": "   ", "members": []}), 422)
    assert row_counts(db) == before
    assert alice.get("/v1/chats").json()["chats"] == []


def test_list_chats_shows_only_mine(api: Api) -> None:
    """GET /v1/chats lists the chats the caller is a member of, in creation order."""
    alice, bob = api.user("alice"), api.user("bob")
    first = chat_of(alice, "bob", title="Both")
    alone = chat_of(alice, title="Alice alone")
    bobs = chat_of(bob, title="Bob alone")
    mine = alice.get("/v1/chats")
    assert mine.status_code == 200
    assert [(c["id"], c["title"]) for c in mine.json()["chats"]] == [
        (first, "Both"),
        (alone, "Alice alone"),
    ]
    assert [c["id"] for c in bob.get("/v1/chats").json()["chats"]] == [first, bobs]


def test_get_chat_with_members(api: Api) -> None:
    """GET /v1/chats/{id} shows the chat with every member and their mute flags."""
    alice, bob = api.user("alice", display_name="Alice A."), api.user("bob")
    chat_id = chat_of(alice, "bob")
    for client in (alice, bob):
        response = client.get(f"/v1/chats/{chat_id}")
        assert response.status_code == 200
        chat = response.json()
        assert chat["id"] == chat_id and chat["title"] == "Team"
        assert chat["members"] == [
            {"username": "alice", "display_name": "Alice A.", "muted": False},
            {"username": "bob", "display_name": "bob", "muted": False},
        ]


def test_add_member(api: Api, db: Database) -> None:
    """Any member can add a user, who then sees the chat; adding twice changes nothing."""
    alice, bob = api.user("alice"), api.user("bob")
    chat_id = chat_of(alice)
    assert_error(bob.get(f"/v1/chats/{chat_id}"), 404, "not_found")
    added = alice.post(f"/v1/chats/{chat_id}/members", json={"username": "Bob"})
    assert added.status_code == 200, added.text
    assert member_names(added.json()) == ["alice", "bob"]
    assert bob.get(f"/v1/chats/{chat_id}").status_code == 200
    before = row_counts(db)
    again = alice.post(f"/v1/chats/{chat_id}/members", json={"username": "bob"})
    assert again.status_code == 200 and member_names(again.json()) == ["alice", "bob"]
    unknown = alice.post(f"/v1/chats/{chat_id}/members", json={"username": "nobody"})
    assert_error(unknown, 422, "invalid_input")
    assert row_counts(db) == before


def test_remove_member_rules(api: Api) -> None:
    """Anyone may leave; only the creator removes others (403 otherwise); non-members are 404."""
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    chat_id = chat_of(alice, "bob", "carol")
    assert_error(bob.delete(f"/v1/chats/{chat_id}/members/carol"), 403, "forbidden")
    removed = alice.delete(f"/v1/chats/{chat_id}/members/carol")
    assert removed.status_code == 204 and removed.content == b""
    assert_error(carol.get(f"/v1/chats/{chat_id}"), 404, "not_found")
    assert_error(alice.delete(f"/v1/chats/{chat_id}/members/carol"), 404, "not_found")
    assert_error(alice.delete(f"/v1/chats/{chat_id}/members/nobody"), 404, "not_found")
    left = bob.delete(f"/v1/chats/{chat_id}/members/bob")
    assert left.status_code == 204
    assert_error(bob.get(f"/v1/chats/{chat_id}"), 404, "not_found")
    assert member_names(alice.get(f"/v1/chats/{chat_id}").json()) == ["alice"]
    assert bob.get("/v1/chats").json()["chats"] == []


def test_mute_setting_is_per_member(api: Api) -> None:
    """PUT settings {muted} changes only the caller's flag, shown in the chat and its members."""
    alice, bob = api.user("alice"), api.user("bob")
    chat_id = chat_of(alice, "bob")
    muted = bob.put(f"/v1/chats/{chat_id}/settings", json={"muted": True})
    assert muted.status_code == 200, muted.text
    assert muted.json()["muted"] is True
    assert bob.get(f"/v1/chats/{chat_id}").json()["muted"] is True
    assert [c["muted"] for c in bob.get("/v1/chats").json()["chats"]] == [True]
    seen_by_alice = alice.get(f"/v1/chats/{chat_id}").json()
    assert seen_by_alice["muted"] is False
    assert {m["username"]: m["muted"] for m in seen_by_alice["members"]} == {
        "alice": False,
        "bob": True,
    }
    unmuted = bob.put(f"/v1/chats/{chat_id}/settings", json={"muted": False})
    assert unmuted.json()["muted"] is False
    assert_error(bob.put(f"/v1/chats/{chat_id}/settings", json={"muted": "yes"}), 422)


def test_concurrent_adds_of_one_member(api: Api, db: Database) -> None:
    """Eight simultaneous adds of the same user all succeed and make one membership."""
    token = api.user("alice").headers["Authorization"].removeprefix("Bearer ")
    api.user("bob")
    chat_id = chat_of(api.server.client(token))
    responses = at_once(
        8,
        lambda i: api.server.client(token).post(
            f"/v1/chats/{chat_id}/members", json={"username": "bob"}
        ),
    )
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert row_counts(db)["memberships"] == 2
