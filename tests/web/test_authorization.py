"""Who may call what, for every route the API declares: the matrix is built from the route list,
so a route added without a case in CASES fails the first test."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.conftest import Api, LiveServer
from tests.web.support import APNS_TOKEN, assert_error, chat_of

from chinwag.bootstrap import vapid_public_key_source
from chinwag.chat import accounts
from chinwag.config import PushSettings, Settings, WebPushSettings
from chinwag.store.database import Database
from chinwag.web import Services
from chinwag.web.api import Route
from chinwag.web.app import declared_api

PUBLIC = {
    ("POST", "/v1/users"),
    ("POST", "/v1/tokens"),
    ("GET", "/healthz"),
    ("GET", "/v1/push/vapid-public-key"),  # a public key: pages fetch it before signing in
}
ROUTES = {(route.method, route.path): route for route in declared_api().routes}
NONEXISTENT = 987_654_321


@dataclass(frozen=True)
class Ids:
    """The objects a call refers to: real ones, or ids that exist nowhere."""

    chat: int
    message: int
    device: int
    test: int  # a test notification of the device


@dataclass(frozen=True)
class Case:
    """How a route is called successfully: its body (built from the ids) and who may call it."""

    body: Callable[[Ids], dict[str, Any]] | None = None
    admin: bool = False  # operators only: bob, a plain member, must get 403


def fill(path: str, ids: Ids) -> str:
    """The route's path with its parameters filled; an unknown parameter needs a case here."""
    known = {
        "<chat_id:int>": ids.chat,
        "<message_id:int>": ids.message,
        "<device_id:int>": ids.device,
        "<test_id:int>": ids.test,
        "<username>": "bob",
    }
    for placeholder, value in known.items():
        path = path.replace(placeholder, str(value))
    assert "<" not in path, f"{path}: teach fill() this parameter"
    return path


@pytest.fixture
def server(db: Database, rung: list[int]) -> Iterator[LiveServer]:
    """The conftest's server with Web Push on, as from the environment (a generated key), so
    that the key route answers here like every other route."""
    push = PushSettings(webpush=WebPushSettings(vapid_private_key=None))
    settings = Settings(
        database_url=db.url,
        stream_heartbeat_seconds=0.5,
        # No worker behind this server: a device test can only stay pending (202).
        device_test_wait_seconds=0.2,
        push=push,
    )
    services = Services(
        settings,
        db,
        ring_doorbell=rung.append,
        vapid_public_key=vapid_public_key_source(settings, db),
    )
    live = LiveServer(services)
    yield live
    live.stop()


# Every route, called successfully by bob, a member (not the creator) of the chat.
CASES: dict[tuple[str, str], Case] = {
    ("POST", "/v1/users"): Case(lambda i: {"username": "zed", "password": "p" * 8}),
    ("POST", "/v1/tokens"): Case(lambda i: {"username": "bob", "password": "p" * 8}),
    ("GET", "/v1/me"): Case(),
    ("POST", "/v1/devices"): Case(lambda i: {"platform": "apns", "token": "cd" * 32}),
    ("GET", "/v1/devices"): Case(),
    ("DELETE", "/v1/devices/<device_id:int>"): Case(),
    ("POST", "/v1/chats"): Case(lambda i: {"title": "New", "members": []}),
    ("GET", "/v1/chats"): Case(),
    ("GET", "/v1/chats/<chat_id:int>"): Case(),
    ("POST", "/v1/chats/<chat_id:int>/members"): Case(lambda i: {"username": "carol"}),
    ("DELETE", "/v1/chats/<chat_id:int>/members/<username>"): Case(),
    ("PUT", "/v1/chats/<chat_id:int>/settings"): Case(lambda i: {"muted": True}),
    ("POST", "/v1/chats/<chat_id:int>/messages"): Case(
        lambda i: {"body": "hi", "client_id": "auth-matrix"}
    ),
    ("POST", "/groupchat/send"): Case(lambda i: {"conversation": i.chat, "message": "hi"}),
    ("GET", "/v1/chats/<chat_id:int>/messages"): Case(),
    ("GET", "/v1/messages/<message_id:int>/deliveries"): Case(),
    ("GET", "/healthz"): Case(),
    ("GET", "/v1/admin/stats"): Case(admin=True),
    ("POST", "/v1/chats/<chat_id:int>/read"): Case(lambda i: {"message_id": i.message}),
    ("PATCH", "/v1/chats/<chat_id:int>/messages/<message_id:int>"): Case(
        lambda i: {"body": "edited"}
    ),
    ("DELETE", "/v1/chats/<chat_id:int>/messages/<message_id:int>"): Case(),
    ("PUT", "/v1/me/settings"): Case(lambda i: {"quiet_when_active": True}),
    ("GET", "/v1/events"): Case(),  # no Accept: text/event-stream, so an immediate JSON poll
    ("POST", "/v1/devices/<device_id:int>/verify"): Case(lambda i: {"code": "123456"}),
    ("POST", "/v1/devices/<device_id:int>/test"): Case(),
    ("GET", "/v1/devices/<device_id:int>/tests/<test_id:int>"): Case(),
    ("PUT", "/v1/me/password"): Case(lambda i: {"old_password": "p" * 8, "new_password": "p" * 8}),
    ("DELETE", "/v1/tokens/current"): Case(),
    ("GET", "/v1/push/vapid-public-key"): Case(),
}

