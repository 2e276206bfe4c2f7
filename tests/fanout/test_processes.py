"""The engine end to end: real worker processes, the real web tier, the local fake providers.

Each test starts the fakes (TLS, HTTP/2, SMTP) in a thread, the web tier in-process on waitress
with a real doorbell, and ``chinwag worker`` as a separate process, then checks what the fakes
accepted against what the policy says should arrive.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import redis as redis_lib
from tests.conftest import REDIS_URL, Api, LiveServer, require_redis
from tests.fanout.conftest import Workers, apns_received, big_group
from tests.support.processes import delivery_statuses, fanout_settled, wait_until

from chinwag.config import Settings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.suite import RunningFakes
from chinwag.fanout import Doorbell
from chinwag.store.database import Database
from chinwag.web import Services

pytestmark = pytest.mark.slow


def test_mixed_platform_group_gets_exactly_the_expected_notifications(
    web_api: Api, db: Database, fakes: RunningFakes, workers: Workers
) -> None:
    """Every platform receives the right content; the sender and a muted member get nothing."""
    providers = fakes.providers
    alice = web_api.user("alice", display_name="Alice")
    bob, carol, dave, eve = (web_api.user(name) for name in ("bob", "carol", "dave", "eve"))
    subscription = fakes.run(providers.webpush.new_subscription)
    hook = providers.webhook.hook_url("dave")
    registrations = [
        (alice, {"platform": "apns", "token": "a1" * 32}),
        (bob, {"platform": "apns", "token": "b1" * 32}),
        (bob, {"platform": "fcm", "token": "bob-fcm-token-0123456789"}),
        (carol, {"platform": "webpush", "token": subscription}),
        (carol, {"platform": "email", "token": "carol@example.com"}),
        (dave, {"platform": "webhook", "token": hook}),
        (eve, {"platform": "apns", "token": "e1" * 32}),
    ]
    for client, body in registrations:
        response = client.post("/v1/devices", json=body)
        assert response.status_code == 201, response.text
        if response.json().get("webhook_secret"):  # dave's receiver checks his device's key
            providers.webhook.hook_secrets[hook] = response.json()["webhook_secret"]
    chat = alice.post(
        "/v1/chats", json={"title": "Lunch", "members": ["bob", "carol", "dave", "eve"]}
    ).json()
    eve.put(f"/v1/chats/{chat['id']}/settings", json={"muted": True})
    workers.start()
    sent = alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "Pizza at noon?"})
    message_id = sent.json()["message"]["id"]
    wait_until(lambda: fanout_settled(db, [message_id]), 30, "the fan-out to settle")
    assert providers.accepted_counts() == {
        "apns": 1,
        "fcm": 1,
        "webpush": 1,
        "email": 1,
        "webhook": 1,
    }
    apns = providers.apns.accepted[0]
    assert apns.token == "b1" * 32
    assert apns.payload["aps"]["alert"] == {"title": "Lunch", "body": "Alice: Pizza at noon?"}
    assert apns.payload["chat_id"] == chat["id"] and apns.payload["message_id"] == message_id
    fcm = providers.fcm.accepted[0].message
    # The badge is bob's unread total: this one message.
    assert fcm["data"] == {"chat_id": str(chat["id"]), "message_id": str(message_id), "badge": "1"}
    assert apns.payload["aps"]["badge"] == 1
    assert fcm["notification"] == {"title": "Lunch", "body": "Alice: Pizza at noon?"}
    push = providers.webpush.accepted[0].payload
    assert push["title"] == "Lunch" and push["message_id"] == message_id
    email = providers.smtp.accepted[0].message
    assert email["Subject"] == "Lunch"
    assert email["X-Chinwag-Chat-Id"] == str(chat["id"])
    assert email["X-Chinwag-Message-Id"] == str(message_id)
    hook_body = providers.webhook.accepted[0].body
    assert hook_body["body"] == "Alice: Pizza at noon?"
    deliveries = alice.get(f"/v1/messages/{message_id}/deliveries").json()
    wait_until(
        lambda: (
            alice.get(f"/v1/messages/{message_id}/deliveries").json()["summary"] == {"delivered": 5}
        ),
        10,
        "five delivered records",
    )
    assert {d["user"] for d in deliveries["deliveries"]} == {"bob", "carol", "dave"}


def test_worker_killed_mid_fanout_loses_nothing(
    web_api: Api, db: Database, fakes: RunningFakes, workers: Workers
) -> None:
    """SIGKILL a worker half-way through 1,500 devices; its successor delivers the rest."""
    fakes.providers.apns.faults = FaultPlan(latency=0.05)
    sender, chat_id, tokens = big_group(web_api, db, 1500)
    first = workers.start(CHINWAG_MAX_IN_FLIGHT="100")
    sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "all hands"})
    wait_until(lambda: len(fakes.providers.apns.accepted) >= 300, 30, "300 notifications")
    first.kill()
    killed_at = len(fakes.providers.apns.accepted)
    assert killed_at < len(tokens), "the worker finished before it could be killed"
    workers.start(CHINWAG_MAX_IN_FLIGHT="100")
    wait_until(
        lambda: set(apns_received(fakes)) >= set(tokens), 60, "every device after the restart"
    )
    wait_until(lambda: delivery_statuses(db) == {"delivered": 1500}, 20, "all rows delivered")
    duplicates = len(apns_received(fakes)) - len(set(apns_received(fakes)))
    # Only sends in flight at the moment of the kill can be repeated (bounded by max in flight).
    assert duplicates <= 100, duplicates


def test_lost_doorbell_is_covered_by_the_sweep(
    db: Database, fakes: RunningFakes, workers: Workers, queue_url: str
) -> None:
    """With the doorbell never rung, an idle worker's sweep still delivers the message."""
    silent = LiveServer(Services(Settings(database_url=db.url), db))  # no doorbell at all
    try:
        api = Api(silent)
        alice, bob = api.user("alice"), api.user("bob")
        bob.post("/v1/devices", json={"platform": "apns", "token": "b2" * 32})
        chat = alice.post("/v1/chats", json={"title": "Quiet", "members": ["bob"]}).json()
        worker = workers.start(CHINWAG_SWEEP_INTERVAL="1")
        # Send only once the worker runs, so that its start-up claim cannot be what finds it.
        wait_until(lambda: " started" in worker.output(), 30, "the worker to start")
        alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "anyone?"})
        took = wait_until(lambda: len(fakes.providers.apns.accepted) == 1, 10, "the sweep")
        assert took < 5
    finally:
        silent.stop()


