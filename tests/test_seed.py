"""tests/support/seed.py writes the rows the product would: the API finds what it seeded."""

from __future__ import annotations

from tests.conftest import Api
from tests.support.seed import add_api_tokens, add_chat, add_devices, add_members, add_users

from chinwag.store.database import Database


def test_a_seeded_device_is_the_one_registration_finds(api: Api, db: Database) -> None:
    """Registering a seeded token again through the API finds the seeded row, not a second one."""
    alice = api.user("alice")
    add_devices(db, alice.get("/v1/me").json()["id"], "apns", ["AB" * 32])
    (seeded,) = alice.get("/v1/devices").json()["devices"]
    again = alice.post("/v1/devices", json={"platform": "apns", "token": "ab" * 32})
    assert again.status_code in (200, 201), again.text
    assert again.json()["id"] == seeded["id"]
    assert [d["id"] for d in alice.get("/v1/devices").json()["devices"]] == [seeded["id"]]


def test_seeded_users_sign_in_with_their_seeded_tokens(api: Api, db: Database) -> None:
    """A seeded API token authenticates, and its user sees the seeded chat with its members."""
    owner, member = add_users(db, ["owner", "member"])
    chat_id = add_chat(db, "Seeded", owner)
    add_members(db, chat_id, [owner, member])
    token = add_api_tokens(db, [member])[0]
    client = api.server.client(token)
    assert client.get("/v1/me").json()["username"] == "member"
    chat = client.get(f"/v1/chats/{chat_id}").json()
    assert sorted(m["username"] for m in chat["members"]) == ["member", "owner"]
