"""Bad input over HTTP: every mistake is a clear 4xx in the error shape and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.conftest import Api
from tests.web.support import assert_error, chat_of, row_counts

from chinwag.config import default
from chinwag.store.database import Database
from chinwag.web.api import Route
from chinwag.web.app import declared_api

BODY_ROUTES = [route for route in declared_api().routes if route.body is not None]
LIMIT: int = default("CHINWAG_MAX_BODY_BYTES")


@dataclass
class Setup:
    alice: httpx.Client
    anonymous: httpx.Client
    chat_id: int
    message_id: int
    db: Database

    def path(self, route: Route) -> str:
        path = (
            route.path.replace("<chat_id:int>", str(self.chat_id))
            .replace("<message_id:int>", str(self.message_id))
            .replace("<device_id:int>", "1")
            .replace("<username>", "alice")
        )
        assert "<" not in path, f"{path}: teach Setup.path this parameter"
        return path

    def client(self, route: Route) -> httpx.Client:
        return self.alice if route.auth else self.anonymous


@pytest.fixture
def setup(api: Api, db: Database) -> Iterator[Setup]:
    alice = api.user("alice")
    api.user("bob")
    chat_id = chat_of(alice, "bob")
    sent = alice.post(f"/v1/chats/{chat_id}/messages", json={"body": "first"})
    message_id = sent.json()["message"]["id"]
    assert message_id == 1, "VALID's mark-read body names message 1"
    yield Setup(alice, api.anonymous, chat_id, message_id, db)


# A body each route accepts, to be spoiled one way at a time.
VALID: dict[str, dict[str, Any]] = {
    "/v1/users": {"username": "newbie", "password": "p" * 8},
    "/v1/tokens": {"username": "alice", "password": "correct horse"},
    "/v1/devices": {"platform": "fcm", "token": "x" * 40},
    "/v1/chats": {"title": "t", "members": ["bob"]},
    "/v1/chats/<chat_id:int>/members": {"username": "bob"},
    "/v1/chats/<chat_id:int>/settings": {"muted": True},
    "/v1/chats/<chat_id:int>/messages": {"body": "b", "client_id": "c"},
    "/groupchat/send": {"conversation": "Team", "message": "m"},
    "/v1/chats/<chat_id:int>/read": {"message_id": 1},  # the setup's message, first in its db
    "/v1/chats/<chat_id:int>/messages/<message_id:int>": {"body": "edited"},
    "/v1/me/settings": {"quiet_when_active": True},
    "/v1/devices/<device_id:int>/verify": {"code": "123456"},  # device 1: verified already
    "/v1/me/password": {"old_password": "correct horse", "new_password": "correct horse"},
}
CASED_BODY_ROUTES = [route for route in BODY_ROUTES if route.path in VALID]
WRONG_TYPES: dict[str, list[dict[str, Any]]] = {
    "/v1/users": [{"username": 5}, {"password": 12345678}, {"display_name": ["x"]}],
    "/v1/tokens": [{"username": None}, {"password": True}],
    "/v1/devices": [{"platform": 1}, {"token": 123}, {"token": ["a"]}, {"app": 1}],
    "/v1/chats": [{"title": 5}, {"members": "bob"}, {"members": [1]}, {"title": None}],
    "/v1/chats/<chat_id:int>/members": [{"username": ["bob"]}],
    "/v1/chats/<chat_id:int>/settings": [{"muted": "true"}, {"muted": 1}, {"muted": None}],
    "/v1/chats/<chat_id:int>/messages": [{"body": 1}, {"client_id": 7}, {"body": {"a": 1}}],
    "/groupchat/send": [{"conversation": True}, {"conversation": 1.5}, {"message": 3}],
    "/v1/chats/<chat_id:int>/read": [{"message_id": "1"}, {"message_id": True}, {"message_id": 0}],
    "/v1/chats/<chat_id:int>/messages/<message_id:int>": [{"body": ["x"]}, {"body": ""}],
    "/v1/me/settings": [{"quiet_when_active": "yes"}, {"quiet_when_active": None}],
    "/v1/devices/<device_id:int>/verify": [{"code": 123456}, {"code": ""}, {"code": None}],
    "/v1/me/password": [{"old_password": 1}, {"new_password": "short"}, {"new_password": None}],
}


def send_raw(
    setup: Setup, route: Route, content: bytes, content_type: str = "application/json"
) -> httpx.Response:
    client = setup.client(route)
    return client.request(
        route.method, setup.path(route), content=content, headers={"Content-Type": content_type}
    )


def test_every_body_route_has_cases() -> None:
    """The field-level spoilers below cover every route that takes a body."""
    assert set(VALID) == set(WRONG_TYPES)
    missing = sorted({route.path for route in BODY_ROUTES} - set(VALID))
    assert missing == [], f"add VALID and WRONG_TYPES cases in {__name__}"


def test_valid_bodies_are_accepted(setup: Setup) -> None:
    """The baseline: each VALID body succeeds, so the failures below are the spoiling's doing."""
    for route in CASED_BODY_ROUTES:
        response = setup.client(route).request(
            route.method, setup.path(route), json=VALID[route.path]
        )
        assert response.status_code == route.status, (route.path, response.text)


