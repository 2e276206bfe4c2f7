"""Devices over HTTP: every platform's address validated, idempotent registration, list, delete."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Api
from tests.web.support import (
    APNS_TOKEN,
    AUTH,
    FCM_TOKEN,
    P256DH,
    assert_error,
    at_once,
    row_counts,
    server_with,
    webpush_token,
)

from chinwag.store.database import Database


def test_every_platform_accepts_a_valid_address(api: Api) -> None:
    """apns, fcm, webpush, email and webhook each register (201) with the canonical address."""
    alice = api.user("alice")
    cases: list[tuple[str, Any, str]] = [
        ("apns", APNS_TOKEN.upper(), APNS_TOKEN),
        ("fcm", FCM_TOKEN, FCM_TOKEN),
        ("email", "Alice@Example.COM", "Alice@example.com"),
        (
            "webhook",
            "https://hooks.example.com/chinwag?x=1",
            "https://hooks.example.com/chinwag?x=1",
        ),
    ]
    registered = []
    for platform, token, canonical in cases:
        response = alice.post("/v1/devices", json={"platform": platform, "token": token})
        assert response.status_code == 201, (platform, response.text)
        device = response.json()
        assert device["platform"] == platform and device["token"] == canonical
        assert device["app"] == "default"
        registered.append(device["id"])
    webpush = alice.post("/v1/devices", json={"platform": "webpush", "token": webpush_token()})
    assert webpush.status_code == 201, webpush.text
    assert json.loads(webpush.json()["token"]) == webpush_token()
    registered.append(webpush.json()["id"])
    listed = alice.get("/v1/devices")
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json()["devices"]] == sorted(registered)


def test_webpush_subscription_as_browsers_send_it(api: Api) -> None:
    """A subscription with expirationTime, or sent as a JSON string, is accepted."""
    alice = api.user("alice")
    with_extra = {**webpush_token("https://push.example.com/a"), "expirationTime": None}
    as_text = json.dumps(webpush_token("https://push.example.com/b"))
    for token in (with_extra, as_text):
        response = alice.post("/v1/devices", json={"platform": "webpush", "token": token})
        assert response.status_code == 201, response.text


INVALID: list[tuple[str, Any]] = [
    ("apns", "zz" * 32),  # not hex
    ("apns", "ab" * 10),  # too short
    ("apns", ""),
    ("apns", {"endpoint": "https://x.example.com"}),  # not a string
    ("fcm", "garbage!! not a token"),
    ("fcm", "short"),
    ("webpush", "not a subscription"),
    ("webpush", webpush_token("http://push.example.com/plain-http")),
    ("webpush", webpush_token("https://127.0.0.1/push")),
    ("webpush", {"endpoint": "https://push.example.com/x"}),  # no keys
    ("webpush", {"endpoint": "https://push.example.com/x", "keys": {"p256dh": P256DH}}),
    (
        "webpush",
        {"endpoint": "https://push.example.com/x", "keys": {"p256dh": "AAAA", "auth": AUTH}},
    ),
    (
        "webpush",
        {"endpoint": "https://push.example.com/x", "keys": {"p256dh": "!*!", "auth": AUTH}},
    ),
    (
        "webpush",
        {"endpoint": "https://push.example.com/x", "keys": {"p256dh": P256DH, "auth": "AA"}},
    ),
    ("webpush", {"endpoint": "https://push.example.com/x", "keys": {"p256dh": P256DH, "auth": 5}}),
    ("email", "not-an-email"),
    ("email", "alice@"),
    ("email", "a@b@example.com"),
    ("webhook", "http://hooks.example.com/plain-http"),
    ("webhook", "https://127.0.0.1/hook"),
    ("webhook", "https://10.0.0.1/hook"),
    ("webhook", "https://192.168.1.10/hook"),
    ("webhook", "https://169.254.169.254/latest/meta-data"),
    ("webhook", "https://[::1]/hook"),
    ("webhook", "https://localhost/hook"),
    ("webhook", "https://user:pass@hooks.example.com/hook"),
    ("webhook", "https://hooks.example.com/" + "x" * 3000),
    ("webhook", "not a url"),
    ("gcm", "legacy-gcm-token-1234567890"),  # unknown platform
]


def test_invalid_addresses_are_422_and_write_nothing(api: Api, db: Database) -> None:
    """Each malformed or private address is a 422 in the error shape; no device row appears."""
    alice = api.user("alice")
    before = row_counts(db)
    for platform, token in INVALID:
        response = alice.post("/v1/devices", json={"platform": platform, "token": token})
        assert response.status_code == 422, (platform, token, response.text)
        assert_error(response, 422, "invalid_input")
    assert row_counts(db) == before


def test_private_endpoints_allowed_when_configured(db: Database, rung: list[int]) -> None:
    """Settings.push.allow_private_endpoints lets named private hosts and networks register."""
    live = server_with(db, rung, allow_private_endpoints=("127.0.0.1/8", "10.0.0.1", "fakes.lan"))
    try:
        alice = Api(live).user("alice")
        for platform, token in (
            ("webhook", "https://127.0.0.1:8443/hook"),
            ("webhook", "https://10.0.0.1/hook"),
            ("webhook", "https://fakes.lan/hook"),
            ("webpush", webpush_token("https://127.0.0.1:9443/push/1")),
        ):
            response = alice.post("/v1/devices", json={"platform": platform, "token": token})
            assert response.status_code == 201, (token, response.text)
        for token in ("https://10.0.0.2/hook", "https://192.168.1.10/hook", "http://127.0.0.1/"):
            response = alice.post("/v1/devices", json={"platform": "webhook", "token": token})
            assert_error(response, 422, "invalid_input")
    finally:
        live.stop()


def test_registering_the_same_address_again_is_idempotent(api: Api, db: Database) -> None:
    """The same address (in any spelling) gives back the same device and no new row."""
    alice = api.user("alice")
    first = alice.post("/v1/devices", json={"platform": "apns", "token": APNS_TOKEN})
    before = row_counts(db)
    for token in (APNS_TOKEN, APNS_TOKEN.upper(), f"  {APNS_TOKEN} "):
        again = alice.post("/v1/devices", json={"platform": "apns", "token": token})
        assert again.status_code == 201, again.text
        assert again.json()["id"] == first.json()["id"]
    assert row_counts(db) == before
    assert len(alice.get("/v1/devices").json()["devices"]) == 1


def test_same_token_for_another_app_is_another_device(api: Api) -> None:
    """A token is unique per (platform, app): another app's registration is a separate device."""
    alice = api.user("alice")
    one = alice.post("/v1/devices", json={"platform": "apns", "token": APNS_TOKEN})
    other = alice.post(
        "/v1/devices", json={"platform": "apns", "token": APNS_TOKEN, "app": "com.example.beta"}
    )
    assert other.status_code == 201 and other.json()["app"] == "com.example.beta"
    assert other.json()["id"] != one.json()["id"]
    bad = alice.post("/v1/devices", json={"platform": "apns", "token": APNS_TOKEN, "app": "a b"})
    assert_error(bad, 422, "invalid_input")


