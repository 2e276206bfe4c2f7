"""Messages: sending (the message and its outbox row in one transaction), history, deliveries."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from chinwag.chat import events, ratelimit
from chinwag.chat.chats import load_chat, require_member
from chinwag.chat.errors import InvalidInput, NotFound
from chinwag.chat.fanout_requests import alert_state, request_fanout
from chinwag.chat.mentions import record_mentions
from chinwag.chat.models import Chat, Delivery, Message, User
from chinwag.chat.ratelimit import RateLimit
from chinwag.store.database import Database
from chinwag.store.schema import chats, deliveries, memberships, messages, users
from chinwag.store.states import DeliveryKind, DeliveryStatus, OutboxState

# A message's delivery record is its notifications; the silent badge-clear and removal updates
# sent later for the same devices are rows of other kinds and would double-count the panel.
ALERT_KIND = DeliveryKind.ALERT

MAX_HISTORY_PAGE = 200
MAX_DELIVERIES_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class SendResult:
    message: Message
    chat: Chat
    created: bool  # False when client_id matched an earlier send


def _message_query() -> sa.Select[tuple[object, ...]]:
    return sa.select(
        messages,
        users.c.username.label("sender_username"),
        users.c.display_name.label("sender_display_name"),
    ).join(users, users.c.id == messages.c.sender_id)


def message_from_row(row: RowMapping) -> Message:
    return Message(
        id=row["id"],
        chat_id=row["chat_id"],
        sender_id=row["sender_id"],
        sender_username=row["sender_username"],
        sender_display_name=row["sender_display_name"],
        body=row["body"],
        client_id=row["client_id"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
        deleted=row["deleted_at"] is not None,
    )


def send_message(
    db: Database,
    user: User,
    chat_id: int,
    body: str,
    client_id: str | None = None,
    *,
    max_chars: int = 4000,
    limit: tuple[RateLimit, str] | None = None,
) -> SendResult:
    """Store a message and its outbox row; ``limit`` (a rate limit and its subject) is counted
    in the same transaction."""
    if not body.strip():
        raise InvalidInput("body must not be empty", field="body")
    if len(body) > max_chars:
        raise InvalidInput(f"body is longer than {max_chars} characters", field="body")
    try:
        return _send_once(db, user, chat_id, body, client_id, limit)
    except IntegrityError:
        # Two concurrent sends with the same client_id: the other one won; return its message.
        if client_id is None:
            raise
        with db.read() as conn:
            earlier = _by_client_id(conn, chat_id, user.id, client_id)
            if earlier is None:
                raise
            return SendResult(earlier, load_chat(conn, chat_id, user, with_members=False), False)


def _send_once(
    db: Database,
    user: User,
    chat_id: int,
    body: str,
    client_id: str | None,
    limit: tuple[RateLimit, str] | None,
) -> SendResult:
    now = time.time()
    with db.write() as conn:
        refusal = ratelimit.count(conn, *limit, now=now) if limit is not None else None
        if refusal is None:
            return _store(conn, user, chat_id, body, client_id, now)
    # Outside the block: the refused hit is committed, so a hammered window stays closed.
    raise refusal


# Built once: on SQLite building a statement costs more than running it.
_INSERT_MESSAGE = messages.insert().returning(messages.c.id)


def _store(
    conn: Connection, user: User, chat_id: int, body: str, client_id: str | None, now: float
) -> SendResult:
    # The chat as the answer shows it, read first: it raises NotFound for a non-member. Its
    # unread count leaves out the sender's own messages, so the new one would not change it.
    chat = load_chat(conn, chat_id, user, with_members=False)
    if client_id is not None:
        earlier = _by_client_id(conn, chat_id, user.id, client_id)
        if earlier is not None:
            return SendResult(earlier, chat, False)
    message_id = conn.execute(
        _INSERT_MESSAGE,
        {
            "chat_id": chat_id,
            "sender_id": user.id,
            "body": body,
            "client_id": client_id,
            "created_at": now,
        },
    ).scalar_one()
    request_fanout(conn, message_id, DeliveryKind.ALERT, now)
    record_mentions(conn, message_id, chat_id, body)
    # What was just inserted, without reading it back.
    message = Message(
        id=message_id,
        chat_id=chat_id,
        sender_id=user.id,
        sender_username=user.username,
        sender_display_name=user.display_name,
        body=body,
        client_id=client_id,
        created_at=now,
    )
    events.append(conn, "message", message_event(message), chat_id=chat_id)
    return SendResult(message, chat, True)


def message_event(message: Message) -> dict[str, object]:
    """The live stream's view of a new message: the same fields as the API's message."""
    return {
        "id": message.id,
        "chat_id": message.chat_id,
        "sender": message.sender_username,
        "sender_display_name": message.sender_display_name,
        "body": message.body,
        "client_id": message.client_id,
        "created_at": datetime.fromtimestamp(message.created_at, UTC)
        .isoformat()
        .replace("+00:00", "Z"),
    }


def _by_client_id(conn: Connection, chat_id: int, user_id: int, client_id: str) -> Message | None:
    row = (
        conn.execute(
            _message_query().where(
                messages.c.chat_id == chat_id,
                messages.c.sender_id == user_id,
                messages.c.client_id == client_id,
            )
        )
        .mappings()
        .first()
    )
    return message_from_row(row) if row else None


def history(
    db: Database, user: User, chat_id: int, before: int | None, limit: int
) -> tuple[list[Message], int | None]:
    """One page of messages older than ``before``, oldest first, and the cursor of the next page."""
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_HISTORY_PAGE}", field="limit")
    with db.read() as conn:
        require_member(conn, chat_id, user.id)
        query = _message_query().where(messages.c.chat_id == chat_id)
        if before is not None:
            query = query.where(messages.c.id < before)
        rows = conn.execute(query.order_by(messages.c.id.desc()).limit(limit + 1)).mappings().all()
    page = [message_from_row(row) for row in rows[:limit]]
    next_cursor = page[-1].id if len(rows) > limit else None
    page.reverse()
    return page, next_cursor


def _message_visible_to(conn: Connection, message_id: int, user: User) -> int:
    """The message's chat id, if the user sent it or is a member of its chat."""
    row = conn.execute(
        sa.select(messages.c.chat_id, messages.c.sender_id).where(messages.c.id == message_id)
    ).first()
    if row is None:
        raise NotFound(f"no message {message_id}")
    if row.sender_id != user.id:
        try:
            require_member(conn, row.chat_id, user.id)
        except NotFound:
            raise NotFound(f"no message {message_id}") from None
    return int(row.chat_id)


