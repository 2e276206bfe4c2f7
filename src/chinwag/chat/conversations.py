"""Conversations that feel alive: read state and unread counts, mentions, notify levels, edits and
deletions. Each change appends an event (``chat.events``) in the same transaction, so the live
stream of every web process sees it in order."""

from __future__ import annotations

import re
import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chinwag.chat import events
from chinwag.chat.chats import require_member
from chinwag.chat.errors import Forbidden, InvalidInput, NotFound
from chinwag.chat.models import NOTIFY_LEVELS, User
from chinwag.chat.unread import unread_counts
from chinwag.store.database import Database
from chinwag.store.schema import (
    deliveries,
    devices,
    memberships,
    mentions,
    messages,
    outbox,
    users,
)

# "@name" not preceded by a word character, a dot or another "@" (so emails do not mention).
MENTION = re.compile(r"(?<![\w.@])@([A-Za-z0-9_][A-Za-z0-9_.-]{0,31})")
# Platforms that show a badge or a notification tray that a read on another device should clear.
CLEARABLE_PLATFORMS = ("apns", "fcm", "webpush")


def mentioned_usernames(body: str) -> set[str]:
    return {name.lower().rstrip(".-") for name in MENTION.findall(body)}


def record_mentions(conn: Connection, message_id: int, chat_id: int, body: str) -> list[int]:
    """Store who the message mentions (members of the chat only); return their user ids."""
    names = mentioned_usernames(body)
    if not names:
        return []
    member_ids = [
        row.id
        for row in conn.execute(
            sa.select(users.c.id)
            .join(memberships, memberships.c.user_id == users.c.id)
            .where(memberships.c.chat_id == chat_id, users.c.username.in_(sorted(names)))
        )
    ]
    if member_ids:
        conn.execute(
            mentions.insert(), [{"message_id": message_id, "user_id": uid} for uid in member_ids]
        )
    return member_ids


def mark_read(db: Database, user: User, chat_id: int, message_id: int) -> tuple[int, int]:
    """Move the member's read marker forward (never back); return (marker, unread left).

    The member's other devices get a silent update (badge, clear the tray) as "clear" deliveries
    the worker sends like any other.
    """
    now = time.time()
    with db.write() as conn:
        require_member(conn, chat_id, user.id)
        found = conn.execute(
            sa.select(messages.c.id).where(
                messages.c.id == message_id, messages.c.chat_id == chat_id
            )
        ).first()
        if found is None:
            raise NotFound(f"no message {message_id} in chat {chat_id}")
        moved = conn.execute(
            memberships.update()
            .where(
                memberships.c.chat_id == chat_id,
                memberships.c.user_id == user.id,
                memberships.c.last_read_message_id < message_id,
            )
            .values(last_read_message_id=message_id)
        ).rowcount
        marker = conn.execute(
            sa.select(memberships.c.last_read_message_id).where(
                memberships.c.chat_id == chat_id, memberships.c.user_id == user.id
            )
        ).scalar_one()
        if moved:
            events.append(
                conn,
                "read",
                {"chat_id": chat_id, "user": user.username, "message_id": marker},
                chat_id=chat_id,
            )
            _queue_clear_updates(conn, user.id, message_id, now)
        unread = unread_counts(conn, user.id, [chat_id]).get(chat_id, 0)
    return int(marker), unread


