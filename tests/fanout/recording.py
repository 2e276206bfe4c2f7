"""An in-process dispatcher for engine tests that do not need the network: it records each send
and answers from a script. Tests of the real providers live in tests/push."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind

Script = Callable[[DeviceTarget, int], Outcome]


def always_delivered(_device: DeviceTarget, _attempt: int) -> Outcome:
    return Outcome(OutcomeKind.DELIVERED)


class RecordingDispatcher:
    def __init__(self, script: Script = always_delivered, delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self.sent: list[tuple[DeviceTarget, Notification]] = []
        self.attempts: dict[int, int] = {}
        self.times: dict[int, list[float]] = {}

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        if self.delay:
            await asyncio.sleep(self.delay)
        attempt = self.attempts.get(device.device_id, 0) + 1
        self.attempts[device.device_id] = attempt
        self.times.setdefault(device.device_id, []).append(asyncio.get_running_loop().time())
        self.sent.append((device, notification))
        return self.script(device, attempt)

    async def aclose(self) -> None:
        return None
