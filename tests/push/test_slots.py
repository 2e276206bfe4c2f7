"""The registry owns each provider's in-flight limit; the worker sizes its claims by it."""

from __future__ import annotations

import asyncio

import pytest

from chinwag.config import PushSettings
from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind, Platform
from chinwag.push.registry import Senders
from chinwag.push.slots import SMTP_SESSIONS, InFlight, ProviderSlots

NOTE = Notification(chat_id=1, message_id=2, chat_title="t", sender_name="s", preview="p")


class _GatedSender:
    """Answers DELIVERED once the test opens the gate; counts how many run at once."""

    platform = Platform.WEBHOOK

    def __init__(self, wanted: int) -> None:
        self.gate = asyncio.Event()
        self.wanted = wanted
        self.all_running = asyncio.Event()  # set once ``wanted`` run at once
        self.running = 0
        self.most = 0

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running >= self.wanted:
            self.all_running.set()
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return Outcome(OutcomeKind.DELIVERED)

    async def aclose(self) -> None:
        return None


def _device(i: int) -> DeviceTarget:
    return DeviceTarget(i, Platform.WEBHOOK, f"https://example.org/{i}", f"d{i}")


def test_limits_come_from_max_in_flight_and_email_from_its_sessions() -> None:
    """CHINWAG_MAX_IN_FLIGHT per provider; email no more than its SMTP session pool."""
    slots = ProviderSlots.from_max_in_flight(PushSettings(max_in_flight=700).max_in_flight)
    assert {p: slots.limit(p) for p in Platform} == {
        **dict.fromkeys(Platform, 700),
        Platform.EMAIL: SMTP_SESSIONS,
    }
    assert ProviderSlots.from_max_in_flight(2).limit(Platform.EMAIL) == 2
    assert Senders.from_settings(PushSettings(max_in_flight=9)).slot_limit(Platform.APNS) == 9
    with pytest.raises(ValueError):
        InFlight(0)


def test_registry_bounds_sends_and_counts_waiting_ones_as_taken() -> None:
    """With 3 webhook slots, 5 sends run 3 at a time; free_slots is 0 from the moment they start
    (waiting ones included), and all come back once they finish; other providers are untouched."""

    async def main() -> None:
        gated = _GatedSender(wanted=3)
        slots = ProviderSlots({**dict.fromkeys(Platform, 10), Platform.WEBHOOK: 3})
        senders = Senders({(Platform.WEBHOOK, "*"): gated}, slots=slots)
        tasks = [asyncio.create_task(senders.send(_device(i), NOTE)) for i in range(5)]
        await asyncio.sleep(0)  # each task's first step takes (or queues for) its slot
        assert senders.free_slots(Platform.WEBHOOK) == 0
        assert slots[Platform.WEBHOOK].taken == 5
        assert senders.free_slots(Platform.APNS) == 10
        await asyncio.wait_for(gated.all_running.wait(), 5)
        gated.gate.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
        assert gated.most == 3
        assert senders.free_slots(Platform.WEBHOOK) == 3

    asyncio.run(main())


def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    """A send cancelled while waiting for a slot (lease lost) leaves the count right."""

    async def main() -> None:
        limit = InFlight(1)
        release = asyncio.Event()

        async def hold() -> None:
            async with limit:
                await release.wait()

        holder = asyncio.create_task(hold())
        waiter = asyncio.create_task(hold())
        await asyncio.sleep(0)
        assert (limit.taken, limit.free) == (2, 0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert limit.taken == 1
        release.set()
        await asyncio.wait_for(holder, 5)
        assert (limit.taken, limit.free) == (0, 1)

    asyncio.run(main())
