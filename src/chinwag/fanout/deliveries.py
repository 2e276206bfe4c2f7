"""Delivery rows: claim due ones with a lease, and record each provider outcome.

A row is due when it is pending or retrying and its time has come, or when it is "sending" under
a lease that ran out (its worker died). Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so
several workers take disjoint rows without waiting on each other; on SQLite the claim runs under
``BEGIN IMMEDIATE``, which serializes writers. Outcomes are written only while the lease is still
ours, so a worker that lost its lease cannot overwrite its successor's record.
"""

from __future__ import annotations

import base64
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from chinwag.fanout.health import OutcomeNews, error_text
from chinwag.fanout.policy import (
    COLLAPSED,
    QuietHours,
    SendTimeFacts,
    badge_counts,
    carries_badge,
    collapsed_by_quiet_hours,
    deferred_until,
    digest_waiting,
    is_digestible,
    is_urgent,
    plan_email_digest,
    recheck_unavailable_at,
    skip_reason,
)
from chinwag.push.model import (
    DeviceTarget,
    Notification,
    NotificationKind,
    Outcome,
    OutcomeKind,
    PayloadMode,
    Platform,
    delivery_uuid,
)
from chinwag.store.database import Database
from chinwag.store.schema import (
    chats,
    deliveries,
    devices,
    email_digests,
    memberships,
    mentions,
    messages,
    outbox,
    users,
)
from chinwag.store.states import WAITING, DeliveryKind, OutboxState
from chinwag.store.states import DeliveryStatus as Status

log = logging.getLogger("chinwag.fanout")

_WAITING = [s.value for s in WAITING]

