"""Read markers: how far a member has read a chat. Moving one appends a ``read`` event and asks
the engine for a clear fan-out, the silent update (badge, clear the tray) of the reader's other
devices."""

from __future__ import annotations

import time

import sqlalchemy as sa

from chinwag.chat import events
from chinwag.chat.chats import require_member
from chinwag.chat.errors import NotFound
from chinwag.chat.fanout_requests import request_fanout
from chinwag.chat.models import User
from chinwag.chat.unread import unread_counts
from chinwag.store.database import Database
from chinwag.store.schema import memberships, messages
from chinwag.store.states import DeliveryKind


def mark_read(db: Database, user: User, chat_id: int, message_id: int) -> tuple[int, int]:
    """Move the member's read marker forward (never back); return (marker, unread left)."""
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
            request_fanout(conn, message_id, DeliveryKind.CLEAR, now, user_id=user.id)
        unread = unread_counts(conn, user.id, [chat_id]).get(chat_id, 0)
    return int(marker), unread
