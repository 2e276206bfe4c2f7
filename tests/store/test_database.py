"""The database handle's transactions on SQLite."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from chinwag.store.database import Database


def test_a_single_read_statement_needs_no_transaction_of_its_own(tmp_path: Path) -> None:
    """read_statement on SQLite runs its one SELECT without chinwag's BEGIN: it sees the last
    commit, not a writer's uncommitted row, and leaves no transaction open behind it."""
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with db.write() as conn:
            conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with db.write() as writing:
            writing.exec_driver_sql("INSERT INTO t VALUES (2)")
            with db.read_statement() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
                assert not conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
    finally:
        db.dispose()
