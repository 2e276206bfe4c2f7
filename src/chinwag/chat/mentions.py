"""Mentions: "@name" in a message body, recorded for the members of the chat it names."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chinwag.store.schema import memberships, mentions, users

# "@name" not preceded by a word character, a dot or another "@" (so emails do not mention).
MENTION = re.compile(r"(?<![\w.@])@([A-Za-z0-9_][A-Za-z0-9_.-]{0,31})")


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


def replace_mentions(conn: Connection, message_id: int, chat_id: int, body: str) -> None:
    """An edited body mentions whom it names now, no longer whom it named before."""
    conn.execute(mentions.delete().where(mentions.c.message_id == message_id))
    record_mentions(conn, message_id, chat_id, body)
