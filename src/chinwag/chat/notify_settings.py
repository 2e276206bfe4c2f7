"""A user's own notification settings (per chat ones are in ``chinwag.chat.chats``): quiet while
active, quiet hours, and whether mentions break through them. What they mean for a delivery is
decided by the engine's policy (``chinwag.fanout.policy``)."""

from __future__ import annotations

import functools
import re
import time
import zoneinfo
from dataclasses import dataclass

import sqlalchemy as sa

from chinwag.chat.errors import InvalidInput
from chinwag.chat.fanout_requests import request_reconsider
from chinwag.chat.models import User
from chinwag.store.database import Database
from chinwag.store.schema import users

WALL_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: str  # "HH:MM", 24 h, in ``timezone``
    end: str  # before start: the window crosses midnight
    timezone: str  # an IANA zone, e.g. "Europe/Berlin"


@dataclass(frozen=True, slots=True)
class NotifySettings:
    quiet_when_active: bool
    quiet_hours: QuietHours | None
    mentions_break_through: bool


class _Unchanged:
    """The default of a setting left out of an update."""


UNCHANGED = _Unchanged()


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_quiet_hours(quiet: QuietHours) -> None:
    """Raise InvalidInput naming the field unless the window is two distinct 24 h "HH:MM" times
    in a zone of the system's tz database."""
    for name, value in (("start", quiet.start), ("end", quiet.end)):
        if not WALL_TIME.fullmatch(value):
            raise InvalidInput(f'{name} must be "HH:MM", 24 h', field=f"quiet_hours.{name}")
    if quiet.start == quiet.end:
        raise InvalidInput("start and end must differ", field="quiet_hours")
    if quiet.timezone not in _known_timezones():
        raise InvalidInput(
            f"unknown time zone {quiet.timezone!r} (an IANA name, e.g. Europe/Berlin)",
            field="quiet_hours.timezone",
        )


def get_settings(db: Database, user: User) -> NotifySettings:
    with db.read() as conn:
        row = conn.execute(
            sa.select(
                users.c.quiet_when_active,
                users.c.quiet_start,
                users.c.quiet_end,
                users.c.quiet_timezone,
                users.c.mentions_break_through,
            ).where(users.c.id == user.id)
        ).one()
    quiet = (
        QuietHours(row.quiet_start, row.quiet_end, row.quiet_timezone)
        if row.quiet_start is not None
        and row.quiet_end is not None
        and row.quiet_timezone is not None
        else None
    )
    return NotifySettings(
        quiet_when_active=bool(row.quiet_when_active),
        quiet_hours=quiet,
        mentions_break_through=bool(row.mentions_break_through),
    )


def update_settings(
    db: Database,
    user: User,
    *,
    quiet_when_active: bool | _Unchanged = UNCHANGED,
    quiet_hours: QuietHours | _Unchanged | None = UNCHANGED,
    mentions_break_through: bool | _Unchanged = UNCHANGED,
) -> tuple[NotifySettings, int | None]:
    """Change the settings given (all checked first: a bad one changes nothing); the others
    stay. A change to quiet hours or to mentions breaking through asks the engine to decide
    about the user's deferred alerts again at once (``request_reconsider``): it sends each, or
    defers it to the new window's end. Return the settings now, and the message that request
    is filed under (None: none was needed), to ring the doorbell for."""
    if isinstance(quiet_hours, QuietHours):
        check_quiet_hours(quiet_hours)
    values: dict[str, object] = {}
    if not isinstance(quiet_when_active, _Unchanged):
        values["quiet_when_active"] = quiet_when_active
    if not isinstance(quiet_hours, _Unchanged):
        values["quiet_start"] = quiet_hours.start if quiet_hours else None
        values["quiet_end"] = quiet_hours.end if quiet_hours else None
        values["quiet_timezone"] = quiet_hours.timezone if quiet_hours else None
    if not isinstance(mentions_break_through, _Unchanged):
        values["mentions_break_through"] = mentions_break_through
    reconsider: int | None = None
    if values:
        with db.write() as conn:
            conn.execute(users.update().where(users.c.id == user.id).values(values))
            if values.keys() - {"quiet_when_active"}:
                reconsider = request_reconsider(conn, user.id, time.time())
    return get_settings(db, user), reconsider
