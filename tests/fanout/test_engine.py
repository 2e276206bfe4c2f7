"""The fan-out engine against real databases, with a recording dispatcher in place of providers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa
from tests.conftest import Api
from tests.fanout.recording import RecordingDispatcher
from tests.support.seed import add_devices

from chinwag.fanout import RetryPolicy, Worker, WorkerOptions
from chinwag.fanout import worker as worker_module
from chinwag.fanout.outbox import claim_outbox, expand_batch
from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind
from chinwag.store.database import Database
from chinwag.store.schema import deliveries


def _hex(n: int) -> str:
    return f"{n:064x}"


def _setup_group(
    api: Api, members: int, devices_each: int
) -> tuple[httpx.Client, int, list[httpx.Client]]:
    sender = api.user("sender")
    sender.post("/v1/devices", json={"platform": "apns", "token": _hex(999_999)})
    clients: list[httpx.Client] = []
    for i in range(members):
        client = api.user(f"m{i}")
        for d in range(devices_each):
            r = client.post(
                "/v1/devices", json={"platform": "apns", "token": _hex(i * 100 + d + 1)}
            )
            assert r.status_code == 201
        clients.append(client)
    chat = sender.post(
        "/v1/chats", json={"title": "Team", "members": [f"m{i}" for i in range(members)]}
    )
    return sender, chat.json()["id"], clients


def _run(worker: Worker) -> None:
    asyncio.run(worker.run_until_idle(limit_seconds=30))


def test_every_member_device_notified_once_except_sender_and_muted(api: Api, db: Database) -> None:
    """Every unmuted member's device gets one notification; sender and muted get none."""
    sender, chat_id, clients = _setup_group(api, members=4, devices_each=2)
    muted = clients[3]
    assert muted.put(f"/v1/chats/{chat_id}/settings", json={"muted": True}).status_code == 200
    sent = sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "lunch?"})
    assert sent.status_code == 201
    dispatcher = RecordingDispatcher()
    _run(Worker(db, dispatcher))
    tokens = Counter(device.token for device, _ in dispatcher.sent)
    expected = {_hex(i * 100 + d + 1) for i in range(3) for d in range(2)}
    assert set(tokens) == expected
    assert all(count == 1 for count in tokens.values())
    note = dispatcher.sent[0][1]
    assert note.title == "Team" and note.body == "sender: lunch?"
    message_id = sent.json()["message"]["id"]
    page = sender.get(f"/v1/messages/{message_id}/deliveries").json()
    assert page["summary"] == {"delivered": 6}
    assert page["fanout"] == "done"
    assert {row["status"] for row in page["deliveries"]} == {"delivered"}


def test_retry_later_is_rescheduled_then_delivered(api: Api, db: Database) -> None:
    """A RETRY outcome is retried after Retry-After, then recorded delivered with attempts=2."""
    sender, chat_id, _ = _setup_group(api, members=1, devices_each=1)

    def flaky(device: DeviceTarget, attempt: int) -> Outcome:
        if attempt == 1:
            return Outcome(OutcomeKind.RETRY, reason="TooManyRequests", retry_after=0.3)
        return Outcome(OutcomeKind.DELIVERED)

    dispatcher = RecordingDispatcher(flaky)
    message = sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "x"}).json()["message"]
    options = WorkerOptions(retry=RetryPolicy(base_seconds=0.01))
    _run(Worker(db, dispatcher, options))
    times = next(iter(dispatcher.times.values()))
    assert len(times) == 2
    assert times[1] - times[0] >= 0.3
    rows = sender.get(f"/v1/messages/{message['id']}/deliveries").json()["deliveries"]
    assert [(r["status"], r["attempts"]) for r in rows] == [("delivered", 2)]


