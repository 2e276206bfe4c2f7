"""Every rule of who is notified, and how, lives here: one small function per decision.

The engine asks twice. When it expands a fan-out (an outbox row) into delivery rows:
``recipient_devices`` picks the devices each kind reaches. Just before each send:
``skip_reason`` says whether a row written earlier must not go out any more (a device deleted, a
member removed or muted, a message deleted since). In between, ``carries_badge`` and
``badge_counts`` say what the badge shows, ``is_urgent`` which alerts are time-sensitive, and
``plan_email_digest`` which emails wait for their window and which fold into one digest. A
delivery that may go but not yet — the recipient's quiet hours — is ``deferred_until`` the
window's end, and ``collapsed_by_quiet_hours`` keeps only the latest deferred alert per device
and chat.

Notify levels per member and chat, as the table ``LEVELS`` below: "all" hears every message;
"mentions" only messages that @mention the member; "none" (what ``muted: true`` sets) nothing but
direct @mentions — a mention is addressed to the person, so it pierces a mute, as members of
busy groups expect. A "none" chat also stays out of the badge total. The same table builds the
SQL filter of the expansion and the Python check of the send: the rule is written once.

Kinds of fan-out (``DeliveryKind``): an alert is the message itself, to every member it notifies;
a clear is the silent "read elsewhere" update to the reader's own devices; a removal withdraws a
deleted message's notification from the devices that showed it (or were showing it); a test is
one notification to one device its owner asked for (``POST /v1/devices/{id}/test``), about no
message and no chat, so no chat rule (membership, notify level, quiet) applies to it.

Not here: whether a provider is configured. Only the sender registry (``chinwag.push.registry``)
knows which providers and apps have settings; it answers ``OutcomeKind.UNAVAILABLE``, and what
the engine does then — keep the row pending, not an attempt, ask again after
``UNAVAILABLE_RECHECK_SECONDS`` — is ``recheck_unavailable_at`` below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chinwag.chat.unread import unread_totals
from chinwag.push.model import Platform
from chinwag.store.schema import deliveries, devices, memberships, mentions, messages
from chinwag.store.states import WAITING, DeliveryKind, DeliveryStatus, NotifyLevel


@dataclass(frozen=True, slots=True)
class LevelRule:
    every_message: bool  # a plain message notifies
    mentions: bool  # a message that @mentions the member notifies
    in_badge: bool  # the chat's unread count is part of the member's badge
    unheard: str  # skip reason of a message this level does not hear


LEVELS: Mapping[NotifyLevel, LevelRule] = {
    NotifyLevel.ALL: LevelRule(every_message=True, mentions=True, in_badge=True, unheard=""),
    NotifyLevel.MENTIONS: LevelRule(
        every_message=False, mentions=True, in_badge=True, unheard="notify level: mentions only"
    ),
    NotifyLevel.NONE: LevelRule(
        every_message=False, mentions=True, in_badge=False, unheard="chat muted"
    ),
}
_RULE_OF: Mapping[str | None, LevelRule] = {level.value: rule for level, rule in LEVELS.items()}

# Mobile pushes are held back for a user with quiet_when_active whose live client was seen within
# this many seconds (the stream refreshes it every 20 s while open).
ACTIVE_WINDOW_SECONDS = 45.0
MOBILE_PLATFORMS = frozenset({Platform.APNS, Platform.FCM})
# Quiet hours hold phone and browser alerts, the ones that ring; email and webhooks still go.
QUIET_PLATFORMS = frozenset({Platform.APNS, Platform.FCM, Platform.WEBPUSH})
COLLAPSED = "collapsed into a later message"
# Platforms that show a badge or a notification tray, which clear and removal updates change.
CLEARABLE_PLATFORMS = (Platform.APNS, Platform.FCM, Platform.WEBPUSH)
# Alerts a removal withdraws: shown, or being shown while the message was deleted.
SHOWN = (DeliveryStatus.DELIVERED, DeliveryStatus.SENDING)
MESSAGE_DELETED = "message deleted"
# A provider that is not configured is asked again this often; the row stays pending meanwhile.
UNAVAILABLE_RECHECK_SECONDS = 30.0


# --- who hears a message ------------------------------------------------------------------------


def hears(level: str | None, mentioned: bool) -> bool:
    """Whether a member at ``level`` (None: not a member) hears a message."""
    rule = _RULE_OF.get(level)
    return rule is not None and (rule.every_message or (mentioned and rule.mentions))


def _levels(where: Callable[[LevelRule], bool]) -> list[str]:
    """The levels whose rule says yes, for a SQL filter."""
    return [level.value for level, rule in LEVELS.items() if where(rule)]


def _level_in(column: sa.ColumnElement[str], levels: Sequence[str]) -> sa.ColumnElement[bool]:
    if len(levels) == len(LEVELS):
        return sa.true()
    # An (in)equality rather than IN keeps the SQL, and the plan, the queries always had.
    if len(levels) == 1:
        return column == levels[0]
    if len(levels) == len(LEVELS) - 1:
        (left_out,) = {level.value for level in LEVELS} - set(levels)
        return column != left_out
    return column.in_(levels) if levels else sa.false()


def hears_clause(
    level: sa.ColumnElement[str], mentioned: sa.ColumnElement[bool]
) -> sa.ColumnElement[bool]:
    """``hears`` in SQL, built from the same table."""
    every = _level_in(level, _levels(lambda rule: rule.every_message))
    by_mention = _level_in(level, _levels(lambda rule: rule.mentions))
    return sa.or_(every, sa.and_(mentioned, by_mention))


@dataclass(frozen=True, slots=True)
class RecipientFacts:
    """What decides whether one device is written a delivery of a message's alert."""

    is_sender: bool
    level: str | None  # the owner's notify level in the chat; None: not a member
    mentioned: bool
    device_active: bool
    device_verified: bool


