"""Mails the verification codes of new email devices, through the same SMTP sender as
notifications, and records each mailing's outcome in ``device_verifications``.

It runs beside the fan-out worker in the worker process (``chinwag worker``). Rows are claimed with
a lease like deliveries, so a killed worker's claim expires and another worker mails the code; the
code is cleared once the mail went out, leaving only its digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import sqlalchemy as sa

from chinwag.fanout.deliveries import RetryPolicy
from chinwag.fanout.policy import recheck_unavailable_at
from chinwag.push.model import (
    DeviceTarget,
    Dispatcher,
    Notification,
    NotificationKind,
    Outcome,
    OutcomeKind,
    Platform,
    delivery_uuid,
)
from chinwag.store.database import Database
from chinwag.store.schema import device_verifications, devices
from chinwag.store.states import VerificationStatus as Mailing

log = logging.getLogger("chinwag.verification")


@dataclass(frozen=True, slots=True)
class ClaimedCode:
    device_id: int
    address: str
    code: str
    send_attempts: int


def claim_codes(
    db: Database, owner: str, now: float, lease_seconds: float, limit: int = 50
) -> list[ClaimedCode]:
    table = device_verifications.c
    due = (table.status == Mailing.PENDING) & (table.next_attempt_at <= now)
    due |= (table.status == Mailing.SENDING) & (table.lease_until < now)
    candidates = sa.select(table.device_id).where(due).order_by(table.device_id).limit(limit)
    if db.is_postgres:
        candidates = candidates.with_for_update(skip_locked=True)
    with db.write() as conn:
        ids = [
            row.device_id
            for row in conn.execute(
                device_verifications.update()
                .where(table.device_id.in_(candidates.scalar_subquery()))
                .values(status=Mailing.SENDING, lease_until=now + lease_seconds, lease_owner=owner)
                .returning(table.device_id)
            )
        ]
        if not ids:
            return []
        rows = conn.execute(
            sa.select(table.device_id, table.code, table.send_attempts, devices.c.token)
            .join(devices, devices.c.id == table.device_id)
            .where(table.device_id.in_(ids), devices.c.platform == Platform.EMAIL.value)
        ).all()
    return [
        ClaimedCode(row.device_id, row.token, row.code, row.send_attempts)
        for row in rows
        if row.code is not None
    ]


def record_code_outcome(
    db: Database, owner: str, claimed: ClaimedCode, outcome: Outcome, retry: RetryPolicy
) -> None:
    now = time.time()
    attempts = claimed.send_attempts + 1
    text = f"{outcome.kind.value}: {outcome.reason}"
    if outcome.kind is OutcomeKind.DELIVERED:
        values: dict[str, object] = {"status": Mailing.SENT, "sent_at": now, "code": None}
        values.update(last_error=None)
    elif outcome.kind is OutcomeKind.UNAVAILABLE:
        values = {"status": Mailing.PENDING, "next_attempt_at": recheck_unavailable_at(now)}
        values.update(last_error=text[:500])
        attempts -= 1  # nothing was sent
    elif outcome.kind is OutcomeKind.RETRY and attempts < retry.max_attempts:
        next_at = now + retry.delay(attempts, outcome.retry_after)
        values = {"status": Mailing.PENDING, "next_attempt_at": next_at, "last_error": text[:500]}
    else:
        log.warning("verification email for device %s failed: %s", claimed.device_id, text)
        values = {"status": Mailing.FAILED, "code": None, "last_error": text[:500]}
    with db.write() as conn:
        conn.execute(
            device_verifications.update()
            .where(
                device_verifications.c.device_id == claimed.device_id,
                device_verifications.c.lease_owner == owner,
            )
            .values(send_attempts=attempts, lease_until=None, lease_owner=None, **values)
        )


def verification_notification(code: str) -> Notification:
    return Notification(
        chat_id=0,
        message_id=0,
        chat_title="Your chinwag verification code",
        sender_name="chinwag",
        preview=code,
        kind=NotificationKind.VERIFICATION,
    )


class VerificationMailer:
    """Claims due codes and mails them; one step at a time, or in a loop beside the worker."""

    def __init__(
        self,
        db: Database,
        sender: Dispatcher,
        owner: str,
        *,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.db = db
        self.sender = sender
        self.owner = f"{owner}:verify"
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.retry = retry or RetryPolicy()

    async def step(self) -> int:
        """Mail every due code once; returns how many were tried."""
        claimed = await asyncio.to_thread(
            claim_codes, self.db, self.owner, time.time(), self.lease_seconds
        )
        outcomes = await asyncio.gather(*(self._send(item) for item in claimed))
        for item, outcome in zip(claimed, outcomes, strict=True):
            await asyncio.to_thread(
                record_code_outcome, self.db, self.owner, item, outcome, self.retry
            )
        return len(claimed)

    async def _send(self, item: ClaimedCode) -> Outcome:
        target = DeviceTarget(
            device_id=item.device_id,
            platform=Platform.EMAIL,
            token=item.address,
            delivery_id=delivery_uuid(0, item.device_id, f"verify-{item.send_attempts}"),
        )
        try:
            return await self.sender.send(target, verification_notification(item.code))
        except Exception as exc:  # a sender bug must not stop the mailer
            log.exception("verification email for device %s raised", item.device_id)
            return Outcome(OutcomeKind.RETRY, reason=f"internal_error: {type(exc).__name__}")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                log.exception("verification mailing failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)
