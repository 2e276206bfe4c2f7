"""Private notifications end to end: the API registers a device's payload mode, a worker sends
through the real senders to the local fakes, and what each provider received is read back."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.conftest import Api, LiveServer

from chinwag.config import Settings
from chinwag.fakes.suite import RunningFakes
from chinwag.fanout import Worker, WorkerOptions
from chinwag.push.model import GENERIC_ALERT
from chinwag.push.registry import Senders
from chinwag.push.sealed import open_sealed
from chinwag.store.database import Database
from chinwag.web import Services

APNS_TOKEN = "ab" * 32
FCM_TOKEN = "fcm-registration-token-of-bob"
TITLE = "Heist planning"
SENDER = "Zelda Quartermain"
BODY = "the vault code is 4471"


@pytest.fixture
def web(db: Database, fakes: RunningFakes) -> Iterator[LiveServer]:
    """The API, with the fakes' settings (their endpoints on loopback are allowed)."""
    settings = Settings(
        database_url=db.url, push=fakes.providers.settings(), verify_email_devices=False
    )
    live = LiveServer(Services(settings, db))
    yield live
    live.stop()


def _work(db: Database, fakes: RunningFakes) -> None:
    """One worker run until idle, through the real senders to the fakes."""

    async def main() -> None:
        senders = Senders.from_settings(fakes.providers.settings())
        try:
            await Worker(db, senders, WorkerOptions(sweep_interval=0.1)).run_until_idle(30)
        finally:
            await senders.aclose()

    asyncio.run(main())


def _new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _register_everywhere(
    bob: httpx.Client, fakes: RunningFakes, payload: str, key: str | None = None
) -> None:
    """Bob's APNs, FCM, Web Push, webhook and email devices, all with one payload mode."""
    providers = fakes.providers
    tokens: list[tuple[str, object]] = [
        ("apns", APNS_TOKEN),
        ("fcm", FCM_TOKEN),
        ("webpush", fakes.run(providers.webpush.new_subscription)),
        ("webhook", providers.webhook.hook_url("bob")),
        ("email", "bob@example.com"),
    ]
    for platform, token in tokens:
        body: dict[str, object] = {"platform": platform, "token": token, "payload": payload}
        if key is not None:
            body["encryption_key"] = key  # an email gets no content: it cannot be decrypted
        answer = bob.post("/v1/devices", json=body)
        assert answer.status_code == 201, answer.text
        assert answer.json()["payload"] == body["payload"]
        assert "encryption_key" not in answer.json()
        if platform == "webhook":  # its receiver checks the signing key shown once
            providers.webhook.hook_secrets[str(token)] = answer.json()["webhook_secret"]


def _send(api: Api, text: str = BODY) -> tuple[httpx.Client, int, int]:
    """Zelda sends ``text`` to a chat with Bob: (Zelda's client, chat id, message id)."""
    zelda = api.user("zelda", display_name=SENDER)
    chat = zelda.post("/v1/chats", json={"title": TITLE, "members": ["bob"]}).json()
    sent = zelda.post(f"/v1/chats/{chat['id']}/messages", json={"body": text})
    assert sent.status_code == 201, sent.text
    return zelda, chat["id"], sent.json()["message"]["id"]


def _received(fakes: RunningFakes) -> dict[str, str]:
    """Everything each provider was given for Bob, headers included, as text."""
    providers = fakes.providers
    apns = [(r.headers, r.payload) for r in providers.apns.accepted]
    fcm = [r.message for r in providers.fcm.accepted]
    webpush = [(r.headers, r.payload) for r in providers.webpush.accepted]
    webhook = [(r.headers, r.body) for r in providers.webhook.accepted]
    email = [r.message.as_string() for r in providers.smtp.accepted]
    parts: dict[str, list[Any]] = {
        "apns": apns,
        "fcm": fcm,
        "webpush": webpush,
        "webhook": webhook,
        "email": email,
    }
    for platform, records in parts.items():
        assert len(records) == 1, (platform, records)
    return {
        platform: json.dumps(records, ensure_ascii=False, default=str)
        for platform, records in parts.items()
    }


def _only(records: list[Any]) -> Any:
    [record] = records
    return record


