"""The values of the tables' status, state, kind and level columns, as enums.

They live in ``store`` because the columns do, and because both the domain (``chat``, which
writes outbox rows and reads deliveries) and the engine (``fanout``) import them: ``store`` is the
one package below both. Each member is a ``StrEnum``, so it compares equal to, and is written to
the database as, the same string the column always held.
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    """``deliveries.status``: what GET /v1/messages/{id}/deliveries shows per device."""

    PENDING = "pending"  # waiting for its first attempt, or for a provider to be configured
    SENDING = "sending"  # claimed under a lease
    DELIVERED = "delivered"
    RETRYING = "retrying"  # failed and due again after a backoff
    # Held by the recipient's quiet hours; goes at next_attempt_at, the window's end.
    DEFERRED = "deferred"
    FAILED = "failed"  # gave up: our payload or settings are wrong, or attempts ran out
    TOKEN_DEAD = "token_dead"  # the provider says the device is gone
    SKIPPED = "skipped"  # the policy said not to send it (last_error says why)


# Rows a worker may still send (each when its next_attempt_at comes).
WAITING = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING, DeliveryStatus.DEFERRED)


class DeliveryKind(StrEnum):
    """``deliveries.kind`` and ``outbox.kind``: what a delivery carries, what a fan-out is for."""

    ALERT = "alert"  # a new message, shown to the user
    CLEAR = "clear"  # silent: the user read up to the message elsewhere (badge, clear the tray)
    REMOVAL = "removal"  # silent: the message was deleted; withdraw its notification
    # Outbox only, writes no deliveries: the user (outbox.user_id) changed their quiet hours; ask
    # the policy again about their deferred alerts now (message_id: one of those alerts').
    RECONSIDER = "reconsider"
    TEST = "test"  # shown: a test notification its owner asked for; one device, no message


class OutboxState(StrEnum):
    """``outbox.state``: a fan-out still to expand, expanded, or cancelled before it was."""

    PENDING = "pending"
    DONE = "done"
    CANCELLED = "cancelled"


class VerificationStatus(StrEnum):
    """``device_verifications.status``: the mailing of an email device's code."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class NotifyLevel(StrEnum):
    """``memberships.notify_level``: what a member hears of a chat (see chinwag.fanout.policy)."""

    ALL = "all"
    MENTIONS = "mentions"
    NONE = "none"