def test_malformed_json_is_400(setup: Setup) -> None:
    """Broken JSON, invalid UTF-8 and absurdly deep or long JSON are 400 on every body route."""
    before = row_counts(setup.db)
    for route in BODY_ROUTES:
        for content in (
            b'{"title": ',
            b"{'single': 'quotes'}",
            b"",
            b"NaN-ish garbage",
            b'{"body": "caf\xe9"}',  # latin-1, not UTF-8
            b'{"body": "\xff\xfe"}',
            b"[" * 30_000 + b"]" * 30_000,  # deeper than the parser's recursion limit
            b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
            b"[" * 100 + b"]" * 100,  # deeper than any request needs
            b'{"conversation": ' + b"9" * 5000 + b', "message": "m"}',  # over int digit limit
        ):
            response = send_raw(setup, route, content)
            assert response.status_code == 400, (route.path, content[:30], response.text)
            assert_error(response, 400, "bad_request")
    assert row_counts(setup.db) == before


def test_json_that_is_not_an_object_is_422(setup: Setup) -> None:
    """A JSON array, string, number or null where an object belongs is a 422."""
    before = row_counts(setup.db)
    for route in BODY_ROUTES:
        for content in (b"[]", b'"text"', b"5", b"null", b"[[[]]]"):
            assert_error(send_raw(setup, route, content), 422, "invalid_input")
    assert row_counts(setup.db) == before


def test_wrong_types_missing_and_unknown_fields_are_422(setup: Setup) -> None:
    """Wrong types, missing required fields and unknown fields are 422 naming the field."""
    before = row_counts(setup.db)
    for route in CASED_BODY_ROUTES:
        valid = VALID[route.path]
        spoiled = [{**valid, **change} for change in WRONG_TYPES[route.path]]
        spoiled.append({})
        assert route.body is not None
        required = [name for name, f in route.body.model_fields.items() if f.is_required()]
        spoiled.extend({k: v for k, v in valid.items() if k != name} for name in required)
        spoiled.append({**valid, "unexpected": 1})
        spoiled.append({**valid, "Body": "case matters"})
        for body in spoiled:
            response = setup.client(route).request(route.method, setup.path(route), json=body)
            error = assert_error(response, 422, "invalid_input")
            assert error.get("field"), (route.path, body, error)
    assert row_counts(setup.db) == before


def test_deeply_nested_value_in_a_field_is_400(setup: Setup) -> None:
    """Nesting that the JSON parser accepts but no request needs is a 400, never a 500."""
    nested: Any = "x"
    for _ in range(900):
        nested = [nested]
    before = row_counts(setup.db)
    response = setup.alice.post("/v1/chats", json={"title": "t", "members": nested})
    assert_error(response, 400, "bad_request")
    assert row_counts(setup.db) == before


