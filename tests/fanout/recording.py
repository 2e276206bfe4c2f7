"""An in-process dispatcher for engine tests that do not need the network: it records each send
and answers from a script. Tests of the real providers live in tests/push."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind, Platform
from chinwag.push.slots import ProviderSlots

Script = Callable[[DeviceTarget, int], Outcome]


def always_delivered(_device: DeviceTarget, _attempt: int) -> Outcome:
    return Outcome(OutcomeKind.DELIVERED)


class RecordingDispatcher:
    """In-flight limits as the registry's by default (``ProviderSlots``), held the same way."""

    def __init__(
        self,
        script: Script = always_delivered,
        delay: float = 0.0,
        *,
        slots: ProviderSlots | None = None,
    ) -> None:
        self.script = script
        self.delay = delay
        self.slots = slots if slots is not None else ProviderSlots.from_max_in_flight()
        self.sent: list[tuple[DeviceTarget, Notification]] = []
        self.attempts: dict[int, int] = {}
        self.times: dict[int, list[float]] = {}

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        async with self.slots[device.platform]:
            return await self._answer(device, notification)

    def free_slots(self, platform: Platform) -> int:
        return self.slots.free(platform)

    def slot_limit(self, platform: Platform) -> int:
        return self.slots.limit(platform)

    async def _answer(self, device: DeviceTarget, notification: Notification) -> Outcome:
        if self.delay:
            await asyncio.sleep(self.delay)
        attempt = self.attempts.get(device.device_id, 0) + 1
        self.attempts[device.device_id] = attempt
        self.times.setdefault(device.device_id, []).append(asyncio.get_running_loop().time())
        self.sent.append((device, notification))
        return self.script(device, attempt)

    async def aclose(self) -> None:
        return None
