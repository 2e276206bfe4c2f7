"""Keys chinwag generates for itself and keeps in the database, so every process shares them.

``keep_server_key`` inserts a candidate only if no key of that name exists and returns the one
stored: when several processes start at once, each proposes its own, one insert wins, and every
process (the losers included) goes on with the winner's.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from chinwag.store.database import Database
from chinwag.store.schema import server_keys


def read_server_key(db: Database, name: str) -> str | None:
    with db.read() as conn:
        value = conn.execute(
            sa.select(server_keys.c.value).where(server_keys.c.name == name)
        ).scalar_one_or_none()
    return None if value is None else str(value)


def keep_server_key(db: Database, name: str, candidate: str) -> str:
    """Store ``candidate`` under ``name`` unless a key is there already; the stored key."""
    insert = postgresql.insert(server_keys) if db.is_postgres else sqlite.insert(server_keys)
    statement = insert.values(name=name, value=candidate, created_at=time.time())
    with db.write() as conn:
        conn.execute(statement.on_conflict_do_nothing(index_elements=[server_keys.c.name]))
        stored = conn.execute(
            sa.select(server_keys.c.value).where(server_keys.c.name == name)
        ).scalar_one()
    return str(stored)
