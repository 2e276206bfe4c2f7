"""The web client's live transports in headless Chromium against the real gateway: messages and
typing over the WebSocket between two people, and Server-Sent Events when the page has no
WebSocket."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.conftest import Api, LiveGateway
from tests.live.support import Person, websocket
from tests.web.browser.pages import PASSWORD, open_page, sign_in, token_of

from chinwag.chat.accounts import token_digest
from chinwag.store.database import Database
from chinwag.store.schema import api_tokens

TYPING_SHOWN_WITHIN_MS = 10_000  # a typing event crosses the gateway in milliseconds when idle
ANNOUNCE_EVERY_S = 3  # the client's typing frames per chat, at most one this often
NO_WEBSOCKET = "window.WebSocket = undefined;"


@pytest.fixture
def new_page(browser: Any, live: LiveGateway) -> Callable[..., Any]:
    """Opens the client in a browser context of its own (one person each), not yet signed in."""
    return lambda init_script=None: open_page(browser, live, init_script)


def websocket_frames(page: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The JSON frames the page's WebSockets to /v1/ws receive and send, as they happen."""
    received: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []

    def watch(ws: Any) -> None:
        if "/v1/ws" in ws.url:
            ws.on("framereceived", lambda payload: received.append(json.loads(payload)))
            ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    page.on("websocket", watch)
    return received, sent


class RoutedSockets:
    """The page's WebSockets to /v1/ws passed through Playwright to the server, so that a test can
    drop one (as a restarting server or a lost network would) and see what the client resumes."""

    def __init__(self, page: Any) -> None:
        self.routes: list[Any] = []
        self.urls: list[str] = []
        self.received: list[list[dict[str, Any]]] = []  # per socket: frames the server sent
        page.context.route_web_socket(re.compile(r"/v1/ws"), self._through)

    def _through(self, route: Any) -> None:
        self.routes.append(route)
        self.urls.append(route.url)
        received: list[dict[str, Any]] = []
        self.received.append(received)
        server = route.connect_to_server()

        def to_page(message: str | bytes) -> None:
            received.append(json.loads(message))
            route.send(message)

        server.on_message(to_page)

    def drop_latest(self) -> None:
        self.routes[-1].close(code=1001, reason="going away")  # the server side closes with it


def test_messages_and_typing_arrive_over_the_websocket(
    new_page: Callable[..., Any], people: Api, screenshots: Path
) -> None:
    """Two people on the WebSocket: a message arrives live, "Alice @alice is typing…" shows on
    bob's page while alice types (never on her own) and goes when her message arrives."""
    people.user("alice", PASSWORD, display_name="Alice")
    bob_api = people.user("bob", PASSWORD, display_name="Bob")
    chat = bob_api.post("/v1/chats", json={"title": "Lunch", "members": ["alice"]}).json()
    alice, bob = new_page(), new_page()
    alice_received, alice_sent = websocket_frames(alice)  # before sign-in opens the socket
    for page, username in ((alice, "alice"), (bob, "bob")):
        sign_in(page, username)
        status = page.locator("#live-status")
        expect(status).to_have_attribute("data-mode", "live")
        expect(status).to_have_attribute("data-transport", "websocket")
        page.click("#chat-list li:has-text('Lunch') button")
        expect(page.locator("#chat-title")).to_have_text("Lunch")

    # alice types: one typing frame however many keys, and bob sees who is typing
    started = time.monotonic()
    alice.locator("#composer-body").press_sequentially("Pizza at noon?")
    typed_for = time.monotonic() - started
    typing = bob.locator("#typing")
    expect(typing).to_have_text("Alice @alice is typing…", timeout=TYPING_SHOWN_WITHIN_MS)
    expect(typing.locator(".typist[data-username=alice] .handle")).to_have_text("@alice")
    frames = [f for f in alice_sent if f.get("type") == "typing"]
    assert 1 <= len(frames) <= 1 + typed_for / ANNOUNCE_EVERY_S, (frames, typed_for)
    assert frames[0] == {"type": "typing", "chat_id": chat["id"]}
    expect(alice.locator("#typing")).to_be_hidden()  # never one's own typing
    bob.screenshot(path=str(screenshots / "screenshot-typing.png"))

    # alice sends: the message reaches bob over the WebSocket and ends her typing line there
    alice.press("#composer-body", "Enter")
    expect(bob.locator("li.message:has-text('Pizza at noon?')")).to_be_visible()
    # Cleared with the message itself (the same event), not by the 5 s expiry.
    expect(typing).to_be_hidden(timeout=1_000)

    # and back: bob's answer reaches alice as a WebSocket frame, live
    bob.fill("#composer-body", "Yes!")
    bob.press("#composer-body", "Enter")
    expect(alice.locator("li.message:has-text('Yes!')")).to_be_visible()
    assert any(
        f["kind"] == "message" and f["data"]["body"] == "Yes!" and f["id"] for f in alice_received
    ), alice_received
    expect(alice.locator("#live-status")).to_have_attribute("data-transport", "websocket")
    assert alice.js_errors == [] and bob.js_errors == []


