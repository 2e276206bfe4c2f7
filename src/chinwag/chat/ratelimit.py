"""Rate limits shared by every web process: windowed counters in the ``rate_limits`` table.

A limit is "at most N hits per window for one subject" (an account, a client address, a sender).
A subject's window opens at its first hit and lasts ``window_seconds``; the first hit after it
ends opens the next. Each hit is one atomic upsert that either opens a new window or adds one to
the current window's count and returns the count, so any number of web processes on any number of
machines share one budget without a lock or a second round trip. Windows anchored on the subject,
not on the wall clock's minutes, mean that a burst of N + 1 hits within one window is refused
wherever the minute hand stands; consecutive windows still allow up to 2N across their boundary,
an acceptable price for one row per subject.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import ReturningInsert

from chinwag.chat.errors import RateLimited
from chinwag.store.database import Database
from chinwag.store.schema import rate_limits

KEY_MAX_CHARS = 200  # the width of rate_limits.key


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` hits per ``window_seconds`` for one subject; a limit of 0 is off."""

    name: str  # e.g. "signin-account"; part of the stored key, so keep it short and stable
    limit: int
    window_seconds: float = 60.0

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def key(self, subject: str) -> str:
        key = f"{self.name}:{subject}"
        if len(key) <= KEY_MAX_CHARS:
            return key
        # A subject too long for the column (an odd address or name) is kept apart by its digest.
        return f"{self.name}:#{hashlib.sha256(subject.encode()).hexdigest()}"


@dataclass(frozen=True)
class RateLimits:
    """The limits the web tier applies; built from settings once per process."""

    signin_per_account: RateLimit  # counted per (account, address): see web/routes.py
    signin_per_address: RateLimit
    sends_per_user: RateLimit
    signup_per_address: RateLimit = RateLimit("signup-address", 0, 3600.0)

    @classmethod
    def per_minute(
        cls, *, signin_account: int, signin_address: int, sends: int, signup_per_hour: int = 0
    ) -> RateLimits:
        return cls(
            signin_per_account=RateLimit("signin-account", signin_account),
            signin_per_address=RateLimit("signin-address", signin_address),
            sends_per_user=RateLimit("sends-user", sends),
            signup_per_address=RateLimit("signup-address", signup_per_hour, 3600.0),
        )


def hit(db: Database, limit: RateLimit, subject: str, *, now: float | None = None) -> None:
    """Count one hit for ``subject``; raise ``RateLimited`` once the window's budget is spent.

    The refused hit is counted too, so hammering a closed window keeps it closed until it ends
    but never extends it.
    """
    if not limit.enabled:
        return
    with db.write() as conn:
        refusal = count(conn, limit, subject, now=now)
    if refusal is not None:
        raise refusal


def count(
    conn: Connection, limit: RateLimit, subject: str, *, now: float | None = None
) -> RateLimited | None:
    """Count one hit inside the caller's write transaction, so that a send pays for one
    transaction, not two. Returns the refusal to raise once that transaction has committed
    (the refused hit must stay counted), or None when the budget allows the hit."""
    if not limit.enabled:
        return None
    at = time.time() if now is None else now
    hits, current_start = _count_hit(conn, limit.key(subject), at, limit.window_seconds)
    if hits <= limit.limit:
        return None
    retry_after = max(1, math.ceil(current_start + limit.window_seconds - at))
    return RateLimited(
        f"too many requests ({limit.name}); try again in {retry_after} s",
        retry_after=retry_after,
    )


def hit_all(db: Database, hits: list[tuple[RateLimit, str]], *, now: float | None = None) -> None:
    """Count every hit (so each limit sees the attempt), then refuse if any budget is spent."""
    refusals: list[RateLimited] = []
    for limit, subject in hits:
        try:
            hit(db, limit, subject, now=now)
        except RateLimited as exc:
            refusals.append(exc)
    if refusals:
        raise max(refusals, key=lambda exc: exc.retry_after)


def _count_hit(conn: Connection, key: str, at: float, window_seconds: float) -> tuple[int, float]:
    statement = _UPSERTS.get(conn.dialect.name)
    if statement is None:  # pragma: no cover - chinwag supports these two
        raise RuntimeError(f"rate limits need PostgreSQL or SQLite, not {conn.dialect.name}")
    row = conn.execute(statement, {"key": key, "at": at, "window_seconds": window_seconds}).one()
    return int(row[0]), float(row[1])


def _upsert(insert: postgresql.Insert | sqlite.Insert) -> ReturningInsert[Any]:
    table = rate_limits.c
    # Only a hit after the stored window has ended opens a new one, so a clock a little behind
    # another process's cannot reopen a window.
    newer = insert.excluded.window_start >= table.window_start + sa.bindparam(
        "window_seconds", type_=sa.Float
    )
    return (
        insert.values(key=sa.bindparam("key"), window_start=sa.bindparam("at"), count=1)
        .on_conflict_do_update(
            index_elements=[table.key],
            set_={
                "count": sa.case((newer, 1), else_=table.count + 1),
                "window_start": sa.case(
                    (newer, insert.excluded.window_start), else_=table.window_start
                ),
            },
        )
        .returning(table.count, table.window_start)
    )


# Built once per dialect: every send counts a hit, and building the statement cost more than
# running it on SQLite.
_UPSERTS = {
    "postgresql": _upsert(postgresql.insert(rate_limits)),
    "sqlite": _upsert(sqlite.insert(rate_limits)),
}


def prune(db: Database, *, older_than_seconds: float = 3600.0, now: float | None = None) -> int:
    """Delete counters whose window ended long ago; returns how many went."""
    at = time.time() if now is None else now
    with db.write() as conn:
        result = conn.execute(
            sa.delete(rate_limits).where(rate_limits.c.window_start < at - older_than_seconds)
        )
    return int(result.rowcount or 0)