# What a test notification says (POST /v1/devices/{id}/test): title "chinwag", body
# "chinwag: Test notification". It is about no chat and no message (their ids are 0).
TEST_NOTIFICATION = Notification(
    chat_id=0,
    message_id=0,
    chat_title="chinwag",
    sender_name="chinwag",
    preview="Test notification",
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 2.0
    cap_seconds: float = 600.0

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, never earlier than the provider's Retry-After."""
        backoff = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        jittered = backoff / 2 + random.uniform(0, backoff / 2)
        return float(max(jittered, retry_after or 0.0))


@dataclass(slots=True)  # built per delivery on the hot path; frozen would cost a third more
class ClaimedDelivery:
    delivery_id: int
    attempts: int  # before this attempt
    target: DeviceTarget
    notification: Notification
    skip: str | None  # set when policy says this one must not be sent any more
    sender_id: int = 0
    chat_id: int = 0
    # Other email deliveries batched into this one's digest: they share its outcome.
    batched: tuple[int, ...] = ()
    # Set when it may go, but not yet (the recipient's quiet hours): it waits until then.
    deferred_until: float | None = None
    is_test: bool = False


def claim_deliveries(
    db: Database,
    owner: str,
    now: float,
    lease_seconds: float,
    limit: int,
    digest_seconds: float = 0.0,
    room: Mapping[str, int] | None = None,
    held: set[int] | None = None,
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries, and of a platform named in ``room`` at most that
    many (0: none; its sends are saturated). A claim runs out while it waits for a sender slot,
    so a worker claims no more of a platform than it can start sending now. Alerts that quiet
    hours defer or collapse are handed back, not returned; their message ids are added to
    ``held`` (their senders' delivery panels changed)."""
    due = (deliveries.c.status.in_(_WAITING) & (deliveries.c.next_attempt_at <= now)) | (
        (deliveries.c.status == Status.SENDING) & (deliveries.c.lease_until < now)
    )
    chosen = _claimable(db, due, limit, room or {})
    if chosen is None:
        return []
    lease = {"lease_until": now + lease_seconds, "lease_owner": owner, "updated_at": now}
    rows: list[sa.Row[tuple[object, ...]]] | None = None
    batches: dict[int, list[sa.Row[tuple[object, ...]]]] = {}
    with db.write() as conn:
        returned = conn.execute(
            deliveries.update()
            .where(chosen)
            .values(status=Status.SENDING, **lease)
            .returning(deliveries.c.id, deliveries.c.platform, deliveries.c.kind)
        ).all()
        if not returned:
            return []
        ids = [r.id for r in returned if r.kind != DeliveryKind.TEST]
        test_ids = [r.id for r in returned if r.kind == DeliveryKind.TEST]
        if digest_seconds > 0 and any(is_digestible(r.platform, r.kind) for r in returned):
            # Folding emails into digests writes: it is done under this write lock.
            rows = list(conn.execute(_details_query(ids)).all()) if ids else []
            rows, batches = _apply_email_digest(conn, rows, owner, now, lease, digest_seconds)
    # The rows are ours now (leased): what to send them is read after the commit, so that the
    # write lock (SQLite's one, which a send waits for) is held for the UPDATE alone.
    return _load(db, owner, now, [r.id for r in returned], ids, test_ids, rows, batches, held)


def load_claimed(
    db: Database, owner: str, now: float, ids: Sequence[int], held: set[int] | None = None
) -> list[ClaimedDelivery]:
    """What to send the rows an expansion wrote already leased to this worker
    (``expand_batch(..., room=...)``): the send-time check, quiet hours and badges exactly as
    for the rows of a claim, without the claim's UPDATE. Never a test's or a digest's rows (the
    expansion writes those unclaimed)."""
    if not ids:
        return []
    return _load(db, owner, now, ids, list(ids), [], None, {}, held)


def _load(
    db: Database,
    owner: str,
    now: float,
    leased: Sequence[int],
    ids: list[int],
    test_ids: list[int],
    rows: list[sa.Row[tuple[object, ...]]] | None,
    batches: dict[int, list[sa.Row[tuple[object, ...]]]],
    held: set[int] | None,
) -> list[ClaimedDelivery]:
    try:
        with db.read() as conn:
            if rows is None:
                rows = list(conn.execute(_details_query(ids)).all()) if ids else []
            tests = list(conn.execute(_test_details_query(test_ids)).all()) if test_ids else []
            badges = badge_counts(conn, [r.user_id for r in rows if carries_badge(r.kind)])
    except sa.exc.SQLAlchemyError as exc:
        raise ClaimNotLoaded(leased) from exc
    # The rows of one claim are mostly the devices of a few messages: they share one
    # Notification per (message, kind, badge) instead of building one per device.
    shared: dict[tuple[object, ...], Notification] = {}
    claimed = [_claimed(row, badges, batches, now, shared) for row in rows]
    claimed += [_claimed_test(row, now) for row in tests]
    deferred = [c for c in claimed if c.deferred_until is not None]
    if not deferred:
        return claimed
    changed = _defer(db, owner, deferred, now)
    if held is not None:
        held |= changed
    return [c for c in claimed if c.deferred_until is None]


class ClaimNotLoaded(Exception):
    """A claim committed, but what to send could not be read (the database went away between
    the two). The rows stay leased to this worker, whose heartbeat keeps renewing them: it must
    hand them back with ``release_deliveries`` before anything else, or they would never be
    sent."""

    def __init__(self, ids: Sequence[int]) -> None:
        super().__init__(f"{len(ids)} claimed deliveries not loaded")
        self.ids = tuple(ids)


def _claimable(
    db: Database, due: sa.ColumnElement[bool], limit: int, room: Mapping[str, int]
) -> sa.ColumnElement[bool] | None:
    """Which due rows a claim takes: one candidate query for the platforms with room for the
    whole ``limit``, one per platform with less; None when no platform has room."""

    def candidates(where: sa.ColumnElement[bool], most: int) -> sa.ColumnElement[bool]:
        # In the status index's order (each status's rows by due time), not by id: ordering by
        # id sorted every due row for each claim, 30 ms of CPU with 100,000 rows waiting
        # (SQLite), where this stops at the limit (1 ms).
        query = sa.select(deliveries.c.id).where(where).limit(most)
        if db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        return deliveries.c.id.in_(query.scalar_subquery())

    unbounded = [p.value for p in Platform if room.get(p.value, limit) >= limit]
    parts = []
    if unbounded:
        parts.append(candidates(due & deliveries.c.platform.in_(unbounded), limit))
    for platform, most in sorted(room.items()):
        if 0 < most < limit:
            parts.append(candidates(due & (deliveries.c.platform == platform), most))
    return sa.or_(*parts) if parts else None


# The device columns every claimed row carries, whatever its kind: what ``_target`` needs and
# what the send-time check asks of the device.
_TARGET_COLUMNS = (
    devices.c.id.label("device_id"),
    devices.c.platform,
    devices.c.token,
    devices.c.app,
    devices.c.webhook_secret,
    devices.c.payload,
    devices.c.encryption_key,
    devices.c.active,
    devices.c.user_id.label("device_owner_id"),
)


# The enums of a row's text columns, by value: a dict lookup, where calling the enum costs a
# microsecond per row on the claim path.
_PLATFORM = {p.value: p for p in Platform}
_PAYLOAD = {m.value: m for m in PayloadMode}
_NOTIFICATION_KIND = {k.value: k for k in NotificationKind}


def _target(
    device_id: int,
    platform: str,
    token: str,
    app: str,
    secret: str | None,
    payload: str,
    encryption_key: str | None,
    delivery_id: str,
) -> DeviceTarget:
    """Where and how to send a claimed row: its device (``_TARGET_COLUMNS``), in the device's
    payload mode (a test too shows what the device's real notifications look like)."""
    return DeviceTarget(
        device_id=device_id,
        platform=_PLATFORM[platform],
        token=token,
        delivery_id=delivery_id,
        app=app,
        secret=secret,
        payload=_PAYLOAD[payload],
        encryption_key=_key_bytes(encryption_key),
    )


def _details_query(ids: list[int]) -> sa.Select[tuple[object, ...]]:
    sender = users.alias("sender")
    recipient = users.alias("recipient")
    return (
        sa.select(
            deliveries.c.id,
            deliveries.c.attempts,
            deliveries.c.message_id,
            deliveries.c.user_id,
            deliveries.c.kind,
            *_TARGET_COLUMNS,
            messages.c.chat_id,
            messages.c.body,
            messages.c.sender_id,
            messages.c.deleted_at,
            chats.c.title,
            sender.c.display_name.label("sender_name"),
            recipient.c.quiet_when_active,
            recipient.c.last_active_at,
            recipient.c.quiet_start,
            recipient.c.quiet_end,
            recipient.c.quiet_timezone,
            recipient.c.mentions_break_through,
            memberships.c.user_id.label("member_id"),
            memberships.c.notify_level,
            mentions.c.user_id.label("mentioned_id"),
        )
        .join(devices, devices.c.id == deliveries.c.device_id)
        .join(messages, messages.c.id == deliveries.c.message_id)
        .join(chats, chats.c.id == messages.c.chat_id)
        .join(sender, sender.c.id == messages.c.sender_id)
        .join(recipient, recipient.c.id == deliveries.c.user_id)
        .outerjoin(
            memberships,
            (memberships.c.chat_id == messages.c.chat_id)
            & (memberships.c.user_id == deliveries.c.user_id),
        )
        .outerjoin(
            mentions,
            (mentions.c.message_id == deliveries.c.message_id)
            & (mentions.c.user_id == deliveries.c.user_id),
        )
        .where(deliveries.c.id.in_(ids))
        .order_by(deliveries.c.id)
    )


def _test_details_query(ids: list[int]) -> sa.Select[tuple[object, ...]]:
    """A test's row has no message and no chat: only the delivery and its device."""
    return (
        sa.select(
            deliveries.c.id,
            deliveries.c.attempts,
            deliveries.c.user_id,
            *_TARGET_COLUMNS,
        )
        .join(devices, devices.c.id == deliveries.c.device_id)
        .where(deliveries.c.id.in_(ids))
        .order_by(deliveries.c.id)
    )


def _claimed_test(row: sa.Row[tuple[object, ...]], now: float) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=row.id,
        attempts=row.attempts,
        # An id of its own per test: a second test is not a repeat of the first.
        target=_target(
            row.device_id,
            row.platform,
            row.token,
            row.app,
            row.webhook_secret,
            row.payload,
            row.encryption_key,
            delivery_uuid(0, row.device_id, f"test-{row.id}"),
        ),
        notification=TEST_NOTIFICATION,
        skip=skip_reason(
            SendTimeFacts(
                kind=DeliveryKind.TEST,
                platform=row.platform,
                device_active=bool(row.active),
                device_owner_id=row.device_owner_id,
                recipient_id=row.user_id,
                is_member=False,
                notify_level=None,
                mentioned=False,
                message_deleted=False,
                quiet_when_active=False,
                last_active_at=None,
            ),
            now,
        ),
        is_test=True,
    )


# The columns of ``_details_query``, in order: ``_claimed`` unpacks a row by position, as an
# attribute read by name costs a third of a microsecond and a row has thirty of them.
_DETAILS_COLUMNS = (
    "id",
    "attempts",
    "message_id",
    "user_id",
    "kind",
    "device_id",
    "platform",
    "token",
    "app",
    "webhook_secret",
    "payload",
    "encryption_key",
    "active",
    "device_owner_id",
    "chat_id",
    "body",
    "sender_id",
    "deleted_at",
    "title",
    "sender_name",
    "quiet_when_active",
    "last_active_at",
    "quiet_start",
    "quiet_end",
    "quiet_timezone",
    "mentions_break_through",
    "member_id",
    "notify_level",
    "mentioned_id",
)


def _claimed(
    row: sa.Row[tuple[object, ...]],
    badges: dict[int, int],
    batches: dict[int, list[sa.Row[tuple[object, ...]]]],
    now: float,
    shared: dict[tuple[object, ...], Notification],
) -> ClaimedDelivery:
    (
        delivery_id,
        attempts,
        message_id,
        user_id,
        kind_value,
        device_id,
        platform,
        token,
        app,
        secret,
        payload,
        encryption_key,
        active,
        device_owner_id,
        chat_id,
        body,
        sender_id,
        deleted_at,
        title,
        sender_name,
        quiet_when_active,
        last_active_at,
        quiet_start,
        quiet_end,
        quiet_timezone,
        mentions_break_through,
        member_id,
        notify_level,
        mentioned_id,
    ) = cast(tuple[Any, ...], row)
    kind = _NOTIFICATION_KIND[kind_value]
    batch = batches.get(delivery_id, [])
    badge = badges.get(user_id) if carries_badge(kind) else None
    mentioned = mentioned_id is not None
    urgent = is_urgent(kind_value, mentioned)
    key = (message_id, kind, badge, urgent) if not batch else (delivery_id,)
    notification = shared.get(key)
    if notification is None:
        notification = shared[key] = Notification(
            chat_id=chat_id,
            message_id=message_id,
            chat_title=title,
            sender_name=sender_name,
            preview=body if kind is NotificationKind.ALERT else "",
            badge=badge,
            kind=kind,
            earlier=tuple((r.sender_name, r.body) for r in batch),
            mentioned=urgent,
        )
    facts = SendTimeFacts(
        kind=kind_value,
        platform=platform,
        device_active=bool(active),
        device_owner_id=device_owner_id,
        recipient_id=user_id,
        is_member=member_id is not None,
        notify_level=notify_level,
        mentioned=mentioned,
        message_deleted=deleted_at is not None,
        quiet_when_active=bool(quiet_when_active),
        last_active_at=last_active_at,
        quiet_hours=QuietHours.parse(quiet_start, quiet_end, quiet_timezone),
        mentions_break_through=bool(mentions_break_through),
    )
    skip = skip_reason(facts, now)
    return ClaimedDelivery(
        delivery_id=delivery_id,
        attempts=attempts,
        target=_target(
            device_id,
            platform,
            token,
            app,
            secret,
            payload,
            encryption_key,
            delivery_uuid(message_id, device_id, kind.value),
        ),
        notification=notification,
        skip=skip,
        sender_id=sender_id,
        chat_id=chat_id,
        batched=tuple(r.id for r in batch),
        deferred_until=deferred_until(facts, now) if skip is None else None,
    )


def _key_bytes(stored: str | None) -> bytes | None:
    """An encrypted device's AES key, stored as the canonical base64 ``payload_choice`` wrote."""
    return base64.b64decode(stored) if stored else None


@dataclass(frozen=True, slots=True)
class _Deferred:
    id: int
    device_id: int
    chat_id: int
    message_id: int


def _defer(db: Database, owner: str, claimed: Sequence[ClaimedDelivery], now: float) -> set[int]:
    """Hand back claimed alerts the recipient's quiet hours hold: each `deferred` until the
    window's end (not an attempt), or `skipped` when a later alert of the same chat waits for
    the same device (``collapsed_by_quiet_hours``), as the earlier deferred ones then are.
    Return the ids of the messages whose deliveries changed."""
    mine = {c.delivery_id: c for c in claimed}
    with db.write() as conn:
        waiting = [
            _Deferred(r.id, r.device_id, r.chat_id, r.message_id)
            for r in conn.execute(
                sa.select(
                    deliveries.c.id,
                    deliveries.c.device_id,
                    messages.c.chat_id,
                    deliveries.c.message_id,
                )
                .join(messages, messages.c.id == deliveries.c.message_id)
                .where(
                    deliveries.c.device_id.in_({c.target.device_id for c in claimed}),
                    deliveries.c.kind == DeliveryKind.ALERT,
                    deliveries.c.status == Status.DEFERRED,
                )
            )
        ]
        candidates = waiting + [
            _Deferred(c.delivery_id, c.target.device_id, c.chat_id, c.notification.message_id)
            for c in claimed
        ]
        collapsed = collapsed_by_quiet_hours(candidates)
        released = {"lease_until": None, "lease_owner": None, "updated_at": now}
        for delivery_id, item in mine.items():
            if delivery_id in collapsed:
                values: dict[str, object] = {"status": Status.SKIPPED, "last_error": COLLAPSED}
            else:
                values = {"status": Status.DEFERRED, "next_attempt_at": item.deferred_until}
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery_id, deliveries.c.lease_owner == owner)
                .values(**values, **released)
            )
        earlier = [r.id for r in waiting if r.id in collapsed]
        if earlier:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(earlier), deliveries.c.status == Status.DEFERRED)
                .values(status=Status.SKIPPED, last_error=COLLAPSED, updated_at=now)
            )
    return {r.message_id for r in candidates if r.id in mine or r.id in collapsed}


