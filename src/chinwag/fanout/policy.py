"""Who gets what. Decided twice: when deliveries are written, and again just before each send, so a
device deleted or a member removed or muted after the message was stored gets nothing."""

from __future__ import annotations

import sqlalchemy as sa

from chinwag.store.schema import devices, memberships


def recipient_devices(chat_id: int, sender_id: int) -> sa.Select[tuple[int, int, str]]:
    """Active devices of the chat's members, except the sender's and muted members'."""
    return (
        sa.select(devices.c.id.label("device_id"), devices.c.user_id, devices.c.platform)
        .join(
            memberships,
            (memberships.c.user_id == devices.c.user_id) & (memberships.c.chat_id == chat_id),
        )
        .where(
            devices.c.active.is_(True),
            devices.c.user_id != sender_id,
            memberships.c.muted.is_(False),
        )
    )


def skip_reason(
    *,
    device_active: bool,
    device_owner_id: int,
    recipient_id: int,
    is_member: bool,
    muted: bool,
) -> str | None:
    """Why a delivery written earlier must not be sent now, or None to send it."""
    if not device_active:
        return "device removed"
    if device_owner_id != recipient_id:
        return "device now belongs to another user"
    if not is_member:
        return "no longer a member"
    if muted:
        return "chat muted"
    return None
