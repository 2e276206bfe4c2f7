"""Who gets what. Decided twice: when deliveries are written, and again just before each send, so a
device deleted, a member removed or muted, or a message deleted after it was stored gets nothing.

Notify levels per member and chat: "all" notifies every message; "mentions" only messages that
@mention the member; "none" (what ``muted: true`` sets) nothing but direct @mentions — a mention is
addressed to the person, so it pierces a mute, as members of busy groups expect. A "none" chat
also stays out of the badge total.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from chinwag.store.schema import devices, memberships, mentions

# Mobile pushes are held back for a user with quiet_when_active whose live client was seen within
# this many seconds (the stream refreshes it every 20 s while open).
ACTIVE_WINDOW_SECONDS = 45.0
MOBILE_PLATFORMS = frozenset({"apns", "fcm"})


def recipient_devices(
    chat_id: int, sender_id: int, message_id: int
) -> sa.Select[tuple[int, int, str]]:
    """Active, verified devices of the members the message should notify, never the sender's."""
    mentioned = sa.select(mentions.c.user_id).where(mentions.c.message_id == message_id)
    return (
        sa.select(devices.c.id.label("device_id"), devices.c.user_id, devices.c.platform)
        .join(
            memberships,
            (memberships.c.user_id == devices.c.user_id) & (memberships.c.chat_id == chat_id),
        )
        .where(
            devices.c.active.is_(True),
            # An email device whose owner has not proved the mailbox gets nothing but its code.
            devices.c.verified.is_(True),
            devices.c.user_id != sender_id,
            (memberships.c.notify_level == "all") | devices.c.user_id.in_(mentioned),
        )
    )


# Not frozen: one is built per delivery on the claim path, and frozen dataclasses set each
# field through object.__setattr__, which made them a visible share of the worker's CPU.
@dataclass(slots=True)
class SendTimeFacts:
    kind: str
    platform: str
    device_active: bool
    device_owner_id: int
    recipient_id: int
    is_member: bool
    notify_level: str | None
    mentioned: bool
    message_deleted: bool
    quiet_when_active: bool
    last_active_at: float | None


def skip_reason(facts: SendTimeFacts, now: float) -> str | None:
    """Why a delivery written earlier must not be sent now, or None to send it."""
    if not facts.device_active:
        return "device removed"
    if facts.device_owner_id != facts.recipient_id:
        return "device now belongs to another user"
    if facts.kind != "alert":
        return None  # silent updates concern the device owner's own state
    if facts.message_deleted:
        return "message deleted"
    if not facts.is_member:
        return "no longer a member"
    if facts.notify_level != "all" and not facts.mentioned:
        return "chat muted" if facts.notify_level == "none" else "notify level: mentions only"
    if (
        facts.quiet_when_active
        and facts.platform in MOBILE_PLATFORMS
        and facts.last_active_at is not None
        and now - facts.last_active_at < ACTIVE_WINDOW_SECONDS
    ):
        return "user active on a live client"
    return None
