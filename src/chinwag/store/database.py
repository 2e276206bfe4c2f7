"""The database handle: one SQLAlchemy engine, tuned per dialect, with read and write transactions.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Write transactions on SQLite start
with ``BEGIN IMMEDIATE`` so two writers queue on the database lock up front instead of failing
with "database is locked" when a reader tries to upgrade mid-transaction.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
        self.engine = _create_engine(self.url, pool_size=pool_size)

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
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _create_engine(url: str, *, pool_size: int) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        _tune_sqlite(engine)
        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )


def _tune_sqlite(engine: Engine) -> None:
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

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        begin = conn.get_execution_options().get("sqlite_begin", "BEGIN")
        if begin == "BEGIN IMMEDIATE":
            _begin_immediate(conn.connection.dbapi_connection)
        elif begin is not None:  # None: no BEGIN, each statement its own transaction
            conn.exec_driver_sql(begin)


def _begin_immediate(dbapi_connection: Any) -> None:
    """Take the write lock, polling every fraction of a millisecond while another connection
    holds it.

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