def _apply_email_digest(
    conn: Connection,
    rows: list[sa.Row[tuple[object, ...]]],
    owner: str,
    now: float,
    lease: dict[str, object],
    digest_seconds: float,
) -> tuple[list[sa.Row[tuple[object, ...]]], dict[int, list[sa.Row[tuple[object, ...]]]]]:
    """Carry out the policy's digest plan (``plan_email_digest``): hold back the emails it holds,
    and fold every waiting email of a leader's device and chat into the leader's digest."""
    email_rows = [r for r in rows if is_digestible(r.platform, r.kind)]
    if not email_rows:
        return rows, {}
    last_sent = {
        (r.device_id, r.chat_id): r.last_sent_at
        for r in conn.execute(
            sa.select(email_digests).where(
                email_digests.c.device_id.in_({r.device_id for r in email_rows})
            )
        )
    }
    plan = plan_email_digest(email_rows, last_sent, now, digest_seconds)
    held_ids = {delivery_id for delivery_id, _ in plan.held}
    kept = [r for r in rows if r.id not in held_ids]
    for delivery_id, opens_at in plan.held:
        conn.execute(
            deliveries.update()
            .where(deliveries.c.id == delivery_id)
            .values(
                status=Status.PENDING, next_attempt_at=opens_at, lease_until=None, lease_owner=None
            )
        )
    by_id = {r.id: r for r in email_rows}
    batches: dict[int, list[sa.Row[tuple[object, ...]]]] = {}
    for (device_id, chat_id), leader_id in plan.leaders.items():
        leader = by_id[leader_id]
        waiting_ids = (
            conn.execute(
                sa.select(deliveries.c.id)
                .join(messages, messages.c.id == deliveries.c.message_id)
                .where(digest_waiting(device_id, chat_id, leader_id))
            )
            .scalars()
            .all()
        )
        if not waiting_ids:
            continue
        conn.execute(
            deliveries.update()
            .where(deliveries.c.id.in_(waiting_ids))
            .values(status=Status.SENDING, **lease)
        )
        folded = conn.execute(_details_query(list(waiting_ids))).all()
        everything = sorted([*folded, leader], key=lambda r: r.message_id)
        newest = everything[-1]
        if newest.id != leader.id:
            # The digest is sent as its newest message; the rest ride along as "earlier".
            kept[kept.index(leader)] = newest
        batches[newest.id] = [r for r in everything if r.id != newest.id]
    return kept, batches


