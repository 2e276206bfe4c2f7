"""Unread counts: messages after a member's read marker that are not their own, not deleted."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chinwag.store.schema import memberships, messages


def unread_of_membership() -> sa.ColumnElement[bool]:
    """Joins a membership to its unread messages."""
    return (
        (messages.c.chat_id == memberships.c.chat_id)
        & (messages.c.id > memberships.c.last_read_message_id)
        & (messages.c.sender_id != memberships.c.user_id)
        & messages.c.deleted_at.is_(None)
    )


def unread_counts(
    conn: Connection, user_id: int, chat_ids: Iterable[int] | None = None
) -> dict[int, int]:
    """Messages after the member's read marker, not their own, not deleted: per chat."""
    query = (
        sa.select(memberships.c.chat_id, sa.func.count(messages.c.id))
        .select_from(memberships)
        .join(messages, unread_of_membership())
        .where(memberships.c.user_id == user_id)
        .group_by(memberships.c.chat_id)
    )
    if chat_ids is not None:
        query = query.where(memberships.c.chat_id.in_(list(chat_ids)))
    return {chat_id: int(count) for chat_id, count in conn.execute(query)}


def unread_totals(
    conn: Connection, user_ids: Iterable[int], counted: sa.ColumnElement[bool]
) -> dict[int, int]:
    """Each user's unread messages summed over their memberships that match ``counted`` (the
    badge: which chats count is the fan-out policy's decision, ``chinwag.fanout.policy``)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = conn.execute(
        sa.select(memberships.c.user_id, sa.func.count(messages.c.id))
        .select_from(memberships)
        .join(messages, unread_of_membership())
        .where(memberships.c.user_id.in_(ids), counted)
        .group_by(memberships.c.user_id)
    )
    counts = dict.fromkeys(ids, 0)
    counts.update({user_id: int(count) for user_id, count in rows})
    return counts
