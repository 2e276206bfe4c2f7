"""Schema upgrades through Alembic, run from code (``chinwag migrate`` and ``chinwag serve``)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from chinwag.store.database import Database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

log = logging.getLogger("chinwag.store")


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's ini interpolation treats % specially; URLs may contain %-escapes.
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    config.attributes["engine"] = db.engine
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    before = current_revision(db)
    command.upgrade(alembic_config(db), revision)
    after = current_revision(db)
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "empty", after)


def downgrade(db: Database, revision: str) -> None:
    command.downgrade(alembic_config(db), revision)


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
