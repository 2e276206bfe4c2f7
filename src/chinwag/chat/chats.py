"""Chats and their members. Every read or write requires membership; to anyone else a chat does
not exist (404, never 403, so ids cannot be probed)."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from chinwag.chat import events
from chinwag.chat.accounts import normalize_username, users_by_name
from chinwag.chat.errors import Forbidden, InvalidInput, NotFound
from chinwag.chat.models import NOTIFY_LEVELS, Chat, Member, User
from chinwag.chat.unread import unread_counts, unread_of_membership
from chinwag.store.database import Database
from chinwag.store.schema import chats, memberships, messages, users
from chinwag.store.states import NotifyLevel

MAX_MEMBERS_PER_REQUEST = 1000
# One answer whichever names are unknown: naming them would let anyone test a thousand
# usernames per request for existence.
NOT_ADDABLE = "some of these people cannot be added"


def require_member(conn: Connection, chat_id: int, user_id: int) -> bool:
    """Return the member's muted flag; raise NotFound if the user is not a member."""
    row = conn.execute(
        sa.select(memberships.c.muted).where(
            memberships.c.chat_id == chat_id, memberships.c.user_id == user_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no chat {chat_id}")
    return bool(row.muted)


# The chat, the user's membership and their unread count in one statement, built once (a send
# answers with it; building a statement costs more than running it on SQLite).
_CHAT_OF_MEMBER = (
    sa.select(
        chats,
        memberships.c.muted,
        memberships.c.notify_level,
        sa.select(sa.func.count(messages.c.id))
        .where(unread_of_membership())
        .scalar_subquery()
        .label("unread"),
    )
    .join(memberships, memberships.c.chat_id == chats.c.id)
    .where(chats.c.id == sa.bindparam("chat_id"), memberships.c.user_id == sa.bindparam("user_id"))
)


def load_chat(conn: Connection, chat_id: int, user: User, *, with_members: bool = True) -> Chat:
    """The chat as ``user`` sees it; NotFound unless they are a member."""
    row = conn.execute(_CHAT_OF_MEMBER, {"chat_id": chat_id, "user_id": user.id}).mappings().first()
    if row is None:
        raise NotFound(f"no chat {chat_id}")
    muted, notify = bool(row["muted"]), row["notify_level"]
    members: tuple[Member, ...] = ()
    if with_members:
        member_rows = conn.execute(
            sa.select(users.c.username, users.c.display_name, memberships.c.muted)
            .join(memberships, memberships.c.user_id == users.c.id)
            .where(memberships.c.chat_id == chat_id)
            .order_by(users.c.username)
        )
        members = tuple(Member(r.username, r.display_name, bool(r.muted)) for r in member_rows)
    return Chat(
        id=row["id"],
        title=row["title"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        members=members,
        muted=muted,
        notify=notify,
        unread=int(row["unread"]),
    )


def create_chat(db: Database, creator: User, title: str, member_names: list[str]) -> Chat:
    title = title.strip()
    if not title:
        raise InvalidInput("title must not be empty", field="title")
    if len(member_names) > MAX_MEMBERS_PER_REQUEST:
        raise InvalidInput(
            f"at most {MAX_MEMBERS_PER_REQUEST} members per request; add more afterwards",
            field="members",
        )
    names = sorted({normalize_username(name) for name in member_names} - {creator.username})
    now = time.time()
    with db.write() as conn:
        found = users_by_name(conn, names)
        if len(found) != len(names):
            raise InvalidInput(NOT_ADDABLE, field="members")
        chat_id = conn.execute(
            chats.insert()
            .returning(chats.c.id)
            .values(title=title, created_by=creator.id, created_at=now)
        ).scalar_one()
        member_ids = [creator.id, *found.values()]
        conn.execute(
            memberships.insert(),
            [
                {"chat_id": chat_id, "user_id": uid, "muted": False, "joined_at": now}
                for uid in member_ids
            ],
        )
        joined = [(creator.id, creator.username), *((uid, name) for name, uid in found.items())]
        events.member_change(conn, "member_added", chat_id, joined)
        return load_chat(conn, chat_id, creator)


def list_chats(db: Database, user: User) -> list[Chat]:
    with db.read() as conn:
        unread = unread_counts(conn, user.id)
        rows = conn.execute(
            sa.select(chats, memberships.c.muted, memberships.c.notify_level)
            .join(memberships, memberships.c.chat_id == chats.c.id)
            .where(memberships.c.user_id == user.id)
            .order_by(chats.c.id)
        ).mappings()
        return [
            Chat(
                id=row["id"],
                title=row["title"],
                created_by=row["created_by"],
                created_at=row["created_at"],
                members=(),
                muted=bool(row["muted"]),
                notify=row["notify_level"],
                unread=unread.get(row["id"], 0),
            )
            for row in rows
        ]


def get_chat(db: Database, user: User, chat_id: int) -> Chat:
    with db.read() as conn:
        return load_chat(conn, chat_id, user)


def add_member(db: Database, user: User, chat_id: int, username: str) -> Chat:
    name = normalize_username(username)
    try:
        return _add_member_once(db, user, chat_id, name)
    except IntegrityError:
        # A concurrent request added the same member between our check and our insert (only
        # PostgreSQL lets the two overlap); the membership exists now, which is what was asked.
        return _add_member_once(db, user, chat_id, name)


def _add_member_once(db: Database, user: User, chat_id: int, name: str) -> Chat:
    with db.write() as conn:
        require_member(conn, chat_id, user.id)
        found = users_by_name(conn, [name])
        if name not in found:
            raise InvalidInput(NOT_ADDABLE, field="username")
        already = conn.execute(
            sa.select(memberships.c.user_id).where(
                memberships.c.chat_id == chat_id, memberships.c.user_id == found[name]
            )
        ).first()
        if not already:
            conn.execute(
                memberships.insert().values(
                    chat_id=chat_id, user_id=found[name], muted=False, joined_at=time.time()
                )
            )
            events.member_change(conn, "member_added", chat_id, [(found[name], name)])
        return load_chat(conn, chat_id, user)


def remove_member(db: Database, user: User, chat_id: int, username: str) -> None:
    """Anyone may leave; only the chat's creator may remove someone else."""
    name = normalize_username(username)
    with db.write() as conn:
        require_member(conn, chat_id, user.id)
        creator = conn.execute(sa.select(chats.c.created_by).where(chats.c.id == chat_id)).one()
        if name != user.username and creator.created_by != user.id:
            raise Forbidden("only the chat's creator can remove other members")
        target = users_by_name(conn, [name]).get(name)
        removed = 0
        if target is not None:
            removed = conn.execute(
                memberships.delete().where(
                    memberships.c.chat_id == chat_id, memberships.c.user_id == target
                )
            ).rowcount
        if not removed:
            raise NotFound(f"{name!r} is not a member of chat {chat_id}")
        assert target is not None  # a row was removed
        events.member_change(conn, "member_removed", chat_id, [(target, name)])


def update_settings(
    db: Database, user: User, chat_id: int, *, muted: bool | None, notify: str | None = None
) -> Chat:
    """``muted: true`` means notify level "none" and ``false`` means "all"; ``notify`` wins."""
    level = notify or (NotifyLevel.NONE if muted else NotifyLevel.ALL)
    if level not in NOTIFY_LEVELS:
        raise InvalidInput(f"notify must be one of {', '.join(NOTIFY_LEVELS)}", field="notify")
    with db.write() as conn:
        require_member(conn, chat_id, user.id)
        conn.execute(
            memberships.update()
            .where(memberships.c.chat_id == chat_id, memberships.c.user_id == user.id)
            .values(muted=level == NotifyLevel.NONE, notify_level=level)
        )
        return load_chat(conn, chat_id, user, with_members=False)
