"""Leases against real databases: the heartbeat renews only the worker's own claims, an idle
worker wakes when another's lease runs out, and claims stop at a platform's free slots."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from tests.conftest import Api
from tests.fanout.recording import RecordingDispatcher
from tests.support.seed import add_devices

from chinwag.fanout import Worker, WorkerOptions
from chinwag.fanout.deliveries import ClaimNotLoaded, claim_deliveries, next_due_at
from chinwag.fanout.leases import renew_leases
from chinwag.fanout.outbox import claim_outbox, expand_batch
from chinwag.store.database import Database
from chinwag.store.schema import deliveries, rate_limits


def _expanded_message(api: Api, db: Database, apns: int, emails: int = 0) -> None:
    """One message to a member with ``apns`` APNs and ``emails`` email devices, expanded."""
    sender, member = api.user("sender"), api.user("member")
    member_id = member.get("/v1/me").json()["id"]
    add_devices(db, member_id, "apns", [f"{i:064x}" for i in range(1, apns + 1)])
    if emails:
        add_devices(db, member_id, "email", [f"m{i}@example.com" for i in range(emails)])
    chat = sender.post("/v1/chats", json={"title": "T", "members": ["member"]}).json()
    sender.post(f"/v1/chats/{chat['id']}/messages", json={"body": "hi"})
    (claim,) = claim_outbox(db, "expander", time.time(), 10, 1)
    expand_batch(db, claim, "expander", time.time(), 10, 1000)


def _leases(db: Database) -> dict[int, tuple[str | None, float | None]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.lease_owner, deliveries.c.lease_until)
        )
        return {row.id: (row.lease_owner, row.lease_until) for row in rows}


def test_heartbeat_renews_own_claims_and_leaves_a_successors_alone(api: Api, db: Database) -> None:
    """A worker whose lease ran out renews the rows still its own, not one another worker took."""
    _expanded_message(api, db, apns=3)
    now = time.time()
    assert len(claim_deliveries(db, "a", now, 10, 10)) == 3
    (taken,) = claim_deliveries(db, "b", now + 20, 10, 1)  # a's leases ran out: b takes one
    held = renew_leases(db, "a", now + 21, 10)
    leases = _leases(db)
    assert held.deliveries == set(leases) - {taken.delivery_id}
    assert all(leases[i] == ("a", now + 31) for i in held.deliveries)
    assert leases[taken.delivery_id] == ("b", now + 30)


def test_idle_worker_wakes_when_another_workers_lease_runs_out(api: Api, db: Database) -> None:
    """next_due_at names the moment a dead worker's claim becomes free, not a sweep later."""
    _expanded_message(api, db, apns=2)
    now = time.time()
    claim_deliveries(db, "dead", now, 10, 10)
    assert next_due_at(db, now, owner="alive") == now + 10
    assert next_due_at(db, now, owner="dead") is None  # its own claims are not work to wait for


def test_claims_stop_at_a_platforms_free_slots(api: Api, db: Database) -> None:
    """With room for 2 emails, a claim takes 2 of the 6 due emails and every due APNs row."""
    _expanded_message(api, db, apns=5, emails=6)
    claimed = claim_deliveries(db, "a", time.time(), 10, 100, room={"email": 2})
    platforms = sorted(c.target.platform.value for c in claimed)
    assert platforms == ["apns"] * 5 + ["email"] * 2
    assert claim_deliveries(db, "a", time.time(), 10, 100, room={"email": 0, "apns": 0}) == []


def test_first_step_prunes_however_recently_the_machine_booted(db: Database) -> None:
    """The first prune runs at once even when monotonic() is still below prune_every."""
    with db.write() as conn:
        conn.execute(rate_limits.insert().values(key="old", window_start=0.0, count=1))
    options = WorkerOptions(prune_every=time.monotonic() + 3600)
    asyncio.run(Worker(db, RecordingDispatcher(), options).run_until_idle(limit_seconds=10))
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rate_limits)).scalar() == 0


class _ReadsFailOnce(Database):
    """The real database, but the next read fails as when PostgreSQL restarts between a claim's
    commit and the read of what to send."""

    fail_next_read = False

    def read(self):  # type: ignore[no-untyped-def]
        if self.fail_next_read:
            self.fail_next_read = False
            raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))
        return super().read()


def test_a_claim_whose_rows_could_not_be_read_is_handed_back(api: Api, db: Database) -> None:
    """A worker whose claim committed but whose read failed releases those rows at its next
    step (its heartbeat would otherwise renew them forever), and they are then sent."""
    _expanded_message(api, db, apns=3)
    flaky = _ReadsFailOnce(db.url)
    try:
        sender = RecordingDispatcher()
        worker = Worker(flaky, sender, WorkerOptions(claim_batch=10))
        flaky.fail_next_read = True
        with pytest.raises(ClaimNotLoaded):  # the failed step (run() logs it and steps again)
            asyncio.run(worker.run_until_idle())
        assert {owner for owner, _ in _leases(db).values()} == {worker.owner}
        asyncio.run(worker.run_until_idle())
        assert len(sender.sent) == 3
        with db.read() as conn:
            statuses = conn.execute(sa.select(deliveries.c.status)).scalars().all()
        assert statuses == ["delivered"] * 3
    finally:
        flaky.dispose()
