"""What wakes the hub on PostgreSQL, and how ephemeral events reach the other gateway processes.

One LISTEN connection per gateway process (psycopg's async driver, so the event loop never
blocks): ``chinwag_events`` notifications are sent by ``events.append`` inside the writing
transaction and arrive on commit; ``chinwag_ephemeral`` ones carry typing events, which are never
stored. Payloads name the writer's schema, so gateways of other schemas sharing the database
ignore them. A notification lost while the connection is down costs nothing but latency: the
hub's safety tail reads the log every couple of seconds anyway, and at once after a reconnect.

On SQLite there is one process and nothing to listen to: the hub ticks, and ephemeral events stay
in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import psycopg
import sqlalchemy as sa

from chinwag.chat import events
from chinwag.live.hub import Frame, Hub

log = logging.getLogger("chinwag.live")

EPHEMERAL_CHANNEL = "chinwag_ephemeral"
MAX_NOTIFY_BYTES = 7000  # PostgreSQL refuses payloads of 8000 bytes or more


def libpq_dsn(url: sa.URL) -> str:
    """The SQLAlchemy URL as a libpq connection string (query options such as search_path kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def current_schema(hub: Hub) -> str:
    with hub.db.read() as conn:
        return str(conn.execute(sa.select(sa.func.current_schema())).scalar_one())


class PostgresWakeups:
    """LISTEN for new events and for other processes' ephemeral events; NOTIFY ours."""

    def __init__(self, hub: Hub, origin: str) -> None:
        self.hub = hub
        self.origin = origin  # this process: its own ephemeral notifications are skipped
        self.schema = ""
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self.schema = await self.hub.run(current_schema, self.hub)
        self.hub.ephemeral_sinks.append(self._publish)
        self._task = asyncio.create_task(self._listen_forever(), name="chinwag-live-listen")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen_forever(self) -> None:
        dsn = libpq_dsn(self.hub.db.engine.url)
        pause = 0.5
        while True:
            started = time.monotonic()
            try:
                await self._listen(dsn)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("live: LISTEN connection lost (%s); reconnecting", exc)
            self.connected.clear()
            if time.monotonic() - started > 30:
                pause = 0.5  # it had been up for a while: this is a fresh failure
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    async def _listen(self, dsn: str) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f"LISTEN {events.NOTIFY_CHANNEL}")
            await conn.execute(f"LISTEN {EPHEMERAL_CHANNEL}")
            self.connected.set()
            self.hub.wake()  # whatever committed while we were not listening
            async for note in conn.notifies():
                if note.channel == events.NOTIFY_CHANNEL:
                    if note.payload in ("", self.schema):
                        self.hub.wake()
                else:
                    self._received(note.payload)

    def _received(self, payload: str) -> None:
        try:
            message: dict[str, Any] = json.loads(payload)
            if message.get("schema") != self.schema or message.get("origin") == self.origin:
                return
            frame = Frame(None, str(message["kind"]), dict(message["data"]), message["at"])
            self.hub.deliver_ephemeral(int(message["chat_id"]), frame, local_only=True)
        except (ValueError, KeyError, TypeError):
            log.warning("live: ignoring a malformed ephemeral notification")

    def _publish(self, chat_id: int, frame: Frame) -> None:
        payload = json.dumps(
            {
                "schema": self.schema,
                "origin": self.origin,
                "chat_id": chat_id,
                "kind": frame.kind,
                "data": frame.data,
                "at": frame.created_at,
            },
            separators=(",", ":"),
        )
        if len(payload.encode()) > MAX_NOTIFY_BYTES:
            log.warning("live: ephemeral %s event too large to share; kept local", frame.kind)
            return
        task = asyncio.create_task(self._notify(payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _notify(self, payload: str) -> None:
        try:
            await self.hub.run(_notify, self.hub, payload)
        except Exception:
            log.warning("live: could not share an ephemeral event", exc_info=True)


def _notify(hub: Hub, payload: str) -> None:
    with hub.db.write() as conn:
        conn.execute(sa.select(sa.func.pg_notify(EPHEMERAL_CHANNEL, payload)))
