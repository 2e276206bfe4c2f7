"""UnifiedPush: an Android app's distributor (ntfy, NextPush, …) hands it an RFC 8030 endpoint of
its own shape; the app registers it, with its RFC 8291 keys, as a `webpush` device."""

from __future__ import annotations

import pytest
from tests.conftest import Api, LiveServer
from tests.support.webpush import deliver_all, zero_config_settings

from chinwag.bootstrap import web_services
from chinwag.fakes.suite import RunningFakes
from chinwag.store.database import Database

# ntfy's UnifiedPush endpoints look like https://ntfy.sh/upAbCdEf12345?up=1
NTFY_PATH = "/upAbCdEf12345?up=1"


def pad(text: str) -> str:
    """Some UnifiedPush connectors send the keys in padded base64url."""
    return text + "=" * (-len(text) % 4)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded-keys"])
def test_unifiedpush_endpoint_registers_and_gets_the_message(
    db: Database, fakes: RunningFakes, padded: bool
) -> None:
    """An ntfy-shaped endpoint on an allowed distributor registers and gets the message."""
    settings = zero_config_settings(db.url, fakes)  # the fakes' 127.0.0.1/32 is allowed
    server = LiveServer(web_services(settings, db))
    webpush = fakes.providers.webpush
    try:
        api = Api(server)
        alice, bob = api.user("alice"), api.user("bob")
        public_key = server.client().get("/v1/push/vapid-public-key").json()["public_key"]
        subscription = fakes.run(lambda: webpush.new_subscription(public_key, path=NTFY_PATH))
        if padded:
            keys = subscription["keys"]
            subscription["keys"] = {"p256dh": pad(keys["p256dh"]), "auth": pad(keys["auth"])}
        device = bob.post("/v1/devices", json={"platform": "webpush", "token": subscription})
        assert device.status_code == 201, device.text
        chat = alice.post("/v1/chats", json={"title": "Hike", "members": ["bob"]}).json()
        alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "Saturday?"})
    finally:
        server.stop()
    deliver_all(settings, db)

    [record] = webpush.accepted
    assert record.endpoint == f"{webpush.url}{NTFY_PATH}"
    assert (record.payload["title"], record.payload["body"]) == ("Hike", "alice: Saturday?")
    assert record.payload["chat_id"] == chat["id"]


@pytest.mark.parametrize(
    "endpoint, problem",
    [
        ("https://192.168.1.20/upAbCdEf12345?up=1", "non-public address 192.168.1.20"),
        ("https://10.0.0.7:8443/upAbCdEf12345?up=1", "non-public address 10.0.0.7"),
        ("https://localhost/upAbCdEf12345?up=1", "is this machine"),
    ],
)
def test_private_distributor_needs_the_operators_allowance(
    db: Database, fakes: RunningFakes, endpoint: str, problem: str
) -> None:
    """A private-network distributor is a 422 on token.endpoint unless the operator allows it."""
    subscription = dict(fakes.run(fakes.providers.webpush.new_subscription), endpoint=endpoint)
    token = {"platform": "webpush", "token": subscription}

    refusing = LiveServer(
        web_services(zero_config_settings(db.url, fakes, CHINWAG_ALLOW_PRIVATE_ENDPOINTS=""), db)
    )
    try:
        refused = Api(refusing).user("bob").post("/v1/devices", json=token)
    finally:
        refusing.stop()
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "token.endpoint" and problem in error["message"]

    allowance = "192.168.1.0/24,10.0.0.0/8,localhost"
    allowing = LiveServer(
        web_services(
            zero_config_settings(db.url, fakes, CHINWAG_ALLOW_PRIVATE_ENDPOINTS=allowance), db
        )
    )
    try:
        accepted = Api(allowing).user("carol").post("/v1/devices", json=token)
    finally:
        allowing.stop()
    assert accepted.status_code == 201, accepted.text