def test_body_over_the_limit_is_413(setup: Setup) -> None:
    """A body over max_body_bytes is a 413, announced by Content-Length or sent chunked."""
    chat_path = f"/v1/chats/{setup.chat_id}/messages"
    big = b'{"body": "' + b"x" * LIMIT + b'"}'
    before = row_counts(setup.db)
    response = setup.alice.post(
        chat_path, content=big, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "too_large")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    chunked = setup.alice.post(
        chat_path, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert_error(chunked, 413, "too_large")
    huge = setup.alice.post(
        chat_path, content=b"x" * (4 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    # Far over the limit, the server itself refuses from Content-Length, before reading the body
    # (tests/web/test_abuse_limits.py); its answer is waitress's own, not the JSON shape.
    assert huge.status_code == 413
    assert row_counts(setup.db) == before
    just_fits = b'{"body": "' + b"y" * 4000 + b'"}'
    small_chunks = setup.alice.post(
        chat_path,
        content=iter([just_fits[:100], just_fits[100:]]),
        headers={"Content-Type": "application/json"},
    )
    assert small_chunks.status_code == 201, small_chunks.text


def test_wrong_content_type_is_415(setup: Setup) -> None:
    """A body that is not declared application/json is a 415 on every body route."""
    before = row_counts(setup.db)
    for route in BODY_ROUTES:
        content = json.dumps(VALID.get(route.path, {})).encode()
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "", "text/json"):
            response = send_raw(setup, route, content, content_type)
            assert_error(response, 415, "unsupported_media_type")
    assert row_counts(setup.db) == before
    charset = send_raw(
        setup,
        next(r for r in BODY_ROUTES if r.path == "/v1/chats"),
        b'{"title": "ok"}',
        "application/json; charset=utf-8",
    )
    assert charset.status_code == 201, charset.text


def test_unknown_and_out_of_range_ids_are_404(setup: Setup) -> None:
    """Ids that do not exist, are zero, negative or beyond 2^63 are 404 on every id route."""
    before = row_counts(setup.db)
    id_routes = [route for route in declared_api().routes if route.path_params]
    assert id_routes
    for route in id_routes:
        if route.body is not None and route.path not in VALID:
            continue  # its body would fail first; test_every_body_route_has_cases reports it
        for bad in ("999999", "0", "-1", str(2**63 - 1), str(2**63), str(2**64), "9" * 40):
            path = route.path
            for name in route.path_params:
                path = path.replace(f"<{name}:int>", bad)
            path = path.replace("<username>", "alice")
            body = VALID.get(route.path)
            response = setup.alice.request(route.method, path, json=body)
            assert response.status_code == 404, (route.path, bad, response.text)
            assert_error(response, 404, "not_found")
    for path in ("/v1/chats/abc", "/v1/chats/1.5", "/v1/nothing", "/v1/chats/%ff"):
        assert_error(setup.alice.get(path), 404, "not_found")
    assert row_counts(setup.db) == before


def test_bad_query_parameters_are_422(setup: Setup) -> None:
    """Out-of-range or non-numeric `limit`, `before` and `after` are 422, never a 500."""
    history = f"/v1/chats/{setup.chat_id}/messages"
    deliveries = f"/v1/messages/{setup.message_id}/deliveries"
    for path, query in [
        (history, "limit=201"),
        (history, "limit=0"),
        (history, "limit=-5"),
        (history, "limit=" + "9" * 30),
        (history, "limit=" + "9" * 5000),
        (history, "limit=abc"),
        (history, "limit=1.5"),
        (history, "before=0"),
        (history, f"before={2**63}"),
        (history, "before=x"),
        (deliveries, "limit=10001"),
        (deliveries, "after=-1"),
        (deliveries, f"after={2**64}"),
    ]:
        response = setup.alice.get(f"{path}?{query}")
        assert response.status_code == 422, (path, query, response.text)
        assert_error(response, 422, "invalid_input")
    for query in ("limit=%ff", "before=%c3%28"):
        assert_error(setup.alice.get(f"{history}?{query}"), 400, "bad_request")


def test_wrong_method_and_unknown_route_keep_the_error_shape(setup: Setup) -> None:
    """405 and 404 from the router are JSON errors too, never Bottle's HTML page."""
    assert_error(setup.alice.patch("/v1/chats"), 405, "method_not_allowed")
    assert_error(setup.alice.delete("/v1/me"), 405, "method_not_allowed")
    assert_error(setup.alice.get("/nothing/here"), 404, "not_found")
    assert_error(setup.anonymous.post("/v1/nothing", content=b"<html>"), 404, "not_found")


HOSTILE = [
    "'; DROP TABLE messages; --",
    '<script>alert("x")</script>',
    "Robert'); DELETE FROM users WHERE ('1'='1",
    "%s %d {0} ${x} \\x00 \\n",
    "emoji 🎉 and RTL \u202e text, CJK 漢字",
]


def test_sql_and_html_in_text_fields_are_stored_verbatim(api: Api, db: Database) -> None:
    """Hostile text in every free-text field comes back exactly as sent, and nothing breaks."""
    for i, text in enumerate(HOSTILE):
        password = text if len(text) >= 8 else text + "........"
        created = api.anonymous.post(
            "/v1/users", json={"username": f"u{i}", "password": password, "display_name": text}
        )
        assert created.status_code == 201, created.text
        assert created.json()["display_name"] == text
        signed_in = api.anonymous.post(
            "/v1/tokens", json={"username": f"u{i}", "password": password}
        )
        assert signed_in.status_code == 201, signed_in.text
        client = api.server.client(signed_in.json()["token"])
        chat = client.post("/v1/chats", json={"title": text, "members": []})
        assert chat.status_code == 201 and chat.json()["title"] == text
        chat_id = chat.json()["id"]
        sent = client.post(f"/v1/chats/{chat_id}/messages", json={"body": text, "client_id": text})
        assert sent.status_code == 201, sent.text
        assert sent.json()["message"]["body"] == text
        assert sent.json()["message"]["client_id"] == text
        assert sent.json()["message"]["sender_display_name"] == text
        legacy = client.post("/groupchat/send", json={"conversation": text, "message": text})
        assert legacy.status_code == 201, legacy.text
        assert legacy.json()["chat"]["id"] == chat_id
        page = client.get(f"/v1/chats/{chat_id}/messages").json()["messages"]
        assert [m["body"] for m in page] == [text, text]
        assert client.get(f"/v1/chats/{chat_id}").json()["title"] == text
        hook = "https://hooks.example.com/h?q=" + text.replace(" ", "%20")
        device = client.post("/v1/devices", json={"platform": "webhook", "token": hook})
        assert device.status_code == 201, device.text
        assert device.json()["token"] == hook
        assert client.get("/v1/devices").json()["devices"][0]["token"] == hook
    counts = row_counts(db)
    assert counts["users"] == len(HOSTILE) and counts["messages"] == 2 * len(HOSTILE)


def test_text_no_database_can_store_is_422(setup: Setup) -> None:
    """NUL characters and lone surrogates in any string or key are 422 on both databases."""
    chat = f"/v1/chats/{setup.chat_id}"
    templates = [
        (f"{chat}/messages", '{"body": %s}'),
        (f"{chat}/messages", '{"body": "b", "client_id": %s}'),
        ("/v1/chats", '{"title": %s}'),
        ("/v1/chats", '{"title": "t", "members": [%s]}'),
        ("/v1/chats", '{%s: "t"}'),
        ("/v1/users", '{"username": "zoe", "password": "12345678", "display_name": %s}'),
        ("/groupchat/send", '{"conversation": %s, "message": "m"}'),
        ("/groupchat/send", '{"conversation": "Team", "message": %s}'),
    ]
    before = row_counts(setup.db)
    for path, template in templates:
        for bad in ('"nul \\u0000 inside"', '"lone \\ud800 surrogate"'):
            response = setup.alice.post(
                path,
                content=(template % bad).encode(),
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 422, (path, template, bad, response.text)
            assert_error(response, 422, "invalid_input")
    assert row_counts(setup.db) == before
