"""Request and response schemas, declared once: they validate input and generate /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RequestBody(BaseModel):
    # Strict: "5" is not a number and a typo'd field is an error, not silently dropped.
    model_config = ConfigDict(strict=True, extra="forbid")


class QueryParams(BaseModel):
    # Query strings are text: numbers are parsed from them (lax), unknown parameters ignored.
    model_config = ConfigDict(extra="ignore")


class Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- errors -------------------------------------------------------------------------------------


class ErrorDetail(Response):
    code: str = Field(examples=["not_found"])
    message: str
    field: str | None = None


class ErrorResponse(Response):
    error: ErrorDetail


# --- accounts -----------------------------------------------------------------------------------


class CreateUser(RequestBody):
    username: str = Field(min_length=1, max_length=32, examples=["alice"])
    password: str = Field(min_length=8, max_length=1024)
    display_name: str | None = Field(default=None, min_length=1, max_length=128)


class CreateToken(RequestBody):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(Response):
    id: int
    username: str
    display_name: str
    is_admin: bool
    created_at: datetime


class ChangePassword(RequestBody):
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class TokenOut(Response):
    token: str = Field(description="Shown once; send it as 'Authorization: Bearer <token>'.")
    user: UserOut


# --- devices ------------------------------------------------------------------------------------

PlatformName = Literal["apns", "fcm", "webpush", "email", "webhook"]


class WebPushKeys(RequestBody):
    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=100)


class WebPushSubscription(RequestBody):
    model_config = ConfigDict(strict=True, extra="ignore")  # browsers add expirationTime
    endpoint: str = Field(max_length=2048)
    keys: WebPushKeys


class CreateDevice(RequestBody):
    platform: PlatformName
    token: str | WebPushSubscription = Field(
        description="apns: hex token; fcm: registration token; webpush: subscription object; "
        "email: address; webhook: https URL"
    )
    app: str = Field(default="default", min_length=1, max_length=64)


class DeviceOut(Response):
    id: int
    platform: str
    app: str
    token: str
    created_at: datetime
    verified: bool = Field(
        default=True,
        description="False for an email device until POST /v1/devices/{id}/verify accepts the "
        "code mailed to it; it gets nothing else meanwhile",
    )
    webhook_secret: str | None = Field(
        default=None,
        description="Webhook devices: the HMAC-SHA256 key of their X-Chinwag-Signature, shown "
        "once, in the answer to the registration that created the device; null afterwards",
    )
    refreshed_at: datetime = Field(
        description="Last registered (registering it again refreshes it); a device not "
        "refreshed for CHINWAG_DEVICE_STALE_DAYS is deactivated"
    )
    last_success_at: datetime | None = Field(
        default=None, description="When its provider last accepted a notification for it"
    )
    last_failure_at: datetime | None = Field(
        default=None, description="When a notification for it last did not go through"
    )
    last_failure_reason: str | None = Field(
        default=None, description='Why, as "<class>: <provider\'s reason>"'
    )


class DeviceTestOut(Response):
    test_id: int = Field(description="Ask GET /v1/devices/{id}/tests/{test_id} for news")
    device_id: int
    delivery_id: int | None = Field(description="The test's delivery record, once written")
    status: Literal["delivered", "failed", "token_dead", "retrying", "pending", "skipped"] = Field(
        description="pending: not tried yet (202), or its provider is not configured (200, "
        "outcome unavailable); skipped: the device is no longer active, verified or yours"
    )
    outcome: (
        Literal["delivered", "retry", "token_dead", "rejected", "misconfigured", "unavailable"]
        | None
    ) = Field(description="The class of the provider's answer; null until there is one")
    reason: str | None = Field(
        description='What the provider said, e.g. "token_dead: Unregistered (HTTP 410)"'
    )
    advice: str | None = Field(description="What to do about it, and who should")


class VerifyDevice(RequestBody):
    code: str = Field(min_length=1, max_length=16, examples=["123456"])


class DeviceList(Response):
    devices: list[DeviceOut]


# --- chats --------------------------------------------------------------------------------------


class CreateChat(RequestBody):
    title: str = Field(min_length=1, max_length=200)
    members: list[str] = Field(default_factory=list, max_length=1000)


class AddMember(RequestBody):
    username: str = Field(min_length=1, max_length=64)


class ChatSettings(RequestBody):
    muted: bool | None = Field(default=None, description='true means notify "none"')
    notify: Literal["all", "mentions", "none"] | None = Field(
        default=None,
        description="all: every message; mentions: only @mentions of you; none: nothing but "
        "@mentions of you. Takes precedence over muted.",
    )


class MemberOut(Response):
    username: str
    display_name: str
    muted: bool


class ChatOut(Response):
    id: int
    title: str
    created_at: datetime
    muted: bool = Field(description="The requesting member's own setting")
    notify: Literal["all", "mentions", "none"] = Field(description="Your notify level here")
    unread: int = Field(description="Messages after your read marker, not your own")
    members: list[MemberOut] | None = None


class ChatList(Response):
    chats: list[ChatOut]


# --- messages -----------------------------------------------------------------------------------


class SendMessage(RequestBody):
    body: str = Field(min_length=1, max_length=4000)
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Chosen by the client; sending the same client_id again returns the first "
        "message instead of creating a second one.",
    )


class LegacySend(RequestBody):
    conversation: int | str = Field(description="Chat id, or the title of one of your chats")
    message: str = Field(min_length=1, max_length=4000)


class MessageOut(Response):
    id: int
    chat_id: int
    sender: str
    sender_display_name: str
    body: str
    client_id: str | None
    created_at: datetime
    edited_at: datetime | None = None
    deleted: bool = False


class SendOut(Response):
    message: MessageOut
    chat: ChatOut


class HistoryQuery(QueryParams):
    before: int | None = Field(default=None, ge=1, le=2**63 - 1)
    limit: int = Field(default=50, ge=1, le=200)


class MessagePage(Response):
    messages: list[MessageOut]
    next: int | None = Field(
        description="Pass as ?before= for the previous page; null at the start"
    )


# --- deliveries ---------------------------------------------------------------------------------

DeliveryStatus = Literal[
    "pending", "sending", "delivered", "retrying", "failed", "token_dead", "skipped"
]


class DeliveriesQuery(QueryParams):
    after: int | None = Field(default=None, ge=0, le=2**63 - 1)
    limit: int = Field(default=1000, ge=1, le=10_000)


class DeliveryOut(Response):
    id: int
    device_id: int
    platform: str
    user: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    updated_at: datetime
    delivered_at: datetime | None


class DeliveryPage(Response):
    message_id: int
    fanout: str = Field(description="State of the message's fan-out: pending, expanding, done")
    summary: dict[str, int] = Field(description="Number of devices per status")
    deliveries: list[DeliveryOut]
    next: int | None = Field(description="Pass as ?after= for the next page")


# --- system -------------------------------------------------------------------------------------


class Health(Response):
    status: Literal["ok"]
    database: str
    version: str
