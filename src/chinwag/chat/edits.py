"""Edits and deletions of one's own messages. Each appends an event in the same transaction; a
deletion also stops the message's notifications and asks the engine to withdraw shown ones."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chinwag.chat import events
from chinwag.chat.chats import require_member
from chinwag.chat.errors import Forbidden, InvalidInput, NotFound
from chinwag.chat.fanout_requests import cancel_alerts, request_fanout
from chinwag.chat.mentions import replace_mentions
from chinwag.chat.models import User
from chinwag.store.database import Database
from chinwag.store.schema import messages
from chinwag.store.states import DeliveryKind


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
        replace_mentions(conn, message_id, chat_id, body)
        events.append(
            conn,
            "message_edited",
            {"chat_id": chat_id, "message_id": message_id, "body": body, "edited_at": now},
            chat_id=chat_id,
        )


def delete_message(db: Database, user: User, chat_id: int, message_id: int) -> int:
    """Delete a message; return how many fan-outs the engine was asked for (0 or 1).

    A fan-out not yet expanded is cancelled: nothing was written, nothing goes out. Otherwise a
    removal fan-out is queued: the engine cancels the alerts not sent yet and withdraws the
    shown ones (``chinwag.fanout.policy``). Until it runs, the send-time policy already skips
    the deleted message's alerts.
    """
    now = time.time()
    with db.write() as conn:
        _own_message(conn, user, chat_id, message_id)
        conn.execute(
            messages.update().where(messages.c.id == message_id).values(body="", deleted_at=now)
        )
        withdraw = cancel_alerts(conn, message_id, now)
        if withdraw:
            request_fanout(conn, message_id, DeliveryKind.REMOVAL, now)
        events.append(
            conn,
            "message_deleted",
            {"chat_id": chat_id, "message_id": message_id},
            chat_id=chat_id,
        )
    return int(withdraw)