def test_minimal_devices_give_providers_no_message_text(
    web: LiveServer, db: Database, fakes: RunningFakes
) -> None:
    """A minimal device's provider request holds ids and a generic alert: no title, sender or
    body text anywhere, on any platform."""
    api = Api(web)
    _register_everywhere(api.user("bob"), fakes, "minimal")
    _, chat_id, message_id = _send(api)
    _work(db, fakes)
    for platform, text in _received(fakes).items():
        for secret in (BODY, "4471", TITLE, SENDER, "Zelda"):
            assert secret not in text, (platform, secret, text)
    providers = fakes.providers
    apns = _only(providers.apns.accepted).payload
    assert apns["aps"]["alert"] == {"body": GENERIC_ALERT}
    assert (apns["chat_id"], apns["message_id"]) == (chat_id, message_id)
    assert "mutable-content" not in apns["aps"]
    fcm = _only(providers.fcm.accepted).message
    assert fcm["notification"] == {"body": GENERIC_ALERT}
    assert fcm["data"]["chat_id"] == str(chat_id)
    assert fcm["data"]["message_id"] == str(message_id)
    webpush = _only(providers.webpush.accepted).payload
    assert webpush["body"] == GENERIC_ALERT and webpush["message_id"] == message_id
    hook = _only(providers.webhook.accepted).body
    assert (hook["chat_id"], hook["message_id"]) == (chat_id, message_id)
    mail = _only(providers.smtp.accepted).message
    assert mail["X-Chinwag-Message-Id"] == str(message_id)


def test_encrypted_devices_decrypt_to_the_full_notification(
    web: LiveServer, db: Database, fakes: RunningFakes
) -> None:
    """An encrypted device's field opens with the reference decryptor to title, body and ids;
    the provider sees only the generic alert, and APNs gets mutable-content and thread-id."""
    api = Api(web)
    key = _new_key()
    _register_everywhere(api.user("bob"), fakes, "encrypted", key)
    _, chat_id, message_id = _send(api)
    _work(db, fakes)
    for platform, text in _received(fakes).items():
        for secret in (BODY, TITLE, SENDER):
            assert secret not in text, (platform, secret)
    full = {
        "title": TITLE,
        "body": f"{SENDER}: {BODY}",
        "chat_id": chat_id,
        "message_id": message_id,
    }
    providers = fakes.providers
    apns = _only(providers.apns.accepted).payload
    assert apns["aps"]["alert"] == {"body": GENERIC_ALERT}
    assert apns["aps"]["mutable-content"] == 1
    assert apns["aps"]["thread-id"] == str(chat_id)
    assert open_sealed(key, apns["encrypted"]) == full
    fcm = _only(providers.fcm.accepted).message
    assert "notification" not in fcm  # data only: the app's service decrypts it
    assert fcm["data"]["alert"] == GENERIC_ALERT
    assert open_sealed(key, fcm["data"]["encrypted"]) == full
    webpush = _only(providers.webpush.accepted).payload
    assert webpush["body"] == GENERIC_ALERT
    assert open_sealed(key, webpush["encrypted"]) == full
    assert open_sealed(key, _only(providers.webhook.accepted).body["encrypted"]) == full


def test_long_encrypted_message_is_shortened_before_sealing(
    web: LiveServer, db: Database, fakes: RunningFakes
) -> None:
    """A 12 KB message to an encrypted device still fits APNs and FCM: the sealed body is cut
    with "…" and every provider accepted it."""
    api = Api(web)
    key = _new_key()
    bob = api.user("bob")
    for platform, token in (("apns", APNS_TOKEN), ("fcm", FCM_TOKEN)):
        body = {"platform": platform, "token": token, "payload": "encrypted"}
        assert bob.post("/v1/devices", json={**body, "encryption_key": key}).status_code == 201
    _send(api, "漢" * 3900)  # 11.7 KB of UTF-8
    _work(db, fakes)
    providers = fakes.providers
    apns = _only(providers.apns.accepted).payload
    fcm = _only(providers.fcm.accepted).message
    for sealed in (apns["encrypted"], fcm["data"]["encrypted"]):
        opened = open_sealed(key, sealed)
        assert opened["body"].startswith(f"{SENDER}: 漢漢") and opened["body"].endswith("…")


