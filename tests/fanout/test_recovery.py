"""Recovery after a crash, with the default lease: a SIGKILLed worker's claims run out within
seconds and are taken over, by a new worker or by one already running; a live worker's slow
sends keep their claims however long the provider takes, so nobody sends them twice."""

from __future__ import annotations

import signal
import time
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa
from tests.conftest import Api
from tests.fanout.conftest import Workers, apns_received, big_group
from tests.reliability.support import write_figures
from tests.support.processes import ChinwagProcess, delivery_statuses, wait_until
from tests.support.seed import add_devices

from chinwag.config import Settings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.suite import RunningFakes
from chinwag.store.database import Database
from chinwag.store.schema import deliveries

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PAIRS = 1000
PROVIDER_LATENCY = 0.3
# 100 sends in flight per worker: about ten 300 ms waves, so the kill lands mid fan-out, and at
# most 100 sends (plus outcomes not yet written, 10 ms of them) are repeated.
IN_FLIGHT = 100
RECOVERY_BOUND = 15.0
# The production defaults for what decides recovery (FAST_ENGINE shortens the sweep).
DEFAULTS = {
    "CHINWAG_LEASE_SECONDS": str(Settings().lease_seconds),
    "CHINWAG_SWEEP_INTERVAL": str(Settings().sweep_interval_seconds),
    "CHINWAG_MAX_IN_FLIGHT": str(IN_FLIGHT),
}


def _held_by(db: Database, process: ChinwagProcess) -> int:
    """Delivery rows still leased to ``process`` (its owner id carries its pid)."""
    with db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    deliveries.c.status == "sending",
                    deliveries.c.lease_owner.like(f"%:{process.process.pid}:%"),
                )
            ).scalar_one()
        )


def _start_slow_fanout(
    web_api: Api, db: Database, fakes: RunningFakes
) -> tuple[httpx.Client, int, list[str]]:
    fakes.providers.apns.faults = FaultPlan(latency=PROVIDER_LATENCY)
    return big_group(web_api, db, PAIRS)


def _kill_mid_fanout(
    running: list[ChinwagProcess], db: Database, fakes: RunningFakes, tokens: list[str]
) -> int:
    """Once 300 devices have their notification, SIGKILL the worker holding the most claims
    (the doorbell wakes one worker; another may be idle until its sweep); return what it held.

    A worker holds no claim for a moment between recording a wave and claiming the next, so
    the victim is frozen (SIGSTOP) and its claims counted before the kill: a crash at an instant
    when it held some, whatever the machine's speed."""
    deadline = time.monotonic() + 60
    while True:
        wait_until(
            lambda: len(apns_received(fakes)) >= 300 and any(_held_by(db, w) for w in running),
            max(1.0, deadline - time.monotonic()),
            "300 notifications, with claims held",
            poll=0.02,
        )
        victim = max(running, key=lambda worker: _held_by(db, worker))
        victim.process.send_signal(signal.SIGSTOP)
        held = _held_by(db, victim)
        if held > 0:
            victim.kill()
            break
        victim.process.send_signal(signal.SIGCONT)
    assert len(set(apns_received(fakes))) < len(tokens), "finished before the kill"
    return held


def _all_delivered(db: Database) -> bool:
    return delivery_statuses(db) == {"delivered": PAIRS}


def _figures(
    name: str, db: Database, fakes: RunningFakes, held: int, took: float
) -> dict[str, object]:
    received = apns_received(fakes)
    figures: dict[str, object] = {
        "database": "postgresql" if db.is_postgres else "sqlite",
        "pairs": PAIRS,
        "provider_latency_ms": round(PROVIDER_LATENCY * 1000),
        "lease_seconds": Settings().lease_seconds,
        "held_by_killed_worker": held,
        "all_delivered_after_seconds": round(took, 2),
        "duplicates": len(received) - len(set(received)),
    }
    write_figures(name, figures)
    return figures


