"""Routes of conversations: read markers, edits and deletions, and the live stream's declaration
(the stream itself is served by the live gateway, ``chinwag.live``)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import bottle
from pydantic import Field

from chinwag.chat import edits, events, notify_settings, read_markers
from chinwag.chat.errors import InvalidInput
from chinwag.web import schemas as s
from chinwag.web.api import Api, HttpError, RequestContext
from chinwag.web.schemas import QueryParams, RequestBody, Response

api = Api()  # the routes below; create_app mounts them

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


class EventsQuery(QueryParams):
    after: int | None = Field(default=None, ge=0, le=2**63 - 1, description="Last event id seen")
    wait: int = Field(default=0, ge=0, le=MAX_LONG_POLL_SECONDS, description="Long-poll seconds")
    access_token: str | None = Field(
        default=None, description="For EventSource, which cannot send an Authorization header"
    )


class EventOut(Response):
    id: int
    kind: str = Field(
        description="message, message_edited, message_deleted, read, delivery, member_added or "
        "member_removed"
    )
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
    marker, unread = read_markers.mark_read(ctx.services.db, ctx.member, chat_id, body.message_id)
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
    edits.edit_message(ctx.services.db, ctx.member, chat_id, message_id, body.body)
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
    removals = edits.delete_message(ctx.services.db, ctx.member, chat_id, message_id)
    if removals:
        ctx.services.ring_doorbell(message_id)


@api.route(
    "PUT",
    "/v1/me/settings",
    summary="Your notification settings",
    body=s.UserSettings,
    response=s.UserSettingsOut,
    errors=(401, 422),
    tag="conversations",
)
def user_settings(ctx: RequestContext) -> s.UserSettingsOut:
    body: s.UserSettings = ctx.body
    given = body.model_fields_set
    if not given:
        raise InvalidInput(
            "send quiet_when_active, quiet_hours or mentions_break_through", field="quiet_hours"
        )
    quiet = body.quiet_hours
    changed, reconsider = notify_settings.update_settings(
        ctx.services.db,
        ctx.member,
        quiet_when_active=(
            body.quiet_when_active if "quiet_when_active" in given else notify_settings.UNCHANGED
        ),
        quiet_hours=(
            (notify_settings.QuietHours(quiet.start, quiet.end, quiet.timezone) if quiet else None)
            if "quiet_hours" in given
            else notify_settings.UNCHANGED
        ),
        mentions_break_through=(
            body.mentions_break_through
            if "mentions_break_through" in given
            else notify_settings.UNCHANGED
        ),
    )
    if reconsider is not None:
        ctx.services.ring_doorbell(reconsider)  # deferred alerts to decide about again
    return settings_out(changed)


def settings_out(settings: notify_settings.NotifySettings) -> s.UserSettingsOut:
    quiet = settings.quiet_hours
    return s.UserSettingsOut(
        quiet_when_active=settings.quiet_when_active,
        quiet_hours=(
            s.QuietHoursOut(start=quiet.start, end=quiet.end, timezone=quiet.timezone)
            if quiet
            else None
        ),
        mentions_break_through=settings.mentions_break_through,
    )


@api.route(
    "GET",
    "/v1/events",
    summary="Your live stream, served by the live gateway (chinwag live, chinwag.asgi): "
    "Server-Sent Events (Accept: text/event-stream, resumes from Last-Event-ID) or a long poll "
    "(JSON, ?after=&wait=). WebSocket: GET /v1/ws. A plain WSGI server answers only wait=0",
    query=EventsQuery,
    response=EventPage,
    errors=(400, 401, 404, 422, 429),
    tag="conversations",
    stream=True,
)
def event_stream(ctx: RequestContext) -> EventPage:
    """What a plain WSGI deployment (gunicorn chinwag.wsgi:application) answers here.

    Holding a connection open would hold one of its threads, which is what the gateway exists to
    avoid, so streams and waiting long polls are refused with a pointer to it; a catch-up read
    that waits for nothing (``wait=0``) is answered at once. ``chinwag serve``,
    ``chinwag live`` and ``chinwag.asgi:application`` answer this path from the gateway and never
    reach this function.
    """
    query: EventsQuery = ctx.query
    if query.wait or "text/event-stream" in bottle.request.get_header("Accept", ""):
        raise HttpError(
            404,
            "not_found",
            "live streams are served by the live gateway (chinwag live or "
            "chinwag.asgi:application); route /v1/events and /v1/ws to it",
        )
    db, user = ctx.services.db, ctx.member
    after = events.latest_id(db) if query.after is None else query.after
    found = events.visible_after(db, user.id, after)
    return EventPage(
        events=[EventOut(id=e.id, kind=e.kind, data=e.data) for e in found],
        last_id=found[-1].id if found else after,
    )
