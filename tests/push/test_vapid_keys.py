"""Web Push with zero configuration: the VAPID key generated once per deployment, kept in the
database, published at GET /v1/push/vapid-public-key and used to sign every push."""

from __future__ import annotations

import base64
import json
import logging
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from tests.conftest import Api, LiveServer
from tests.support.webpush import deliver_all, zero_config_settings

from chinwag.bootstrap import VAPID_KEY_NAME, web_services, with_vapid_key
from chinwag.config import DEFAULT_VAPID_SUBJECT, Settings
from chinwag.fakes.suite import RunningFakes
from chinwag.push.vapid import application_server_key, generate_vapid_pem, load_vapid_key
from chinwag.store.database import Database
from chinwag.store.schema import deliveries, server_keys
from chinwag.store.server_keys import keep_server_key
from chinwag.web import Services

ROUTE = "/v1/push/vapid-public-key"


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def published_key(settings: Settings, db: Database) -> str:
    """The key one freshly started web process publishes."""
    server = LiveServer(web_services(settings, db))
    try:
        answer = server.client().get(ROUTE)
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    key: str = answer.json()["public_key"]
    return key


def stored_keys(db: Database) -> list[str]:
    with db.read() as conn:
        return [str(v) for v in conn.execute(sa.select(server_keys.c.value)).scalars()]


def test_key_is_generated_once_and_every_process_publishes_it(db: Database) -> None:
    """The first process generates a key into the database; a second one publishes the same key."""
    settings = Settings.from_env({"CHINWAG_DATABASE_URL": db.url})
    assert settings.push.webpush is not None and settings.push.webpush.vapid_private_key is None
    first = published_key(settings, db)
    raw = unb64(first)
    assert len(raw) == 65 and raw[0] == 4  # an uncompressed P-256 point, as browsers want it
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    [pem] = stored_keys(db)
    assert application_server_key(load_vapid_key(pem.encode(), "test")) == first

    other = Database(db.url)
    try:
        assert published_key(settings, other) == first
        assert stored_keys(other) == [pem]  # nobody generated a second one
    finally:
        other.dispose()


