"""SQLite writers queue on a kernel lock of a file beside the database, not by polling."""

from __future__ import annotations

import multiprocessing
import stat
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from chinwag.store.database import Database, writer_lock_path


def _database(path: Path) -> Database:
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    return db


def test_lock_file_is_private_and_beside_the_database(tmp_path: Path) -> None:
    """The lock file sits beside the database and only its owner may open it."""
    db = _database(tmp_path / "chinwag.db")
    try:
        lock = writer_lock_path(tmp_path / "chinwag.db")
        assert lock == tmp_path / "chinwag.db-writer.lock"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    finally:
        db.dispose()


def test_a_second_writer_waits_for_the_first_to_commit(tmp_path: Path) -> None:
    """Two connections of one process: the second write begins only after the first commits,
    and then sees its row."""
    first, second = _database(tmp_path / "c.db"), Database(f"sqlite:///{tmp_path / 'c.db'}")
    inside, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def slow_writer() -> None:
        with first.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            inside.set()
            release.wait(10)

    def waiting_writer() -> None:
        with second.write() as conn:
            seen.append(conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one())

    try:
        holder = threading.Thread(target=slow_writer)
        holder.start()
        assert inside.wait(10)
        waiter = threading.Thread(target=waiting_writer)
        waiter.start()
        waiter.join(0.3)  # a bounded look: it must still be waiting
        assert waiter.is_alive() and seen == []
        release.set()
        holder.join(10)
        waiter.join(10)
        assert seen == [1]
    finally:
        release.set()
        first.dispose()
        second.dispose()


def test_a_failed_write_releases_the_lock(tmp_path: Path) -> None:
    """A transaction that raises is rolled back and the next writer gets the lock at once."""
    db = _database(tmp_path / "c.db")
    try:
        with pytest.raises(RuntimeError), db.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            raise RuntimeError("the caller's bug")
        started = time.monotonic()
        with db.write() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 0
        assert time.monotonic() - started < 5
    finally:
        db.dispose()


def _hold_lock(path: str, held: multiprocessing.synchronize.Event) -> None:
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        held.set()
        time.sleep(60)  # until killed: a writer that dies holding the lock


def test_a_writer_killed_holding_the_lock_frees_it(tmp_path: Path) -> None:
    """The kernel releases a dead process's lock (and SQLite its transaction): others write on."""
    db = _database(tmp_path / "c.db")
    context = multiprocessing.get_context("spawn")
    held = context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path / "c.db"), held))
    holder.start()
    try:
        assert held.wait(30)
        holder.kill()
        holder.join(10)
        with db.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (3)")
        with db.read() as conn:
            assert conn.execute(sa.text("SELECT n FROM t")).scalars().all() == [3]
    finally:
        if holder.is_alive():
            holder.kill()
        db.dispose()


def test_a_single_read_statement_needs_no_transaction_of_its_own(tmp_path: Path) -> None:
    """read_statement on SQLite runs its one SELECT without chinwag's BEGIN: it sees the last
    commit, not a writer's uncommitted row, and leaves no transaction open behind it."""
    db = _database(tmp_path / "c.db")
    try:
        with db.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with db.write() as writing:
            writing.exec_driver_sql("INSERT INTO t VALUES (2)")
            with db.read_statement() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
                assert not conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
    finally:
        db.dispose()


def test_a_write_inside_another_of_the_same_thread_fails_at_once(tmp_path: Path) -> None:
    """A nested write on another connection would wait for its own thread forever: it raises
    "database is locked" at once, and the outer transaction still commits."""
    db = _database(tmp_path / "c.db")
    try:
        started = time.monotonic()
        with db.write() as outer:
            outer.exec_driver_sql("INSERT INTO t VALUES (1)")
            with pytest.raises(sa.exc.OperationalError, match="database is locked"), db.write():
                pass
        assert time.monotonic() - started < 5
        with db.write() as conn:  # and the thread may write again afterwards
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        db.dispose()
