"""The web client in headless Chromium: two people chat, the sender watches every fake device
get its notification, muting silences a chat, the operator page shows the figures.

Screenshots go to a temporary directory; `make screenshots` writes them to docs/img/ (the README
shows them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from playwright.sync_api import expect
from tests.conftest import Api, LiveGateway
from tests.support.processes import wait_until
from tests.web.browser.pages import PASSWORD, TIMEOUT_MS, open_page, sign_in, signed_in_page

from chinwag.chat.accounts import set_admin
from chinwag.fakes.suite import RunningFakes
from chinwag.store.database import Database
from chinwag.store.schema import devices


def test_two_people_chat_and_every_fake_device_reports_delivered(
    browser: Any, live: LiveGateway, people: Api, fakes: RunningFakes, screenshots: Path
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
    expect(bob.locator("#device-list li")).to_have_count(5)
    bob.click("#close-devices")
    # The webhook's own signing key, shown once at registration: bob's receiver checks it.
    with live.services.db.read() as conn:
        key = conn.execute(
            sa.select(devices.c.webhook_secret).where(devices.c.platform == "webhook")
        ).scalar_one()
    providers.webhook.hook_secrets[providers.webhook.hook_url("bob")] = key

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
    # Settled may be seen before the click's own fetch has drawn the rows: wait for them.
    rows = panel.locator("tr[data-delivery-id]")
    expect(rows).to_have_count(5)
    assert {rows.nth(i).get_attribute("data-platform") for i in range(5)} == {
        "apns",
        "fcm",
        "webpush",
        "email",
        "webhook",
    }
    assert {rows.nth(i).get_attribute("data-status") for i in range(5)} == {"delivered"}
    expect(panel.locator(".delivery-toggle")).to_have_text(re.compile(r"^5/5 delivered"))
    accepted = providers.accepted_counts()
    assert all(accepted[p] >= 1 for p in ("apns", "fcm", "webpush", "email", "webhook"))
    assert accepted["email"] == accepted["webhook"] == 1  # alerts only: no silent updates
    alice.screenshot(path=str(screenshots / "screenshot-chat.png"))
    panel.locator("xpath=..").screenshot(path=str(screenshots / "screenshot-delivery-panel.png"))
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
    expect(alice.locator("li.message")).to_have_count(30)
    # Each scroll to the top loads one earlier page: wait for it to arrive before the next.
    for _ in range(5):
        shown = alice.locator("li.message").count()
        if alice.locator("li.message:has-text('line 01')").count():
            break
        alice.eval_on_selector("#history", "h => { h.scrollTop = 0; }")
        alice.wait_for_function(
            "n => document.querySelectorAll('li.message').length > n", arg=shown
        )
    alice.wait_for_selector("li.message:has-text('line 01')")
    expect(alice.locator("li.message")).to_have_count(70)
    assert alice.locator("#load-earlier").is_hidden()


def test_operator_page_shows_queue_throughput_and_failures(
    browser: Any,
    live: LiveGateway,
    people: Api,
    db: Database,
    fakes: RunningFakes,
    screenshots: Path,
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
    expect(admin.locator("#delivered-window")).to_have_text("2")
    expect(admin.locator("#queue-depth")).to_have_text("0")
    admin.wait_for_selector("#failures td:has-text('token_dead')")
    assert admin.locator("#throughput rect.delivered").count() >= 1
    admin.set_viewport_size({"width": 1180, "height": 1100})
    admin.screenshot(path=str(screenshots / "screenshot-admin.png"), full_page=True)
    assert admin.js_errors == []


def test_client_falls_back_to_polling_when_the_stream_is_refused(
    browser: Any, live: LiveGateway, people: Api, fakes: RunningFakes
) -> None:
    """With no WebSocket and /v1/events answering 404 (older servers), messages and delivery
    panels still update by polling."""
    people.user("alice", PASSWORD)
    bob_api = people.user("bob", PASSWORD)
    bob_api.post("/v1/devices", json={"platform": "email", "token": "bob@example.com"})
    chat = bob_api.post("/v1/chats", json={"title": "Poll", "members": ["alice"]}).json()
    context = browser.new_context()
    context.add_init_script("window.WebSocket = undefined;")
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
    page.wait_for_selector("#live-status[data-mode=polling][data-transport=polling]")
    page.click("#chat-list li:has-text('Poll') button")
    bob_api.post(f"/v1/chats/{chat['id']}/messages", json={"body": "polled in"})
    page.wait_for_selector("li.message:has-text('polled in')")
    page.fill("#composer-body", "and answered")
    page.press("#composer-body", "Enter")
    page.wait_for_selector("li.message.mine .delivery[data-settled=true][data-delivered='1']")
    expect(page.locator("#live-status")).to_have_text(re.compile(r"^polling"))
    context.close()
