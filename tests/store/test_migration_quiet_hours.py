"""Migration 0007 (quiet hours) on a database with rows, on SQLite and PostgreSQL: users get no
quiet hours and mentions that do not break through; going back turns deferred deliveries into
pending ones, which the older code sends, and drops the columns without rebuilding users."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from chinwag.store.database import Database
from chinwag.store.migrate import downgrade, upgrade

ROWS = [
    "INSERT INTO users (id, username, display_name, password_hash, created_at) "
    "VALUES (1, 'a', 'a', 'x', :now)",
    "INSERT INTO chats (id, title, created_by, created_at) VALUES (1, 't', 1, :now)",
    "INSERT INTO messages (id, chat_id, sender_id, body, created_at) VALUES (1, 1, 1, 'hi', :now)",
    "INSERT INTO devices (id, user_id, platform, token, token_hash, created_at, updated_at) "
    "VALUES (1, 1, 'apns', 'ab', 'h', :now, :now)",
    "INSERT INTO deliveries (message_id, device_id, user_id, platform, next_attempt_at, "
    "created_at, updated_at) VALUES (1, 1, 1, 'apns', :now, :now, :now)",
]


@pytest.fixture
def empty(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def test_quiet_hours_columns_default_off_and_going_back_keeps_deferred_alerts(
    empty: Database,
) -> None:
    """0006 -> 0007 -> 0006 with a user, a device and a delivery in place."""
    upgrade(empty, "0006")
    now = time.time()
    with empty.write() as conn:
        for statement in ROWS:
            conn.execute(sa.text(statement).bindparams(now=now))
    upgrade(empty, "0007")
    with empty.write() as conn:
        user = conn.execute(
            sa.text(
                "SELECT quiet_start, quiet_end, quiet_timezone, mentions_break_through FROM users"
            )
        ).one()
        assert tuple(user) == (None, None, None, False)
        conn.execute(sa.text("UPDATE deliveries SET status = 'deferred'"))
    downgrade(empty, "0006")
    with empty.read() as conn:
        assert conn.execute(sa.text("SELECT status FROM deliveries")).scalars().all() == ["pending"]
        assert conn.execute(sa.text("SELECT username FROM users")).scalars().all() == ["a"]
    columns = {c["name"] for c in sa.inspect(empty.engine).get_columns("users")}
    assert "quiet_start" not in columns and "mentions_break_through" not in columns
