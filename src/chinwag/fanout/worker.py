"""The fan-out worker: expand claimed outbox rows, send claimed deliveries concurrently, record.

One asyncio loop per worker process. Database calls are synchronous SQLAlchemy, so they run on one
dedicated thread (one writer per process; SQLite wants no more); sends run as asyncio tasks on
long-lived provider connections, as many at once per provider as the dispatcher has slots for
(``chinwag.push.slots``; CHINWAG_MAX_IN_FLIGHT). Outcomes are
buffered and written in batches. Expansion and sending interleave, so the first devices of a huge
group are notified while later ones are still being written.

Claims are short leases that a heartbeat task renews every third of a lease for as long as the
worker holds them (``chinwag.fanout.leases``): a SIGKILLed worker's rows run out within one lease,
and an idle worker wakes when they do, so another one resends them within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from prometheus_client import Counter

from chinwag.chat import devices, events, ratelimit
from chinwag.fanout.deliveries import (
    ClaimedDelivery,
    ClaimNotLoaded,
    RetryPolicy,
    claim_deliveries,
    delivery_summaries,
    load_claimed,
    next_due_at,
    record_outcomes,
    release_deliveries,
)
from chinwag.fanout.leases import renew_leases
from chinwag.fanout.outbox import (
    LeaseLost,
    OutboxClaim,
    claim_outbox,
    expand_batch,
    release_outbox,
)
from chinwag.push.model import Dispatcher, Outcome, OutcomeKind, Platform
from chinwag.store.database import Database

log = logging.getLogger("chinwag.worker")

STALE_DEVICES = Counter(
    "chinwag_devices_stale_deactivated_total",
    "Devices deactivated because their app had not registered them for CHINWAG_DEVICE_STALE_DAYS",
)

# The delivery panel's updates take at most one part in this many of the worker's time.
SUMMARY_COST_FACTOR = 20.0

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerOptions:
    # A dead worker's claims are taken over once their lease runs out; a live worker renews its
    # own every ``heartbeat_every`` (a third of the lease unless set), so only a worker stalled
    # for longer than that loses them.
    lease_seconds: float = 10.0
    heartbeat_every: float | None = None
    sweep_interval: float = 5.0
    claim_batch: int = 1000
    expand_batch: int = 1000
    max_expanding: int = 4
    # Outcomes wait at most this long to be written. A SIGKILL repeats the sends whose outcome
    # was not written yet, so a short wait means fewer duplicates; batches still grow under load
    # because results keep arriving while a write is under way.
    flush_every: float = 0.01
    flush_size: int = 500
    shutdown_grace: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Email devices get at most one email per chat per this many seconds (0: one per message).
    email_digest_seconds: float = 0.0
    # Senders watching a message's delivery panel get an update at most this often, and never
    # sooner than SUMMARY_COST_FACTOR times what the last update took: counting a message's rows
    # reads all of them, so a fixed interval would cost a large fan-out its size squared.
    summary_every: float = 0.5
    prune_every: float = 3600.0
    # The pruning deactivates devices not registered again for this many days (0: never).
    device_stale_days: float = 270.0

    @property
    def heartbeat_seconds(self) -> float:
        return self.heartbeat_every or self.lease_seconds / 3


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        db: Database,
        sender: Dispatcher,
        options: WorkerOptions | None = None,
        *,
        owner: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        wake_peers: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        # Rings the doorbell (blocking; run off the loop): the other workers, idle until their
        # next sweep otherwise, wake and claim a share of a large fan-out as it is expanded.
        self._wake_peers = wake_peers
        # Intervals are timed on a monotonic clock, which counts from an arbitrary point (boot,
        # on Linux): "never done" is None, not 0.0, or a freshly booted machine waits an hour.
        self._clock = clock
        # The epoch seconds the rows' times are compared with (due, leases, quiet hours, the
        # pruning's ages): a test sets it to reach the end of a user's quiet hours, or months on.
        self._now = wall_clock
        self.sender = sender
        self.options = options or WorkerOptions()
        self.owner = owner or new_owner_id()
        self.stats: dict[str, int] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chinwag-db")
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expanding: list[OutboxClaim] = []
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._results: list[tuple[ClaimedDelivery, Outcome | None]] = []
        # Rows claimed by a step that failed before it could read them (``ClaimNotLoaded``).
        self._unloaded: tuple[int, ...] = ()
        self._last_flush = clock()
        self._changed_messages: set[int] = set()
        self._last_summary: float | None = None
        self._summary_gap = self.options.summary_every
        self._last_prune: float | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    def wake(self, _message_id: int | None = None) -> None:
        """Thread-safe: called by the doorbell listener when a message was stored."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._start_heartbeat()
        log.info("worker %s started", self.owner)
        try:
            while not stop.is_set():
                try:
                    progressed = await self._step()
                except Exception:
                    # The database may be restarting: wait a little and carry on. Every row we
                    # held is leased, so nothing is lost if this lasts.
                    log.exception("fan-out step failed; retrying")
                    await self._sleep(stop, 1.0)
                    continue
                if not progressed:
                    await self._idle(stop)
        finally:
            await self._shutdown()

    async def run_until_idle(self, limit_seconds: float = 60.0, horizon: float = 0.5) -> None:
        """Work until nothing falls due within ``horizon`` seconds (tests and benchmarks);
        raise TimeoutError after ``limit_seconds``."""
        self._loop = asyncio.get_running_loop()
        self._start_heartbeat()
        deadline = time.monotonic() + limit_seconds
        try:
            while True:
                progressed = await self._step()
                if not progressed and not self._in_flight and not self._results:
                    due = await self._db(next_due_at, self.db, self._now(), self.owner)
                    if due is None or due > self._now() + horizon:
                        if self._changed_messages:
                            await self._publish_summaries()
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError("fan-out did not finish in time")
                if not progressed:
                    await asyncio.sleep(0.01)
        finally:
            await self._stop_heartbeat()

    async def _step(self) -> bool:
        now = self._now()
        progressed = False
        opts = self.options
        if len(self._expanding) < opts.max_expanding:
            claims = await self._db(
                claim_outbox,
                self.db,
                self.owner,
                now,
                opts.lease_seconds,
                opts.max_expanding - len(self._expanding),
            )
            self._expanding.extend(claims)
            progressed |= bool(claims)
        for claim in list(self._expanding):
            room = await self._expansion_room()
            mine: list[int] = []
            try:
                advanced, added, done = await self._db(
                    expand_batch,
                    self.db,
                    claim,
                    self.owner,
                    self._now(),
                    opts.lease_seconds,
                    opts.expand_batch,
                    room,
                    mine,
                )
            except LeaseLost as exc:
                # Another worker resumes it from the cursor; the other claims carry on.
                log.warning("%s", exc)
                self._expanding.remove(claim)
                self._count("lease_lost", 1)
                continue
            index = self._expanding.index(claim)
            if done:
                del self._expanding[index]
            else:
                self._expanding[index] = advanced
            progressed = True
            self._count("expanded", added)
            if added >= opts.expand_batch and self._wake_peers is not None:
                asyncio.get_running_loop().run_in_executor(None, self._wake_peers)
            if mine:
                await self._send_claimed_by_expansion(mine)
        # A send takes its provider's slot in its first step: let sends started by the last
        # step take theirs, so that this claim is sized by what is really free.
        await asyncio.sleep(0)
        room = self._claim_room()
        if any(room.values()):
            if self._results:
                # Record finished sends before taking their slots again: their rows are still
                # `sending` under our lease until then, so claiming first would hold twice the
                # provider's slots in claims, and a SIGKILL now would repeat both waves.
                await self._flush()
            if self._unloaded:
                await self._db(release_deliveries, self.db, self._unloaded, self.owner, self._now())
                self._unloaded = ()
            held: set[int] = set()
            try:
                claimed = await self._db(
                    claim_deliveries,
                    self.db,
                    self.owner,
                    self._now(),
                    opts.lease_seconds,
                    opts.claim_batch,
                    opts.email_digest_seconds,
                    room,
                    held,
                )
            except ClaimNotLoaded as lost:
                # Our heartbeat would renew these rows for as long as we live: hand them back
                # at the next step the database allows.
                self._unloaded = lost.ids
                raise
            self._changed_messages |= held
            for item in claimed:
                self._start_send(item)
            progressed |= bool(claimed)
        if self._results and (
            len(self._results) >= opts.flush_size
            or self._clock() - self._last_flush >= opts.flush_every
            or not self._in_flight
        ):
            await self._flush()
            progressed = True
        if self._changed_messages and (
            not self._in_flight or self._elapsed(self._last_summary, self._summary_gap)
        ):
            await self._publish_summaries()
        if self._elapsed(self._last_prune, opts.prune_every):
            self._last_prune = self._clock()
            await self._db(events.prune, self.db, self._now())
            await self._db(ratelimit.prune, self.db)
            await self._prune_stale_devices()
        return progressed

    async def _expansion_room(self) -> dict[str, int]:
        """How many of the next expansion batch's rows to write already claimed by this worker:
        as many as a claim would take now (``_claim_room``), so that they are sent without a
        claim of their own (each row written once, not inserted then updated). Never email rows
        while digests are on: a digest is planned under the claim's write lock."""
        await asyncio.sleep(0)  # sends started since the last batch take their slots first
        room = self._claim_room()
        if self.options.email_digest_seconds > 0:
            room[Platform.EMAIL.value] = 0
        if self._results and any(room.values()):
            await self._flush()  # as before a claim: finished sends give their slots back first
        return room

    async def _send_claimed_by_expansion(self, ids: list[int]) -> None:
        held: set[int] = set()
        try:
            claimed = await self._db(load_claimed, self.db, self.owner, self._now(), ids, held)
        except ClaimNotLoaded as lost:
            # As for a claim: ours until handed back, which the next step does first.
            self._unloaded = (*self._unloaded, *lost.ids)
            raise
        self._count("claimed_by_expansion", len(ids))
        self._changed_messages |= held
        for item in claimed:
            self._start_send(item)

    async def _prune_stale_devices(self) -> None:
        days = self.options.device_stale_days
        stale = await self._db(devices.deactivate_stale, self.db, self._now(), days)
        if stale:
            log.info("deactivated %d devices not registered again for %g days", stale, days)
            STALE_DEVICES.inc(stale)
            self._count("stale_devices", stale)

    def _claim_room(self) -> dict[str, int]:
        """How many deliveries of each platform to claim now. Each provider has slots of its own,
        kept by the dispatcher (a stalled provider fills only its own, the others keep being
        claimed), and a claim never exceeds the free slots: a claimed row that waited for one
        would hold its lease idle. A platform is claimed for once a quarter of its slots are
        free, in batches."""
        opts = self.options
        room: dict[str, int] = {}
        for platform in Platform:
            slots = self.sender.slot_limit(platform)
            free = self.sender.free_slots(platform)
            wanted = max(1, min(opts.claim_batch, slots) // 4)
            room[platform.value] = min(free, opts.claim_batch) if free >= wanted else 0
        return room

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._keep_leases(), name="lease-heartbeat")

    async def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None

    async def _keep_leases(self) -> None:
        """Renew every claim this worker holds, every third of a lease, until cancelled."""
        while True:
            await asyncio.sleep(self.options.heartbeat_seconds)
            try:
                await self._renew_leases()
            except Exception:
                # The next beat comes well within the lease; a database that stays away longer
                # costs at most the repeats of what is in flight, never a lost delivery.
                log.exception("lease heartbeat failed")

    async def _renew_leases(self) -> None:
        watched = dict(self._in_flight)
        held = await self._db(
            renew_leases, self.db, self.owner, self._now(), self.options.lease_seconds
        )
        self._count("heartbeats", 1)
        # A send still in flight whose row is no longer ours: our lease ran out (the worker was
        # stalled for longer than a lease) and another worker took it over. It sends it; stop
        # ours. A row recorded and claimed again since the snapshot is a new task: left alone.
        lost = [
            delivery_id
            for delivery_id, task in watched.items()
            if delivery_id not in held.deliveries and self._in_flight.get(delivery_id) is task
        ]
        for delivery_id in lost:
            self._in_flight.pop(delivery_id).cancel()
        if lost:
            log.warning("lost the lease on %d deliveries in flight; cancelled them", len(lost))
            self._count("lease_lost", len(lost))

    def _start_send(self, item: ClaimedDelivery) -> None:
        if item.skip is not None:
            self._results.append((item, None))
            return
        task = asyncio.create_task(self._send(item))
        self._in_flight[item.delivery_id] = task

    async def _send(self, item: ClaimedDelivery) -> None:
        try:
            outcome = await self.sender.send(item.target, item.notification)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a sender bug must never take the worker down
            log.exception("sender raised for delivery %s", item.delivery_id)
            outcome = Outcome(OutcomeKind.RETRY, reason=f"internal_error: {type(exc).__name__}")
        self._results.append((item, outcome))
        self._in_flight.pop(item.delivery_id, None)
        self._wake.set()

    async def _flush(self) -> None:
        results, self._results = self._results, []
        self._last_flush = self._clock()
        try:
            recorded = await self._db(
                record_outcomes, self.db, self.owner, results, self._now(), self.options.retry
            )
        except Exception:
            # The write rolled back (the database may be restarting): keep the outcomes for the
            # next step. Dropped, their rows would stay `sending` under a lease that the
            # heartbeat renews for as long as this worker lives, and never be recorded or resent.
            self._results = results + self._results
            raise
        for status, count in recorded.counts.items():
            self._count(status, count)
        self._changed_messages |= recorded.messages

    async def _publish_summaries(self) -> None:
        """Tell each sender how their message's fan-out stands (the live delivery panel)."""
        changed, self._changed_messages = self._changed_messages, set()
        self._last_summary = started = self._clock()
        try:
            await self._db(_publish_delivery_events, self.db, sorted(changed))
        except Exception:
            self._changed_messages |= changed  # the senders' panels still need them
            raise
        took = self._clock() - started
        self._summary_gap = max(self.options.summary_every, SUMMARY_COST_FACTOR * took)

    async def _idle(self, stop: asyncio.Event) -> None:
        timeout = self.options.sweep_interval
        if self._in_flight or self._results:
            timeout = min(timeout, self.options.flush_every)
        else:
            # Also wakes when another worker's lease runs out: if it died, its rows are ours.
            due = await self._db(next_due_at, self.db, self._now(), self.owner)
            if due is not None:
                timeout = max(0.0, min(timeout, due - self._now()))
        self._wake.clear()
        waiter = asyncio.create_task(self._wake.wait())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
            stopper.cancel()

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def _shutdown(self) -> None:
        """Let in-flight sends finish (up to the grace period), record them, release the rest."""
        if self._in_flight:
            log.info("waiting for %d in-flight sends", len(self._in_flight))
            await asyncio.wait(set(self._in_flight.values()), timeout=self.options.shutdown_grace)
        unfinished = list(self._in_flight)
        for task in self._in_flight.values():
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        # The heartbeat kept our claims through the grace period; what is left is released.
        await self._stop_heartbeat()
        try:
            if self._results:
                await self._flush()
            now = self._now()
            await self._db(release_deliveries, self.db, unfinished, self.owner, now)
            await self._db(release_outbox, self.db, self._expanding, self.owner, now)
        except Exception:
            log.exception("could not release leases; they will expire on their own")
        self._executor.shutdown(wait=True)
        log.info("worker %s stopped; %s", self.owner, self.stats)

    async def _db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _elapsed(self, last: float | None, every: float) -> bool:
        return last is None or self._clock() - last >= every

    def _count(self, key: str, amount: int) -> None:
        self.stats[key] = self.stats.get(key, 0) + amount


def _publish_delivery_events(db: Database, message_ids: list[int]) -> None:
    summaries = delivery_summaries(db, message_ids)
    if not summaries:
        return
    with db.write() as conn:
        for message_id, chat_id, sender_id, counts in summaries:
            events.append(
                conn,
                "delivery",
                {"message_id": message_id, "chat_id": chat_id, "summary": counts},
                user_id=sender_id,
            )


def run_worker_forever(
    worker: Worker, install_signals: Callable[[asyncio.Event], None] | None = None
) -> None:
    """Run a worker on a fresh event loop until ``stop`` is set (by signal handlers)."""

    async def main() -> None:
        stop = asyncio.Event()
        if install_signals is not None:
            install_signals(stop)
        try:
            await worker.run(stop)
        finally:
            await worker.sender.aclose()

    asyncio.run(main())
