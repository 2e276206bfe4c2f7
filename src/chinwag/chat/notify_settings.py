"""A user's own notification settings (per chat ones are in ``chinwag.chat.chats``)."""

from __future__ import annotations

from chinwag.chat.models import User
from chinwag.store.database import Database
from chinwag.store.schema import users


def set_quiet_when_active(db: Database, user: User, quiet: bool) -> None:
    """No mobile push while a live client of the user's is open (``chinwag.fanout.policy``)."""
    with db.write() as conn:
        conn.execute(users.update().where(users.c.id == user.id).values(quiet_when_active=quiet))