def test_token_dead_deactivates_device_and_is_never_retried(api: Api, db: Database) -> None:
    """TOKEN_DEAD marks the delivery, deactivates the device, and later messages skip it."""
    sender, chat_id, clients = _setup_group(api, members=1, devices_each=2)
    dead = _hex(1)
    dispatcher = RecordingDispatcher(
        lambda d, _a: (
            Outcome(OutcomeKind.TOKEN_DEAD, reason="Unregistered", status=410)
            if d.token == dead
            else Outcome(OutcomeKind.DELIVERED)
        )
    )
    for body in ("one", "two"):
        sender.post(f"/v1/chats/{chat_id}/messages", json={"body": body})
        _run(Worker(db, dispatcher))
    assert Counter(d.token for d, _ in dispatcher.sent) == {dead: 1, _hex(2): 2}
    assert [d["token"] for d in clients[0].get("/v1/devices").json()["devices"]] == [_hex(2)]
    with db.read() as conn:
        statuses = Counter(conn.execute(sa.select(deliveries.c.status)).scalars())
    assert statuses == {"token_dead": 1, "delivered": 2}


def test_attempts_capped_then_failed(api: Api, db: Database) -> None:
    """A device that always asks to retry ends 'failed' after max_attempts, with the reason kept."""
    sender, chat_id, _ = _setup_group(api, members=1, devices_each=1)
    dispatcher = RecordingDispatcher(
        lambda d, a: Outcome(OutcomeKind.RETRY, reason="http_503", status=503)
    )
    message = sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "x"}).json()["message"]
    options = WorkerOptions(retry=RetryPolicy(max_attempts=3, base_seconds=0.01))
    _run(Worker(db, dispatcher, options))
    assert len(dispatcher.sent) == 3
    row = sender.get(f"/v1/messages/{message['id']}/deliveries").json()["deliveries"][0]
    assert row["status"] == "failed" and row["attempts"] == 3
    assert "http_503" in row["last_error"]


def test_device_deleted_after_send_gets_nothing(api: Api, db: Database) -> None:
    """Policy is re-checked at send time: a device removed after expansion is skipped."""
    sender, chat_id, clients = _setup_group(api, members=1, devices_each=1)
    dispatcher = RecordingDispatcher()
    message = sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "x"}).json()["message"]
    worker = Worker(db, dispatcher)

    async def expand_only() -> None:
        (claim,) = claim_outbox(db, worker.owner, time.time(), 60, 1)
        expand_batch(db, claim, worker.owner, time.time(), 60, 100)

    asyncio.run(expand_only())
    device_id = clients[0].get("/v1/devices").json()["devices"][0]["id"]
    assert clients[0].delete(f"/v1/devices/{device_id}").status_code == 204
    _run(worker)
    assert dispatcher.sent == []
    row = sender.get(f"/v1/messages/{message['id']}/deliveries").json()["deliveries"][0]
    assert row["status"] == "skipped" and "removed" in row["last_error"]


def test_unconfigured_provider_stays_pending_with_reason(api: Api, db: Database) -> None:
    """UNAVAILABLE leaves the row pending (not an attempt) with a clear reason."""
    sender, chat_id, _ = _setup_group(api, members=1, devices_each=1)
    dispatcher = RecordingDispatcher(
        lambda d, a: Outcome(OutcomeKind.UNAVAILABLE, reason="apns is not configured")
    )
    message = sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "x"}).json()["message"]
    _run(Worker(db, dispatcher))
    row = sender.get(f"/v1/messages/{message['id']}/deliveries").json()["deliveries"][0]
    assert row["status"] == "pending" and row["attempts"] == 0
    assert "not configured" in row["last_error"]


def test_large_group_expands_in_batches(api: Api, db: Database) -> None:
    """2,000 devices expand in batches of 300 and each is sent exactly once."""
    sender, chat_id, clients = _setup_group(api, members=1, devices_each=0)
    member_id = clients[0].get("/v1/me").json()["id"]
    add_devices(db, member_id, "apns", [_hex(10_000 + i) for i in range(2000)])
    sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "big"})
    dispatcher = RecordingDispatcher()
    worker = Worker(db, dispatcher, WorkerOptions(expand_batch=300, claim_batch=250))
    _run(worker)
    assert len(dispatcher.sent) == 2000
    assert len({d.token for d, _ in dispatcher.sent}) == 2000
    assert worker.stats["expanded"] == 2000


