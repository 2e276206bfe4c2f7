"""The event log behind the live stream.

Events are rows, appended in the transaction of the change they describe, numbered by one global
sequence. A client's stream is "events after id N that this member may see", so any gateway
process can serve any client, a reconnect resumes exactly (Last-Event-ID), and nothing lives only
in process memory. Old events are pruned by the worker.

On PostgreSQL ``append`` also issues ``pg_notify`` in the same transaction: the notification is
delivered on commit (never for a rolled-back change) and wakes every live gateway, which then
reads the new rows once for all of its connections (``chinwag.live``). Membership changes are
events too (``member_added``, ``member_removed``), so a gateway's in-memory view of who may see a
chat follows the log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chinwag.store.database import Database
from chinwag.store.schema import events, memberships, users

KEEP_EVENTS_SECONDS = 24 * 3600
SIGNED_OUT = "signed_out"
# LISTEN/NOTIFY channel that wakes the live gateways when events commit (PostgreSQL only). The
# payload is the writer's schema, so gateways of other schemas in one database can ignore it.
NOTIFY_CHANNEL = "chinwag_events"


# Built once: every send runs one of them.
_INSERT_EVENT = events.insert().values(
    {name: sa.bindparam(name) for name in ("chat_id", "user_id", "kind", "payload", "created_at")}
)
_INSERT_EVENT_AND_NOTIFY = sa.select(
    sa.func.pg_notify(NOTIFY_CHANNEL, sa.func.current_schema())
).select_from(_INSERT_EVENT.returning(events.c.id).cte("appended"))


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """A row of the log with its audience: one user (user_id) or a chat's members (chat_id)."""

    id: int
    kind: str
    data: dict[str, Any]
    chat_id: int | None
    user_id: int | None
    created_at: float


def append(
    conn: Connection,
    kind: str,
    data: dict[str, Any],
    *,
    chat_id: int | None = None,
    user_id: int | None = None,
) -> None:
    """Record an event for the chat's members (chat_id) or for one user only (user_id)."""
    row = {
        "chat_id": chat_id,
        "user_id": user_id,
        "kind": kind,
        "payload": json.dumps(data, separators=(",", ":")),
        "created_at": time.time(),
    }
    # On PostgreSQL the row and its notification in one round trip; the notification is
    # collapsed by PostgreSQL to one per transaction and sent only on commit.
    conn.execute(
        _INSERT_EVENT_AND_NOTIFY if conn.dialect.name == "postgresql" else _INSERT_EVENT, row
    )


def member_change(
    conn: Connection, kind: str, chat_id: int, members: Iterable[tuple[int, str]]
) -> None:
    """``member_added`` / ``member_removed`` for the chat (its members after the change see it);
    a removed member also gets a copy of their own, since the chat's events no longer reach them.
    """
    listed = list(members)
    if not listed:
        return
    data = {
        "chat_id": chat_id,
        "members": [{"user_id": user_id, "username": name} for user_id, name in listed],
    }
    append(conn, kind, data, chat_id=chat_id)
    if kind == "member_removed":
        for user_id, _name in listed:
            append(conn, kind, data, chat_id=chat_id, user_id=user_id)


def sessions_ended(conn: Connection, user_id: int, token_ids: Collection[int]) -> None:
    """Tokens of the user were revoked (sign-out, password change, expiry): a ``signed_out``
    event for the user, so that every gateway closes the live streams opened with them."""
    if token_ids:
        append(conn, SIGNED_OUT, {"token_ids": sorted(token_ids)}, user_id=user_id)


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


def chats_of(db: Database, user_id: int) -> set[int]:
    """The chats the user is a member of now."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(memberships.c.chat_id).where(memberships.c.user_id == user_id)
        ).all()
    return {int(row.chat_id) for row in rows}


def latest_id(db: Database) -> int:
    with db.read() as conn:
        return int(
            conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0))).scalar_one()
        )


def read_after(
    db: Database, after: int, limit: int = 500, also: Collection[int] = ()
) -> list[LoggedEvent]:
    """Every user's events after ``after`` (and the ids in ``also``), oldest first: the live
    gateway's one read per wake-up, whatever the number of its connections."""
    condition = events.c.id > after
    if also:
        condition = condition | events.c.id.in_(sorted(also))
    with db.read() as conn:
        rows = conn.execute(
            sa.select(
                events.c.id,
                events.c.kind,
                events.c.payload,
                events.c.chat_id,
                events.c.user_id,
                events.c.created_at,
            )
            .where(condition)
            .order_by(events.c.id)
            .limit(limit)
        ).all()
    return [
        LoggedEvent(
            id=row.id,
            kind=row.kind,
            data=json.loads(row.payload),
            chat_id=row.chat_id,
            user_id=row.user_id,
            created_at=row.created_at,
        )
        for row in rows
    ]


def touch_active(db: Database, user_ids: Collection[int], now: float | None = None) -> None:
    """Note that these users have a live client open now (see quiet_when_active): one UPDATE."""
    if not user_ids:
        return
    with db.write() as conn:
        conn.execute(
            users.update()
            .where(users.c.id.in_(sorted(user_ids)))
            .values(last_active_at=time.time() if now is None else now)
        )


def prune(db: Database, now: float) -> int:
    with db.write() as conn:
        return int(
            conn.execute(
                events.delete().where(events.c.created_at < now - KEEP_EVENTS_SECONDS)
            ).rowcount
        )
