"""Alembic environment: runs against the engine chinwag already built (same tuning, same URL)."""

from __future__ import annotations

from alembic import context

from chinwag.store.schema import metadata

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    raw = connection.connection.dbapi_connection
    if sqlite:
        # Batch migrations rebuild a SQLite table (copy, drop, rename). With foreign keys on,
        # dropping the old `devices` would cascade to every delivery of its devices. So they are
        # off while migrating (the pragma only takes effect outside a transaction), and every
        # reference is checked before the commit instead.
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=sqlite)
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"migration left rows with dangling references: {broken[:5]}")
        connection.commit()
    finally:
        if sqlite:
            connection.rollback()
            raw.execute("PRAGMA foreign_keys=ON")