def is_alert_recipient(facts: RecipientFacts) -> bool:
    """Active, verified devices of members the message notifies, never the sender's."""
    return (
        facts.device_active
        # An email device whose owner has not proved the mailbox gets nothing but its code.
        and facts.device_verified
        and not facts.is_sender
        and hears(facts.level, facts.mentioned)
    )


def alert_recipients(
    chat_id: int, sender_id: int, message_id: int
) -> sa.Select[tuple[int, int, str]]:
    """``is_alert_recipient`` in SQL: the devices a message's alert fan-out writes rows for."""
    mentioned = devices.c.user_id.in_(
        sa.select(mentions.c.user_id).where(mentions.c.message_id == message_id)
    )
    return (
        sa.select(devices.c.id.label("device_id"), devices.c.user_id, devices.c.platform)
        .join(
            memberships,
            (memberships.c.user_id == devices.c.user_id) & (memberships.c.chat_id == chat_id),
        )
        .where(
            devices.c.active.is_(True),
            devices.c.verified.is_(True),
            devices.c.user_id != sender_id,
            hears_clause(memberships.c.notify_level, mentioned),
        )
    )


def clear_recipients(reader_id: int) -> sa.Select[tuple[int, int, str]]:
    """The reader's own active devices that show a badge or a tray (read elsewhere: update)."""
    return sa.select(devices.c.id.label("device_id"), devices.c.user_id, devices.c.platform).where(
        devices.c.user_id == reader_id,
        devices.c.active.is_(True),
        devices.c.platform.in_([p.value for p in CLEARABLE_PLATFORMS]),
    )


def removal_recipients(message_id: int) -> sa.Select[tuple[int, int, str]]:
    """The devices that showed (or were showing) a deleted message's alert, and can withdraw it."""
    return sa.select(deliveries.c.device_id, deliveries.c.user_id, deliveries.c.platform).where(
        deliveries.c.message_id == message_id,
        deliveries.c.kind == DeliveryKind.ALERT,
        deliveries.c.status.in_([s.value for s in SHOWN]),
        deliveries.c.platform.in_([p.value for p in CLEARABLE_PLATFORMS]),
    )


