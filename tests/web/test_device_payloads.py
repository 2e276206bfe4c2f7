"""POST /v1/devices "payload" and "encryption_key": validation, re-registration, what is shown."""

from __future__ import annotations

import base64
import os
from typing import Any

import sqlalchemy as sa
from tests.conftest import Api
from tests.web.support import APNS_TOKEN, assert_error

from chinwag.store.database import Database
from chinwag.store.schema import devices

KEY = base64.b64encode(os.urandom(32)).decode()
SHORT_KEY = base64.b64encode(b"k" * 16).decode()
LONG_KEY = base64.b64encode(b"k" * 33).decode()


def _stored(db: Database) -> list[tuple[str, str | None]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(devices.c.payload, devices.c.encryption_key).order_by(devices.c.id)
        ).all()
    return [(row.payload, row.encryption_key) for row in rows]


def _apns(**fields: Any) -> dict[str, Any]:
    return {"platform": "apns", "token": APNS_TOKEN, **fields}


INVALID: list[tuple[dict[str, Any], str]] = [
    (_apns(payload="secret"), "payload"),
    (_apns(payload=None, encryption_key=KEY), "encryption_key"),
    (_apns(payload="encrypted"), "encryption_key"),
    (_apns(payload="encrypted", encryption_key="not base64!"), "encryption_key"),
    (_apns(payload="encrypted", encryption_key=SHORT_KEY), "encryption_key"),
    (_apns(payload="encrypted", encryption_key=LONG_KEY), "encryption_key"),
    (_apns(payload="encrypted", encryption_key=""), "encryption_key"),
    (_apns(payload="minimal", encryption_key=KEY), "encryption_key"),
    (_apns(payload="full", encryption_key=KEY), "encryption_key"),
    (_apns(payload="encrypted", encryption_key=12), "encryption_key"),
]  # fmt: skip


def test_invalid_payload_choices_are_422_naming_the_field_and_change_nothing(
    api: Api, db: Database
) -> None:
    """An unknown mode, a missing, malformed or wrong-sized key, or a key without "encrypted" is
    a 422 naming the field; neither a new device nor an existing one changes."""
    alice = api.user("alice")
    assert alice.post("/v1/devices", json=_apns(payload="minimal")).status_code == 201
    before = _stored(db)
    for body, field in INVALID:
        error = assert_error(alice.post("/v1/devices", json=body), 422, "invalid_input")
        assert error["field"] == field, (body, error)
        assert KEY not in error["message"]
        other = {**body, "token": "cd" * 32}
        assert_error(alice.post("/v1/devices", json=other), 422, "invalid_input")
    assert _stored(db) == before == [("minimal", None)]


def test_registering_again_changes_the_mode_and_omitting_it_keeps_it(
    api: Api, db: Database
) -> None:
    """full → encrypted → (omitted: still encrypted, same key) → minimal (key dropped), one
    device throughout; the listing shows the mode, never the key."""
    alice = api.user("alice")
    first = alice.post("/v1/devices", json=_apns()).json()
    assert first["payload"] == "full"
    sealed = alice.post("/v1/devices", json=_apns(payload="encrypted", encryption_key=KEY))
    assert sealed.status_code == 201 and sealed.json()["payload"] == "encrypted"
    again = alice.post("/v1/devices", json=_apns())
    assert again.json()["payload"] == "encrypted"
    assert _stored(db) == [("encrypted", KEY)]
    listed = alice.get("/v1/devices").json()["devices"]
    assert [(d["id"], d["payload"]) for d in listed] == [(first["id"], "encrypted")]
    assert all(KEY not in str(d) and "encryption_key" not in d for d in listed)
    minimal = alice.post("/v1/devices", json=_apns(payload="minimal"))
    assert minimal.json()["id"] == first["id"] and minimal.json()["payload"] == "minimal"
    assert _stored(db) == [("minimal", None)]


def test_url_safe_and_unpadded_keys_are_stored_canonically(api: Api, db: Database) -> None:
    """A key in the URL-safe alphabet without padding (what some clients send) is accepted and
    stored as standard base64."""
    raw = b"\xfb\xff" * 16  # encodes with "+" and "/" in the standard alphabet
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    alice = api.user("alice")
    answer = alice.post("/v1/devices", json=_apns(payload="encrypted", encryption_key=url_safe))
    assert answer.status_code == 201, answer.text
    assert _stored(db) == [("encrypted", base64.b64encode(raw).decode())]


def test_an_install_token_moving_to_another_user_drops_the_old_mode(api: Api, db: Database) -> None:
    """A phone that changed hands does not keep its previous owner's mode and key: the new
    owner's registration says what it gets (full when it says nothing)."""
    alice, bob = api.user("alice"), api.user("bob")
    alice.post("/v1/devices", json=_apns(payload="encrypted", encryption_key=KEY))
    moved = bob.post("/v1/devices", json=_apns())
    assert moved.status_code == 201 and moved.json()["payload"] == "full"
    assert _stored(db) == [("full", None)]