def test_flushed_redis_queue_loses_nothing(
    db: Database, fakes: RunningFakes, tmp_path: Path
) -> None:
    """Rings enqueued in Redis and then flushed away: the worker still delivers every message."""
    require_redis()
    redis_queue = REDIS_URL
    doorbell = Doorbell(redis_queue)
    live = LiveServer(Services(Settings(database_url=db.url), db, ring_doorbell=doorbell.ring))
    group = Workers(db, redis_queue, fakes, tmp_path)
    try:
        api = Api(live)
        alice, bob = api.user("alice"), api.user("bob")
        bob.post("/v1/devices", json={"platform": "apns", "token": "b3" * 32})
        chat = alice.post("/v1/chats", json={"title": "Flushed", "members": ["bob"]}).json()
        for n in range(5):
            alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": f"m{n}"})
        assert doorbell.pending() >= 5
        redis_lib.Redis.from_url(redis_queue).flushdb()
        assert doorbell.pending() == 0
        group.start()
        wait_until(lambda: len(fakes.providers.apns.accepted) == 5, 20, "five notifications")
    finally:
        group.stop_all()
        live.stop()


def test_sigterm_finishes_in_flight_sends_without_duplicates(
    web_api: Api, db: Database, fakes: RunningFakes, workers: Workers
) -> None:
    """SIGTERM mid-fan-out: in-flight sends complete and are recorded, the rest is released and a
    new worker completes it, with no device notified twice."""
    fakes.providers.apns.faults = FaultPlan(latency=0.3)
    sender, chat_id, tokens = big_group(web_api, db, 600)
    first = workers.start(CHINWAG_MAX_IN_FLIGHT="50")
    sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "drain"})
    wait_until(lambda: len(fakes.providers.apns.accepted) >= 50, 30, "first sends")
    assert first.terminate(timeout=30) == 0
    assert "stopped" in first.output()
    stopped_at = len(apns_received(fakes))
    assert stopped_at < len(tokens)
    statuses = delivery_statuses(db)
    assert "sending" not in statuses, statuses  # nothing left leased to the dead worker
    workers.start(CHINWAG_MAX_IN_FLIGHT="200")
    wait_until(lambda: len(set(apns_received(fakes))) == 600, 60, "all 600 devices")
    wait_until(lambda: delivery_statuses(db) == {"delivered": 600}, 20, "all rows delivered")
    assert Counter(apns_received(fakes)).most_common(1)[0][1] == 1


def test_dead_token_from_provider_deactivates_the_device(
    web_api: Api, fakes: RunningFakes, workers: Workers
) -> None:
    """APNs 410 Unregistered: the delivery is token_dead and the device leaves the owner's list."""
    alice, bob = web_api.user("alice"), web_api.user("bob")
    dead, alive = "de" * 32, "a1" * 32
    fakes.providers.apns.dead_tokens.add(dead)
    for token in (dead, alive):
        bob.post("/v1/devices", json={"platform": "apns", "token": token})
    chat = alice.post("/v1/chats", json={"title": "T", "members": ["bob"]}).json()
    workers.start()
    message = alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "x"}).json()["message"]
    url = f"/v1/messages/{message['id']}/deliveries"
    wait_until(
        lambda: alice.get(url).json()["summary"] == {"delivered": 1, "token_dead": 1}, 20, "records"
    )
    assert [d["token"] for d in bob.get("/v1/devices").json()["devices"]] == [alive]