def test_client_uses_server_sent_events_without_a_websocket(
    new_page: Callable[..., Any], live: LiveGateway, people: Api
) -> None:
    """With no WebSocket in the page the client streams over SSE: messages arrive live and other
    members' typing (sent by a WebSocket client) still shows."""
    people.user("alice", PASSWORD, display_name="Alice")
    bob_api = people.user("bob", PASSWORD, display_name="Bob")
    chat = bob_api.post("/v1/chats", json={"title": "Plain", "members": ["alice"]}).json()
    alice = new_page(init_script=NO_WEBSOCKET)
    streams: list[str] = []
    alice.on(
        "request",
        lambda r: streams.append(r.headers.get("accept", "")) if "/v1/events?" in r.url else None,
    )
    sign_in(alice, "alice")
    status = alice.locator("#live-status")
    expect(status).to_have_attribute("data-mode", "live")
    expect(status).to_have_attribute("data-transport", "sse")
    alice.click("#chat-list li:has-text('Plain') button")
    expect(alice.locator("#chat-title")).to_have_text("Plain")

    # Live, a page does not poll the open chat's history: this message can only come by the stream.
    bob_api.post(f"/v1/chats/{chat['id']}/messages", json={"body": "over SSE"})
    expect(alice.locator("li.message:has-text('over SSE')")).to_be_visible()

    bob = Person("bob", token_of(live, "bob"), bob_api)
    with websocket(live, bob) as bob_socket:
        bob_socket.send({"type": "typing", "chat_id": chat["id"]})
        expect(alice.locator("#typing")).to_have_text(
            "Bob @bob is typing…", timeout=TYPING_SHOWN_WITHIN_MS
        )
    expect(status).to_have_attribute("data-transport", "sse")
    assert "text/event-stream" in streams, streams  # EventSource's request, not a poll
    assert alice.js_errors == []


def test_a_dropped_websocket_resumes_after_the_last_event_seen(
    new_page: Callable[..., Any], people: Api
) -> None:
    """After its WebSocket drops the client reconnects by itself with ?after= the last event id
    it saw; a message sent meanwhile arrives once, over the new socket."""
    people.user("alice", PASSWORD, display_name="Alice")
    bob_api = people.user("bob", PASSWORD, display_name="Bob")
    chat = bob_api.post("/v1/chats", json={"title": "Resume", "members": ["alice"]}).json()
    alice = new_page()
    sockets = RoutedSockets(alice)
    sign_in(alice, "alice")
    status = alice.locator("#live-status")
    expect(status).to_have_attribute("data-transport", "websocket")
    expect(status).to_have_attribute("data-mode", "live")
    alice.click("#chat-list li:has-text('Resume') button")
    bob_api.post(f"/v1/chats/{chat['id']}/messages", json={"body": "before the drop"})
    expect(alice.locator("li.message:has-text('before the drop')")).to_be_visible()
    seen = max(frame["id"] for frame in sockets.received[0] if frame["id"] is not None)

    sockets.drop_latest()
    bob_api.post(f"/v1/chats/{chat['id']}/messages", json={"body": "while away"})
    expect(alice.locator("li.message:has-text('while away')")).to_have_count(1)
    expect(status).to_have_attribute("data-mode", "live")
    expect(status).to_have_attribute("data-transport", "websocket")
    assert len(sockets.urls) == 2, sockets.urls
    assert f"after={seen}" in sockets.urls[1], sockets.urls
    bodies = [
        [f["data"].get("body") for f in frames if f["kind"] == "message"]
        for frames in sockets.received
    ]
    assert bodies[1] == ["while away"], bodies  # nothing lost, nothing twice
    expect(alice.locator("li.message")).to_have_count(2)
    assert alice.js_errors == []


def test_a_revoked_token_sends_the_page_back_to_sign_in(
    new_page: Callable[..., Any], people: Api, db: Database
) -> None:
    """When the stream's reconnection is refused as unauthorized (the token was revoked), the page
    returns to the sign-in form instead of retrying forever."""
    people.user("alice", PASSWORD, display_name="Alice")
    alice = new_page()
    sockets = RoutedSockets(alice)
    sign_in(alice, "alice")
    expect(alice.locator("#live-status")).to_have_attribute("data-mode", "live")
    token = alice.evaluate("localStorage.getItem('chinwag.token')")
    # Revoked as signing out elsewhere or a password change would (not every branch has the
    # routes yet): the token's row goes.
    with db.write() as conn:
        gone = conn.execute(
            api_tokens.delete().where(api_tokens.c.token_hash == token_digest(token))
        )
    assert gone.rowcount == 1
    sockets.drop_latest()
    expect(alice.locator("#auth")).to_be_visible()
    expect(alice.locator("#workspace")).to_be_hidden()
    assert alice.evaluate("localStorage.getItem('chinwag.token')") is None
