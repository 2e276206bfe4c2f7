"""Test notifications: a device's owner asks for one, and hears how it went and what to do.

The domain never sends: ``request_test`` writes an outbox row of kind test (no message, one
device) and the engine sends it like any fan-out (``chinwag.fanout``). ``test_result`` reads
where that stands — the outbox row until it is expanded, then its one delivery row — and names
the outcome's class with the advice for it (``chinwag.push.model.ADVICE``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from chinwag.chat import fanout_requests, ratelimit
from chinwag.chat.errors import NotFound
from chinwag.chat.models import User
from chinwag.push.model import ADVICE, OutcomeKind
from chinwag.store.database import Database
from chinwag.store.schema import deliveries, devices, outbox
from chinwag.store.states import DeliveryKind, DeliveryStatus, OutboxState

# A test costs a provider request: a few a minute is plenty to diagnose with.
TEST_LIMIT = ratelimit.RateLimit("device-test", 10)

PROVIDER_NAMES = {
    "apns": "APNs",
    "fcm": "FCM",
    "webpush": "the Web Push service",
    "email": "the mail server",
    "webhook": "the webhook endpoint",
}
REFUSED_BY_POLICY = "the device is no longer active, verified or yours"


@dataclass(frozen=True)
class TestResult:
    test_id: int
    device_id: int
    delivery_id: int | None
    # delivered | failed | token_dead | retrying | pending | skipped
    status: str
    # False while the worker has not tried yet (the client should ask again).
    finished: bool
    outcome: OutcomeKind | None = None
    reason: str | None = None
    advice: str | None = None


def request_test(db: Database, user: User, device_id: int, now: float | None = None) -> int:
    """Ask the engine for a test notification to one of ``user``'s active devices; return the
    test's id. Another user's device is NotFound, like every device route; the requests of one
    user are rate limited (``TEST_LIMIT``)."""
    now = time.time() if now is None else now
    with db.read() as conn:
        mine = conn.execute(
            sa.select(devices.c.id).where(
                devices.c.id == device_id,
                devices.c.user_id == user.id,
                devices.c.active.is_(True),
            )
        ).first()
    if mine is None:
        raise NotFound(f"no device {device_id}")
    ratelimit.hit(db, TEST_LIMIT, str(user.id), now=now)
    with db.write() as conn:
        return fanout_requests.request_test(conn, device_id, user.id, now)


def test_result(db: Database, user: User, device_id: int, test_id: int) -> TestResult:
    """Where test ``test_id`` of ``user``'s device stands: two primary-key reads."""
    with db.read() as conn:
        asked = conn.execute(
            sa.select(outbox.c.state, outbox.c.expanded_through).where(
                outbox.c.id == test_id,
                outbox.c.kind == DeliveryKind.TEST,
                outbox.c.user_id == user.id,
                outbox.c.device_id == device_id,
            )
        ).first()
        if asked is None:
            raise NotFound(f"no test {test_id}")
        delivery = None
        if asked.state == OutboxState.DONE and asked.expanded_through:
            delivery = conn.execute(
                sa.select(
                    deliveries.c.id,
                    deliveries.c.status,
                    deliveries.c.last_error,
                    deliveries.c.platform,
                ).where(deliveries.c.id == asked.expanded_through)
            ).first()
    if asked.state != OutboxState.DONE:
        return TestResult(test_id, device_id, None, "pending", finished=False)
    if delivery is None:
        return TestResult(
            test_id, device_id, None, "skipped", finished=True, reason=REFUSED_BY_POLICY
        )
    status = DeliveryStatus(delivery.status)
    kind = outcome_class(status, delivery.last_error)
    finished = kind is not None or status is DeliveryStatus.SKIPPED
    advice = None
    if kind is not None:
        advice = ADVICE[kind].format(provider=PROVIDER_NAMES.get(delivery.platform, "the provider"))
    return TestResult(
        test_id,
        device_id,
        delivery.id,
        "pending" if status is DeliveryStatus.SENDING else status.value,
        finished=finished,
        outcome=kind,
        reason=delivery.last_error,
        advice=advice,
    )


def outcome_class(status: DeliveryStatus, last_error: str | None) -> OutcomeKind | None:
    """The class of a delivery's last outcome, from its status and ``last_error`` (which the
    engine writes as ``"<class>: <reason>"``); None while it has none."""
    if status is DeliveryStatus.DELIVERED:
        return OutcomeKind.DELIVERED
    if status is DeliveryStatus.TOKEN_DEAD:
        return OutcomeKind.TOKEN_DEAD
    if status is DeliveryStatus.RETRYING:
        return OutcomeKind.RETRY
    if not last_error or status in (DeliveryStatus.SENDING, DeliveryStatus.SKIPPED):
        return None
    if status is DeliveryStatus.FAILED and last_error.startswith("gave up"):
        return OutcomeKind.RETRY  # attempts ran out
    prefix = last_error.split(":", 1)[0]
    try:
        return OutcomeKind(prefix)
    except ValueError:
        return None


def wait_for_result(
    db: Database,
    user: User,
    device_id: int,
    test_id: int,
    wait_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> TestResult:
    """``test_result`` once the worker has tried the test, or as it stands after
    ``wait_seconds``; asked every 50 ms at first, then less often (at most every 0.5 s)."""
    deadline = clock() + wait_seconds
    pause = 0.05
    while True:
        result = test_result(db, user, device_id, test_id)
        left = deadline - clock()
        if result.finished or left <= 0:
            return result
        sleep(min(pause, left))
        pause = min(pause * 2, 0.5)
