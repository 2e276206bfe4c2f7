"""Routes of conversations: read markers, edits and deletions, the live event stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import bottle
from pydantic import Field

from chinwag.chat import conversations, events
from chinwag.web.api import RequestContext
from chinwag.web.routes import api
from chinwag.web.schemas import QueryParams, RequestBody, Response

STREAM_POLL_SECONDS = 0.5
STREAM_ACTIVE_EVERY_SECONDS = 20.0
# A stream ends after this long and the client reconnects with Last-Event-ID: it bounds how long
# a server thread is held and lets load balancers rebalance.
STREAM_MAX_SECONDS = 300.0
MAX_LONG_POLL_SECONDS = 30


class MarkRead(RequestBody):
    message_id: int = Field(ge=1, le=2**63 - 1)


class ReadState(Response):
    chat_id: int
    last_read_message_id: int
    unread: int


class EditMessage(RequestBody):
    body: str = Field(min_length=1, max_length=4000)


class Edited(Response):
    id: int
    chat_id: int
    body: str
    edited_at: datetime


class UserSettings(RequestBody):
    quiet_when_active: bool = Field(
        description="No mobile push while a live client (GET /v1/events) of yours is open"
    )


class UserSettingsOut(Response):
    quiet_when_active: bool


class EventsQuery(QueryParams):
    after: int | None = Field(default=None, ge=0, le=2**63 - 1, description="Last event id seen")
    wait: int = Field(default=0, ge=0, le=MAX_LONG_POLL_SECONDS, description="Long-poll seconds")
    access_token: str | None = Field(
        default=None, description="For EventSource, which cannot send an Authorization header"
    )


class EventOut(Response):
    id: int
    kind: str = Field(description="message, message_edited, message_deleted, read or delivery")
    data: dict[str, Any]


class EventPage(Response):
    events: list[EventOut]
    last_id: int


@api.route(
    "POST",
    "/v1/chats/<chat_id:int>/read",
    summary="Mark the chat read up to a message",
    body=MarkRead,
    response=ReadState,
    errors=(401, 404, 422),
    tag="conversations",
)
def mark_read(ctx: RequestContext, chat_id: int) -> ReadState:
    body: MarkRead = ctx.body
    marker, unread = conversations.mark_read(ctx.services.db, ctx.member, chat_id, body.message_id)
    ctx.services.ring_doorbell(body.message_id)  # the clear updates for the member's devices
    return ReadState(chat_id=chat_id, last_read_message_id=marker, unread=unread)


@api.route(
    "PATCH",
    "/v1/chats/<chat_id:int>/messages/<message_id:int>",
    summary="Edit your message",
    body=EditMessage,
    response=Edited,
    errors=(401, 403, 404, 422),
    tag="conversations",
)
def edit_message(ctx: RequestContext, chat_id: int, message_id: int) -> Edited:
    body: EditMessage = ctx.body
    conversations.edit_message(ctx.services.db, ctx.member, chat_id, message_id, body.body)
    return Edited(
        id=message_id,
        chat_id=chat_id,
        body=body.body,
        edited_at=time.time(),  # type: ignore[arg-type]  # pydantic parses epoch seconds
    )


@api.route(
    "DELETE",
    "/v1/chats/<chat_id:int>/messages/<message_id:int>",
    summary="Delete your message: pending pushes are cancelled, shown ones withdrawn",
    status=204,
    errors=(401, 403, 404),
    tag="conversations",
)
def delete_message(ctx: RequestContext, chat_id: int, message_id: int) -> None:
    removals = conversations.delete_message(ctx.services.db, ctx.member, chat_id, message_id)
    if removals:
        ctx.services.ring_doorbell(message_id)


@api.route(
    "PUT",
    "/v1/me/settings",
    summary="Your notification settings",
    body=UserSettings,
    response=UserSettingsOut,
    errors=(401, 422),
    tag="conversations",
)
def user_settings(ctx: RequestContext) -> UserSettingsOut:
    body: UserSettings = ctx.body
    conversations.set_quiet_when_active(ctx.services.db, ctx.member, body.quiet_when_active)
    return UserSettingsOut(quiet_when_active=body.quiet_when_active)


@api.route(
    "GET",
    "/v1/events",
    summary="Your live stream: Server-Sent Events (Accept: text/event-stream, resumes from "
    "Last-Event-ID) or a long poll (JSON, ?after=&wait=)",
    query=EventsQuery,
    response=EventPage,
    errors=(401, 422),
    tag="conversations",
    stream=True,
)
def event_stream(ctx: RequestContext) -> EventPage | Iterator[str]:
    query: EventsQuery = ctx.query
    db, user = ctx.services.db, ctx.member
    last_event_id = bottle.request.get_header("Last-Event-ID", "")
    after = query.after
    if after is None and last_event_id.isdigit():
        after = int(last_event_id)
    if after is None:
        after = events.latest_id(db)  # a fresh client starts from now
    if "text/event-stream" in bottle.request.get_header("Accept", ""):
        bottle.response.content_type = "text/event-stream"
        bottle.response.set_header("Cache-Control", "no-cache")
        bottle.response.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        return _sse(db, user.id, after, ctx.services.settings.stream_heartbeat_seconds)
    deadline = time.monotonic() + query.wait
    found = events.visible_after(db, user.id, after)
    while not found and time.monotonic() < deadline:
        time.sleep(STREAM_POLL_SECONDS)
        found = events.visible_after(db, user.id, after)
    return EventPage(
        events=[EventOut(id=e.id, kind=e.kind, data=e.data) for e in found],
        last_id=found[-1].id if found else after,
    )


def _sse(db: Any, user_id: int, after: int, heartbeat: float) -> Iterator[str]:
    started = last_beat = time.monotonic()
    last_active = 0.0
    yield f"retry: 2000\n: stream from event {after}\n\n"
    while time.monotonic() - started < STREAM_MAX_SECONDS:
        now = time.monotonic()
        if now - last_active >= STREAM_ACTIVE_EVERY_SECONDS:
            events.touch_active(db, user_id)
            last_active = now
        batch = events.visible_after(db, user_id, after)
        for event in batch:
            after = event.id
            yield f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.data)}\n\n"
        if batch:
            last_beat = time.monotonic()
        elif time.monotonic() - last_beat >= heartbeat:
            last_beat = time.monotonic()
            yield ": keep-alive\n\n"  # also how a closed connection is noticed
        else:
            time.sleep(STREAM_POLL_SECONDS)
