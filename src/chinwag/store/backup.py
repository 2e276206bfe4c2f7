"""``chinwag backup PATH``: a consistent copy of the SQLite database, taken while chinwag serves.

SQLite's online backup API copies the database page by page and restarts by itself when a writer
changes a page already copied, so the copy is one instant's database even under writes. It goes
to a temporary file created 0600 beside PATH and is renamed into place only when complete.
PostgreSQL has its own tools (docs/operations.md: pg_dump).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from chinwag.files import create_private, sqlite_path
from chinwag.store.database import SQLITE_BUSY_TIMEOUT_MS, normalize_url

PAGES_PER_STEP = 1024  # copy in steps so writers get the lock between them


class BackupRefused(Exception):
    """Nothing was copied; the message says why and what to do instead."""


def backup_sqlite(database_url: str, target: Path) -> int:
    """Copy the database at ``database_url`` to ``target``; returns the number of pages."""
    source_path = sqlite_path(normalize_url(database_url))
    if source_path is None:
        raise BackupRefused(
            "only a SQLite database is backed up this way; for PostgreSQL use pg_dump "
            "(see docs/operations.md, 'Backups')"
        )
    if not source_path.exists():
        raise BackupRefused(f"no database at {source_path}")
    if target.exists():
        raise BackupRefused(f"{target} exists; choose a new file")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    create_private(temporary)
    try:
        source = sqlite3.connect(source_path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            copy = sqlite3.connect(temporary)
            try:
                source.backup(copy, pages=PAGES_PER_STEP)
                pages = int(copy.execute("PRAGMA page_count").fetchone()[0])
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                copy.close()
        finally:
            source.close()
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return pages
