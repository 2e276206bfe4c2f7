"""``chinwag backup PATH``: a consistent online copy of SQLite; a clear refusal on PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.store.schema import users

SRC = Path(__file__).resolve().parents[2] / "src"


def _chinwag(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
    env.update({"CHINWAG_DATABASE_URL": database_url, "PYTHONPATH": str(SRC)})
    return subprocess.run(
        [sys.executable, "-m", "chinwag", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _add_user(db: Database, n: int) -> None:
    with db.write() as conn:
        conn.execute(
            users.insert().values(
                username=f"u{n}", display_name="U", password_hash="x", created_at=time.time()
            )
        )


def test_backup_while_writing_is_a_consistent_private_copy(tmp_path: Path) -> None:
    """A copy taken while rows are being written opens, passes integrity_check, holds a prefix
    of the writes, and is readable by its owner only."""
    url = f"sqlite:///{tmp_path / 'chinwag.db'}"
    db = Database(url)
    upgrade(db)
    for n in range(200):
        _add_user(db, n)
    stop = threading.Event()
    written = [200]

    def writer() -> None:
        while not stop.is_set():
            _add_user(db, written[0])
            written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = _chinwag(url, "backup", str(tmp_path / "copy.db"))
    finally:
        stop.set()
        thread.join(timeout=10)
    assert result.returncode == 0, result.stderr
    copy = tmp_path / "copy.db"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    with sqlite3.connect(copy) as copied:
        assert copied.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        names = [row[0] for row in copied.execute("SELECT username FROM users ORDER BY id")]
    assert 200 <= len(names) <= written[0]
    assert names == [f"u{n}" for n in range(len(names))]  # a prefix: one instant's database
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one() >= 200
    db.dispose()
    assert _chinwag(url, "backup", str(copy)).returncode == 2  # never overwrites


def test_backup_refuses_postgresql_and_points_to_pg_dump(tmp_path: Path) -> None:
    """On PostgreSQL nothing is written and the message names pg_dump."""
    result = _chinwag("postgresql://nobody@127.0.0.1:1/none", "backup", str(tmp_path / "x.db"))
    assert result.returncode == 2
    assert "pg_dump" in result.stderr
    assert not (tmp_path / "x.db").exists()
