"""Asking the fan-out engine to notify: the chat layer's only way to reach devices.

A change that should notify someone writes an outbox row of a kind in its own transaction: a new
message (alert), a read marker moved (clear, for the reader's devices), a message deleted
(removal), quiet hours changed (reconsider: the user's deferred alerts are decided again), a
device's owner asking for a test notification (test, about no message). The engine
(``chinwag.fanout``) claims the row and decides, by its policy, which devices get what; the chat
layer never writes delivery rows itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from chinwag.store.schema import deliveries, devices, outbox
from chinwag.store.states import DeliveryKind, DeliveryStatus, OutboxState

_INSERT_OUTBOX = outbox.insert()  # built once: a send runs it


def request_fanout(
    conn: Connection, message_id: int, kind: DeliveryKind, now: float, user_id: int = 0
) -> None:
    """Queue a fan-out of ``kind`` about a message (``user_id``: the reader, for a clear).

    Asking twice for the same one is harmless: a reader who left and rejoined a chat reads its
    messages again, and their devices already had that clear. A clear for a reader without an
    active device is not queued at all: it could reach nobody, and most reads are by such
    readers (a web client's), one outbox row and one claim each for the worker otherwise.
    """
    if kind is DeliveryKind.CLEAR and not _has_active_device(conn, user_id):
        return
    values = {
        "message_id": message_id,
        "kind": kind.value,
        "user_id": user_id,
        "state": OutboxState.PENDING.value,
        "due_at": now,
        "created_at": now,
        "updated_at": now,
    }
    if kind is DeliveryKind.ALERT:  # one per message, written with it: never a duplicate
        conn.execute(_INSERT_OUTBOX, values)
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(outbox)
        .values(values)
        .on_conflict_do_nothing(index_elements=["message_id", "kind", "user_id"])
    )


def _has_active_device(conn: Connection, user_id: int) -> bool:
    found = conn.execute(
        sa.select(devices.c.id)
        .where(devices.c.user_id == user_id, devices.c.active.is_(True))
        .limit(1)
    ).first()
    return found is not None


def request_reconsider(conn: Connection, user_id: int, now: float) -> int | None:
    """Ask the engine to decide again now about the user's deferred alerts (their quiet hours
    changed); return the message the request is filed under, None when nothing was deferred.
    An outbox row needs a message: the latest of those alerts' serves, and a second change
    re-arms the same row."""
    message_id = conn.execute(
        sa.select(sa.func.max(deliveries.c.message_id)).where(
            deliveries.c.user_id == user_id,
            deliveries.c.status == DeliveryStatus.DEFERRED,
        )
    ).scalar()
    if message_id is None:
        return None
    again = {
        "state": OutboxState.PENDING.value,
        "expanded_through": 0,
        "due_at": now,
        "lease_until": None,
        "lease_owner": None,
        "updated_at": now,
    }
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(outbox)
        .values(
            message_id=message_id,
            kind=DeliveryKind.RECONSIDER.value,
            user_id=user_id,
            created_at=now,
            **again,
        )
        .on_conflict_do_update(index_elements=["message_id", "kind", "user_id"], set_=again)
    )
    return int(message_id)


def request_test(conn: Connection, device_id: int, owner_id: int, now: float) -> int:
    """Queue a test notification to one device; return the outbox row's id (the test's id)."""
    test_id: int = conn.execute(
        outbox.insert()
        .values(
            message_id=None,
            kind=DeliveryKind.TEST.value,
            user_id=owner_id,
            device_id=device_id,
            state=OutboxState.PENDING.value,
            due_at=now,
            created_at=now,
            updated_at=now,
        )
        .returning(outbox.c.id)
    ).scalar_one()
    return test_id


def cancel_alerts(conn: Connection, message_id: int, now: float) -> bool:
    """Cancel a message's alert fan-out if it is still to expand; return whether any of its
    deliveries may exist (its expansion had begun or was done), which a removal then undoes."""
    cancelled = conn.execute(
        outbox.update()
        .where(
            outbox.c.message_id == message_id,
            outbox.c.kind == DeliveryKind.ALERT,
            outbox.c.state == OutboxState.PENDING,
        )
        .values(
            state=OutboxState.CANCELLED.value, lease_until=None, lease_owner=None, updated_at=now
        )
        .returning(outbox.c.expanded_through)
    ).first()
    return cancelled is None or cancelled.expanded_through > 0


def alert_state(conn: Connection, message_id: int) -> str | None:
    """The state of a message's own (alert) fan-out."""
    state: str | None = conn.execute(
        sa.select(outbox.c.state).where(
            outbox.c.message_id == message_id, outbox.c.kind == DeliveryKind.ALERT
        )
    ).scalar_one_or_none()
    return state
