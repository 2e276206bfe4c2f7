"""Accounts over HTTP: sign-up, sign-in, /v1/me, and how passwords and tokens are stored."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from tests.conftest import Api
from tests.web.support import assert_error, at_once, row_counts

from chinwag.store.database import Database
from chinwag.store.schema import api_tokens, users


def test_sign_up_returns_the_new_user(api: Api) -> None:
    """POST /v1/users answers 201 with the user, its name normalized and its display name kept."""
    response = api.anonymous.post(
        "/v1/users",
        json={"username": "Alice", "password": "correct horse", "display_name": "Alice A."},
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["username"] == "alice"
    assert user["display_name"] == "Alice A."
    assert user["is_admin"] is False
    assert isinstance(user["id"], int) and user["created_at"]
    assert "password" not in response.text and "correct horse" not in response.text


def test_display_name_defaults_to_username(api: Api) -> None:
    """Without a display_name the username is shown."""
    response = api.anonymous.post("/v1/users", json={"username": "bob", "password": "12345678"})
    assert response.status_code == 201, response.text
    assert response.json()["display_name"] == "bob"


def test_duplicate_username_is_409_and_writes_nothing(api: Api, db: Database) -> None:
    """A taken username, in any letter case, is a 409 conflict and creates no second user."""
    assert api.anonymous.post("/v1/users", json={"username": "carol", "password": "p" * 8})
    before = row_counts(db)
    for name in ("carol", "CAROL"):
        again = api.anonymous.post("/v1/users", json={"username": name, "password": "q" * 8})
        assert_error(again, 409, "conflict")
    assert row_counts(db) == before


def test_invalid_username_and_short_password_are_422(api: Api, db: Database) -> None:
    """Usernames outside the allowed characters and passwords under 8 characters are refused."""
    before = row_counts(db)
    for body in (
        {"username": "no spaces", "password": "long enough"},
        {"username": "a/b", "password": "long enough"},
        {"username": "", "password": "long enough"},
        {"username": "x" * 33, "password": "long enough"},
        {"username": "dave", "password": "short"},
    ):
        assert_error(api.anonymous.post("/v1/users", json=body), 422, "invalid_input")
    assert row_counts(db) == before


def test_sign_in_gives_a_token_that_authenticates(api: Api) -> None:
    """POST /v1/tokens returns a token and the user; each sign-in gives another valid token."""
    api.anonymous.post("/v1/users", json={"username": "erin", "password": "correct horse"})
    tokens = []
    for _ in range(2):
        response = api.anonymous.post(
            "/v1/tokens", json={"username": "erin", "password": "correct horse"}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["user"]["username"] == "erin"
        tokens.append(body["token"])
    assert tokens[0] != tokens[1]
    for token in tokens:
        me = api.server.client(token).get("/v1/me")
        assert me.status_code == 200 and me.json()["username"] == "erin"


def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    """A wrong password and an unknown username give the same 401 and the same message."""
    api.anonymous.post("/v1/users", json={"username": "frank", "password": "correct horse"})
    wrong = api.anonymous.post("/v1/tokens", json={"username": "frank", "password": "wrong horse"})
    unknown = api.anonymous.post(
        "/v1/tokens", json={"username": "nobody", "password": "correct horse"}
    )
    invalid_name = api.anonymous.post(
        "/v1/tokens", json={"username": "not a name!", "password": "correct horse"}
    )
    first = assert_error(wrong, 401, "unauthorized")
    assert assert_error(unknown, 401) == first
    assert assert_error(invalid_name, 401) == first


def test_me_returns_the_signed_in_user(api: Api) -> None:
    """GET /v1/me answers with the token's owner, and 401 without or with a bad token."""
    grace = api.user("grace", display_name="Grace H.")
    me = grace.get("/v1/me")
    assert me.status_code == 200
    assert me.json()["username"] == "grace" and me.json()["display_name"] == "Grace H."
    assert_error(api.anonymous.get("/v1/me"), 401, "unauthorized")
    assert_error(api.server.client("cw_not-a-real-token").get("/v1/me"), 401, "unauthorized")


def test_token_is_stored_only_as_its_sha256(api: Api, db: Database) -> None:
    """The api_tokens table holds the token's SHA-256 digest, never the token itself."""
    api.anonymous.post("/v1/users", json={"username": "heidi", "password": "correct horse"})
    token = api.anonymous.post(
        "/v1/tokens", json={"username": "heidi", "password": "correct horse"}
    ).json()["token"]
    with db.read() as conn:
        rows = conn.execute(sa.select(api_tokens)).mappings().all()
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    stored = " ".join(str(value) for row in rows for value in row.values())
    assert token not in stored
    assert token.removeprefix("cw_") not in stored


def test_password_is_stored_as_an_argon2id_hash(api: Api, db: Database) -> None:
    """The users table holds an argon2id hash of the password, never the password."""
    api.anonymous.post("/v1/users", json={"username": "ivan", "password": "correct horse"})
    with db.read() as conn:
        stored = conn.execute(
            sa.select(users.c.password_hash).where(users.c.username == "ivan")
        ).scalar_one()
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored


def test_concurrent_sign_ups_for_one_name_give_one_user(api: Api, db: Database) -> None:
    """Eight simultaneous sign-ups for one username: one 201, the rest 409, never a 500."""
    responses = at_once(
        8,
        lambda i: api.server.client().post(
            "/v1/users", json={"username": "judy", "password": f"password {i}"}
        ),
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7
    for response in responses[1:]:
        if response.status_code == 409:
            assert_error(response, 409, "conflict")
    assert row_counts(db)["users"] == 1