@dataclass
class Recorded:
    counts: dict[str, int]
    messages: set[int]  # alert deliveries of these messages changed: their senders may watch


def record_outcomes(
    db: Database,
    owner: str,
    results: Sequence[tuple[ClaimedDelivery, Outcome | None]],
    now: float,
    retry: RetryPolicy,
) -> Recorded:
    """Write each outcome (None = skipped by policy) while the lease is still ours, and what it
    says about its device (last success or failure) and its provider (``provider_health``): a
    few statements per batch, not one per delivery."""
    delivered: list[int] = []
    updates: list[dict[str, object]] = []
    dead_devices: dict[int, str] = {}
    digests_sent: set[tuple[int, int]] = set()
    heard = OutcomeNews()
    recorded = Recorded(counts={}, messages=set())
    for claimed, outcome in results:
        status, values = _row_update(claimed, outcome, now, retry)
        ids = (claimed.delivery_id, *claimed.batched)
        recorded.counts[status.value] = recorded.counts.get(status.value, 0) + len(ids)
        if outcome is not None:
            heard.add(claimed.target, outcome)
        if claimed.notification.kind is NotificationKind.ALERT and not claimed.is_test:
            recorded.messages.add(claimed.notification.message_id)
        if status == Status.DELIVERED:
            delivered.extend(ids)
            if claimed.target.platform is Platform.EMAIL:
                digests_sent.add((claimed.target.device_id, claimed.chat_id))
            continue
        if outcome is not None and outcome.kind is OutcomeKind.TOKEN_DEAD:
            dead_devices[claimed.target.device_id] = error_text(outcome)
        updates.extend({"b_id": i, "b_status": status, **values} for i in ids)
    mine = deliveries.c.lease_owner == owner
    with db.write() as conn:
        if delivered:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(delivered), mine)
                .values(
                    status=Status.DELIVERED,
                    attempts=deliveries.c.attempts + 1,
                    last_error=None,
                    lease_until=None,
                    lease_owner=None,
                    delivered_at=now,
                    updated_at=now,
                )
            )
        if updates:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == sa.bindparam("b_id"), mine)
                .values(
                    status=sa.bindparam("b_status"),
                    attempts=sa.bindparam("b_attempts"),
                    last_error=sa.bindparam("b_last_error"),
                    next_attempt_at=sa.bindparam("b_next_attempt_at"),
                    lease_until=None,
                    lease_owner=None,
                    updated_at=now,
                ),
                updates,
            )
        for device_id, reason in dead_devices.items():
            # A dead token is never tried again: the device goes inactive for every message.
            conn.execute(
                devices.update()
                .where(devices.c.id == device_id)
                .values(active=False, deactivated_reason=reason[:200], updated_at=now)
            )
        for device_id, chat_id in digests_sent:
            _mark_digest_sent(conn, db, device_id, chat_id, now)
        heard.write(conn, db, now)
    return recorded