def test_token_registered_by_another_user_moves_to_them(api: Api) -> None:
    """When bob registers alice's token, the device is bob's: gone from alice's list."""
    alice, bob = api.user("alice"), api.user("bob")
    mine = alice.post("/v1/devices", json={"platform": "fcm", "token": FCM_TOKEN}).json()
    moved = bob.post("/v1/devices", json={"platform": "fcm", "token": FCM_TOKEN})
    assert moved.status_code == 201 and moved.json()["id"] == mine["id"]
    assert alice.get("/v1/devices").json()["devices"] == []
    assert [d["id"] for d in bob.get("/v1/devices").json()["devices"]] == [mine["id"]]
    assert_error(alice.delete(f"/v1/devices/{mine['id']}"), 404, "not_found")


def test_delete_device(api: Api) -> None:
    """DELETE answers 204 with no body, then 404; another user's device is a 404 and stays."""
    alice, bob = api.user("alice"), api.user("bob")
    device = alice.post("/v1/devices", json={"platform": "email", "token": "a@example.com"}).json()
    bobs = bob.post("/v1/devices", json={"platform": "email", "token": "b@example.com"}).json()
    assert_error(alice.delete(f"/v1/devices/{bobs['id']}"), 404, "not_found")
    assert [d["id"] for d in bob.get("/v1/devices").json()["devices"]] == [bobs["id"]]
    deleted = alice.delete(f"/v1/devices/{device['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(alice.delete(f"/v1/devices/{device['id']}"), 404, "not_found")
    assert alice.get("/v1/devices").json()["devices"] == []
    back = alice.post("/v1/devices", json={"platform": "email", "token": "a@example.com"})
    assert back.status_code == 201 and back.json()["id"] == device["id"]
    assert [d["id"] for d in alice.get("/v1/devices").json()["devices"]] == [device["id"]]


def test_concurrent_registrations_of_one_address_give_one_device(api: Api, db: Database) -> None:
    """Eight simultaneous registrations of one token all answer 201 with the same device."""
    token = api.user("alice").headers["Authorization"].removeprefix("Bearer ")
    responses = at_once(
        8,
        lambda i: api.server.client(token).post(
            "/v1/devices", json={"platform": "apns", "token": APNS_TOKEN}
        ),
    )
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert row_counts(db)["devices"] == 1


def test_device_tests_are_rate_limited_per_user(api: Api) -> None:
    """Ten test notifications a minute per user; the eleventh is a 429 with Retry-After."""
    alice = api.user("alice")
    device = alice.post("/v1/devices", json={"platform": "apns", "token": APNS_TOKEN}).json()
    for _ in range(10):
        pending = alice.post(f"/v1/devices/{device['id']}/test")
        assert pending.status_code == 202, pending.text  # no worker behind this server
    refused = alice.post(f"/v1/devices/{device['id']}/test")
    assert_error(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
