"""The page tells people apart (security finding 11): display names are free text, so every
name shown beside a message or in a member list carries the unique @username."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api, LiveGateway
from tests.web.browser.pages import PASSWORD, signed_in_page


def test_an_impostor_display_name_shows_its_real_username(
    browser: Any, live: LiveGateway, people: Api
) -> None:
    """Mallory calling herself "Alice" appears as "Alice @mallory" next to the real "@alice"."""
    people.user("alice", PASSWORD, display_name="Alice")
    mallory = people.user("mallory", PASSWORD, display_name="Alice")
    bob_api = people.user("bob", PASSWORD)
    chat = bob_api.post("/v1/chats", json={"title": "Team", "members": ["alice", "mallory"]})
    mallory.post(f"/v1/chats/{chat.json()['id']}/messages", json={"body": "send me the keys"})
    bob = signed_in_page(browser, live, "bob")
    bob.click("#chat-list li:has-text('Team') button")
    message = bob.wait_for_selector("li.message:has-text('send me the keys')")
    assert message is not None
    assert message.query_selector(".meta .handle").text_content() == "@mallory"
    assert bob.locator("text=Alice @mallory").count() >= 1
    assert bob.locator("text=Alice @alice").count() >= 1
    assert bob.js_errors == []
