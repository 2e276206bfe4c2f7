"""The web client in headless Chromium: two people chat, the sender watches every fake device
get its notification, muting silences a chat, the operator page shows the figures.

Screenshots land in docs/img/ (the README shows them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.conftest import Api, LiveGateway
from tests.support.processes import wait_until
from tests.web.browser.conftest import SCREENSHOTS

from chinwag.chat.accounts import set_admin
from chinwag.fakes.suite import RunningFakes
from chinwag.store.database import Database

PASSWORD = "correct horse"
TIMEOUT_MS = 20_000
_contexts: list[Any] = []


@pytest.fixture(autouse=True)
def close_browser_contexts(live: LiveGateway) -> Iterator[None]:
    """Each test's pages close before its server stops, so no open stream holds the server."""
    yield
    while _contexts:
        _contexts.pop().close()


def open_page(browser: Any, live: LiveGateway) -> Any:
    context = browser.new_context(viewport={"width": 1180, "height": 720})
    _contexts.append(context)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    page.goto(live.url)
    return page


def sign_in(page: Any, username: str) -> None:
    page.fill("#auth-username", username)
    page.fill("#auth-password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_selector("#workspace:not([hidden])")


def token_of(live: LiveGateway, username: str) -> str:
    answer = httpx.post(f"{live.url}/v1/tokens", json={"username": username, "password": PASSWORD})
    token: str = answer.json()["token"]
    return token


def signed_in_page(browser: Any, live: LiveGateway, username: str) -> Any:
    """A page whose browser already holds the user's token, as after an earlier sign-in."""
    page = open_page(browser, live)
    token = token_of(live, username)
    page.evaluate("token => localStorage.setItem('chinwag.token', token)", token)
    page.reload()
    page.wait_for_selector("#workspace:not([hidden])")
    return page


def test_two_people_chat_and_every_fake_device_reports_delivered(
    browser: Any, live: LiveGateway, people: Api, fakes: RunningFakes
) -> None:
    """alice and bob chat live; alice's panel shows each of bob's five devices delivered."""
    providers = fakes.providers
    people.user("alice", PASSWORD, display_name="Alice")
    bob_api = people.user("bob", PASSWORD, display_name="Bob")
    subscription = fakes.run(providers.webpush.new_subscription)
    for platform, token in (
        ("apns", "b0" * 32),
        ("fcm", "bob-fcm-registration-token-0001"),
        ("webpush", subscription),
    ):
        assert bob_api.post("/v1/devices", json={"platform": platform, "token": token}).is_success

    alice = open_page(browser, live)
    sign_in(alice, "alice")
    bob = open_page(browser, live)
    sign_in(bob, "bob")

    # bob registers his email and a webhook from the devices dialog
    bob.click("#open-devices")
    for platform, address in (
        ("email", "bob@example.com"),
        ("webhook", providers.webhook.hook_url("bob")),
    ):
        bob.select_option("#device-platform", platform)
        bob.fill("#device-address", address)
        bob.click("#device-form button[type=submit]")
        bob.wait_for_selector(f"#device-list li[data-platform={platform}]")
    assert bob.locator("#device-list li").count() == 5
    bob.click("#close-devices")

    # alice creates the group and writes; bob sees it without reloading
    alice.fill("#new-chat-title", "Lunch")
    alice.fill("#new-chat-members", "bob")
    alice.click("#new-chat-form button")
    alice.wait_for_selector("#chat-title:has-text('Lunch')")
    bob.wait_for_selector("#chat-list li:has-text('Lunch')")
    bob.click("#chat-list li:has-text('Lunch') button")
    alice.fill("#composer-body", "Pizza at noon?")
    alice.press("#composer-body", "Enter")
    bob.wait_for_selector("li.message:has-text('Pizza at noon?')")
    bob.fill("#composer-body", "Yes! The usual place?")
    bob.press("#composer-body", "Enter")
    alice.wait_for_selector("li.message:has-text('The usual place?')")

    # alice's delivery panel: five devices, five delivered, and the fakes agree
    panel = alice.locator("li.message.mine .delivery").first
    panel.locator(".delivery-toggle").click()
    alice.wait_for_selector("li.message.mine .delivery[data-settled=true][data-delivered='5']")
    rows = panel.locator("tr[data-delivery-id]")
    assert rows.count() == 5
    assert {rows.nth(i).get_attribute("data-platform") for i in range(5)} == {
        "apns",
        "fcm",
        "webpush",
        "email",
        "webhook",
    }
    assert {rows.nth(i).get_attribute("data-status") for i in range(5)} == {"delivered"}
    assert panel.locator(".delivery-toggle").inner_text().startswith("5/5 delivered")
    accepted = providers.accepted_counts()
    assert all(accepted[p] >= 1 for p in ("apns", "fcm", "webpush", "email", "webhook"))
    assert accepted["email"] == accepted["webhook"] == 1  # alerts only: no silent updates
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=str(SCREENSHOTS / "screenshot-chat.png"))
    panel.locator("xpath=..").screenshot(path=str(SCREENSHOTS / "screenshot-delivery-panel.png"))
    assert alice.js_errors == [] and bob.js_errors == []


