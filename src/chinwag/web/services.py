"""What the web tier needs from the rest of chinwag, built once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chinwag.config import Settings
from chinwag.store.database import Database


def _no_doorbell(message_id: int) -> None:
    """Without a queue the sweep still finds the outbox row; the doorbell only makes it faster."""


def _no_vapid_key() -> str | None:
    """Web Push is off: there is no key to publish."""
    return None


@dataclass
class Services:
    settings: Settings
    db: Database
    # Called after a message's transaction commits; best effort, must never raise.
    ring_doorbell: Callable[[int], None] = field(default=_no_doorbell)
    # The VAPID public key browsers subscribe with (chinwag.bootstrap.vapid_public_key_source);
    # may raise ConfigError when the operator's key file is unusable.
    vapid_public_key: Callable[[], str | None] = field(default=_no_vapid_key)
