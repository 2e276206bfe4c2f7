"""In-flight limits per provider: the one place that bounds how many sends run at once.

The registry (``chinwag.push.registry``) takes a slot around every send; the fan-out worker asks
it how many are free before it claims deliveries, so nothing it claims waits idle for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from chinwag.push.model import Platform

# SMTP sessions per server: SMTP servers limit connections per client, so keep it small; an email
# send holds a session for its whole dialogue, so this is also email's in-flight limit.
SMTP_SESSIONS = 4
# CHINWAG_MAX_IN_FLIGHT's default (``PushSettings.max_in_flight``).
DEFAULT_MAX_IN_FLIGHT = 2000


class InFlight:
    """At most ``limit`` sends of one provider at once; the others wait their turn in order.

    ``taken`` counts the waiting ones too: a send that waits for a slot is already claimed.
    """

    __slots__ = ("_semaphore", "limit", "taken")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an in-flight limit must be at least 1, got {limit}")
        self.limit = limit
        self.taken = 0
        self._semaphore = asyncio.Semaphore(limit)

    @property
    def free(self) -> int:
        return max(0, self.limit - self.taken)

    async def __aenter__(self) -> None:
        self.taken += 1  # before any wait: the caller sizing the next claim must see it at once
        try:
            await self._semaphore.acquire()
        except BaseException:
            self.taken -= 1
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._semaphore.release()
        self.taken -= 1


class ProviderSlots:
    """One ``InFlight`` per platform (every app of a platform shares it)."""

    def __init__(self, limits: Mapping[Platform, int]) -> None:
        self._slots = {platform: InFlight(limits[platform]) for platform in Platform}

    @classmethod
    def from_max_in_flight(cls, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> ProviderSlots:
        """``CHINWAG_MAX_IN_FLIGHT`` per provider; email as many as its SMTP sessions."""
        limits = {platform: max_in_flight for platform in Platform}
        limits[Platform.EMAIL] = max(1, min(max_in_flight, SMTP_SESSIONS))
        return cls(limits)

    def __getitem__(self, platform: Platform) -> InFlight:
        return self._slots[platform]

    def free(self, platform: Platform) -> int:
        return self._slots[platform].free

    def limit(self, platform: Platform) -> int:
        return self._slots[platform].limit
