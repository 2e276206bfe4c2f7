"""``GET /v1/events`` (Server-Sent Events or a long poll) and ``GET /v1/ws`` (WebSocket).

Each connection is a coroutine holding a ``Subscriber`` of the process's hub: it first replays
what the client missed from the log (its resume point: ``Last-Event-ID`` or ``?after=``), then
writes what the hub queues for it. Nothing here reads the database per connection after that.

Frames:
- SSE: ``id: N\\nevent: kind\\ndata: json\\n\\n``; ``id`` is the resume cursor (the highest event
  id sent so far); ephemeral events (``typing``) have no ``id`` line. A comment line every
  ``stream_heartbeat_seconds`` while idle.
- Long poll: ``{"events": [{"id", "kind", "data"}], "last_id"}``, stored events only.
- WebSocket: one JSON text frame per event, ``{"id", "kind", "data"}`` (``id`` null for ephemeral
  ones and for ``error`` replies to the client's frames).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from chinwag.chat import accounts
from chinwag.chat.accounts import Session
from chinwag.chat.errors import ChinwagError, RateLimited, Unauthorized
from chinwag.config import Settings
from chinwag.live import metrics
from chinwag.live.hub import (
    CLOSED,
    SIGNED_OUT_REASON,
    SLOW_CONSUMER_REASON,
    Frame,
    Hub,
    Subscriber,
    _Beat,
    _Closed,
)
from chinwag.live.wakeups import PostgresWakeups
from chinwag.store.database import Database

log = logging.getLogger("chinwag.live")

MAX_ID = 2**63 - 1
MAX_LONG_POLL_SECONDS = 30
LONG_POLL_PAGE = 200
WRITE_BATCH = 64  # frames written together when the queue has several
TYPING_EVERY_SECONDS = 0.5  # a client's typing frames for one chat beyond this are ignored
# Why the server ends a WebSocket: a slow reader may try again later (1013); a revoked token's
# stream must not reconnect with it (1008, policy violation). Otherwise 1001, going away.
CLOSE_CODES = {SLOW_CONSUMER_REASON: 1013, SIGNED_OUT_REASON: 1008}
_CURSOR = re.compile(r"[0-9]{1,19}")


class BadRequest(ChinwagError):
    code = "bad_request"
    status = 400


class Gateway:
    """The live endpoints of one process, around its hub."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.settings = settings
        self.hub = Hub(db, settings)
        self.wakeups = PostgresWakeups(self.hub, uuid.uuid4().hex) if db.is_postgres else None

    async def start(self) -> None:
        await self.hub.start()
        if self.wakeups is not None:
            await self.wakeups.start()

    async def stop(self) -> None:
        if self.wakeups is not None:
            await self.wakeups.stop()
        await self.hub.stop()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/events", _EventsEndpoint(self)),
            WebSocketRoute("/v1/ws", self.websocket),
        ]

    # -- shared ---------------------------------------------------------------------------------

    async def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Session:
        """``Authorization: Bearer``, or ``?access_token=`` for browsers' EventSource/WebSocket."""
        header = headers.get("authorization", "")
        if not header and query.get("access_token"):
            header = "Bearer " + query.get("access_token", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send 'Authorization: Bearer <token>' (POST /v1/tokens gives one)")
        # The same check as the REST API's, idle expiry included (CHINWAG_TOKEN_IDLE_DAYS).
        check = partial(
            accounts.authenticate_token, idle_seconds=self.settings.token_idle_days * 86400
        )
        return await self.hub.run(check, self.hub.db, token.strip())

    async def replay(
        self, subscriber: Subscriber, write: Callable[[list[Frame]], Awaitable[None]]
    ) -> None:
        """Write what the client missed, page by page, until the hub's queue takes over."""
        while not subscriber.caught_up:
            frames = [f for f in await self.hub.backfill(subscriber) if subscriber.accept(f)]
            if frames:
                await write(frames)

    async def relay(
        self,
        subscriber: Subscriber,
        write: Callable[[list[Frame]], Awaitable[None]],
        idle: Callable[[], Awaitable[None]] | None,
    ) -> None:
        """Write what the hub queues until the subscriber is closed; ``idle`` at a heartbeat."""
        queue = subscriber.queue
        while True:
            item = await queue.get()
            batch: list[Frame] = []
            while True:
                if isinstance(item, _Closed):
                    if batch:
                        await self._write_counted(batch, write)
                    return
                if isinstance(item, _Beat):
                    if idle is not None and not batch:
                        await idle()
                elif subscriber.accept(item):
                    batch.append(item)
                if len(batch) >= WRITE_BATCH or queue.empty():
                    break
                item = queue.get_nowait()
            if batch:
                await self._write_counted(batch, write)

    @staticmethod
    async def _write_counted(
        frames: list[Frame], write: Callable[[list[Frame]], Awaitable[None]]
    ) -> None:
        await write(frames)
        now = time.time()
        for frame in frames:
            if frame.id is not None:
                metrics.FANOUT_SECONDS.observe(max(0.0, now - frame.created_at))
        metrics.FANNED_OUT.inc(len(frames))

    # -- WebSocket ------------------------------------------------------------------------------

    async def websocket(self, websocket: WebSocket) -> None:
        try:
            session = await self.authenticate(websocket.headers, websocket.query_params)
            after = parse_cursor(websocket.query_params.get("after"), "after")
            subscriber = await self.hub.subscribe(
                session.user, "ws", after, token_id=session.token_id
            )
        except Exception as exc:
            await _deny(websocket, error_response(exc))
            return
        try:
            await websocket.accept()
            await self._serve_websocket(websocket, subscriber)
        finally:
            self.hub.unsubscribe(subscriber)

    async def _serve_websocket(self, websocket: WebSocket, subscriber: Subscriber) -> None:
        async def write(frames: list[Frame]) -> None:
            for frame in frames:
                await websocket.send_text(frame.websocket_text)

        async def pump() -> None:
            await self.replay(subscriber, write)
            await self.relay(subscriber, write, idle=None)  # the server pings (uvicorn)

        sender = asyncio.create_task(pump())
        reader = asyncio.create_task(self._read_client_frames(websocket, subscriber))
        subscriber.on_drop = sender.cancel
        try:
            done, _ = await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, reader):
                task.cancel()
            await asyncio.gather(sender, reader, return_exceptions=True)
        if reader not in done:  # we end it: shut down, or too slow a reader
            code = CLOSE_CODES.get(subscriber.close_reason, 1001)  # 1001: going away
            try:
                async with asyncio.timeout(2):
                    await websocket.close(code=code, reason=subscriber.close_reason[:100])
            except (TimeoutError, RuntimeError, OSError, WebSocketDisconnect):
                pass

    async def _read_client_frames(self, websocket: WebSocket, subscriber: Subscriber) -> None:
        last_typing: dict[int, float] = {}
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self._reply(subscriber, "bad_request", "send JSON text frames")
                continue
            try:
                document = json.loads(text)
            except (ValueError, RecursionError):
                self._reply(subscriber, "bad_request", "the frame is not valid JSON")
                continue
            if not isinstance(document, dict) or document.get("type") != "typing":
                self._reply(subscriber, "bad_request", 'known frames: {"type": "typing", ...}')
                continue
            chat_id = document.get("chat_id")
            if not isinstance(chat_id, int) or isinstance(chat_id, bool):
                self._reply(subscriber, "bad_request", "chat_id must be a chat's id")
                continue
            if not self.hub.is_member(subscriber.user.id, chat_id):
                self._reply(subscriber, "not_found", f"no chat {chat_id}")
                continue
            now = time.monotonic()
            previous = last_typing.get(chat_id)
            if previous is not None and now - previous < TYPING_EVERY_SECONDS:
                continue
            last_typing[chat_id] = now
            user = subscriber.user
            data = {
                "chat_id": chat_id,
                "user_id": user.id,
                "username": user.username,
                "display_name": user.display_name,
            }
            self.hub.deliver_ephemeral(chat_id, Frame(None, "typing", data, time.time()))

    @staticmethod
    def _reply(subscriber: Subscriber, code: str, message: str) -> None:
        """An error frame to this connection only, in order with its events."""
        if subscriber.closed or subscriber.queue.full():
            return
        data = {"code": code, "message": message}
        subscriber.queue.put_nowait(Frame(None, "error", data, time.time()))