# Routes that name an object the caller must be allowed to see (a chat, a message, a device).
SCOPED = sorted(key for key in ROUTES if ":int>" in key[1] or key == ("POST", "/groupchat/send"))
# Deleting bob's device and message and leaving the chat go last: the other calls need them.
LAST = [
    ("DELETE", "/v1/devices/<device_id:int>"),
    ("DELETE", "/v1/chats/<chat_id:int>/messages/<message_id:int>"),
    ("DELETE", "/v1/chats/<chat_id:int>/members/<username>"),
    ("DELETE", "/v1/tokens/current"),  # signs the caller out
]
MEMBER_ORDER = sorted(ROUTES, key=lambda key: LAST.index(key) + 1 if key in LAST else 0)


@dataclass
class World:
    alice: httpx.Client  # created the chat
    bob: httpx.Client  # a member
    eve: httpx.Client  # not a member
    for_bob: Ids
    for_eve: Ids  # alice's chat, message and device: real, but not eve's to see


@pytest.fixture
def world(api: Api, db: Database) -> World:
    alice, bob, eve = (api.user(name, password="p" * 8) for name in ("alice", "bob", "eve"))
    api.user("carol", password="p" * 8)
    accounts.set_admin(db, "alice", True)
    chat_id = chat_of(alice, "bob")
    alices_message = alice.post(f"/v1/chats/{chat_id}/messages", json={"body": "hello"})
    bobs_message = bob.post(f"/v1/chats/{chat_id}/messages", json={"body": "hi"})
    alices = alice.post("/v1/devices", json={"platform": "apns", "token": APNS_TOKEN}).json()
    bobs = bob.post("/v1/devices", json={"platform": "apns", "token": "ef" * 32}).json()
    # No worker here: each test stays pending (202), which is all these calls need.
    alices_test = alice.post(f"/v1/devices/{alices['id']}/test").json()["test_id"]
    bobs_test = bob.post(f"/v1/devices/{bobs['id']}/test").json()["test_id"]
    return World(
        alice=alice,
        bob=bob,
        eve=eve,
        for_bob=Ids(chat_id, bobs_message.json()["message"]["id"], bobs["id"], bobs_test),
        for_eve=Ids(chat_id, alices_message.json()["message"]["id"], alices["id"], alices_test),
    )


def call(client: httpx.Client, route: Route, ids: Ids) -> httpx.Response:
    case = CASES.get((route.method, route.path), Case())
    body = case.body(ids) if case.body is not None else None
    return client.request(route.method, fill(route.path, ids), json=body)


