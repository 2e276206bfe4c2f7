"""The worker's heartbeat: one write extends every claim a live worker still holds.

Leases are short (``CHINWAG_LEASE_SECONDS``, 10 s by default) so that a dead worker's claims run
out within seconds. A live worker keeps its own alive by renewing them every third of a lease,
whatever it is waiting for: a slow provider, a queue of SMTP sessions, its own shutdown grace.
Only rows still ``sending`` (or ``pending`` outbox rows) under this owner are renewed; a row
another worker took after our lease ran out is left alone, and the caller learns which rows are
no longer ours. Both filters start from the status indexes, and the rows in flight are few.
"""

from __future__ import annotations

from dataclasses import dataclass

from chinwag.store.database import Database
from chinwag.store.schema import deliveries, outbox
from chinwag.store.states import DeliveryStatus, OutboxState


@dataclass(frozen=True, slots=True)
class HeldLeases:
    deliveries: frozenset[int]
    outbox: frozenset[int]


def renew_leases(db: Database, owner: str, now: float, lease_seconds: float) -> HeldLeases:
    """Extend every delivery and outbox lease ``owner`` holds to ``now + lease_seconds``."""
    until = now + lease_seconds
    with db.write() as conn:
        held_deliveries = conn.execute(
            deliveries.update()
            .where(deliveries.c.status == DeliveryStatus.SENDING, deliveries.c.lease_owner == owner)
            .values(lease_until=until)
            .returning(deliveries.c.id)
        ).scalars()
        delivery_ids = frozenset(held_deliveries)
        held_outbox = conn.execute(
            outbox.update()
            .where(outbox.c.state == OutboxState.PENDING, outbox.c.lease_owner == owner)
            .values(lease_until=until)
            .returning(outbox.c.id)
        ).scalars()
        outbox_ids = frozenset(held_outbox)
    return HeldLeases(deliveries=delivery_ids, outbox=outbox_ids)