class _EventsEndpoint:
    """``GET /v1/events``: a plain ASGI app, so that a stalled write can be abandoned."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.hub = gateway.hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        sse = "text/event-stream" in request.headers.get("accept", "")
        try:
            if request.method not in ("GET", "HEAD"):
                raise _MethodNotAllowed()
            session = await self.gateway.authenticate(request.headers, request.query_params)
            query = request.query_params
            after = parse_cursor(query.get("after"), "after")
            if sse:
                resumed = parse_cursor(request.headers.get("last-event-id"), "Last-Event-ID")
                after = resumed if resumed is not None else after
                wait = 0
            else:
                wait = parse_wait(query.get("wait"))
            subscriber = await self.hub.subscribe(
                session.user, "sse" if sse else "longpoll", after, token_id=session.token_id
            )
        except Exception as exc:
            await error_response(exc)(scope, receive, send)
            return
        try:
            if sse:
                await self._stream(subscriber, receive, send)
            else:
                page = await self._long_poll(subscriber, wait)
                await JSONResponse(page)(scope, receive, send)
        finally:
            self.hub.unsubscribe(subscriber)

    async def _long_poll(self, subscriber: Subscriber, wait: int) -> dict[str, Any]:
        frames = [f for f in await self.hub.backfill(subscriber, LONG_POLL_PAGE)]
        found = [f for f in frames if subscriber.accept(f)]
        if not found and wait:
            try:
                async with asyncio.timeout(wait):
                    while not found:
                        item = await subscriber.queue.get()
                        if isinstance(item, _Closed):
                            break
                        if (
                            isinstance(item, Frame)
                            and item.id is not None
                            and subscriber.accept(item)
                        ):
                            found.append(item)
            except TimeoutError:
                pass
            while found and len(found) < LONG_POLL_PAGE and not subscriber.queue.empty():
                item = subscriber.queue.get_nowait()
                if isinstance(item, Frame) and item.id is not None and subscriber.accept(item):
                    found.append(item)
        return {
            "events": [frame.as_json_object() for frame in found],
            "last_id": subscriber.cursor,
        }

    async def _stream(self, subscriber: Subscriber, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
                ],
            }
        )

        async def chunk(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        sent = subscriber.after  # the id line is the resume point: never goes back

        async def write(frames: list[Frame]) -> None:
            nonlocal sent
            parts = []
            for frame in frames:
                sent = max(sent, frame.id or 0)
                parts.append(_sse_frame(frame, sent))
            await chunk("".join(parts))

        async def beat() -> None:
            await chunk(": keep-alive\n\n")

        async def pump() -> None:
            await chunk(f"retry: 2000\n: stream from event {subscriber.after}\n\n")
            await self.gateway.replay(subscriber, write)
            await self.gateway.relay(subscriber, write, idle=beat)

        sender = asyncio.create_task(pump())
        watcher = asyncio.create_task(_until_disconnect(receive))
        subscriber.on_drop = sender.cancel
        try:
            done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, watcher):
                task.cancel()
            await asyncio.gather(sender, watcher, return_exceptions=True)
        # Asked before the cancels above, which leave both tasks done: only a stream the server
        # ended (shut down, signed out) gets the body's clean end.
        if watcher in done or sender.cancelled() or sender.exception() is not None:
            # Dropped (a stalled write was abandoned) or gone: the server closes the connection.
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _MethodNotAllowed(ChinwagError):
    code = "method_not_allowed"
    status = 405

    def __init__(self) -> None:
        super().__init__("use GET")


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _deny(websocket: WebSocket, response: Response) -> None:
    """Refuse the handshake with the contract's JSON error (or a close where unsupported)."""
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.close(code=1008)


