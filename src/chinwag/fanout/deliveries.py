"""Delivery rows: claim due ones with a lease, and record each provider outcome.

A row is due when it is pending or retrying and its time has come, or when it is "sending" under
a lease that ran out (its worker died). Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so
several workers take disjoint rows without waiting on each other; on SQLite the claim runs under
``BEGIN IMMEDIATE``, which serializes writers. Outcomes are written only while the lease is still
ours, so a worker that lost its lease cannot overwrite its successor's record.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from chinwag.fanout.policy import skip_reason
from chinwag.push.model import (
    DeviceTarget,
    Notification,
    Outcome,
    OutcomeKind,
    Platform,
    delivery_uuid,
)
from chinwag.store.database import Database
from chinwag.store.schema import chats, deliveries, devices, memberships, messages, users

log = logging.getLogger("chinwag.fanout")

# A provider that is not configured is asked again this often; the row stays pending meanwhile.
UNAVAILABLE_RECHECK_SECONDS = 30.0


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


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    delivery_id: int
    attempts: int  # before this attempt
    target: DeviceTarget
    notification: Notification
    skip: str | None  # set when policy says this one must not be sent any more


def claim_deliveries(
    db: Database, owner: str, now: float, lease_seconds: float, limit: int
) -> list[ClaimedDelivery]:
    due = (
        deliveries.c.status.in_(("pending", "retrying")) & (deliveries.c.next_attempt_at <= now)
    ) | ((deliveries.c.status == "sending") & (deliveries.c.lease_until < now))
    candidates = sa.select(deliveries.c.id).where(due).order_by(deliveries.c.id).limit(limit)
    if db.is_postgres:
        candidates = candidates.with_for_update(skip_locked=True)
    with db.write() as conn:
        ids = [
            row.id
            for row in conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(candidates.scalar_subquery()))
                .values(
                    status="sending",
                    lease_until=now + lease_seconds,
                    lease_owner=owner,
                    updated_at=now,
                )
                .returning(deliveries.c.id)
            )
        ]
        if not ids:
            return []
        sender = users.alias("sender")
        rows = conn.execute(
            sa.select(
                deliveries.c.id,
                deliveries.c.attempts,
                deliveries.c.message_id,
                deliveries.c.user_id,
                devices.c.id.label("device_id"),
                devices.c.platform,
                devices.c.token,
                devices.c.app,
                devices.c.active,
                devices.c.user_id.label("device_owner_id"),
                messages.c.chat_id,
                messages.c.body,
                chats.c.title,
                sender.c.display_name.label("sender_name"),
                memberships.c.user_id.label("member_id"),
                memberships.c.muted,
            )
            .join(devices, devices.c.id == deliveries.c.device_id)
            .join(messages, messages.c.id == deliveries.c.message_id)
            .join(chats, chats.c.id == messages.c.chat_id)
            .join(sender, sender.c.id == messages.c.sender_id)
            .outerjoin(
                memberships,
                (memberships.c.chat_id == messages.c.chat_id)
                & (memberships.c.user_id == deliveries.c.user_id),
            )
            .where(deliveries.c.id.in_(ids))
            .order_by(deliveries.c.id)
        ).all()
    return [
        ClaimedDelivery(
            delivery_id=row.id,
            attempts=row.attempts,
            target=DeviceTarget(
                device_id=row.device_id,
                platform=Platform(row.platform),
                token=row.token,
                delivery_id=delivery_uuid(row.message_id, row.device_id),
                app=row.app,
            ),
            notification=Notification(
                chat_id=row.chat_id,
                message_id=row.message_id,
                chat_title=row.title,
                sender_name=row.sender_name,
                preview=row.body,
            ),
            skip=skip_reason(
                device_active=bool(row.active),
                device_owner_id=row.device_owner_id,
                recipient_id=row.user_id,
                is_member=row.member_id is not None,
                muted=bool(row.muted),
            ),
        )
        for row in rows
    ]


def record_outcomes(
    db: Database,
    owner: str,
    results: Sequence[tuple[ClaimedDelivery, Outcome | None]],
    now: float,
    retry: RetryPolicy,
) -> dict[str, int]:
    """Write each outcome (None = skipped by policy); return how many rows got each status."""
    delivered: list[int] = []
    updates: list[dict[str, object]] = []
    dead_devices: dict[int, str] = {}
    counts: dict[str, int] = {}
    for claimed, outcome in results:
        status, values = _row_update(claimed, outcome, now, retry)
        counts[status] = counts.get(status, 0) + 1
        if status == "delivered":
            delivered.append(claimed.delivery_id)
            continue
        if outcome is not None and outcome.kind is OutcomeKind.TOKEN_DEAD:
            dead_devices[claimed.target.device_id] = _error_text(outcome)
        updates.append({"b_id": claimed.delivery_id, "b_status": status, **values})
    mine = deliveries.c.lease_owner == owner
    with db.write() as conn:
        if delivered:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(delivered), mine)
                .values(
                    status="delivered",
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
    return counts


def _row_update(
    claimed: ClaimedDelivery, outcome: Outcome | None, now: float, retry: RetryPolicy
) -> tuple[str, dict[str, object]]:
    attempts = claimed.attempts + 1
    if outcome is None:
        reason = claimed.skip or "skipped"
        return "skipped", _values(claimed.attempts, reason, now)
    kind = outcome.kind
    if kind is OutcomeKind.DELIVERED:
        return "delivered", {}
    if kind is OutcomeKind.TOKEN_DEAD:
        return "token_dead", _values(attempts, _error_text(outcome), now)
    if kind is OutcomeKind.UNAVAILABLE:
        # Not an attempt: nothing was sent. Ask again later; configuring the provider fixes it.
        return "pending", _values(
            claimed.attempts, _error_text(outcome), now + UNAVAILABLE_RECHECK_SECONDS
        )
    if kind is OutcomeKind.RETRY:
        if attempts >= retry.max_attempts:
            text = f"gave up after {attempts} attempts: {_error_text(outcome)}"
            return "failed", _values(attempts, text, now)
        next_at = now + retry.delay(attempts, outcome.retry_after)
        return "retrying", _values(attempts, _error_text(outcome), next_at)
    # REJECTED or MISCONFIGURED: retrying cannot help; say so loudly.
    log.error(
        "%s delivery %s %s: %s",
        claimed.target.platform,
        claimed.delivery_id,
        kind.value,
        outcome.reason,
    )
    return "failed", _values(attempts, _error_text(outcome), now)


def _values(attempts: int, last_error: str, next_attempt_at: float) -> dict[str, object]:
    return {
        "b_attempts": attempts,
        "b_last_error": last_error[:500],
        "b_next_attempt_at": next_attempt_at,
    }


def _error_text(outcome: Outcome) -> str:
    status = f" (HTTP {outcome.status})" if outcome.status else ""
    return f"{outcome.kind.value}: {outcome.reason}{status}"


def release_deliveries(db: Database, delivery_ids: Sequence[int], owner: str, now: float) -> None:
    """Hand claimed-but-unsent rows back (shutdown): due again at once, attempts unchanged."""
    if not delivery_ids:
        return
    with db.write() as conn:
        conn.execute(
            deliveries.update()
            .where(deliveries.c.id.in_(list(delivery_ids)), deliveries.c.lease_owner == owner)
            .values(
                status=sa.case((deliveries.c.attempts > 0, "retrying"), else_="pending"),
                lease_until=None,
                lease_owner=None,
                next_attempt_at=now,
                updated_at=now,
            )
        )


def next_due_at(db: Database, now: float) -> float | None:
    """When the earliest waiting delivery falls due (None when nothing waits)."""
    with db.read() as conn:
        value = conn.execute(
            sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                deliveries.c.status.in_(("pending", "retrying"))
            )
        ).scalar()
    return float(value) if value is not None else None