def test_concurrent_generators_converge_on_one_key(db: Database) -> None:
    """Eight processes proposing eight keys at one instant all keep the first stored; one row."""
    candidates = [generate_vapid_pem().decode() for _ in range(8)]
    kept: list[str] = []
    start = threading.Barrier(len(candidates))

    def propose(candidate: str) -> None:
        handle = Database(db.url)
        try:
            start.wait()
            kept.append(keep_server_key(handle, VAPID_KEY_NAME, candidate))
        finally:
            handle.dispose()

    threads = [threading.Thread(target=propose, args=(c,)) for c in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(kept) == len(candidates)
    assert len(set(kept)) == 1 and kept[0] in candidates
    assert stored_keys(db) == [kept[0]]
    # The loaders that start afterwards read the winner instead of generating.
    settings = Settings.from_env({"CHINWAG_DATABASE_URL": db.url})
    loaded = with_vapid_key(settings, db).push.webpush
    assert loaded is not None and loaded.vapid_private_pem == kept[0].encode()


def test_explicit_key_file_wins(db: Database, tmp_path: Path) -> None:
    """CHINWAG_VAPID_PRIVATE_KEY wins: its key is published, nothing is generated or stored."""
    path = tmp_path / "vapid.pem"
    path.write_bytes(generate_vapid_pem())
    settings = Settings.from_env(
        {"CHINWAG_DATABASE_URL": db.url, "CHINWAG_VAPID_PRIVATE_KEY": str(path)}
    )
    expected = application_server_key(load_vapid_key(path.read_bytes(), "test"))
    assert published_key(settings, db) == expected
    assert stored_keys(db) == []


def test_unusable_key_file_is_a_503_and_web_push_off_is_a_404(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unusable key file is a logged 503; a server without Web Push answers 404."""
    path = tmp_path / "vapid.pem"
    path.write_text("not a key")
    settings = Settings.from_env(
        {"CHINWAG_DATABASE_URL": db.url, "CHINWAG_VAPID_PRIVATE_KEY": str(path)}
    )
    broken = LiveServer(web_services(settings, db))
    off = LiveServer(Services(Settings(database_url=db.url), db))
    try:
        with caplog.at_level(logging.ERROR, logger="chinwag.web"):
            unusable = broken.client().get(ROUTE)
        absent = off.client().get(ROUTE)
    finally:
        broken.stop()
        off.stop()
    assert unusable.status_code == 503 and unusable.json()["error"]["code"] == "unavailable"
    assert "VAPID key" in caplog.text
    assert absent.status_code == 404 and absent.json()["error"]["code"] == "not_found"


def test_route_is_public_and_declared_in_openapi(server: LiveServer) -> None:
    """The route needs no token and /openapi.json declares it without security."""
    document = server.client().get("/openapi.json").json()
    operation = document["paths"][ROUTE]["get"]
    assert "security" not in operation and "security" not in document  # no bearer wanted
    assert "200" in operation["responses"]


def test_subject_defaults(tmp_path: Path) -> None:
    """CHINWAG_VAPID_SUBJECT wins; else CHINWAG_EMAIL_FROM's address; else a placeholder."""

    def subject(**env: str) -> str:
        webpush = Settings.from_env(env).push.webpush
        assert webpush is not None
        return webpush.vapid_subject

    assert subject() == DEFAULT_VAPID_SUBJECT
    assert subject(CHINWAG_EMAIL_FROM="Chinwag <ops@chat.example>") == "mailto:ops@chat.example"
    assert (
        subject(CHINWAG_VAPID_SUBJECT="https://chat.example", CHINWAG_EMAIL_FROM="a@b.example")
        == "https://chat.example"
    )
    with pytest.raises(ValueError, match="CHINWAG_VAPID_SUBJECT"):
        subject(CHINWAG_VAPID_SUBJECT="ops@chat.example")


def test_generated_key_is_never_printed(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    """Loading the generated key logs nothing of it, and the settings' repr leaves it out."""
    settings = Settings.from_env({"CHINWAG_DATABASE_URL": db.url})
    with caplog.at_level(logging.DEBUG):
        loaded = with_vapid_key(settings, db)
    assert loaded.push.webpush is not None and loaded.push.webpush.vapid_private_pem
    assert "PRIVATE KEY" not in caplog.text
    assert "PRIVATE KEY" not in repr(loaded)


def test_push_signed_with_the_generated_key_reaches_the_strict_fake(
    db: Database, fakes: RunningFakes
) -> None:
    """With no VAPID setting, a push signed with the generated key passes the strict fake."""
    settings = zero_config_settings(db.url, fakes)
    server = LiveServer(web_services(settings, db))
    try:
        api = Api(server)
        alice, bob = api.user("alice"), api.user("bob")
        public_key = server.client().get(ROUTE).json()["public_key"]
        webpush = fakes.providers.webpush
        subscription = fakes.run(webpush.new_subscription, public_key)
        device = bob.post("/v1/devices", json={"platform": "webpush", "token": subscription})
        assert device.status_code == 201, device.text
        chat = alice.post("/v1/chats", json={"title": "Lunch", "members": ["bob"]}).json()
        sent = alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "Pizza?"})
        assert sent.status_code == 201, sent.text
    finally:
        server.stop()
    deliver_all(settings, db)

    [record] = webpush.accepted
    assert record.endpoint == subscription["endpoint"]
    assert record.headers["authorization"].endswith(f"k={public_key}")
    assert record.payload == {
        "title": "Lunch",
        "body": "alice: Pizza?",
        "chat_id": chat["id"],
        "message_id": sent.json()["message"]["id"],
        "tag": str(chat["id"]),  # one notification per chat on the screen
        "badge": 1,  # bob's unread count
    }
    with db.read() as conn:
        statuses = conn.execute(sa.select(deliveries.c.status)).scalars().all()
    assert statuses == ["delivered"]
    assert json.loads(device.json()["token"])["endpoint"] == subscription["endpoint"]