def test_mute_hides_notifications(
    browser: Any, live: LiveGateway, people: Api, fakes: RunningFakes
) -> None:
    """A muted chat pops no in-page notification and notifies none of the member's devices."""
    alice_api = people.user("alice", PASSWORD, display_name="Alice")
    bob_api = people.user("bob", PASSWORD, display_name="Bob")
    bob_api.post("/v1/devices", json={"platform": "apns", "token": "b0" * 32})
    quiet = alice_api.post("/v1/chats", json={"title": "Quiet", "members": ["bob"]}).json()
    loud = alice_api.post("/v1/chats", json={"title": "Loud", "members": ["bob"]}).json()
    bob = signed_in_page(browser, live, "bob")
    bob.click("#chat-list li:has-text('Quiet') button")
    bob.check("#mute-toggle")
    bob.wait_for_selector("#chat-list li:has-text('Quiet') .muted-mark")
    bob.click("#chat-list li:has-text('Loud') button")  # bob now looks at another chat

    alice_api.post(f"/v1/chats/{quiet['id']}/messages", json={"body": "psst, muted"})
    alice_api.post(f"/v1/chats/{loud['id']}/messages", json={"body": "hello, loud"})
    # The loud chat is open, so its message shows in the history; the quiet one only counts.
    bob.wait_for_selector("li.message:has-text('hello, loud')")
    bob.wait_for_selector("#chat-list li:has-text('Quiet') .unread")
    assert bob.locator(".toast").count() == 0

    bob.click("#chat-list li:has-text('Quiet') button")
    alice_api.post(f"/v1/chats/{loud['id']}/messages", json={"body": "still loud"})
    toast = bob.wait_for_selector(".toast:has-text('still loud')")
    assert toast is not None
    assert bob.locator(".toast:has-text('muted')").count() == 0

    # Only the loud chat's messages reached bob's phone.
    def alerts() -> list[str]:  # silent badge updates carry no alert
        accepted = list(fakes.providers.apns.accepted)
        return [a.payload["aps"]["alert"]["body"] for a in accepted if "alert" in a.payload["aps"]]

    wait_until(lambda: len(alerts()) >= 2, 20, "two APNs alerts")
    bodies = alerts()
    assert sorted(bodies) == ["Alice: hello, loud", "Alice: still loud"]
    assert bob.js_errors == []


