"""The doorbell: a Huey queue that only wakes workers. The database stays the truth.

The web process enqueues one tiny task per stored message, after commit, best effort. A worker
runs a thread that takes tasks off the queue and wakes its fan-out loop. If a ring is lost (queue
flushed, Redis restarted, web process killed between commit and ring) nothing is lost: the
worker's periodic sweep finds every due outbox and delivery row on its own.

A web process rings through a ``BackgroundRinger``: the request only hands the ring to one
thread per process, which enqueues it, and rings asked for while an enqueue is under way become
one ring. A ring only wakes workers, and a woken worker claims every due row, so one ring for
many messages wakes it just as well; the request no longer waits for the queue (on SQLite an
exclusive lock on the queue file, shared by every web process).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huey import PostgresHuey, RedisHuey, SqliteHuey
from huey.api import Huey

from chinwag.files import create_private

log = logging.getLogger("chinwag.doorbell")

QUEUE_NAME = "chinwag-doorbell"
TASK_NAME = "chinwag.ring"
SQLITE_POLL_SECONDS = 0.05


def make_huey(queue_url: str) -> Huey:
    """The Huey instance for ``CHINWAG_QUEUE_URL``: sqlite:///file, redis://…, postgresql://…."""
    options: dict[str, Any] = {"results": False, "store_none": False, "utc": True}
    if queue_url.startswith("sqlite:///"):
        path = Path(queue_url.removeprefix("sqlite:///"))
        create_private(path)
        return SqliteHuey(QUEUE_NAME, filename=str(path), **options)
    if queue_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(QUEUE_NAME, url=queue_url, blocking=True, read_timeout=1, **options)
    if queue_url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        dsn = "postgresql://" + queue_url.split("://", 1)[1]
        return PostgresHuey(QUEUE_NAME, dsn=dsn, blocking=True, read_timeout=1, **options)
    raise ValueError(
        f"CHINWAG_QUEUE_URL must be sqlite:///, redis:// or postgresql://: {queue_url}"
    )


class Doorbell:
    def __init__(self, queue_url: str) -> None:
        self.huey = make_huey(queue_url)
        self._listener: Callable[[int], None] | None = None
        # Both sides register the same task name; only a worker's listener does anything with it.
        self._ring_task = self.huey.task(name=TASK_NAME)(self._on_ring)

    def ring(self, message_id: int) -> None:
        """Enqueue a wake-up. Best effort: failures are logged, never raised to the sender."""
        try:
            self._ring_task(message_id)
        except Exception as exc:
            log.warning("doorbell not rung for message %s: %s", message_id, exc)

    def _on_ring(self, message_id: int) -> None:
        if self._listener is not None:
            self._listener(message_id)

    def listen(self, on_ring: Callable[[int], None], stop: threading.Event) -> threading.Thread:
        """Take rings off the queue in a daemon thread, calling ``on_ring`` for each."""
        self._listener = on_ring

        def consume() -> None:
            blocking = bool(getattr(self.huey.storage, "blocking", False))
            while not stop.is_set():
                try:
                    task = self.huey.dequeue()
                except Exception as exc:  # queue down: the sweep covers us; try again soon
                    log.warning("doorbell queue unavailable: %s", exc)
                    stop.wait(1.0)
                    continue
                if task is None:
                    if not blocking:
                        stop.wait(SQLITE_POLL_SECONDS)
                    continue
                try:
                    self.huey.execute(task)
                except Exception:
                    log.exception("doorbell task failed")

        thread = threading.Thread(target=consume, name="chinwag-doorbell", daemon=True)
        thread.start()
        return thread

    def pending(self) -> int:
        try:
            return int(self.huey.pending_count())
        except Exception:
            return -1


class BackgroundRinger:
    """``ring(message_id)`` off the caller's thread: one daemon thread per process rings the
    doorbell, and the rings asked for while it is ringing are folded into one more (carrying the
    latest message id). Never blocks on the queue and never raises: the sweep covers a lost ring.
    """

    def __init__(self, ring: Callable[[int], None]) -> None:
        self._ring = ring
        self._reset()
        # A forked child (gunicorn --preload, multiprocessing) has no thread of ours and may
        # have copied the condition's lock held: start afresh there.
        me = weakref.ref(self)

        def after_fork() -> None:
            ringer = me()
            if ringer is not None:
                ringer._reset()

        os.register_at_fork(after_in_child=after_fork)

    def _reset(self) -> None:
        self._wanted = threading.Condition(threading.Lock())
        self._latest: int | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, message_id: int) -> None:
        with self._wanted:
            self._latest = message_id
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._ring_forever, name="chinwag-doorbell-ringer", daemon=True
                )
                self._thread.start()
            self._wanted.notify()

    def _ring_forever(self) -> None:
        wanted = self._wanted
        while True:
            with wanted:
                while self._latest is None:
                    wanted.wait()
                message_id, self._latest = self._latest, None
            try:
                self._ring(message_id)
            except Exception:  # Doorbell.ring logs its own failures; anything else, here
                log.warning("doorbell not rung for message %s", message_id, exc_info=True)
