"""Outbox rows → delivery rows: claim a fan-out with a lease, expand it in batches.

A fan-out is a message's alerts, a reader's clear updates, a deleted message's removals or one
device's test notification (``outbox.kind``); which devices each reaches is
``chinwag.fanout.policy.recipient_devices``. A test has no message: it becomes at most one
delivery row, whose id it keeps in ``expanded_through`` so the test route can find its outcome.

Expansion is ``INSERT … SELECT`` straight in the database, a batch of devices at a time, in the
order of the policy's cursor (``policy.Cursor``: for an alert, members by user id and each one's
devices by id), with the last (user id, device id) kept in ``outbox.expanded_user_id`` and
``expanded_through``: a 50,000-device group never becomes 50,000 Python objects, each batch reads
its own rows only (an index seeks the cursor), and a worker killed mid-way leaves a cursor the
next one resumes from. ``ON CONFLICT DO NOTHING`` on (message, device) makes a repeated batch
harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from chinwag.fanout.policy import (
    MESSAGE_DELETED,
    Cursor,
    cancelled_by_removal,
    recipient_devices,
    reconsidered,
)
from chinwag.store.database import Database
from chinwag.store.schema import deliveries, messages, outbox
from chinwag.store.states import DeliveryKind, DeliveryStatus, OutboxState


class LeaseLost(RuntimeError):
    """Another worker holds the row now (our lease expired); stop touching it."""


@dataclass(frozen=True, slots=True)
class OutboxClaim:
    outbox_id: int
    message_id: int
    chat_id: int
    sender_id: int
    expanded_through: int
    kind: DeliveryKind = DeliveryKind.ALERT
    user_id: int = 0  # the reader, for a clear; the device's owner, for a test
    device_id: int = 0  # the device, for a test (message_id, chat_id and sender_id are 0)
    expanded_user_id: int = 0  # with expanded_through, the cursor of the expansion

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.expanded_user_id, self.expanded_through)


def claim_outbox(
    db: Database, owner: str, now: float, lease_seconds: float, limit: int
) -> list[OutboxClaim]:
    """Take up to ``limit`` due fan-outs that nobody holds (or whose holder's lease ran out)."""
    due = (
        (outbox.c.state == OutboxState.PENDING)
        & (outbox.c.due_at <= now)
        & (outbox.c.lease_until.is_(None) | (outbox.c.lease_until < now))
    )
    candidates = sa.select(outbox.c.id).where(due).order_by(outbox.c.id).limit(limit)
    if db.is_postgres:
        candidates = candidates.with_for_update(skip_locked=True)
    with db.write() as conn:
        claimed = conn.execute(
            outbox.update()
            .where(outbox.c.id.in_(candidates.scalar_subquery()))
            .values(lease_until=now + lease_seconds, lease_owner=owner, updated_at=now)
            .returning(
                outbox.c.id,
                outbox.c.message_id,
                outbox.c.expanded_through,
                outbox.c.expanded_user_id,
                outbox.c.kind,
                outbox.c.user_id,
                outbox.c.device_id,
            )
        ).all()
        if not claimed:
            return []
        by_message = {
            row.id: row
            for row in conn.execute(
                sa.select(messages.c.id, messages.c.chat_id, messages.c.sender_id).where(
                    messages.c.id.in_([c.message_id for c in claimed if c.message_id])
                )
            )
        }
    return [
        OutboxClaim(
            outbox_id=c.id,
            message_id=c.message_id or 0,
            chat_id=by_message[c.message_id].chat_id if c.message_id else 0,
            sender_id=by_message[c.message_id].sender_id if c.message_id else 0,
            expanded_through=c.expanded_through,
            expanded_user_id=c.expanded_user_id,
            kind=DeliveryKind(c.kind),
            user_id=c.user_id,
            device_id=c.device_id or 0,
        )
        for c in sorted(claimed, key=lambda c: c.id)
    ]


def expand_batch(
    db: Database,
    claim: OutboxClaim,
    owner: str,
    now: float,
    lease_seconds: float,
    batch_size: int,
    room: Mapping[str, int] | None = None,
    claimed: list[int] | None = None,
) -> tuple[OutboxClaim, int, bool]:
    """Write the next batch of delivery rows; return the advanced claim, rows added, and done.

    With ``room`` (platform: how many), the batch's first rows of each platform, up to that
    many, are written already claimed by ``owner`` (`sending`, under its lease), and their ids
    added to ``claimed``: the worker sends them without a claim of its own (see
    ``deliveries.load_claimed``). The other rows are written `pending`, for any worker."""
    if claim.kind is DeliveryKind.TEST:
        return _expand_test(db, claim, owner, now, lease_seconds)
    with db.write() as conn:
        _extend_lease(conn, claim, owner, now, lease_seconds)
        if claim.kind is DeliveryKind.RECONSIDER:
            # No deliveries to write: the user's deferred alerts fall due now, and the claim of
            # each asks the policy again (sent, or deferred to the new window's end).
            conn.execute(
                deliveries.update()
                .where(reconsidered(claim.user_id))
                .values(next_attempt_at=now, updated_at=now)
            )
            conn.execute(
                outbox.update()
                .where(outbox.c.id == claim.outbox_id)
                .values(state=OutboxState.DONE, lease_until=None, lease_owner=None, updated_at=now)
            )
            return claim, 0, True
        if claim.kind is DeliveryKind.REMOVAL and claim.expanded_through == 0:
            # The deleted message's alerts not sent yet never will be.
            conn.execute(
                deliveries.update()
                .where(cancelled_by_removal(claim.message_id))
                .values(status=DeliveryStatus.SKIPPED, last_error=MESSAGE_DELETED, updated_at=now)
            )
        # The batch's last row is the new cursor; the rows written are those up to it, not the
        # first batch_size again: on PostgreSQL a device committed between the two statements
        # would push the last one out of a LIMIT, and the cursor would pass it unwritten.
        batch = conn.execute(recipient_devices(claim, claim.cursor).limit(batch_size)).all()
        count = len(batch)
        through = claim.cursor
        if batch:
            through = Cursor(batch[-1].user_id, batch[-1].device_id)
            chosen = recipient_devices(claim, claim.cursor, through).subquery()
            take = _first_of_each_platform(batch, room or {})
            mine = chosen.c.device_id.in_(take)
            rows = sa.select(
                sa.literal(claim.message_id, type_=sa.BigInteger).label("message_id"),
                chosen.c.device_id,
                chosen.c.user_id,
                chosen.c.platform,
                sa.literal(claim.kind.value).label("kind"),
                _if_taken(
                    mine, take, DeliveryStatus.SENDING.value, DeliveryStatus.PENDING.value
                ).label("status"),
                sa.literal(0).label("attempts"),
                sa.literal(now, type_=sa.Float).label("next_attempt_at"),
                _if_taken(mine, take, now + lease_seconds).label("lease_until"),
                _if_taken(mine, take, owner).label("lease_owner"),
                sa.literal(now, type_=sa.Float).label("created_at"),
                sa.literal(now, type_=sa.Float).label("updated_at"),
            ).where(
                chosen.c.device_id > 0
            )  # a WHERE keeps SQLite's INSERT…SELECT…ON CONFLICT parseable
            insert = _insert_ignoring_duplicates(db).from_select(
                [
                    "message_id",
                    "device_id",
                    "user_id",
                    "platform",
                    "kind",
                    "status",
                    "attempts",
                    "next_attempt_at",
                    "lease_until",
                    "lease_owner",
                    "created_at",
                    "updated_at",
                ],
                rows,
            )
            if take and claimed is not None:
                # Only the rows inserted come back: a repeated batch's rows, written by an
                # earlier worker, are not ours and are claimed as usual.
                written = conn.execute(insert.returning(deliveries.c.id, deliveries.c.status))
                claimed.extend(r.id for r in written if r.status == DeliveryStatus.SENDING)
            else:
                conn.execute(insert)
        done = count < batch_size
        conn.execute(
            outbox.update()
            .where(outbox.c.id == claim.outbox_id)
            .values(
                expanded_through=through.device_id,
                expanded_user_id=through.user_id,
                state=OutboxState.DONE if done else OutboxState.PENDING,
                lease_until=None if done else now + lease_seconds,
                lease_owner=None if done else owner,
                updated_at=now,
            )
        )
    advanced = replace(claim, expanded_through=through.device_id, expanded_user_id=through.user_id)
    return advanced, count, done


def _expand_test(
    db: Database, claim: OutboxClaim, owner: str, now: float, lease_seconds: float
) -> tuple[OutboxClaim, int, bool]:
    """A test's one delivery row (none if the policy refuses the device), written with the
    outbox row's completion in one transaction: it cannot be written twice."""
    with db.write() as conn:
        _extend_lease(conn, claim, owner, now, lease_seconds)
        device = conn.execute(recipient_devices(claim, Cursor())).first()
        delivery_id = 0
        if device is not None:
            delivery_id = conn.execute(
                deliveries.insert()
                .values(
                    message_id=None,
                    device_id=device.device_id,
                    user_id=device.user_id,
                    platform=device.platform,
                    kind=DeliveryKind.TEST.value,
                    status=DeliveryStatus.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
                .returning(deliveries.c.id)
            ).scalar_one()
        conn.execute(
            outbox.update()
            .where(outbox.c.id == claim.outbox_id)
            .values(
                expanded_through=delivery_id,
                state=OutboxState.DONE,
                lease_until=None,
                lease_owner=None,
                updated_at=now,
            )
        )
    return replace(claim, expanded_through=delivery_id), int(device is not None), True


def _first_of_each_platform(
    batch: Sequence[sa.Row[tuple[int, int, str]]], room: Mapping[str, int]
) -> list[int]:
    """The device ids of the batch's first rows of each platform, up to its room."""
    left = dict(room)
    taken: list[int] = []
    for row in batch:
        if left.get(row.platform, 0) > 0:
            left[row.platform] -= 1
            taken.append(row.device_id)
    return taken


def _if_taken(
    mine: sa.ColumnElement[bool], take: list[int], value: object, otherwise: object = None
) -> sa.ColumnElement[Any]:
    """``value`` for the rows written claimed (``mine``), ``otherwise`` for the rest."""
    rest = sa.null() if otherwise is None else sa.literal(otherwise)
    if not take:
        return rest
    return sa.case((mine, sa.literal(value)), else_=rest)


def release_outbox(db: Database, claims: list[OutboxClaim], owner: str, now: float) -> None:
    """Give unfinished fan-outs back at shutdown so another worker resumes them at once."""
    if not claims:
        return
    with db.write() as conn:
        conn.execute(
            outbox.update()
            .where(
                outbox.c.id.in_([c.outbox_id for c in claims]),
                outbox.c.lease_owner == owner,
            )
            .values(lease_until=None, lease_owner=None, updated_at=now)
        )


def _extend_lease(
    conn: Connection, claim: OutboxClaim, owner: str, now: float, lease_seconds: float
) -> None:
    held = conn.execute(
        outbox.update()
        .where(
            outbox.c.id == claim.outbox_id,
            outbox.c.lease_owner == owner,
            outbox.c.state == OutboxState.PENDING,
        )
        .values(lease_until=now + lease_seconds, updated_at=now)
    ).rowcount
    if not held:
        raise LeaseLost(f"outbox {claim.outbox_id} is no longer ours")


def _insert_ignoring_duplicates(db: Database) -> sa.Insert:
    if db.is_postgres:
        return postgresql.insert(deliveries).on_conflict_do_nothing(
            index_elements=["message_id", "device_id", "kind"]
        )
    return sqlite.insert(deliveries).on_conflict_do_nothing(
        index_elements=["message_id", "device_id", "kind"]
    )
