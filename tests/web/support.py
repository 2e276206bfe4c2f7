"""Helpers shared by the API tests: the error shape, row counts, servers with other settings."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import sqlalchemy as sa
from tests.conftest import LiveServer

from chinwag.config import PushSettings, Settings
from chinwag.store.database import Database
from chinwag.store.schema import metadata
from chinwag.web import Services

# Valid device addresses, one per platform.
APNS_TOKEN = "ab" * 32
FCM_TOKEN = "fcm-token:APA91bH1234567890abcdefXYZ_-"
# A real P-256 public point (65 bytes, 0x04 prefix) and 16-byte auth secret, base64url.
P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


def webpush_token(endpoint: str = "https://push.example.com/send/abc") -> dict[str, Any]:
    return {"endpoint": endpoint, "keys": {"p256dh": P256DH, "auth": AUTH}}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The contract's error: the status, JSON `{"error": {"code", "message"}}`, nothing else."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    text = response.text
    assert "Traceback" not in text and "<html" not in text.lower(), text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert set(error) <= {"code", "message", "field"}, body
    if code is not None:
        assert error["code"] == code, body
    return dict(error)


# Refused requests count against the rate limits on purpose (abuse is mostly refused requests),
# so the counters may move; nothing else may.
NOT_DATA = {"rate_limits"}


def row_counts(db: Database) -> dict[str, int]:
    """The number of rows in every data table: equal before and after means nothing was written."""
    with db.read() as conn:
        return {
            name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for name, table in metadata.tables.items()
            if name not in NOT_DATA
        }


def server_with(db: Database, rung: list[int], **push: Any) -> LiveServer:
    """A live server whose push settings differ from the defaults (e.g. private endpoints)."""
    settings = Settings(database_url=db.url, push=PushSettings(**push))
    return LiveServer(Services(settings, db, ring_doorbell=rung.append))


def chat_of(creator: httpx.Client, *members: str, title: str = "Team") -> int:
    response = creator.post("/v1/chats", json={"title": title, "members": list(members)})
    assert response.status_code == 201, response.text
    chat_id: int = response.json()["id"]
    return chat_id


def at_once(count: int, request: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """Run ``request`` from ``count`` threads released together, to make their writes overlap."""
    barrier = threading.Barrier(count)

    def released(index: int) -> httpx.Response:
        barrier.wait(timeout=10)
        return request(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(released, range(count)))
