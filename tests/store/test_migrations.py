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

from chinwag.store.database import Database
from chinwag.store.migrate import alembic_config, current_revision, downgrade, upgrade
from chinwag.store.schema import metadata, users

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