def _mark_digest_sent(
    conn: Connection, db: Database, device_id: int, chat_id: int, now: float
) -> None:
    dialect_insert = postgresql.insert if db.is_postgres else sqlite.insert
    conn.execute(
        dialect_insert(email_digests)
        .values(device_id=device_id, chat_id=chat_id, last_sent_at=now)
        .on_conflict_do_update(index_elements=["device_id", "chat_id"], set_={"last_sent_at": now})
    )


def delivery_summaries(
    db: Database, message_ids: Sequence[int]
) -> list[tuple[int, int, int, dict[str, int]]]:
    """(message id, chat id, sender id, count per status) of each message's alert deliveries."""
    if not message_ids:
        return []
    with db.read() as conn:
        rows = conn.execute(
            sa.select(
                deliveries.c.message_id,
                messages.c.chat_id,
                messages.c.sender_id,
                deliveries.c.status,
                sa.func.count(),
            )
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(
                deliveries.c.message_id.in_(list(message_ids)),
                deliveries.c.kind == DeliveryKind.ALERT,
            )
            .group_by(
                deliveries.c.message_id,
                messages.c.chat_id,
                messages.c.sender_id,
                deliveries.c.status,
            )
        ).all()
    summaries: dict[int, tuple[int, int, dict[str, int]]] = {}
    for message_id, chat_id, sender_id, status, count in rows:
        summaries.setdefault(message_id, (chat_id, sender_id, {}))[2][status] = int(count)
    return [(m, c, s, counts) for m, (c, s, counts) in sorted(summaries.items())]


