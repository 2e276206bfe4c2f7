"""Request and response schemas, declared once: they validate input and generate /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


class QuietHoursIn(RequestBody):
    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["22:00"])
    end: str = Field(
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        examples=["07:00"],
        description="Not equal to start; before start, the window crosses midnight",
    )
    timezone: str = Field(min_length=1, max_length=64, examples=["Europe/Berlin"])


class UserSettings(RequestBody):
    """Settings left out keep their value."""

    quiet_when_active: bool = Field(
        default=False,
        description="No mobile push while a live client (GET /v1/events) of yours is open",
    )
    quiet_hours: QuietHoursIn | None = Field(
        default=None,
        description="Phone and browser alerts (APNs, FCM, Web Push) wait for the window's end, "
        "collapsed to the latest per chat; email and webhooks still go. null: none",
    )
    mentions_break_through: bool = Field(
        default=False, description="Messages that @mention you ring even in quiet hours"
    )

    @field_validator("quiet_when_active", "mentions_break_through", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("must be true or false")  # left out is fine; null is not
        return value


class QuietHoursOut(Response):
    start: str
    end: str
    timezone: str


class UserSettingsOut(Response):
    quiet_when_active: bool
    quiet_hours: QuietHoursOut | None
    mentions_break_through: bool


class MeOut(UserOut):
    settings: UserSettingsOut = Field(description="Yours, as PUT /v1/me/settings sets them")


class ChangePassword(RequestBody):
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class TokenOut(Response):
    token: str = Field(description="Shown once; send it as 'Authorization: Bearer <token>'.")
    user: UserOut


# --- devices ------------------------------------------------------------------------------------

PlatformName = Literal["apns", "fcm", "webpush", "email", "webhook"]
PayloadName = Literal["full", "minimal", "encrypted"]


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
    payload: PayloadName | None = Field(
        default=None,
        description="What the push provider sees (docs/private-notifications.md). full: title, "
        "body and ids; minimal: ids and a generic alert, the app fetches the message; "
        "encrypted: a generic alert and `encrypted`, base64url(12-byte nonce ‖ ciphertext ‖ "
        "tag), AES-256-GCM of the full notification's JSON with encryption_key. Omitted: full "
        "for a new device, unchanged for one you registered before",
    )
    encryption_key: str | None = Field(
        default=None,
        max_length=100,
        description='Only with "payload": "encrypted": 32 random bytes, base64. Never shown '
        "again by the API",
    )


class DeviceOut(Response):
    id: int
    platform: str
    app: str
    token: str
    created_at: datetime
    payload: PayloadName = Field(
        default="full", description="What the push provider sees: full, minimal or encrypted"
    )
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


class VapidPublicKey(Response):
    public_key: str = Field(
        description="The server's VAPID public key (base64url of the uncompressed P-256 point): "
        "pass it as applicationServerKey to PushManager.subscribe()"
    )


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
    "pending", "sending", "delivered", "retrying", "deferred", "failed", "token_dead", "skipped"
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
    deferred_until: datetime | None = Field(
        default=None, description="When a deferred delivery goes: the end of quiet hours"
    )


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
