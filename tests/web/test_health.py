"""/healthz, and what clients see while the database is unreachable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.conftest import Api, LiveServer
from tests.support.network import free_port
from tests.web.support import assert_error

from chinwag.config import Settings
from chinwag.store.database import Database
from chinwag.web import Services


def test_healthz_names_the_database(api: Api, db: Database) -> None:
    """GET /healthz needs no token and reports ok with the database dialect."""
    response = api.anonymous.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == db.engine.dialect.name


@pytest.fixture
def unreachable() -> Iterator[LiveServer]:
    # A port that was free a moment ago: connecting to it is refused at once.
    port = free_port()
    db = Database(f"postgresql://chinwag@127.0.0.1:{port}/nothing")
    live = LiveServer(Services(Settings(database_url=db.url), db))
    yield live
    live.stop()
    db.dispose()


def test_database_down_is_503_with_retry_after(unreachable: LiveServer) -> None:
    """With the database unreachable, healthz and authenticated routes answer 503 quickly."""
    for client, path in (
        (unreachable.client(), "/healthz"),
        (unreachable.client("cw_any-token"), "/v1/chats"),
    ):
        response = client.get(path)
        assert_error(response, 503, "unavailable")
        assert response.headers["Retry-After"] == "1"
    signup = unreachable.client().post(
        "/v1/users", json={"username": "alice", "password": "correct horse"}
    )
    assert_error(signup, 503, "unavailable")