def test_new_worker_delivers_everything_within_seconds_of_a_sigkill(
    web_api: Api, db: Database, fakes: RunningFakes, workers: Workers
) -> None:
    """Default lease, 1,000 devices at 300 ms: SIGKILL the only worker mid fan-out; within 15 s
    of a new worker's start every delivery is recorded delivered, repeats bounded by in-flight."""
    sender, chat_id, tokens = _start_slow_fanout(web_api, db, fakes)
    first = workers.start(**DEFAULTS)
    sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "all hands"})
    held = _kill_mid_fanout([first], db, fakes, tokens)
    started = time.monotonic()
    workers.start(**DEFAULTS)
    wait_until(lambda: _all_delivered(db), 60, "every delivery recorded delivered", poll=0.1)
    took = time.monotonic() - started
    figures = _figures("recovery_new_worker", db, fakes, held, took)
    assert set(apns_received(fakes)) == set(tokens)
    assert took <= RECOVERY_BOUND, figures
    assert figures["duplicates"] <= 2 * IN_FLIGHT, figures  # type: ignore[operator]


def test_running_worker_takes_over_a_sigkilled_peers_claims_within_seconds(
    web_api: Api, db: Database, fakes: RunningFakes, workers: Workers
) -> None:
    """Default lease, two workers, 1,000 devices at 300 ms: SIGKILL the one sending mid fan-out;
    the other has every delivery recorded delivered within 15 s of the kill."""
    sender, chat_id, tokens = _start_slow_fanout(web_api, db, fakes)
    running = [workers.start(**DEFAULTS), workers.start(**DEFAULTS)]
    for process in running:

        def started(p: ChinwagProcess = process) -> bool:
            return "started" in p.output()

        wait_until(started, 30, "the worker to start")
    sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "all hands"})
    held = _kill_mid_fanout(running, db, fakes, tokens)
    killed = time.monotonic()
    wait_until(lambda: _all_delivered(db), 60, "every delivery recorded delivered", poll=0.1)
    took = time.monotonic() - killed
    figures = _figures("recovery_running_worker", db, fakes, held, took)
    assert set(apns_received(fakes)) == set(tokens)
    assert took <= RECOVERY_BOUND, figures
    assert figures["duplicates"] <= 2 * IN_FLIGHT, figures  # type: ignore[operator]


def _email_claims_per_worker(db: Database) -> int:
    with db.read() as conn:
        counts = conn.execute(
            sa.select(sa.func.count())
            .where(deliveries.c.platform == "email", deliveries.c.status == "sending")
            .group_by(deliveries.c.lease_owner)
        ).scalars()
        return max(counts, default=0)


def test_slow_sends_keep_their_claims_and_are_never_sent_twice(
    web_api: Api, db: Database, fakes: RunningFakes, workers: Workers
) -> None:
    """APNs answers in 3x the lease and 16 emails queue for 4 SMTP sessions: the heartbeat keeps
    every claim, so a second worker never re-sends one, and no worker claims more emails than
    its sessions can send at once."""
    lease = 1.5
    providers = fakes.providers
    providers.apns.faults = FaultPlan(latency=3 * lease)
    providers.smtp.faults = FaultPlan(latency=0.5)
    sender, chat_id, tokens = big_group(web_api, db, 20)
    member_id = web_api.user("reader").get("/v1/me").json()["id"]
    addresses = [f"reader{n}@example.com" for n in range(16)]
    add_devices(db, member_id, "email", addresses)
    added = sender.post(f"/v1/chats/{chat_id}/members", json={"username": "reader"})
    assert added.status_code in (200, 201), added.text
    for _ in range(2):
        workers.start(CHINWAG_LEASE_SECONDS=str(lease))
    sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "slowly"})
    most_email_claims = 0

    def delivered() -> bool:
        nonlocal most_email_claims
        most_email_claims = max(most_email_claims, _email_claims_per_worker(db))
        return delivery_statuses(db) == {"delivered": len(tokens) + len(addresses)}

    wait_until(delivered, 60, "every delivery recorded delivered", poll=0.1)
    emails = Counter(r.rcpt_to[0] for r in list(providers.smtp.accepted))
    assert Counter(apns_received(fakes)) == Counter(tokens)  # each exactly once
    assert emails == Counter(addresses)
    assert 0 < most_email_claims <= 4, most_email_claims
