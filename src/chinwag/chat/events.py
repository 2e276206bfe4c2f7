"""The event log behind the live stream.

Events are rows, appended in the transaction of the change they describe, numbered by one global
sequence. A client's stream is "events after id N that this member may see", so any web process
can serve any client, a reconnect resumes exactly (Last-Event-ID), and nothing lives in process
memory. Old events are pruned by the worker.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chinwag.store.database import Database
from chinwag.store.schema import events, memberships, users

KEEP_EVENTS_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]


def append(
    conn: Connection,
    kind: str,
    data: dict[str, Any],
    *,
    chat_id: int | None = None,
    user_id: int | None = None,
) -> None:
    """Record an event for the chat's members (chat_id) or for one user only (user_id)."""
    conn.execute(
        events.insert().values(
            chat_id=chat_id,
            user_id=user_id,
            kind=kind,
            payload=json.dumps(data, separators=(",", ":")),
            created_at=time.time(),
        )
    )


def visible_after(db: Database, user_id: int, after: int, limit: int = 200) -> list[Event]:
    """Events after ``after`` that the user may see: their own, and their current chats'."""
    their_chats = sa.select(memberships.c.chat_id).where(memberships.c.user_id == user_id)
    with db.read() as conn:
        rows = conn.execute(
            sa.select(events.c.id, events.c.kind, events.c.payload)
            .where(
                events.c.id > after,
                (events.c.user_id == user_id)
                | (events.c.user_id.is_(None) & events.c.chat_id.in_(their_chats)),
            )
            .order_by(events.c.id)
            .limit(limit)
        ).all()
    return [Event(row.id, row.kind, json.loads(row.payload)) for row in rows]


def latest_id(db: Database) -> int:
    with db.read() as conn:
        return int(
            conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0))).scalar_one()
        )


def touch_active(db: Database, user_id: int) -> None:
    """Note that the user has a live client open now (see quiet_when_active)."""
    with db.write() as conn:
        conn.execute(users.update().where(users.c.id == user_id).values(last_active_at=time.time()))


def prune(db: Database, now: float) -> int:
    with db.write() as conn:
        return int(
            conn.execute(
                events.delete().where(events.c.created_at < now - KEEP_EVENTS_SECONDS)
            ).rowcount
        )
