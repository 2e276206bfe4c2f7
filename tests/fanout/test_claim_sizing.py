"""The worker claims no more of a provider than the dispatcher (the push registry) has free slots,
so nothing it claims waits idle for one."""

from __future__ import annotations

import asyncio

from tests.conftest import Api
from tests.fanout.recording import RecordingDispatcher
from tests.fanout.test_leases import _expanded_message

from chinwag.fanout import Worker, WorkerOptions
from chinwag.push.model import DeviceTarget, Notification, Outcome, Platform
from chinwag.push.slots import ProviderSlots
from chinwag.store.database import Database


class _HeldDispatcher(RecordingDispatcher):
    """Holds every send until ``release`` is set (a provider that answers slowly)."""

    def __init__(self, slots: ProviderSlots) -> None:
        super().__init__(slots=slots)
        self.release = asyncio.Event()

    async def _answer(self, device: DeviceTarget, notification: Notification) -> Outcome:
        await self.release.wait()
        return await super()._answer(device, notification)


def _in_flight(dispatcher: _HeldDispatcher) -> dict[Platform, int]:
    return {p: dispatcher.slots[p].taken for p in (Platform.APNS, Platform.EMAIL)}


def test_claims_follow_the_registrys_free_slots(api: Api, db: Database) -> None:
    """With 2 email slots, a step claims 2 of 6 due emails (and all 5 APNs rows); further steps
    claim none while the 2 are in flight; once they finish the rest are claimed and sent."""
    _expanded_message(api, db, apns=5, emails=6)
    slots = ProviderSlots({**dict.fromkeys(Platform, 100), Platform.EMAIL: 2})
    dispatcher = _HeldDispatcher(slots)
    worker = Worker(db, dispatcher, WorkerOptions(claim_batch=100))

    async def scenario() -> tuple[dict[Platform, int], dict[Platform, int]]:
        worker._loop = asyncio.get_running_loop()
        await worker._step()
        await asyncio.sleep(0)  # the new sends take their slots
        first = _in_flight(dispatcher)
        await worker._step()
        await worker._step()
        again = _in_flight(dispatcher)
        assert len(worker._in_flight) == 7  # nothing claimed beyond the free slots
        dispatcher.release.set()
        await worker.run_until_idle(limit_seconds=30)
        return first, again

    first, again = asyncio.run(scenario())
    assert first == {Platform.APNS: 5, Platform.EMAIL: 2}
    assert again == first
    emails = [d for d, _ in dispatcher.sent if d.platform is Platform.EMAIL]
    assert len(emails) == 6 and len({d.device_id for d in emails}) == 6
