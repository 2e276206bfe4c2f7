"""Alembic environment: runs against the engine chinwag already built (same tuning, same URL)."""

from __future__ import annotations

from alembic import context

from chinwag.store.schema import metadata

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