def _sse_frame(frame: Frame, cursor: int) -> str:
    if frame.id is None:
        return f"event: {frame.kind}\ndata: {frame.data_json}\n\n"
    return f"id: {cursor}\nevent: {frame.kind}\ndata: {frame.data_json}\n\n"


def parse_cursor(raw: str | None, name: str) -> int | None:
    """An event id the client has seen: a non-negative 64-bit integer, or absent."""
    if raw is None or raw == "":
        return None
    if not _CURSOR.fullmatch(raw) or int(raw) > MAX_ID:
        raise BadRequest(f"{name} must be an event id (a whole number from 0 to {MAX_ID})")
    return int(raw)


def parse_wait(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    if not re.fullmatch(r"[0-9]{1,3}", raw) or int(raw) > MAX_LONG_POLL_SECONDS:
        raise BadRequest(
            f"wait must be a whole number of seconds from 0 to {MAX_LONG_POLL_SECONDS}"
        )
    return int(raw)


def error_response(exc: BaseException) -> JSONResponse:
    """The contract's error shape for anything refused before a stream starts."""
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, _MethodNotAllowed):
        headers["Allow"] = "GET"
    if isinstance(exc, ChinwagError):
        status, code, message = exc.status, exc.code, exc.message
    elif isinstance(exc, (OperationalError, PoolTimeout)):
        log.warning("live: database unavailable: %s", type(exc).__name__)
        status, code, message = 503, "unavailable", "the database is unavailable; try again shortly"
        headers["Retry-After"] = "1"
    else:
        log.error("live: unexpected error opening a stream", exc_info=exc)
        status, code, message = 500, "internal", "internal error; it has been logged"
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


__all__ = ["CLOSED", "BadRequest", "Gateway", "parse_cursor"]
