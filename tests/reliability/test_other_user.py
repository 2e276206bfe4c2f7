"""The authorization matrix's "other user" column, which tests/web/test_authorization.py leaves
out: a fellow member acting on what belongs to someone else, and a member after removal."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from tests.conftest import Api
from tests.web.support import APNS_TOKEN, assert_error, chat_of

pytestmark = pytest.mark.slow


@dataclass
class Pair:
    alice: httpx.Client  # created the chat, owns the message and the device
    bob: httpx.Client  # a fellow member
    carol: httpx.Client  # a third member
    chat: int
    message: int
    device: int


@pytest.fixture
def pair(api: Api) -> Pair:
    alice, bob, carol = (api.user(name) for name in ("alice", "bob", "carol"))
    chat = chat_of(alice, "bob", "carol")
    message = alice.post(f"/v1/chats/{chat}/messages", json={"body": "mine"}).json()["message"]
    device = alice.post("/v1/devices", json={"platform": "apns", "token": APNS_TOKEN}).json()
    return Pair(alice, bob, carol, chat, message["id"], device["id"])


def test_a_fellow_member_cannot_touch_what_is_someone_elses(pair: Pair) -> None:
    """Bob may not edit or delete Alice's message, remove Alice or Carol, or delete Alice's
    device (which he cannot even see); none of it changes anything."""
    chat, message = pair.chat, pair.message
    edit = pair.bob.patch(f"/v1/chats/{chat}/messages/{message}", json={"body": "forged"})
    assert_error(edit, 403)
    assert_error(pair.bob.delete(f"/v1/chats/{chat}/messages/{message}"), 403)
    assert_error(pair.bob.delete(f"/v1/chats/{chat}/members/alice"), 403)
    assert_error(pair.bob.delete(f"/v1/chats/{chat}/members/carol"), 403)
    assert_error(pair.bob.delete(f"/v1/devices/{pair.device}"), 404)
    history = pair.alice.get(f"/v1/chats/{chat}/messages").json()["messages"]
    assert [m["body"] for m in history] == ["mine"]
    members = [m["username"] for m in pair.alice.get(f"/v1/chats/{chat}").json()["members"]]
    assert members == ["alice", "bob", "carol"]
    assert [d["id"] for d in pair.alice.get("/v1/devices").json()["devices"]] == [pair.device]
    assert pair.bob.get("/v1/devices").json()["devices"] == []


def test_settings_are_per_member(pair: Pair) -> None:
    """Bob muting the chat mutes it for Bob only."""
    assert pair.bob.put(f"/v1/chats/{pair.chat}/settings", json={"muted": True}).json()["muted"]
    chats = {c["id"]: c for c in pair.alice.get("/v1/chats").json()["chats"]}
    assert chats[pair.chat]["muted"] is False


def test_a_removed_member_loses_access_like_a_stranger(pair: Pair) -> None:
    """After the creator removes Carol, every chat route answers her 404, like an outsider."""
    assert pair.alice.delete(f"/v1/chats/{pair.chat}/members/carol").status_code == 204
    chat, message = pair.chat, pair.message
    calls = [
        pair.carol.get(f"/v1/chats/{chat}"),
        pair.carol.get(f"/v1/chats/{chat}/messages"),
        pair.carol.post(f"/v1/chats/{chat}/messages", json={"body": "still here?"}),
        pair.carol.post("/groupchat/send", json={"conversation": chat, "message": "hello?"}),
        pair.carol.post(f"/v1/chats/{chat}/members", json={"username": "carol"}),
        pair.carol.put(f"/v1/chats/{chat}/settings", json={"muted": True}),
        pair.carol.get(f"/v1/messages/{message}/deliveries"),
        pair.carol.post(f"/v1/chats/{chat}/read", json={"message_id": message}),
    ]
    assert [r.status_code for r in calls] == [404] * len(calls), [r.text for r in calls]
    assert pair.chat not in [c["id"] for c in pair.carol.get("/v1/chats").json()["chats"]]