def test_history_scrolls_back_to_the_first_message(
    browser: Any, live: LiveGateway, people: Api
) -> None:
    """Scrolling to the top loads earlier pages until the very first message is shown."""
    alice_api = people.user("alice", PASSWORD)
    chat = alice_api.post("/v1/chats", json={"title": "Long"}).json()
    for i in range(1, 71):
        alice_api.post(f"/v1/chats/{chat['id']}/messages", json={"body": f"line {i:02d}"})
    alice = signed_in_page(browser, live, "alice")
    alice.click("#chat-list li:has-text('Long') button")
    alice.wait_for_selector("li.message:has-text('line 70')")
    assert alice.locator("li.message").count() == 30
    for _ in range(5):
        if alice.locator("li.message:has-text('line 01')").count():
            break
        alice.eval_on_selector("#history", "h => { h.scrollTop = 0; }")
        alice.wait_for_timeout(300)
    alice.wait_for_selector("li.message:has-text('line 01')")
    assert alice.locator("li.message").count() == 70
    assert alice.locator("#load-earlier").is_hidden()


def test_operator_page_shows_queue_throughput_and_failures(
    browser: Any, live: LiveGateway, people: Api, db: Database, fakes: RunningFakes
) -> None:
    """An admin sees deliveries and a dead token explained; a member is told the page is not
    theirs."""
    fakes.providers.add_dead_token("dd" * 32)
    alice_api = people.user("alice", PASSWORD)
    bob_api = people.user("bob", PASSWORD)
    for token in ("b0" * 32, "dd" * 32):
        bob_api.post("/v1/devices", json={"platform": "apns", "token": token})
    bob_api.post("/v1/devices", json={"platform": "email", "token": "bob@example.com"})
    chat = alice_api.post("/v1/chats", json={"title": "Ops", "members": ["bob"]}).json()
    message = alice_api.post(f"/v1/chats/{chat['id']}/messages", json={"body": "hi"}).json()
    wait_until(
        lambda: (
            alice_api.get(f"/v1/messages/{message['message']['id']}/deliveries").json()["summary"]
            == {"delivered": 2, "token_dead": 1}
        ),
        20,
        "two delivered, one dead",
    )
    set_admin(db, "alice", True)
    member = signed_in_page(browser, live, "bob")
    member.goto(f"{live.url}/admin")
    member.wait_for_selector("#admin-error:has-text('operators')")

    admin = signed_in_page(browser, live, "alice")
    assert admin.locator("#admin-link").is_visible()
    admin.goto(f"{live.url}/admin")
    admin.wait_for_selector("#dashboard:not([hidden])")
    assert admin.inner_text("#delivered-window") == "2"
    assert admin.inner_text("#queue-depth") == "0"
    admin.wait_for_selector("#failures td:has-text('token_dead')")
    assert admin.locator("#throughput rect.delivered").count() >= 1
    admin.set_viewport_size({"width": 1180, "height": 1100})
    admin.screenshot(path=str(SCREENSHOTS / "screenshot-admin.png"), full_page=True)
    assert admin.js_errors == []


def test_client_falls_back_to_polling_when_the_stream_is_refused(
    browser: Any, live: LiveGateway, people: Api, fakes: RunningFakes
) -> None:
    """With /v1/events answering 404 (older servers), messages and delivery panels still update."""
    people.user("alice", PASSWORD)
    bob_api = people.user("bob", PASSWORD)
    bob_api.post("/v1/devices", json={"platform": "email", "token": "bob@example.com"})
    chat = bob_api.post("/v1/chats", json={"title": "Poll", "members": ["alice"]}).json()
    context = browser.new_context()
    context.route(
        "**/v1/events*",
        lambda route: route.fulfill(
            status=404,
            content_type="application/json",
            body='{"error": {"code": "not_found", "message": "no route"}}',
        ),
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live.url)
    sign_in(page, "alice")
    page.wait_for_selector("#live-status[data-mode=polling]")
    page.click("#chat-list li:has-text('Poll') button")
    bob_api.post(f"/v1/chats/{chat['id']}/messages", json={"body": "polled in"})
    page.wait_for_selector("li.message:has-text('polled in')")
    page.fill("#composer-body", "and answered")
    page.press("#composer-body", "Enter")
    page.wait_for_selector("li.message.mine .delivery[data-settled=true][data-delivered='1']")
    assert page.inner_text("#live-status").startswith("polling")
    context.close()
