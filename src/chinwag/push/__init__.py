"""Sending notifications to devices: one sender per provider behind one small interface."""

from __future__ import annotations

from chinwag.push.model import (
    DeviceTarget,
    Notification,
    Outcome,
    OutcomeKind,
    Platform,
    Sender,
    delivery_uuid,
)
from chinwag.push.registry import Senders

__all__ = [
    "DeviceTarget",
    "Notification",
    "Outcome",
    "OutcomeKind",
    "Platform",
    "Sender",
    "Senders",
    "delivery_uuid",
]