def test_each_full_expansion_batch_wakes_the_other_workers(api: Api, db: Database) -> None:
    """700 devices in batches of 300: the two full batches ring for peers, the last does not."""
    sender, chat_id, clients = _setup_group(api, members=1, devices_each=0)
    member_id = clients[0].get("/v1/me").json()["id"]
    add_devices(db, member_id, "apns", [_hex(20_000 + i) for i in range(700)])
    sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "big"})
    rings: list[str] = []
    options = WorkerOptions(expand_batch=300)
    _run(Worker(db, RecordingDispatcher(), options, wake_peers=lambda: rings.append("ring")))
    assert rings == ["ring", "ring"]


class GatedDispatcher(RecordingDispatcher):
    """Sends wait at a gate the test opens: a step cannot record them before the test is ready."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def _answer(self, device: DeviceTarget, notification: Notification) -> Outcome:
        await self.gate.wait()
        return await super()._answer(device, notification)


def test_outcomes_survive_a_failed_write_and_are_recorded_on_the_next_step(
    api: Api, db: Database
) -> None:
    """A database error while recording outcomes loses none of them: the next step records
    them (dropped, their rows stayed `sending` under a lease the heartbeat kept renewing)."""
    sender, chat_id, _clients = _setup_group(api, members=2, devices_each=2)
    sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "while the database hiccups"})
    dispatcher = GatedDispatcher()
    worker = Worker(db, dispatcher)

    async def scenario() -> None:
        worker._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 30
        while len(worker._in_flight) < 4:  # claimed, and held at the gate
            assert time.monotonic() < deadline, "the sends did not start"
            await worker._step()
            await asyncio.sleep(0.01)
        dispatcher.gate.set()
        while len(dispatcher.sent) < 4 or worker._in_flight:  # sent, not yet recorded
            assert time.monotonic() < deadline, "the sends did not finish"
            await asyncio.sleep(0.01)
        # The write of the outcomes fails: the table is briefly not there (as during a restart).
        with db.write() as conn:
            conn.execute(sa.text("ALTER TABLE deliveries RENAME TO deliveries_away"))
        try:
            try:
                await worker._flush()
            except Exception:
                pass
            else:
                raise AssertionError("the write should have failed")
        finally:
            with db.write() as conn:
                conn.execute(sa.text("ALTER TABLE deliveries_away RENAME TO deliveries"))
        await worker._step()

    asyncio.run(scenario())
    with db.read() as conn:
        statuses = Counter(conn.execute(sa.select(deliveries.c.status)).scalars())
    assert statuses == {"delivered": 4}
    assert len(dispatcher.sent) == 4  # recorded, not sent again


def test_delivery_panel_updates_are_spaced_by_what_they_cost(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update of the senders' delivery panels that took 0.1 s (counting a large fan-out's
    rows) is followed by the next no sooner than 20 times that, 2 s; a cheap one by
    summary_every, as before."""
    ticks = [0.0]
    cost = [0.1]
    published: list[list[int]] = []

    def publish(_db: Database, message_ids: list[int]) -> None:
        published.append(message_ids)
        ticks[0] += cost[0]

    monkeypatch.setattr(worker_module, "_publish_delivery_events", publish)
    worker = Worker(
        db, RecordingDispatcher(), WorkerOptions(summary_every=0.5), clock=lambda: ticks[0]
    )

    async def scenario() -> None:
        worker._changed_messages = {7}
        await worker._publish_summaries()
        assert worker._summary_gap == pytest.approx(2.0)
        assert not worker._elapsed(worker._last_summary, worker._summary_gap)
        ticks[0] += 1.8  # 1.9 s after the update began
        assert not worker._elapsed(worker._last_summary, worker._summary_gap)
        ticks[0] += 0.15
        assert worker._elapsed(worker._last_summary, worker._summary_gap)
        cost[0] = 0.001
        worker._changed_messages = {7}
        await worker._publish_summaries()
        assert worker._summary_gap == 0.5

    asyncio.run(scenario())
    assert published == [[7], [7]]
