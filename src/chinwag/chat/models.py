"""Plain records the domain hands to the web layer (and the fan-out engine)."""

from __future__ import annotations

from dataclasses import dataclass

from chinwag.store.states import NotifyLevel

# Per member and chat: every message, only @mentions, or nothing but @mentions (muted).
NOTIFY_LEVELS = tuple(level.value for level in NotifyLevel)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    is_admin: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    user_id: int
    platform: str
    app: str
    token: str
    active: bool
    created_at: float
    verified: bool = True
    # Set only on the answer to the registration that created it: shown once, never again.
    webhook_secret: str | None = None
    # full | minimal | encrypted (push.model.PayloadMode). The encryption key is never here:
    # it is a secret of the device's owner, read only by the worker that seals for it.
    payload: str = "full"
    refreshed_at: float = 0.0  # last registered (or registered again)
    # What the provider last said about it (recorded by the worker).
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Member:
    username: str
    display_name: str
    muted: bool


@dataclass(frozen=True, slots=True)
class Chat:
    id: int
    title: str
    created_by: int
    created_at: float
    members: tuple[Member, ...]
    muted: bool  # the requesting member's own setting (notify == "none")
    notify: str = NotifyLevel.ALL.value  # all | mentions | none
    unread: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    chat_id: int
    sender_id: int
    sender_username: str
    sender_display_name: str
    body: str
    client_id: str | None
    created_at: float
    edited_at: float | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    message_id: int
    device_id: int
    platform: str
    username: str
    status: str
    attempts: int
    last_error: str | None
    updated_at: float
    delivered_at: float | None
    deferred_until: float | None = None  # a deferred delivery goes then (quiet hours)