def test_every_declared_route_is_in_the_matrix() -> None:
    """Each declared route has a case here, and the contract's public routes are public."""
    missing = sorted(set(ROUTES) - set(CASES))
    assert missing == [], f"add these routes to CASES in {__name__}"
    assert {key for key, route in ROUTES.items() if not route.auth} == PUBLIC


def test_anonymous_gets_401_on_every_private_route(api: Api, world: World) -> None:
    """Without a token every route but sign-up, sign-in, healthz and the VAPID key answers 401."""
    wrong: list[object] = []
    for key, route in ROUTES.items():
        response = call(api.anonymous, route, world.for_bob)
        if key in PUBLIC:
            if response.status_code == 401:
                wrong.append((key, response.status_code))
        elif response.status_code != 401:
            wrong.append((key, response.status_code))
        else:
            assert_error(response, 401, "unauthorized")
    assert wrong == []


BAD_AUTHORIZATION = ["Bearer cw_not-a-token", "Bearer", "Basic YWxpY2U6cGFzc3dvcmQ=", "cw_bare"]


def test_bad_token_gets_401_on_every_private_route(api: Api, world: World) -> None:
    """A wrong, empty or non-bearer Authorization header is a 401 on every private route."""
    wrong: list[object] = []
    for authorization in BAD_AUTHORIZATION:
        client = httpx.Client(base_url=api.server.url, headers={"Authorization": authorization})
        for key, route in ROUTES.items():
            if key in PUBLIC:
                continue
            response = call(client, route, world.for_bob)
            if response.status_code != 401:
                wrong.append((authorization, key, response.status_code))
            else:
                assert_error(response, 401, "unauthorized")
    assert wrong == []


def test_non_member_sees_404_exactly_like_a_nonexistent_id(world: World) -> None:
    """Someone else's chat, message or device is a 404 identical to that of a missing id."""
    assert SCOPED, "the route list has no scoped routes?"
    missing = Ids(NONEXISTENT, NONEXISTENT, NONEXISTENT, NONEXISTENT)
    real_ids = {str(i) for i in (world.for_eve.chat, world.for_eve.message, world.for_eve.device)}
    real_ids.add(str(world.for_eve.test))
    wrong: list[object] = []
    for key in SCOPED:
        route = ROUTES[key]
        hidden = call(world.eve, route, world.for_eve)
        absent = call(world.eve, route, missing)
        if hidden.status_code != 404 or absent.status_code != 404:
            wrong.append((key, hidden.status_code, absent.status_code))
            continue
        hidden_error, absent_error = assert_error(hidden, 404), assert_error(absent, 404)
        # Whole numbers only: "1" must not be replaced inside an id already replaced.
        text = re.sub(
            r"\d+",
            lambda found: str(NONEXISTENT) if found[0] in real_ids else found[0],
            hidden_error["message"],
        )
        if {**hidden_error, "message": text} != absent_error:
            wrong.append((key, hidden_error, absent_error))
    assert wrong == []
    # And none of it changed what the members see.
    chat = world.alice.get(f"/v1/chats/{world.for_eve.chat}").json()
    assert [m["username"] for m in chat["members"]] == ["alice", "bob"]
    assert [d["id"] for d in world.alice.get("/v1/devices").json()["devices"]] == [
        world.for_eve.device
    ]


def test_member_succeeds_on_every_route(world: World) -> None:
    """A plain member succeeds on every route (operators-only ones: 403 for him, ok for one)."""
    wrong: list[object] = []
    for key in MEMBER_ORDER:
        route = ROUTES[key]
        if key not in CASES:
            continue  # reported by test_every_declared_route_is_in_the_matrix
        if CASES[key].admin:
            refused = call(world.bob, route, world.for_bob)
            if refused.status_code != 403:
                wrong.append((key, "non-operator", refused.status_code))
            caller = world.alice
        else:
            caller = world.bob
        response = call(caller, route, world.for_bob)
        if response.status_code not in (route.status, *route.also):
            wrong.append((key, response.status_code, response.text))
    assert wrong == []
