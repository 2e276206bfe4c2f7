"""The database handle: one SQLAlchemy engine, tuned per dialect, with read and write transactions.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Write transactions on SQLite start
with ``BEGIN IMMEDIATE`` so two writers queue on the database lock up front instead of failing
with "database is locked" when a reader tries to upgrade mid-transaction. Before that, chinwag's
writers of a database file queue in the kernel on an exclusive ``flock`` of a lock file beside
it (``<database>-writer.lock``), so a waiting writer sleeps until the lock is handed to it
rather than polling SQLite's lock.
"""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from chinwag.files import create_private, sqlite_path

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use psycopg 3 for them."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = normalize_url(url)
        path = sqlite_path(self.url)
        if path is not None:
            create_private(path)  # before SQLite creates it with the umask's 0644
        self._writer_lock = writer_lock_path(path) if path else None
        self.engine = _create_engine(self.url, pool_size=pool_size, writer_lock=self._writer_lock)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def read_statement(self) -> Iterator[Connection]:
        """A connection for one read statement, outside any transaction: a single statement
        sees one consistent snapshot anyway, and PostgreSQL then needs one round trip for it
        instead of three (BEGIN, the statement, COMMIT). Every API request's token check.
        On SQLite the statement runs in the driver's autocommit mode, its own implicit read
        transaction, without chinwag's BEGIN (two library calls fewer)."""
        if self.is_sqlite:
            with self.engine.connect() as conn:
                yield conn.execution_options(sqlite_begin=None)
            return
        if not self.is_postgres:
            with self.read() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                with conn.begin():
                    yield conn
                return
            conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            if self._writer_lock is None:  # in memory: BEGIN IMMEDIATE polls (_begin_immediate)
                with conn.begin():
                    yield conn
                return
            held, info = _held_by_this_thread(), conn.connection.info
            if self._writer_lock in held:
                # Another connection of this thread holds it: waiting would never end (SQLite's
                # own lock answered this after its 30 s busy timeout; so do we, at once).
                raise sa.exc.OperationalError(
                    "BEGIN IMMEDIATE",
                    None,
                    sqlite3.OperationalError(
                        "database is locked: a write transaction inside another of the same thread"
                    ),
                )
            _take_writer_lock(info, self._writer_lock)
            held.add(self._writer_lock)
            try:
                with conn.begin():
                    yield conn
            finally:  # committed or rolled back: the next writer may begin
                held.discard(self._writer_lock)
                _release_writer_lock(info)

    def dispose(self) -> None:
        self.engine.dispose()


def writer_lock_path(database: Path) -> Path:
    """The file chinwag's writers of ``database`` lock in turn (see ``_take_writer_lock``)."""
    return database.with_name(database.name + "-writer.lock")


def _create_engine(url: str, *, pool_size: int, writer_lock: Path | None) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        if writer_lock is not None:
            create_private(writer_lock)
        _tune_sqlite(engine, writer_lock)
        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )


def _tune_sqlite(engine: Engine, writer_lock: Path | None) -> None:
    # pysqlite's own transaction handling issues BEGIN lazily and ignores the mode; take it over
    # (the recipe from SQLAlchemy's SQLite dialect documentation).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "close")
    def _on_close(_dbapi_connection: Any, record: Any) -> None:
        _close_writer_lock(record.info)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        begin = conn.get_execution_options().get("sqlite_begin", "BEGIN")
        if begin == "BEGIN IMMEDIATE" and writer_lock is not None:
            # Database.write holds chinwag's writer lock already: SQLite's busy handler only
            # waits for a writer that is not chinwag's (a migration, the sqlite3 shell).
            conn.exec_driver_sql(begin)
        elif begin == "BEGIN IMMEDIATE":
            _begin_immediate(conn.connection.dbapi_connection)
        elif begin is not None:  # None: no BEGIN, each statement its own transaction
            conn.exec_driver_sql(begin)


# The key, in the pool's per-connection info, of the connection's open lock file descriptor,
# and of whether it holds the lock now.
_LOCK_FD = "chinwag_writer_lock_fd"
_LOCK_HELD = "chinwag_writer_lock_held"


def _take_writer_lock(info: dict[Any, Any], path: Path) -> None:
    """Wait in the kernel for the exclusive lock of the writers of one database file.

    Each connection opens the lock file once and keeps it: ``flock`` locks belong to the open
    file, so two connections of one process exclude each other as two processes do, and a
    process that dies releases its lock with its files. Waiters sleep in ``flock`` (without the
    GIL) and the kernel wakes them when the lock is released, instead of each polling SQLite:
    under four web processes and the workers, polling cost a sixth of a web process's CPU
    (py-spy) and handed the lock over late whenever the machine was busy.
    """
    opened = info.get(_LOCK_FD)
    if opened is None or opened[0] != os.getpid():
        # (A connection inherited through a fork would share its parent's open file, and so its
        # lock: open one of our own.)
        opened = info[_LOCK_FD] = (os.getpid(), os.open(path, os.O_RDWR | os.O_CLOEXEC))
    fcntl.flock(opened[1], fcntl.LOCK_EX)
    info[_LOCK_HELD] = True


def _release_writer_lock(info: dict[Any, Any]) -> None:
    # (Nothing to do when the connection was closed meanwhile: closing released it.)
    if info.pop(_LOCK_HELD, False):
        fcntl.flock(info[_LOCK_FD][1], fcntl.LOCK_UN)


_threads = threading.local()


def _held_by_this_thread() -> set[Path]:
    """The lock files whose lock this thread holds (Database.write, any connection)."""
    held: set[Path] | None = getattr(_threads, "held", None)
    if held is None:
        held = _threads.held = set()
    return held


def _close_writer_lock(info: dict[Any, Any]) -> None:
    """The connection is closed: so is its lock file (which releases a lock still held)."""
    info.pop(_LOCK_HELD, None)
    opened = info.pop(_LOCK_FD, None)
    if opened is not None and opened[0] == os.getpid():
        os.close(opened[1])


def _begin_immediate(dbapi_connection: Any) -> None:
    """Take the write lock, polling every fraction of a millisecond while another connection
    holds it (an in-memory database, which has no file to lock beside it).

    SQLite's own busy handler sleeps 1, 2, 5, 10 … up to 100 ms between tries, so under a few
    concurrent writers (web processes, the worker) a write lock held for a millisecond costs the
    waiters tens of milliseconds: most of a send's latency under load. Writers here hold the
    lock briefly, so short jittered polls hand it over as soon as it is free.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.0002
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 1.5, 0.005)
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
