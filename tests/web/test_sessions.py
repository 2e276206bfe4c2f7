"""Tokens that end (security finding 5): sign-out, password change, idle expiry."""

from __future__ import annotations

import time

import sqlalchemy as sa
from tests.conftest import Api
from tests.web.support import assert_error

from chinwag.store.database import Database
from chinwag.store.schema import api_tokens

PASSWORD = "correct horse"


def _sign_in(api: Api, username: str, password: str = PASSWORD) -> str:
    answer = api.anonymous.post("/v1/tokens", json={"username": username, "password": password})
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


def test_sign_out_ends_this_token_only(api: Api) -> None:
    """DELETE /v1/tokens/current makes this token 401 at once; another session carries on."""
    api.user("alice")
    laptop, phone = (api.server.client(_sign_in(api, "alice")) for _ in range(2))
    assert laptop.delete("/v1/tokens/current").status_code == 204
    assert_error(laptop.get("/v1/me"), 401, "unauthorized")
    assert phone.get("/v1/me").status_code == 200


def test_password_change_revokes_every_other_token(api: Api) -> None:
    """PUT /v1/me/password needs the old password, then only the token that changed it works."""
    api.user("alice")
    mine, thief = (api.server.client(_sign_in(api, "alice")) for _ in range(2))
    wrong = mine.put("/v1/me/password", json={"old_password": "guess", "new_password": "n" * 12})
    assert_error(wrong, 422, "invalid_input")
    assert thief.get("/v1/me").status_code == 200
    changed = mine.put(
        "/v1/me/password", json={"old_password": PASSWORD, "new_password": "new battery staple"}
    )
    assert changed.status_code == 204, changed.text
    assert mine.get("/v1/me").status_code == 200
    assert_error(thief.get("/v1/me"), 401)
    refused = api.anonymous.post("/v1/tokens", json={"username": "alice", "password": PASSWORD})
    assert_error(refused, 401)
    assert _sign_in(api, "alice", "new battery staple")


def test_idle_tokens_expire_and_use_is_recorded_at_most_hourly(api: Api, db: Database) -> None:
    """A token unused for 90 days (the default) is refused; last use is written once an hour."""
    client = api.user("alice")
    client.get("/v1/me")
    with db.read() as conn:
        first = conn.execute(sa.select(api_tokens.c.last_used_at)).scalar_one()
    client.get("/v1/me")
    with db.read() as conn:
        assert conn.execute(sa.select(api_tokens.c.last_used_at)).scalar_one() == first
    with db.write() as conn:
        conn.execute(api_tokens.update().values(last_used_at=time.time() - 2 * 3600))
    assert client.get("/v1/me").status_code == 200
    with db.read() as conn:
        assert conn.execute(sa.select(api_tokens.c.last_used_at)).scalar_one() > time.time() - 60
    with db.write() as conn:
        conn.execute(api_tokens.update().values(last_used_at=time.time() - 91 * 86400))
    assert_error(client.get("/v1/me"), 401, "unauthorized")
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(api_tokens)).scalar_one() == 0
