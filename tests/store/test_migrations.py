"""Alembic migrations against real SQLite files and PostgreSQL schemas."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from chinwag.fanout.outbox import claim_outbox, expand_batch
from chinwag.fanout.policy import Cursor
from chinwag.store.database import Database
from chinwag.store.migrate import alembic_config, current_revision, downgrade, upgrade
from chinwag.store.schema import deliveries, devices, metadata, outbox, users

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def empty(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def head_revision(db: Database) -> str:
    head = ScriptDirectory.from_config(alembic_config(db)).get_current_head()
    assert head is not None
    return head


def schema_differences(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def table_names(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def test_migrate_from_empty_gives_exactly_the_declared_schema(empty: Database) -> None:
    """Upgrading an empty database creates every table of schema.py, with no difference at all."""
    assert table_names(empty) == set()
    upgrade(empty)
    assert table_names(empty) == set(metadata.tables) | {"alembic_version"}
    assert schema_differences(empty) == []
    assert current_revision(empty) == head_revision(empty)


def test_downgrade_to_base_then_upgrade_again(empty: Database) -> None:
    """Downgrading to base drops every table, and upgrading again restores the same schema."""
    upgrade(empty)
    downgrade(empty, "base")
    assert table_names(empty) <= {"alembic_version"}
    assert current_revision(empty) is None
    upgrade(empty)
    assert schema_differences(empty) == []
    assert current_revision(empty) == head_revision(empty)


def test_upgrade_twice_keeps_schema_and_rows(empty: Database) -> None:
    """A second upgrade on a migrated database changes nothing and keeps its rows."""
    upgrade(empty)
    with empty.write() as conn:
        conn.execute(
            users.insert().values(
                username="kept", display_name="kept", password_hash="x", created_at=time.time()
            )
        )
    upgrade(empty)
    assert schema_differences(empty) == []
    assert current_revision(empty) == head_revision(empty)
    with empty.read() as conn:
        assert conn.execute(sa.select(users.c.username)).scalars().all() == ["kept"]


def test_chinwag_migrate_command_is_idempotent(empty: Database, tmp_path: Path) -> None:
    """`chinwag migrate` run twice reports the head revision both times and leaves one schema."""
    env = {**os.environ, "CHINWAG_DATABASE_URL": empty.url, "PYTHONPATH": str(SRC)}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "chinwag", "migrate"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"database at revision {head_revision(empty)}" in done.stdout
    assert schema_differences(empty) == []


def test_outbox_kinds_migration_keeps_fanouts_as_alerts(empty: Database) -> None:
    """0004 turns existing outbox rows into alert fan-outs for every recipient, and going back
    keeps the alerts and drops only the clear and removal rows the old schema cannot hold."""
    upgrade(empty, "0003")
    now = time.time()
    with empty.write() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (id, username, display_name, password_hash, created_at) "
                "VALUES (1, 'a', 'a', 'x', :now)"
            ).bindparams(now=now)
        )
        conn.execute(
            sa.text(
                "INSERT INTO chats (id, title, created_by, created_at) VALUES (1, 't', 1, :now)"
            ).bindparams(now=now)
        )
        conn.execute(
            sa.text(
                "INSERT INTO messages (id, chat_id, sender_id, body, created_at) "
                "VALUES (1, 1, 1, 'hi', :now)"
            ).bindparams(now=now)
        )
        conn.execute(
            sa.text(
                "INSERT INTO outbox (message_id, state, due_at, created_at, updated_at) "
                "VALUES (1, 'done', :now, :now, :now)"
            ).bindparams(now=now)
        )
    upgrade(empty)
    with empty.write() as conn:
        assert conn.execute(sa.select(outbox.c.kind, outbox.c.user_id)).all() == [("alert", 0)]
        conn.execute(
            outbox.insert().values(
                message_id=1, kind="clear", user_id=1, due_at=now, created_at=now, updated_at=now
            )
        )
    downgrade(empty, "0003")
    with empty.read() as conn:
        assert conn.execute(sa.text("SELECT message_id, state FROM outbox")).all() == [(1, "done")]


def test_device_payloads_migration_keeps_devices_full_and_going_back_hides_private_ones(
    empty: Database,
) -> None:
    """0006 gives existing devices the full payload; going back below it deactivates the
    minimal and encrypted devices, which the old schema would send the full text."""
    upgrade(empty, "0005")
    now = time.time()
    with empty.write() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (id, username, display_name, password_hash, created_at) "
                "VALUES (1, 'a', 'a', 'x', :now)"
            ).bindparams(now=now)
        )
        for device_id in (1, 2, 3):
            conn.execute(
                sa.text(
                    "INSERT INTO devices (id, user_id, platform, token, token_hash, created_at, "
                    "updated_at) VALUES (:id, 1, 'fcm', :token, :token, :now, :now)"
                ).bindparams(id=device_id, token=f"token-{device_id}", now=now)
            )
    upgrade(empty)
    with empty.write() as conn:
        rows = conn.execute(sa.select(devices.c.payload, devices.c.encryption_key)).all()
        assert rows == [("full", None)] * 3
        conn.execute(devices.update().where(devices.c.id == 2).values(payload="minimal"))
        conn.execute(
            devices.update()
            .where(devices.c.id == 3)
            .values(payload="encrypted", encryption_key="A" * 43 + "=")
        )
    downgrade(empty, "0005")
    with empty.read() as conn:
        active = conn.execute(sa.text("SELECT id, active FROM devices ORDER BY id")).all()
    assert [(i, bool(a)) for i, a in active] == [(1, True), (2, False), (3, False)]


def test_upgrading_a_used_database_keeps_every_row_and_every_reference(empty: Database) -> None:
    """From 0007 with a delivery in place, the upgrade (which rebuilds `devices` on SQLite)
    keeps the delivery, and foreign keys are enforced again afterwards."""
    upgrade(empty, "0007")
    now = time.time()
    rows = [
        "INSERT INTO users (id, username, display_name, password_hash, created_at) "
        "VALUES (1, 'a', 'a', 'x', :now), (2, 'b', 'b', 'x', :now)",
        "INSERT INTO chats (id, title, created_by, created_at) VALUES (1, 't', 1, :now)",
        "INSERT INTO messages (id, chat_id, sender_id, body, created_at) "
        "VALUES (1, 1, 1, 'hi', :now)",
        "INSERT INTO devices (id, user_id, platform, token, token_hash, created_at, updated_at) "
        "VALUES (1, 2, 'fcm', 't', 't', :now, :now)",
        "INSERT INTO deliveries (message_id, device_id, user_id, platform, status, "
        "next_attempt_at, created_at, updated_at) "
        "VALUES (1, 1, 2, 'fcm', 'delivered', :now, :now, :now)",
    ]
    with empty.write() as conn:
        for row in rows:
            conn.execute(sa.text(row).bindparams(now=now))
    upgrade(empty)
    with empty.read() as conn:
        kept = conn.execute(sa.text("SELECT message_id, device_id, status FROM deliveries")).all()
    assert kept == [(1, 1, "delivered")]
    with pytest.raises(sa.exc.IntegrityError), empty.write() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO deliveries (message_id, device_id, user_id, platform, status, "
                "next_attempt_at, created_at, updated_at) "
                "VALUES (1, 999, 2, 'fcm', 'pending', :now, :now, :now)"
            ).bindparams(now=now)
        )


def test_expansion_cursor_migration_resumes_clears_and_restarts_half_expanded_alerts(
    empty: Database,
) -> None:
    """0009 adds the cursor's user id: a half-expanded clear (one user's devices, still in
    device order) keeps its place, a half-expanded alert starts again from the first member
    (its rows kept, none written twice), and every outbox row is kept; going back restarts
    the alert alone, whose bare device id the old order would misread."""
    upgrade(empty, "0008")
    now = time.time()
    rows = [
        "INSERT INTO users (id, username, display_name, password_hash, created_at) "
        "VALUES (1, 'a', 'a', 'x', :now), (2, 'b', 'b', 'x', :now), (3, 'c', 'c', 'x', :now)",
        "INSERT INTO chats (id, title, created_by, created_at) VALUES (1, 't', 1, :now)",
        "INSERT INTO memberships (chat_id, user_id, joined_at) "
        "VALUES (1, 1, :now), (1, 2, :now), (1, 3, :now)",
        "INSERT INTO messages (id, chat_id, sender_id, body, created_at) "
        "VALUES (1, 1, 1, 'hi', :now)",
        "INSERT INTO devices (id, user_id, platform, token, token_hash, created_at, updated_at, "
        "refreshed_at) VALUES (1, 3, 'fcm', 't1', 't1', :now, :now, :now), "
        "(2, 2, 'fcm', 't2', 't2', :now, :now, :now), (3, 3, 'fcm', 't3', 't3', :now, :now, :now)",
        # The alert's old cursor: device 1 (user 3's) written, devices 2 and 3 not yet.
        "INSERT INTO deliveries (message_id, device_id, user_id, platform, status, "
        "next_attempt_at, created_at, updated_at) "
        "VALUES (1, 1, 3, 'fcm', 'delivered', :now, :now, :now)",
        "INSERT INTO outbox (id, message_id, kind, user_id, state, expanded_through, due_at, "
        "created_at, updated_at) VALUES (1, 1, 'alert', 0, 'pending', 1, :now, :now, :now), "
        "(2, 1, 'clear', 3, 'pending', 1, :now, :now, :now), "
        "(3, 1, 'removal', 0, 'done', 1, :now, :now, :now)",
    ]
    with empty.write() as conn:
        for row in rows:
            conn.execute(sa.text(row).bindparams(now=now))
    upgrade(empty)
    with empty.read() as conn:
        cursors = conn.execute(
            sa.select(outbox.c.id, outbox.c.expanded_user_id, outbox.c.expanded_through).order_by(
                outbox.c.id
            )
        ).all()
    assert [tuple(c) for c in cursors] == [(1, 0, 1), (2, 3, 1), (3, 0, 1)]
    claims = {c.outbox_id: c for c in claim_outbox(empty, "w", now, 60, 10)}
    assert claims[2].cursor == Cursor(3, 1)
    # Users 2 and 3 in order: device 2, then device 1 (written before: skipped, not repeated).
    alert, added, done = expand_batch(empty, claims[1], "w", now, 60, 2)
    assert (alert.cursor, added, done) == (Cursor(3, 1), 2, False)
    with empty.read() as conn:
        alerts = conn.execute(
            sa.select(deliveries.c.device_id, deliveries.c.status)
            .where(deliveries.c.kind == "alert")
            .order_by(deliveries.c.device_id)
        ).all()
    assert [tuple(a) for a in alerts] == [(1, "delivered"), (2, "pending")]
    downgrade(empty, "0008")
    with empty.read() as conn:
        kept = conn.execute(
            sa.text("SELECT id, state, expanded_through FROM outbox ORDER BY id")
        ).all()
    assert [tuple(k) for k in kept] == [(1, "pending", 0), (2, "pending", 1), (3, "done", 1)]