def list_deliveries(
    db: Database, user: User, message_id: int, after: int | None, limit: int
) -> tuple[list[Delivery], dict[str, int], str, int | None]:
    """Delivery rows (one per device), a count per status, the fan-out state, next cursor."""
    if not 1 <= limit <= MAX_DELIVERIES_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_DELIVERIES_PAGE}", field="limit")
    with db.read() as conn:
        _message_visible_to(conn, message_id, user)
        query = (
            sa.select(deliveries, users.c.username)
            .join(users, users.c.id == deliveries.c.user_id)
            .where(deliveries.c.message_id == message_id, deliveries.c.kind == ALERT_KIND)
        )
        if after is not None:
            query = query.where(deliveries.c.id > after)
        rows = conn.execute(query.order_by(deliveries.c.id).limit(limit + 1)).mappings().all()
        summary = {
            status: count
            for status, count in conn.execute(
                sa.select(deliveries.c.status, sa.func.count())
                .where(deliveries.c.message_id == message_id, deliveries.c.kind == ALERT_KIND)
                .group_by(deliveries.c.status)
            )
        }
        state = alert_state(conn, message_id)
    page = [
        Delivery(
            id=row["id"],
            message_id=row["message_id"],
            device_id=row["device_id"],
            platform=row["platform"],
            username=row["username"],
            status=row["status"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            updated_at=row["updated_at"],
            delivered_at=row["delivered_at"],
            deferred_until=(
                row["next_attempt_at"] if row["status"] == DeliveryStatus.DEFERRED else None
            ),
        )
        for row in rows[:limit]
    ]
    next_cursor = page[-1].id if len(rows) > limit else None
    return page, summary, state or OutboxState.DONE, next_cursor


def chat_id_by_title(db: Database, user: User, title: str) -> int:
    """For the original route, which names a conversation rather than an id."""
    with db.read() as conn:
        row = conn.execute(
            sa.select(chats.c.id)
            .join(memberships, memberships.c.chat_id == chats.c.id)
            .where(memberships.c.user_id == user.id, chats.c.title == title)
            .order_by(chats.c.id)
        ).first()
    if row is None:
        raise NotFound(f"no conversation {title!r}")
    return int(row.id)
