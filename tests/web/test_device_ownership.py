"""Who owns a device address (security finding 1), email verification, and the per-user cap (6)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from tests.conftest import Api, LiveServer
from tests.web.support import APNS_TOKEN, assert_error

from chinwag.chat.verification import MAX_WRONG_CODES
from chinwag.config import Settings
from chinwag.fakes.suite import RunningFakes
from chinwag.fanout import Worker, WorkerOptions
from chinwag.fanout.verification import VerificationMailer
from chinwag.push.registry import Senders
from chinwag.store.database import Database
from chinwag.store.schema import device_verifications
from chinwag.web import Services

PER_USER = [
    ("email", "bob@example.com"),
    ("webhook", "https://hooks.example.com/bob"),
]


@pytest.mark.parametrize(("platform", "address"), PER_USER, ids=["email", "webhook"])
def test_another_user_registering_your_address_gets_a_device_of_their_own(
    api: Api, platform: str, address: str
) -> None:
    """Mallory registering Bob's email or webhook leaves Bob's device his: listed, deletable."""
    bob, mallory = api.user("bob"), api.user("mallory")
    bobs = bob.post("/v1/devices", json={"platform": platform, "token": address})
    assert bobs.status_code == 201, bobs.text
    hers = mallory.post("/v1/devices", json={"platform": platform, "token": address})
    assert hers.status_code == 201, hers.text
    assert hers.json()["id"] != bobs.json()["id"]
    assert [d["id"] for d in bob.get("/v1/devices").json()["devices"]] == [bobs.json()["id"]]
    assert bob.delete(f"/v1/devices/{bobs.json()['id']}").status_code == 204
    assert [d["id"] for d in mallory.get("/v1/devices").json()["devices"]] == [hers.json()["id"]]


def test_an_apns_token_moves_to_whoever_registers_it_last(api: Api) -> None:
    """A push token belongs to one install: a phone that changed hands notifies its new owner."""
    alice, bob = api.user("alice"), api.user("bob")
    first = alice.post("/v1/devices", json={"platform": "apns", "token": APNS_TOKEN}).json()
    moved = bob.post("/v1/devices", json={"platform": "apns", "token": APNS_TOKEN}).json()
    assert moved["id"] == first["id"]
    assert alice.get("/v1/devices").json()["devices"] == []
    assert [d["id"] for d in bob.get("/v1/devices").json()["devices"]] == [first["id"]]


def test_devices_per_user_are_capped(db: Database, rung: list[int]) -> None:
    """Beyond CHINWAG_MAX_DEVICES_PER_USER a new device is a 409; re-registering one is not."""
    live = LiveServer(Services(Settings(database_url=db.url, max_devices_per_user=3), db))
    try:
        alice = Api(live).user("alice")
        tokens = [f"{n:064x}" for n in range(1, 5)]
        for token in tokens[:3]:
            assert alice.post("/v1/devices", json={"platform": "apns", "token": token}).is_success
        over = alice.post("/v1/devices", json={"platform": "apns", "token": tokens[3]})
        assert_error(over, 409, "conflict")
        again = alice.post("/v1/devices", json={"platform": "apns", "token": tokens[0]})
        assert again.status_code == 201
        assert len(alice.get("/v1/devices").json()["devices"]) == 3
    finally:
        live.stop()


@pytest.fixture
def mailing(db: Database, fakes: RunningFakes) -> Iterator[LiveServer]:
    """A web tier with verification on (the default) whose worker sends through the fakes."""
    settings = Settings(database_url=db.url, push=fakes.providers.settings())
    live = LiveServer(Services(settings, db))
    yield live
    live.stop()


def _work(db: Database, fakes: RunningFakes) -> None:
    """One worker pass and one verification mailing, through the real senders to the fakes."""

    async def main() -> None:
        senders = Senders.from_settings(fakes.providers.settings())
        worker = Worker(db, senders, WorkerOptions(sweep_interval=0.1))
        try:
            await VerificationMailer(db, senders, worker.owner).step()
            await worker.run_until_idle(limit_seconds=30)
        finally:
            await senders.aclose()

    asyncio.run(main())


def _mail_to(fakes: RunningFakes, address: str) -> list[str]:
    return [
        record.message["Subject"]
        for record in list(fakes.providers.smtp.accepted)
        if address in record.rcpt_to
    ]


def _code(fakes: RunningFakes, address: str) -> str:
    for record in list(fakes.providers.smtp.accepted):
        if address in record.rcpt_to and "verification" in record.message["Subject"]:
            found = re.search(r"\b(\d{6})\b", record.message.get_content())
            assert found, record.message.get_content()
            return found.group(1)
    raise AssertionError(f"no verification email to {address}")


def test_a_new_email_device_gets_only_its_code_until_verified(
    mailing: LiveServer, db: Database, fakes: RunningFakes
) -> None:
    """Unverified: one code email, no notification; a wrong code is refused; verified: notified."""
    api = Api(mailing)
    alice, bob = api.user("alice"), api.user("bob")
    device = bob.post("/v1/devices", json={"platform": "email", "token": "bob@example.com"}).json()
    assert device["verified"] is False
    chat = alice.post("/v1/chats", json={"title": "Lunch", "members": ["bob"]}).json()
    alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "before verifying"})
    _work(db, fakes)
    assert _mail_to(fakes, "bob@example.com") == ["Your chinwag verification code"]
    with db.read() as conn:
        recorded = conn.execute(sa.select(device_verifications)).one()
    assert recorded.status == "sent" and recorded.code is None and recorded.sent_at
    code = _code(fakes, "bob@example.com")
    wrong = "000000" if code != "000000" else "111111"
    assert_error(bob.post(f"/v1/devices/{device['id']}/verify", json={"code": wrong}), 422)
    verified = bob.post(f"/v1/devices/{device['id']}/verify", json={"code": code})
    assert verified.status_code == 200, verified.text
    assert verified.json()["verified"] is True
    alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "after verifying"})
    _work(db, fakes)
    assert _mail_to(fakes, "bob@example.com") == ["Your chinwag verification code", "Lunch"]


def test_wrong_codes_are_limited(mailing: LiveServer, db: Database, fakes: RunningFakes) -> None:
    """After MAX_WRONG_CODES wrong answers even the right code is refused (403)."""
    bob: httpx.Client = Api(mailing).user("bob")
    device = bob.post("/v1/devices", json={"platform": "email", "token": "bob@example.com"}).json()
    _work(db, fakes)
    code = _code(fakes, "bob@example.com")
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(MAX_WRONG_CODES):
        assert_error(bob.post(f"/v1/devices/{device['id']}/verify", json={"code": wrong}), 422)
    late = bob.post(f"/v1/devices/{device['id']}/verify", json={"code": code})
    assert_error(late, 403, "forbidden")
    assert bob.get("/v1/devices").json()["devices"][0]["verified"] is False