def test_apns_and_fcm_group_by_chat_and_mentions_are_time_sensitive(
    web: LiveServer, db: Database, fakes: RunningFakes
) -> None:
    """Full devices: APNs thread-id and FCM tag name the chat; a message that @mentions Bob is
    time-sensitive on APNs and high priority on FCM, one that does not is neither."""
    api = Api(web)
    bob = api.user("bob")
    for platform, token in (("apns", APNS_TOKEN), ("fcm", FCM_TOKEN)):
        assert bob.post("/v1/devices", json={"platform": platform, "token": token}).is_success
    zelda, chat_id, plain_id = _send(api, "lunch?")
    mention = zelda.post(f"/v1/chats/{chat_id}/messages", json={"body": "@bob are you in?"})
    assert mention.status_code == 201
    mention_id = mention.json()["message"]["id"]
    _work(db, fakes)
    apns = {r.payload["message_id"]: r for r in fakes.providers.apns.accepted}
    fcm = {int(r.message["data"]["message_id"]): r.message for r in fakes.providers.fcm.accepted}
    assert set(apns) == set(fcm) == {plain_id, mention_id}
    for message_id in (plain_id, mention_id):
        assert apns[message_id].payload["aps"]["thread-id"] == str(chat_id)
        assert apns[message_id].headers["apns-collapse-id"] == f"m{message_id}"
        assert fcm[message_id]["android"]["notification"]["tag"] == str(chat_id)
        assert "collapse_key" not in fcm[message_id]["android"]
    assert apns[mention_id].payload["aps"]["interruption-level"] == "time-sensitive"
    assert "interruption-level" not in apns[plain_id].payload["aps"]
    urgent = fcm[mention_id]["android"]["notification"]
    assert urgent["notification_priority"] == "PRIORITY_HIGH"
    assert "notification_priority" not in fcm[plain_id]["android"]["notification"]


def test_clear_updates_collapse_by_chat(web: LiveServer, db: Database, fakes: RunningFakes) -> None:
    """Bob reading the chat on one device sends his other devices a silent clear that replaces
    any older clear of the chat: APNs collapse id and FCM collapse key "c<chat>"."""
    api = Api(web)
    bob = api.user("bob")
    for platform, token in (("apns", APNS_TOKEN), ("fcm", FCM_TOKEN)):
        body = {"platform": platform, "token": token, "payload": "minimal"}
        assert bob.post("/v1/devices", json=body).is_success
    _, chat_id, message_id = _send(api)
    _work(db, fakes)
    read = bob.post(f"/v1/chats/{chat_id}/read", json={"message_id": message_id})
    assert read.status_code in (200, 204), read.text
    _work(db, fakes)
    [apns] = [r for r in fakes.providers.apns.accepted if r.payload.get("type") == "clear"]
    [fcm] = [r.message for r in fakes.providers.fcm.accepted if r.message["data"].get("type")]
    assert apns.headers["apns-collapse-id"] == f"c{chat_id}"
    assert apns.headers["apns-push-type"] == "background"
    assert fcm["android"]["collapse_key"] == f"c{chat_id}"
    assert fcm["data"]["type"] == "clear"


def test_the_key_is_never_listed_nor_logged(
    web: LiveServer, db: Database, fakes: RunningFakes, caplog: pytest.LogCaptureFixture
) -> None:
    """Registration, listing, a re-registration and a worker run at DEBUG: the key appears in no
    API answer and no log line, in either base64 alphabet."""
    key_bytes = os.urandom(32)
    key = base64.b64encode(key_bytes).decode()
    forms = {key, base64.urlsafe_b64encode(key_bytes).decode().rstrip("="), key_bytes.hex()}
    api = Api(web)
    bob = api.user("bob")
    answers: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for _ in range(2):  # the second registration of the same token is idempotent
            body = {"platform": "apns", "token": APNS_TOKEN, "payload": "encrypted"}
            created = bob.post("/v1/devices", json={**body, "encryption_key": key})
            assert created.status_code == 201
            answers.append(created.text)
        bad = {"platform": "apns", "token": APNS_TOKEN, "payload": "minimal"}
        answers.append(bob.post("/v1/devices", json={**bad, "encryption_key": key}).text)
        listed = bob.get("/v1/devices")
        answers.append(listed.text)
        _send(api)
        _work(db, fakes)
    assert [d["payload"] for d in listed.json()["devices"]] == ["encrypted"]
    assert "encryption_key" not in listed.json()["devices"][0]
    assert len(fakes.providers.apns.accepted) == 1
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for form in forms:
        assert form not in logged
        assert all(form not in answer for answer in answers)