def _row_update(
    claimed: ClaimedDelivery, outcome: Outcome | None, now: float, retry: RetryPolicy
) -> tuple[Status, dict[str, object]]:
    attempts = claimed.attempts + 1
    if outcome is None:
        reason = claimed.skip or "skipped"
        return Status.SKIPPED, _values(claimed.attempts, reason, now)
    kind = outcome.kind
    if kind is OutcomeKind.DELIVERED:
        return Status.DELIVERED, {}
    if kind is OutcomeKind.TOKEN_DEAD:
        return Status.TOKEN_DEAD, _values(attempts, error_text(outcome), now)
    if kind is OutcomeKind.UNAVAILABLE:
        # Not an attempt: nothing was sent. Ask again later; configuring the provider fixes it.
        return Status.PENDING, _values(
            claimed.attempts, error_text(outcome), recheck_unavailable_at(now)
        )
    if kind is OutcomeKind.RETRY:
        if attempts >= retry.max_attempts:
            text = f"gave up after {attempts} attempts: {error_text(outcome)}"
            return Status.FAILED, _values(attempts, text, now)
        next_at = now + retry.delay(attempts, outcome.retry_after)
        return Status.RETRYING, _values(attempts, error_text(outcome), next_at)
    # REJECTED or MISCONFIGURED: retrying cannot help; say so loudly.
    log.error(
        "%s delivery %s %s: %s",
        claimed.target.platform,
        claimed.delivery_id,
        kind.value,
        outcome.reason,
    )
    return Status.FAILED, _values(attempts, error_text(outcome), now)