def test_recipient(device_id: int, owner_id: int) -> sa.Select[tuple[int, int, str]]:
    """The device a test goes to: still its owner's, active and verified (an unproved mailbox
    gets nothing but its code, not even a test)."""
    return sa.select(devices.c.id.label("device_id"), devices.c.user_id, devices.c.platform).where(
        devices.c.id == device_id,
        devices.c.user_id == owner_id,
        devices.c.active.is_(True),
        devices.c.verified.is_(True),
    )


class FanOut(Protocol):
    """An outbox row as the expansion needs it."""

    @property
    def kind(self) -> DeliveryKind: ...
    @property
    def message_id(self) -> int: ...
    @property
    def chat_id(self) -> int: ...
    @property
    def sender_id(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def device_id(self) -> int: ...


class Cursor(NamedTuple):
    """Where a fan-out's expansion stands: the (user id, device id) of the last device expanded.
    (0, 0) is the start; a removal, which walks its rows in device id order, reads the device
    id alone."""

    user_id: int = 0
    device_id: int = 0


def _between(
    user_id: sa.ColumnElement[int],
    device_id: sa.ColumnElement[int],
    after: Cursor,
    through: Cursor | None,
) -> list[sa.ColumnElement[bool]]:
    """(user_id, device_id) in (after, through], as conditions that both databases turn into
    index range bounds on the leading user id (a row-value comparison SQLite cannot seek)."""
    bounds = [user_id >= after.user_id, (user_id > after.user_id) | (device_id > after.device_id)]
    if through is not None:
        bounds += [
            user_id <= through.user_id,
            (user_id < through.user_id) | (device_id <= through.device_id),
        ]
    return bounds


def recipient_devices(
    fanout: FanOut, after: Cursor, through: Cursor | None = None
) -> sa.Select[tuple[int, int, str]]:
    """(device_id, user_id, platform) of the devices a fan-out reaches after the cursor
    ``after``, in the cursor's order: the expansion's next batch is the first rows of this.
    With ``through``, the rows up to that cursor included, in no particular order.

    The order is the one an index walks, so that a batch reads its own rows and not the whole
    group: alerts go through the chat's memberships by user id (the primary key (chat_id,
    user_id)) and each member's devices by id (``ix_devices_user_id_active``); a clear is one
    user's devices; a removal walks the message's rows by device id (the unique (message_id,
    device_id, kind))."""
    if fanout.kind is DeliveryKind.REMOVAL:
        query = removal_recipients(fanout.message_id).where(
            deliveries.c.device_id > after.device_id
        )
        if through is not None:
            return query.where(deliveries.c.device_id <= through.device_id)
        return query.order_by(deliveries.c.device_id)
    if fanout.kind is DeliveryKind.CLEAR:
        query = clear_recipients(fanout.user_id)
    elif fanout.kind is DeliveryKind.TEST:
        query = test_recipient(fanout.device_id, fanout.user_id)
    else:
        query = alert_recipients(fanout.chat_id, fanout.sender_id, fanout.message_id)
        # The membership's user id leads the order: SQLite then seeks the chat's memberships
        # from the cursor on (chat_id, user_id) and needs no sort. The same bounds on the
        # device's user id let PostgreSQL's join start (and stop) the devices' index there too.
        query = query.where(
            *_between(memberships.c.user_id, devices.c.id, after, through),
            devices.c.user_id >= after.user_id,
        )
        if through is not None:
            return query.where(devices.c.user_id <= through.user_id)
        return query.order_by(memberships.c.user_id, devices.c.id)
    query = query.where(*_between(devices.c.user_id, devices.c.id, after, through))
    return query if through is not None else query.order_by(devices.c.user_id, devices.c.id)


def cancelled_by_removal(message_id: int) -> sa.ColumnElement[bool]:
    """The alerts a removal cancels: those of the deleted message still waiting to be sent."""
    return (
        (deliveries.c.message_id == message_id)
        & (deliveries.c.kind == DeliveryKind.ALERT)
        & deliveries.c.status.in_([s.value for s in WAITING])
    )


# --- whether a delivery written earlier still goes out ------------------------------------------


# Not frozen: one is built per delivery on the claim path, and frozen dataclasses set each
# field through object.__setattr__, which made them a visible share of the worker's CPU.
@dataclass(slots=True)
class SendTimeFacts:
    kind: str
    platform: str
    device_active: bool
    device_owner_id: int
    recipient_id: int
    is_member: bool
    notify_level: str | None
    mentioned: bool
    message_deleted: bool
    quiet_when_active: bool
    last_active_at: float | None
    quiet_hours: QuietHours | None = None
    mentions_break_through: bool = False


def skip_reason(facts: SendTimeFacts, now: float) -> str | None:
    """Why a delivery written earlier must not be sent now, or None to send it."""
    if not facts.device_active:
        return "device removed"
    if facts.device_owner_id != facts.recipient_id:
        return "device now belongs to another user"
    if facts.kind != DeliveryKind.ALERT:
        return None  # silent updates and tests concern the device owner's own state
    if facts.message_deleted:
        return MESSAGE_DELETED
    if not facts.is_member:
        return "no longer a member"
    if not hears(facts.notify_level, facts.mentioned):
        return _RULE_OF[facts.notify_level].unheard
    if (
        facts.quiet_when_active
        and facts.platform in MOBILE_PLATFORMS
        and facts.last_active_at is not None
        and now - facts.last_active_at < ACTIVE_WINDOW_SECONDS
    ):
        return "user active on a live client"
    return None


# --- quiet hours ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window of wall-clock times in an IANA zone; ``end`` before ``start`` crosses
    midnight. Start is inside the window, end is not."""

    start: time
    end: time
    timezone: str

    @classmethod
    def parse(cls, start: str | None, end: str | None, timezone: str | None) -> QuietHours | None:
        """From the users table's "HH:MM" columns; None when the user has no quiet hours."""
        if start is None or end is None or timezone is None:
            return None
        return cls(time.fromisoformat(start), time.fromisoformat(end), timezone)


def quiet_until(quiet: QuietHours | None, now: float) -> float | None:
    """If ``now`` (epoch seconds) is inside the window, the epoch second it ends; else None.

    Computed on the wall clock of the user's zone, so a window ends at its local time whatever
    the offset that night: 22:00-07:00 over the spring-forward night lasts eight hours, over the
    fall-back night ten. An end the clocks skip (02:30 on the spring-forward night in Berlin) is
    read with the offset before the jump (03:30 by the new clock); an end the clocks repeat, at
    its first occurrence."""
    if quiet is None or quiet.start == quiet.end:
        return None
    zone = ZoneInfo(quiet.timezone)
    local = datetime.fromtimestamp(now, zone)
    wall = local.time().replace(tzinfo=None)
    ends_on: date
    if quiet.start < quiet.end:
        if not quiet.start <= wall < quiet.end:
            return None
        ends_on = local.date()
    elif wall >= quiet.start:
        ends_on = local.date() + timedelta(days=1)
    elif wall < quiet.end:
        ends_on = local.date()
    else:
        return None
    until = datetime.combine(ends_on, quiet.end, tzinfo=zone).timestamp()
    # Inside the fall-back night's repeated hour, an end read at its first occurrence is past.
    return until if until > now else None


def deferred_until(facts: SendTimeFacts, now: float) -> float | None:
    """When an alert that may go (``skip_reason`` said None) goes instead, if not now: phone and
    browser alerts wait for the end of the recipient's quiet hours, unless the message mentions
    them and they let mentions break through. Silent updates, email and webhooks never wait."""
    if facts.kind != DeliveryKind.ALERT or facts.platform not in QUIET_PLATFORMS:
        return None
    if facts.mentioned and facts.mentions_break_through:
        return None
    return quiet_until(facts.quiet_hours, now)


class DeferredAlert(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def device_id(self) -> int: ...
    @property
    def chat_id(self) -> int: ...
    @property
    def message_id(self) -> int: ...


def reconsidered(user_id: int) -> sa.ColumnElement[bool]:
    """The deliveries a change of the user's quiet hours hands back to the policy at once: their
    deferred alerts, which may go now, or wait for another end."""
    return (deliveries.c.user_id == user_id) & (deliveries.c.status == DeliveryStatus.DEFERRED)


def collapsed_by_quiet_hours(deferred: Sequence[DeferredAlert]) -> set[int]:
    """Of the alerts deferred by quiet hours, the ids that will not go (skipped, ``COLLAPSED``):
    all but the latest message of each device and chat. At the window's end a phone shows one
    notification per chat, the newest, with the badge counted when it is sent."""
    latest: dict[tuple[int, int], DeferredAlert] = {}
    for row in deferred:
        key = (row.device_id, row.chat_id)
        if key not in latest or row.message_id > latest[key].message_id:
            latest[key] = row
    kept = {row.id for row in latest.values()}
    return {row.id for row in deferred if row.id not in kept}


def recheck_unavailable_at(now: float) -> float:
    """When a delivery whose provider is not configured is asked again (it stays pending, and
    the try is not counted as an attempt: configuring the provider is what fixes it)."""
    return now + UNAVAILABLE_RECHECK_SECONDS


# --- the badge ----------------------------------------------------------------------------------


def carries_badge(kind: str) -> bool:
    """Alerts and clears carry the recipient's badge; a removal or a test leaves it alone."""
    return kind in (DeliveryKind.ALERT, DeliveryKind.CLEAR)


def is_urgent(kind: str, mentioned: bool) -> bool:
    """A message that @mentions the recipient is addressed to them: their devices show it as
    time-sensitive (APNs interruption level, FCM notification priority)."""
    return kind == DeliveryKind.ALERT and mentioned


def in_badge_clause(level: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """Which of a member's chats count toward the badge (not notify level "none")."""
    return _level_in(level, _levels(lambda rule: rule.in_badge))


def badge_counts(conn: Connection, user_ids: Iterable[int]) -> dict[int, int]:
    """Each user's badge: unread messages over the chats that count toward it."""
    return unread_totals(conn, user_ids, in_badge_clause(memberships.c.notify_level))


# --- email digests ------------------------------------------------------------------------------


def is_digestible(platform: str, kind: str) -> bool:
    """Only email alerts are folded into digests."""
    return platform == Platform.EMAIL and kind == DeliveryKind.ALERT


class DigestCandidate(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def device_id(self) -> int: ...
    @property
    def chat_id(self) -> int: ...


@dataclass(slots=True)
class DigestPlan:
    held: list[tuple[int, float]] = field(default_factory=list)  # (delivery id, due again at)
    # The one email of each (device, chat) that goes out now; the others wait or fold into it.
    leaders: dict[tuple[int, int], int] = field(default_factory=dict)


def plan_email_digest(
    candidates: Sequence[DigestCandidate],
    last_sent: Mapping[tuple[int, int], float],
    now: float,
    window: float,
) -> DigestPlan:
    """At most one email per device and chat per ``window`` seconds: an email inside its window
    waits until the window opens; of several due at once, the first leads and the others are
    held, to fold into its digest."""
    plan = DigestPlan()
    for row in candidates:
        key = (row.device_id, row.chat_id)
        opens_at = last_sent.get(key, 0.0) + window
        if opens_at > now:
            plan.held.append((row.id, opens_at))
        elif key in plan.leaders:
            plan.held.append((row.id, now))
        else:
            plan.leaders[key] = row.id
    return plan


def digest_waiting(device_id: int, chat_id: int, leader_id: int) -> sa.ColumnElement[bool]:
    """The waiting alert emails that fold into a leader's digest (joined with ``messages``)."""
    return (
        (deliveries.c.device_id == device_id)
        & (deliveries.c.kind == DeliveryKind.ALERT)
        & deliveries.c.status.in_([s.value for s in WAITING])
        & (deliveries.c.id != leader_id)
        & (messages.c.chat_id == chat_id)
        & messages.c.deleted_at.is_(None)
    )
