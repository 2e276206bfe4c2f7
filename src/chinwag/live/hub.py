"""The hub: one reader of the event log per process, fanned out in memory to its connections.

Every wake-up (a PostgreSQL notification, the slow safety tail, or on SQLite the tick) reads the
rows after the last one read, once, whatever the number of connections, and offers each event to
the connections allowed to see it: a user-scoped event to that user's connections, a chat event
to the connected members of the chat. Who is a member is kept in memory for connected users only:
loaded when a user connects and kept current by the ``member_added`` / ``member_removed`` events
in the same log, applied as they are read, so a removed member stops getting the chat's events at
once.

On PostgreSQL ids are taken when a row is inserted, not when it commits, so a row with a lower
id can appear after a higher one was read. The ids skipped over are remembered for a few
seconds and asked for again; such a late event is still delivered (``Frame.late``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, TypeVar

from chinwag.chat import events
from chinwag.chat.errors import RateLimited
from chinwag.chat.models import User
from chinwag.config import Settings
from chinwag.live import metrics
from chinwag.store.database import Database

log = logging.getLogger("chinwag.live")

T = TypeVar("T")

TAIL_BATCH = 500
SQLITE_TICK_SECONDS = 0.05  # one tail query per tick on SQLite, where nothing can notify
SAFETY_TAIL_SECONDS = 2.0  # with notifications: in case one was missed during a reconnect
GAP_WAIT_SECONDS = 10.0  # how long a skipped id may still commit (PostgreSQL)
MAX_GAPS = 1000
# users.last_active_at is refreshed for all connected users at once this often; the push policy
# treats a user as active for 45 s after it (fanout/policy.py).
ACTIVE_EVERY_SECONDS = 20.0
MEMBER_KINDS = ("member_added", "member_removed")
MEMBERSHIP_LOAD_TRIES = 5
SIGNED_OUT_REASON = "signed out"
SLOW_CONSUMER_REASON = "slow consumer"


@dataclass(frozen=True)
class Frame:
    """An event on its way to a connection; ``id`` is None for ephemeral ones (typing).

    One Frame is shared by every connection it goes to, so its JSON is encoded once, on first
    use, not once per connection (at 10,000 connections that was most of a fan-out's CPU).
    """

    id: int | None
    kind: str
    data: dict[str, Any]
    created_at: float
    late: bool = False

    def as_json_object(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "data": self.data}

    @cached_property
    def data_json(self) -> str:
        return json.dumps(self.data, separators=(",", ":"))

    @cached_property
    def websocket_text(self) -> str:
        """The WebSocket frame: ``{"id","kind","data"}``."""
        identity = "null" if self.id is None else str(self.id)
        return f'{{"id":{identity},"kind":{json.dumps(self.kind)},"data":{self.data_json}}}'


class _Closed:
    """Put in a subscriber's queue when it is closed: the transport stops."""


CLOSED = _Closed()


class _Beat:
    """Put in an idle SSE subscriber's queue each heartbeat: the transport writes a comment.
    One ticker for the process instead of a timer per connection re-armed at every event, which
    at 10,000 connections was a heap operation per frame."""


BEAT = _Beat()


@dataclass(eq=False)
class Subscriber:
    """One live connection of a user: a bounded queue the hub fills and the transport drains."""

    user: User
    transport: str
    after: int  # the client's resume point: it has seen everything up to here
    queue: asyncio.Queue[Frame | _Closed | _Beat]
    cursor: int = 0  # the highest id handed to the client so far
    floor: int = 0  # the hub's position when this subscriber joined: later rows come queued
    backfilled: set[int] = field(default_factory=set)
    caught_up: bool = False
    resync: bool = False  # the queue overflowed while replaying: the replay must read again
    closed: bool = False
    close_reason: str = ""
    on_drop: Callable[[], object] | None = None  # the transport's way to abort a stalled write
    token_id: int | None = None  # the API token it was opened with: closed when that is revoked

    @property
    def seen(self) -> int:
        """Rows up to here reach the client without the queue (replay) or already did."""
        return max(self.floor, self.cursor)

    def accept(self, frame: Frame) -> bool:
        """Whether the client still needs this frame (the backfill may have sent it already)."""
        if frame.id is None:
            return True
        if frame.id > self.cursor:
            self.cursor = frame.id
            return True
        return frame.late and frame.id > self.after and frame.id not in self.backfilled

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed, self.close_reason = True, reason
        while not self.queue.empty():  # nothing queued matters any more; make room to say so
            self.queue.get_nowait()
        self.queue.put_nowait(CLOSED)


class Hub:
    """The per-process fan-out. All methods run on the event loop; database calls go to threads."""

    def __init__(self, db: Database, settings: Settings, *, notified: bool | None = None) -> None:
        self.db = db
        self.settings = settings
        # With notifications (PostgreSQL) the tail waits for them; otherwise it ticks.
        self.notified = db.is_postgres if notified is None else notified
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="chinwag-live")
        self.last_id = 0
        self.subscribers: dict[int, set[Subscriber]] = {}
        self.opening: dict[int, int] = {}  # streams counted against the cap while they connect
        self.chat_members: dict[int, set[int]] = {}  # chat → connected members
        self.user_chats: dict[int, set[int]] = {}  # connected user → chats
        self.gaps: dict[int, float] = {}  # id skipped over → monotonic time to give up
        self.membership_changes = 0  # member events applied so far
        self.ephemeral_sinks: list[Callable[[int, Frame], None]] = []  # other processes
        self._wake = asyncio.Event()
        self._touch_wake = asyncio.Event()
        self._to_touch: dict[int, list[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.last_id = await self.run(events.latest_id, self.db)
        self._tasks = [
            asyncio.create_task(self._tail_forever(), name="chinwag-live-tail"),
            asyncio.create_task(self._touch_forever(), name="chinwag-live-touch"),
            asyncio.create_task(self._beat_forever(), name="chinwag-live-heartbeat"),
        ]

    def close_all(self, reason: str = "server shutting down") -> None:
        for subscribers in list(self.subscribers.values()):
            for subscriber in list(subscribers):
                subscriber.close(reason)

    async def stop(self) -> None:
        self.close_all()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking (database) call in the hub's threads, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(function, *args))

    def wake(self) -> None:
        """Read the log now (a notification arrived, or a listener reconnected)."""
        self._wake.set()

    # -- connections ----------------------------------------------------------------------------

    async def subscribe(
        self, user: User, transport: str, after: int | None, *, token_id: int | None = None
    ) -> Subscriber:
        """Join the hub; raises RateLimited past the per-user cap. Pair with ``unsubscribe``."""
        held = len(self.subscribers.get(user.id, ())) + self.opening.get(user.id, 0)
        if held >= self.settings.streams_per_user:
            raise RateLimited(
                f"at most {self.settings.streams_per_user} open live connections per user; "
                "close one first",
                retry_after=5,
            )
        self.opening[user.id] = self.opening.get(user.id, 0) + 1
        try:
            if after is None:  # a fresh client starts from now: the log's end, not the hub's
                after = await self.run(events.latest_id, self.db)
            for _attempt in range(MEMBERSHIP_LOAD_TRIES):
                seen = self.membership_changes
                chats = await self.run(events.chats_of, self.db, user.id)
                # A membership change the hub applied while we loaded may be missing from what
                # we loaded: load again. From the moment we join, the hub applies them for us.
                if self.membership_changes == seen:
                    break
        finally:
            self.opening[user.id] -= 1
            if not self.opening[user.id]:
                del self.opening[user.id]
        subscriber = Subscriber(
            user=user,
            transport=transport,
            after=after,
            cursor=after,
            floor=self.last_id,
            queue=asyncio.Queue(maxsize=self.settings.stream_queue_size + 1),
            token_id=token_id,
        )
        first = user.id not in self.subscribers
        self.subscribers.setdefault(user.id, set()).add(subscriber)
        self.user_chats[user.id] = chats
        for chat_id in chats:
            self.chat_members.setdefault(chat_id, set()).add(user.id)
        metrics.CONNECTIONS.labels(transport).inc()
        if first:
            await self._touch_now(user.id)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.closed = True
        user_id = subscriber.user.id
        mine = self.subscribers.get(user_id)
        if mine is None or subscriber not in mine:
            return
        mine.discard(subscriber)
        metrics.CONNECTIONS.labels(subscriber.transport).dec()
        if mine:
            return
        del self.subscribers[user_id]
        for chat_id in self.user_chats.pop(user_id, set()):
            members = self.chat_members.get(chat_id)
            if members is not None:
                members.discard(user_id)
                if not members:
                    del self.chat_members[chat_id]

    async def backfill(self, subscriber: Subscriber, limit: int = 200) -> list[Frame]:
        """The next page of what the client missed before it joined (resume from the log);
        empty once it has caught up, after which the queue holds everything newer."""
        if subscriber.caught_up:
            return []
        # Read at least once, even when the client is at or past the hub's position: the hub
        # may not have read what committed a moment ago.
        subscriber.resync = False
        found = await self.run(
            events.visible_after, self.db, subscriber.user.id, subscriber.cursor, limit
        )
        # Caught up when the log has no more; unless the queue overflowed meanwhile, in which
        # case what it lost may have committed after this read: read once more.
        subscriber.caught_up = len(found) < limit and not subscriber.resync
        subscriber.backfilled.update(event.id for event in found)
        return [Frame(event.id, event.kind, event.data, time.time()) for event in found]

    def is_member(self, user_id: int, chat_id: int) -> bool:
        return chat_id in self.user_chats.get(user_id, ())

    # -- fan-out --------------------------------------------------------------------------------

    def deliver(self, frame: Frame, chat_id: int | None, user_id: int | None) -> None:
        """Offer a frame to every connection allowed to see it."""
        if user_id is not None:
            targets: Iterable[Subscriber] = list(self.subscribers.get(user_id, ()))
        elif chat_id is not None:
            targets = [
                subscriber
                for member in self.chat_members.get(chat_id, ())
                for subscriber in self.subscribers.get(member, ())
            ]
        else:
            return
        for subscriber in targets:
            self._offer(subscriber, frame)

    def deliver_ephemeral(self, chat_id: int, frame: Frame, *, local_only: bool = False) -> None:
        """An event never stored (typing): the chat's other connected members, here and, unless
        it came from another process, in the other gateway processes."""
        sender = frame.data.get("user_id")
        for member in list(self.chat_members.get(chat_id, ())):
            if member == sender:
                continue
            for subscriber in list(self.subscribers.get(member, ())):
                self._offer(subscriber, frame)
        if not local_only:
            for sink in self.ephemeral_sinks:
                sink(chat_id, frame)

    def _offer(self, subscriber: Subscriber, frame: Frame) -> None:
        if subscriber.closed:
            return
        if frame.id is not None and not frame.late and frame.id <= subscriber.seen:
            return  # before it joined (the replay reads it from the log) or already sent
        if subscriber.queue.qsize() >= self.settings.stream_queue_size:
            if not subscriber.caught_up:
                # Still replaying from the log, which has these rows too: forget the queue and
                # let the replay read on (a reconnect after a long absence is not slowness).
                while not subscriber.queue.empty():
                    subscriber.queue.get_nowait()
                subscriber.resync = True
                return
            # The reader is too slow. It resumes from the log when it reconnects.
            metrics.SLOW_CONSUMERS.inc()
            log.info(
                "dropping a slow %s reader of user %d", subscriber.transport, subscriber.user.id
            )
            subscriber.close(SLOW_CONSUMER_REASON)
            if subscriber.on_drop is not None:
                subscriber.on_drop()
            return
        subscriber.queue.put_nowait(frame)

    def _apply_membership(self, event: events.LoggedEvent) -> None:
        chat_id = event.chat_id
        if chat_id is None or event.user_id is not None:
            return  # the removed member's own copy: the chat-wide event does the bookkeeping
        self.membership_changes += 1
        for member in event.data.get("members", ()):
            user_id = int(member["user_id"])
            chats = self.user_chats.get(user_id)
            if chats is None:
                continue  # not connected here
            if event.kind == "member_added":
                chats.add(chat_id)
                self.chat_members.setdefault(chat_id, set()).add(user_id)
            else:
                chats.discard(chat_id)
                members = self.chat_members.get(chat_id)
                if members is not None:
                    members.discard(user_id)

    def _end_sessions(self, event: events.LoggedEvent) -> None:
        """Close the streams opened with revoked tokens; the user's other sessions get the event."""
        if event.user_id is None:
            return
        revoked = set(event.data.get("token_ids", ()))
        for subscriber in list(self.subscribers.get(event.user_id, ())):
            if subscriber.token_id in revoked:
                subscriber.close(SIGNED_OUT_REASON)

    # -- the tail -------------------------------------------------------------------------------

    async def _tail_forever(self) -> None:
        while True:
            interval = SAFETY_TAIL_SECONDS if self.notified else SQLITE_TICK_SECONDS
            if self.gaps:
                interval = min(interval, 0.25)
            try:
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.read_new()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("live: reading new events failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)

    async def read_new(self) -> None:
        """Read every row after the last one read (and the late ones) and fan them out."""
        while True:
            now = time.monotonic()
            self.gaps = {gap: until for gap, until in self.gaps.items() if until > now}
            rows = await self.run(events.read_after, self.db, self.last_id, TAIL_BATCH, self.gaps)
            metrics.TAIL_READS.inc()
            fresh = 0
            for row in rows:
                late = row.id in self.gaps
                if late:
                    del self.gaps[row.id]
                elif row.id > self.last_id:
                    self._note_gaps(self.last_id, row.id, now)
                    self.last_id = row.id
                    fresh += 1
                else:
                    continue
                if row.kind in MEMBER_KINDS:
                    self._apply_membership(row)
                elif row.kind == events.SIGNED_OUT:
                    self._end_sessions(row)
                frame = Frame(row.id, row.kind, row.data, row.created_at, late=late)
                self.deliver(frame, row.chat_id, row.user_id)
            if fresh < TAIL_BATCH:
                return

    def _note_gaps(self, last: int, found: int, now: float) -> None:
        if not self.notified or last == 0:
            return  # SQLite commits in id order; at start there is nothing to wait for
        for missing in range(last + 1, min(found, last + 1 + MAX_GAPS)):
            if len(self.gaps) >= MAX_GAPS:
                return
            self.gaps[missing] = now + GAP_WAIT_SECONDS

    # -- users.last_active_at -------------------------------------------------------------------

    async def _touch_now(self, user_id: int) -> None:
        """Mark a newly connected user active, batched with any other newcomers."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_touch.setdefault(user_id, []).append(done)
        self._touch_wake.set()
        try:
            async with asyncio.timeout(10):
                await done
        except TimeoutError:
            log.warning("live: marking user %d active took over 10 s", user_id)

    async def _beat_forever(self) -> None:
        """Every heartbeat, an SSE stream with nothing queued gets a keep-alive comment (WebSocket
        pings are uvicorn's): proxies keep the stream open, and a vanished client is noticed
        when the write fails."""
        while True:
            await asyncio.sleep(self.settings.stream_heartbeat_seconds)
            for subscribers in list(self.subscribers.values()):
                for subscriber in subscribers:
                    if subscriber.transport == "sse" and subscriber.queue.empty():
                        subscriber.queue.put_nowait(BEAT)

    async def _touch_forever(self) -> None:
        due = time.monotonic()  # the first round fires at once
        while True:
            try:
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await self._touch_wake.wait()
            except TimeoutError:
                pass
            self._touch_wake.clear()
            waiting, self._to_touch = self._to_touch, {}
            users = set(waiting)
            if time.monotonic() >= due:
                users |= set(self.subscribers)
                due = time.monotonic() + ACTIVE_EVERY_SECONDS
            try:
                await self.run(events.touch_active, self.db, users)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("live: updating last_active_at failed", exc_info=True)
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_result(None)