def _values(attempts: int, last_error: str, next_attempt_at: float) -> dict[str, object]:
    return {
        "b_attempts": attempts,
        "b_last_error": last_error[:500],
        "b_next_attempt_at": next_attempt_at,
    }


def release_deliveries(db: Database, delivery_ids: Sequence[int], owner: str, now: float) -> None:
    """Hand claimed-but-unsent rows back (shutdown): due again at once, attempts unchanged."""
    if not delivery_ids:
        return
    with db.write() as conn:
        conn.execute(
            deliveries.update()
            .where(deliveries.c.id.in_(list(delivery_ids)), deliveries.c.lease_owner == owner)
            .values(
                status=sa.case(
                    (deliveries.c.attempts > 0, Status.RETRYING.value), else_=Status.PENDING.value
                ),
                lease_until=None,
                lease_owner=None,
                next_attempt_at=now,
                updated_at=now,
            )
        )


def next_due_at(db: Database, now: float, owner: str | None = None) -> float | None:
    """When the next work falls due (None when nothing waits): the earliest waiting delivery or
    fan-out, or the earliest lease of another worker's claim to run out, which is when a dead
    worker's rows become ours to take."""
    others = sa.true() if owner is None else deliveries.c.lease_owner != owner
    others_outbox = (
        sa.true()
        if owner is None
        else outbox.c.lease_owner.is_(None) | (outbox.c.lease_owner != owner)
    )
    with db.read() as conn:
        values = conn.execute(
            sa.select(
                sa.select(sa.func.min(deliveries.c.next_attempt_at))
                .where(deliveries.c.status.in_(_WAITING))
                .scalar_subquery(),
                sa.select(sa.func.min(deliveries.c.lease_until))
                .where(deliveries.c.status == Status.SENDING, others)
                .scalar_subquery(),
                sa.select(sa.func.min(sa.func.coalesce(outbox.c.lease_until, outbox.c.due_at)))
                .where(outbox.c.state == OutboxState.PENDING, others_outbox)
                .scalar_subquery(),
            )
        ).one()
    found = [float(value) for value in values if value is not None]
    return min(found) if found else None
