"""Chat members cannot be used to test which usernames exist (security finding 9)."""

from __future__ import annotations

from tests.conftest import Api
from tests.web.support import assert_error, chat_of, row_counts

from chinwag.store.database import Database


def test_creating_a_chat_with_unknown_names_does_not_say_which(api: Api, db: Database) -> None:
    """1,000 candidate names: one generic 422 that names none of them, and nothing is written."""
    alice = api.user("alice")
    for name in ("bob", "carol"):
        api.user(name)
    candidates = ["bob", "carol", *(f"guess{n}" for n in range(998))]
    before = row_counts(db)
    refused = alice.post("/v1/chats", json={"title": "Probe", "members": candidates})
    error = assert_error(refused, 422, "invalid_input")
    assert not any(name in error["message"] for name in candidates), error
    only_unknown = alice.post("/v1/chats", json={"title": "Probe", "members": ["guess1"]})
    assert assert_error(only_unknown, 422)["message"] == error["message"]
    assert row_counts(db) == before


def test_adding_an_unknown_member_gives_the_same_answer(api: Api) -> None:
    """Adding a member who does not exist answers like creating a chat with one."""
    alice = api.user("alice")
    chat_id = chat_of(alice)
    refused = alice.post(f"/v1/chats/{chat_id}/members", json={"username": "nobody"})
    error = assert_error(refused, 422, "invalid_input")
    assert "nobody" not in error["message"]
    created = alice.post("/v1/chats", json={"title": "x", "members": ["nobody"]})
    assert assert_error(created, 422)["message"] == error["message"]