def _queue_clear_updates(conn: Connection, user_id: int, message_id: int, now: float) -> None:
    rows = conn.execute(
        sa.select(devices.c.id, devices.c.platform).where(
            devices.c.user_id == user_id,
            devices.c.active.is_(True),
            devices.c.platform.in_(CLEARABLE_PLATFORMS),
        )
    ).all()
    if not rows:
        return
    # One silent update per device and read position; reading the same message twice adds none.
    existing = {
        row.device_id
        for row in conn.execute(
            sa.select(deliveries.c.device_id).where(
                deliveries.c.message_id == message_id, deliveries.c.kind == "clear"
            )
        )
    }
    fresh = [
        {
            "message_id": message_id,
            "device_id": row.id,
            "user_id": user_id,
            "platform": row.platform,
            "kind": "clear",
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for row in rows
        if row.id not in existing
    ]
    if fresh:
        conn.execute(deliveries.insert(), fresh)


def set_notify_level(db: Database, user: User, chat_id: int, level: str) -> None:
    if level not in NOTIFY_LEVELS:
        raise InvalidInput(f"notify must be one of {', '.join(NOTIFY_LEVELS)}", field="notify")
    with db.write() as conn:
        require_member(conn, chat_id, user.id)
        conn.execute(
            memberships.update()
            .where(memberships.c.chat_id == chat_id, memberships.c.user_id == user.id)
            .values(notify_level=level, muted=level == "none")
        )


def _own_message(
    conn: Connection, user: User, chat_id: int, message_id: int
) -> sa.Row[tuple[object, ...]]:
    require_member(conn, chat_id, user.id)
    row = conn.execute(
        sa.select(messages).where(messages.c.id == message_id, messages.c.chat_id == chat_id)
    ).first()
    if row is None or row.deleted_at is not None:
        raise NotFound(f"no message {message_id} in chat {chat_id}")
    if row.sender_id != user.id:
        raise Forbidden("only the sender can change a message")
    return row


def edit_message(db: Database, user: User, chat_id: int, message_id: int, body: str) -> None:
    if not body.strip():
        raise InvalidInput("body must not be empty", field="body")
    now = time.time()
    with db.write() as conn:
        _own_message(conn, user, chat_id, message_id)
        conn.execute(
            messages.update().where(messages.c.id == message_id).values(body=body, edited_at=now)
        )
        conn.execute(mentions.delete().where(mentions.c.message_id == message_id))
        record_mentions(conn, message_id, chat_id, body)
        events.append(
            conn,
            "message_edited",
            {"chat_id": chat_id, "message_id": message_id, "body": body, "edited_at": now},
            chat_id=chat_id,
        )


def delete_message(db: Database, user: User, chat_id: int, message_id: int) -> int:
    """Delete a message: cancel its pending pushes, withdraw delivered ones; return how many
    removal updates were queued."""
    now = time.time()
    with db.write() as conn:
        _own_message(conn, user, chat_id, message_id)
        conn.execute(
            messages.update().where(messages.c.id == message_id).values(body="", deleted_at=now)
        )
        # Not yet expanded: expand nothing. Not yet sent: never send.
        conn.execute(
            outbox.update()
            .where(outbox.c.message_id == message_id, outbox.c.state == "pending")
            .values(state="cancelled", lease_until=None, lease_owner=None, updated_at=now)
        )
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.message_id == message_id,
                deliveries.c.kind == "alert",
                deliveries.c.status.in_(("pending", "retrying")),
            )
            .values(status="skipped", last_error="message deleted", updated_at=now)
        )
        shown = conn.execute(
            sa.select(deliveries.c.device_id, deliveries.c.user_id, deliveries.c.platform).where(
                deliveries.c.message_id == message_id,
                deliveries.c.kind == "alert",
                deliveries.c.status.in_(("delivered", "sending")),
                deliveries.c.platform.in_(CLEARABLE_PLATFORMS),
            )
        ).all()
        if shown:
            conn.execute(
                deliveries.insert(),
                [
                    {
                        "message_id": message_id,
                        "device_id": row.device_id,
                        "user_id": row.user_id,
                        "platform": row.platform,
                        "kind": "removal",
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for row in shown
                ],
            )
        events.append(
            conn,
            "message_deleted",
            {"chat_id": chat_id, "message_id": message_id},
            chat_id=chat_id,
        )
    return len(shown)


def set_quiet_when_active(db: Database, user: User, quiet: bool) -> None:
    with db.write() as conn:
        conn.execute(users.update().where(users.c.id == user.id).values(quiet_when_active=quiet))
