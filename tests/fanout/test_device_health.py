"""Test and diagnose, token hygiene, provider health: the API, a worker and the fake providers
together, on SQLite and PostgreSQL (issue 14)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from tests.conftest import Api, LiveServer
from tests.support.processes import wait_until
from tests.web.test_metrics import scrape, value

from chinwag.chat.accounts import set_admin
from chinwag.chat.devices import stale_since
from chinwag.config import DEFAULT_APP, PushSettings, Settings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.suite import RunningFakes
from chinwag.fanout import Worker, WorkerOptions
from chinwag.push.registry import Senders
from chinwag.store.database import Database
from chinwag.store.schema import devices
from chinwag.web import Services
from chinwag.web.routes import WAITING_DEVICE_TESTS

DAY = 86400.0


def _apns_token(n: int) -> str:
    return f"{n:064x}"


class BackgroundWorker:
    """A fan-out worker on its own event loop in a thread, sending through real senders."""

    def __init__(
        self, db: Database, push: PushSettings, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.db, self.push, self.wall_clock = db, push, wall_clock
        self.worker: Worker | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "worker did not start"

    def _run(self) -> None:
        async def main() -> None:
            senders = Senders.from_settings(self.push)
            self.worker = Worker(
                self.db,
                senders,
                WorkerOptions(sweep_interval=0.1),
                wall_clock=self.wall_clock,
            )
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            try:
                await self.worker.run(self._stop)
            finally:
                await senders.aclose()

        asyncio.run(main())

    def ring(self, _message_id: int) -> None:
        if self.worker is not None:
            self.worker.wake()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=20)


class Stack:
    """The web tier and a worker on one database, the worker sending to the fakes."""

    def __init__(self, db: Database, push: PushSettings, **settings: Any) -> None:
        self.worker = BackgroundWorker(db, push)
        web_settings = Settings(database_url=db.url, push=push, verify_email_devices=False)
        self.web = LiveServer(
            Services(web_settings.with_overrides(**settings), db, ring_doorbell=self.worker.ring)
        )
        self.api = Api(self.web)
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.web.stop()
            self.worker.stop()


@pytest.fixture
def stacks(db: Database) -> Iterator[Callable[..., Stack]]:
    started: list[Stack] = []

    def start(push: PushSettings, **settings: Any) -> Stack:
        stack = Stack(db, push, **settings)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


def _refused_key(fakes: RunningFakes) -> PushSettings:
    """The fakes' settings, but with an APNs key id Apple (the fake) does not know."""
    push = fakes.providers.settings()
    app = push.apps[DEFAULT_APP]
    assert app.apns is not None
    wrong = dataclasses.replace(app.apns, key_id="WRONGKEY00")
    apps = {DEFAULT_APP: dataclasses.replace(app, apns=wrong)}
    return dataclasses.replace(push, apps=apps)


def _device(client: httpx.Client, token: str) -> int:
    created = client.post("/v1/devices", json={"platform": "apns", "token": token})
    assert created.status_code == 201, created.text
    device_id: int = created.json()["id"]
    return device_id


def test_test_notification_is_delivered(stacks: Callable[..., Stack], fakes: RunningFakes) -> None:
    """POST /v1/devices/{id}/test answers 200 delivered, and the fake APNs got "chinwag"."""
    alice = stacks(fakes.providers.settings()).api.user("alice")
    device_id = _device(alice, _apns_token(1))
    answer = alice.post(f"/v1/devices/{device_id}/test")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "delivered" and body["outcome"] == "delivered"
    assert body["device_id"] == device_id and body["delivery_id"]
    assert "nothing" in body["advice"]
    received = list(fakes.providers.apns.accepted)
    assert [r.token for r in received] == [_apns_token(1)]
    assert "Test notification" in str(received[0].payload)


def test_dead_token_says_register_again(stacks: Callable[..., Stack], fakes: RunningFakes) -> None:
    """A token the provider calls unregistered: 200 token_dead, the reason, "register again"."""
    alice = stacks(fakes.providers.settings()).api.user("alice")
    device_id = _device(alice, _apns_token(2))
    fakes.providers.add_dead_token(_apns_token(2))
    body = alice.post(f"/v1/devices/{device_id}/test").json()
    assert body["status"] == "token_dead" and body["outcome"] == "token_dead"
    assert body["reason"].startswith("token_dead: ")
    assert "the app must register again" in body["advice"]
    assert alice.get("/v1/devices").json()["devices"] == []  # deactivated at once


def test_refused_key_says_the_operator_credentials_are_refused(
    stacks: Callable[..., Stack], fakes: RunningFakes
) -> None:
    """An APNs key the provider refuses: 200 failed, misconfigured, the operator's credentials."""
    alice = stacks(_refused_key(fakes)).api.user("alice")
    device_id = _device(alice, _apns_token(3))
    body = alice.post(f"/v1/devices/{device_id}/test").json()
    assert body["status"] == "failed" and body["outcome"] == "misconfigured"
    assert "InvalidProviderToken" in body["reason"]
    assert body["advice"].startswith("the operator's credentials for APNs are refused")


def test_someone_elses_device_is_not_found(
    stacks: Callable[..., Stack], fakes: RunningFakes
) -> None:
    """Testing another user's device, or asking about their test, is a 404 and sends nothing."""
    api = stacks(fakes.providers.settings()).api
    alice, mallory = api.user("alice"), api.user("mallory")
    device_id = _device(alice, _apns_token(4))
    assert mallory.post(f"/v1/devices/{device_id}/test").status_code == 404
    test_id = alice.post(f"/v1/devices/{device_id}/test").json()["test_id"]
    assert mallory.get(f"/v1/devices/{device_id}/tests/{test_id}").status_code == 404
    assert [r.token for r in list(fakes.providers.apns.accepted)] == [_apns_token(4)]


def test_unfinished_test_answers_202_then_the_outcome(db: Database, fakes: RunningFakes) -> None:
    """With no worker within the wait: 202 pending; once a worker ran, the test's URL says 200."""
    web = LiveServer(Services(Settings(database_url=db.url, device_test_wait_seconds=0.2), db))
    try:
        alice = Api(web).user("alice")
        device_id = _device(alice, _apns_token(5))
        waiting = alice.post(f"/v1/devices/{device_id}/test")
        assert waiting.status_code == 202, waiting.text
        assert waiting.json()["status"] == "pending" and waiting.json()["outcome"] is None
        worker = BackgroundWorker(db, fakes.providers.settings())
        try:
            url = f"/v1/devices/{device_id}/tests/{waiting.json()['test_id']}"
            deadline = time.monotonic() + 10
            while (later := alice.get(url)).status_code == 202:
                assert time.monotonic() < deadline, later.text
                time.sleep(0.05)
        finally:
            worker.stop()
        assert later.status_code == 200 and later.json()["status"] == "delivered"
    finally:
        web.stop()


def test_waiting_device_tests_leave_the_web_threads_to_the_rest_of_the_api(
    db: Database, fakes: RunningFakes
) -> None:
    """With no worker running, tests wait for it; beyond WAITING_DEVICE_TESTS of them a process
    answers 202 at once instead of giving a thread to each, and the rest of the API answers."""
    web = LiveServer(Services(Settings(database_url=db.url, device_test_wait_seconds=30), db))
    try:
        alice = Api(web).user("alice")
        device_id = _device(alice, _apns_token(13))
        answers: list[httpx.Response] = []

        def test_it() -> None:
            answers.append(alice.post(f"/v1/devices/{device_id}/test", timeout=60))

        callers = [threading.Thread(target=test_it) for _ in range(WAITING_DEVICE_TESTS + 1)]
        for caller in callers:
            caller.start()
        # Those that got a place wait up to 30 s for a worker; the one that did not answers now.
        wait_until(lambda: len(answers) >= 1, 20, "the test that found no place to wait")
        (at_once,) = answers
        assert at_once.status_code == 202 and at_once.json()["status"] == "pending", at_once.text
        assert sum(caller.is_alive() for caller in callers) == WAITING_DEVICE_TESTS
        assert alice.get("/v1/me").status_code == 200
        worker = BackgroundWorker(db, fakes.providers.settings())
        try:
            for caller in callers:
                caller.join(timeout=30)
        finally:
            worker.stop()
        assert [a.status_code for a in answers[1:]] == [200] * WAITING_DEVICE_TESTS
        assert all(a.json()["status"] == "delivered" for a in answers[1:])
    finally:
        web.stop()


def test_device_list_shows_last_success_and_failure(
    stacks: Callable[..., Stack], fakes: RunningFakes
) -> None:
    """GET /v1/devices shows when a device last got through, and when and why it last did not."""
    alice = stacks(fakes.providers.settings()).api.user("alice")
    device_id = _device(alice, _apns_token(6))
    fresh = alice.get("/v1/devices").json()["devices"][0]
    assert fresh["last_success_at"] is None and fresh["last_failure_at"] is None
    assert fresh["refreshed_at"]
    assert alice.post(f"/v1/devices/{device_id}/test").json()["status"] == "delivered"
    fakes.providers.apns.faults = FaultPlan(error_rate=1.0, faults=("5xx",))
    retrying = alice.post(f"/v1/devices/{device_id}/test").json()
    assert retrying["status"] == "retrying" and "chinwag will retry" in retrying["advice"]
    shown = alice.get("/v1/devices").json()["devices"][0]
    assert shown["last_success_at"] is not None
    assert shown["last_failure_at"] >= shown["last_success_at"]
    assert shown["last_failure_reason"].startswith("retry: ")


def test_stale_device_pruning_reads_only_what_it_deactivates(db: Database) -> None:
    """The hourly UPDATE seeks the (active, refreshed_at) index instead of reading every device
    while it holds the write lock (on SQLite, every send's lock)."""
    if not db.is_sqlite:
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    update = devices.update().where(stale_since(time.time())).values(active=False)
    compiled = update.compile(db.engine, compile_kwargs={"literal_binds": True})
    with db.read() as conn:
        plan = " / ".join(row[3] for row in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "ix_devices_active_refreshed_at" in plan and "SCAN" not in plan, plan


def test_stale_devices_are_deactivated_and_counted(
    db: Database, fakes: RunningFakes, stacks: Callable[..., Stack]
) -> None:
    """Silent 270 days: deactivated and counted; fresh or re-registered: kept until 271 days on."""
    alice = stacks(fakes.providers.settings()).api.user("alice")
    old, fresh, refreshed = (_device(alice, _apns_token(n)) for n in (10, 11, 12))
    long_ago = time.time() - 300 * DAY
    with db.write() as conn:
        conn.execute(
            devices.update().where(devices.c.id.in_([old, refreshed])).values(refreshed_at=long_ago)
        )
    assert _device(alice, _apns_token(12)) == refreshed  # its app registered it again
    today = _prune(db, fakes, time.time())
    assert today == 1
    assert [d["id"] for d in alice.get("/v1/devices").json()["devices"]] == [fresh, refreshed]
    with db.read() as conn:
        reason = conn.execute(
            sa.select(devices.c.deactivated_reason).where(devices.c.id == old)
        ).scalar_one()
    assert reason == "stale: not registered again for 270 days"
    assert _prune(db, fakes, time.time() + 269 * DAY) == 0
    assert _prune(db, fakes, time.time() + 271 * DAY) == 2
    assert alice.get("/v1/devices").json()["devices"] == []


def _prune(db: Database, fakes: RunningFakes, now: float) -> int:
    """One worker pass (its first includes the pruning) with its date at ``now``; the count."""

    async def main() -> int:
        senders = Senders.from_settings(fakes.providers.settings())
        worker = Worker(db, senders, wall_clock=lambda: now)
        try:
            await worker.run_until_idle(limit_seconds=30)
        finally:
            await senders.aclose()
        return worker.stats.get("stale_devices", 0)

    return asyncio.run(main())


def test_provider_health_after_a_refused_key_then_a_success(
    db: Database, fakes: RunningFakes, stacks: Callable[..., Stack]
) -> None:
    """/metrics and admin: APNs refusing our key, then working (last success) with the right one."""
    refused = stacks(_refused_key(fakes))
    alice = refused.api.user("alice")
    set_admin(db, "alice", True)
    device_id = _device(alice, _apns_token(20))
    assert alice.post(f"/v1/devices/{device_id}/test").json()["outcome"] == "misconfigured"
    samples = scrape(refused.web)
    apns = {"platform": "apns", "app": "default"}
    assert value(samples, "chinwag_provider_credentials_ok", **apns) == 0
    failed_at = value(
        samples, "chinwag_provider_last_error_timestamp", **apns, error_class="misconfigured"
    )
    assert failed_at > time.time() - 60
    assert not samples.get("chinwag_provider_last_success_timestamp")
    [provider] = alice.get("/v1/admin/stats").json()["providers"]
    assert provider["provider"] == "apns" and provider["credentials_ok"] is False
    assert provider["last_error_class"] == "misconfigured" and provider["last_success_at"] is None
    assert "InvalidProviderToken" in provider["last_error"]
    refused.stop()

    working = stacks(fakes.providers.settings())
    alice = working.web.client(alice.headers["Authorization"].removeprefix("Bearer "))
    assert alice.post(f"/v1/devices/{device_id}/test").json()["status"] == "delivered"
    samples = scrape(working.web)
    assert value(samples, "chinwag_provider_credentials_ok", **apns) == 1
    assert value(samples, "chinwag_provider_last_success_timestamp", **apns) >= failed_at
    [provider] = alice.get("/v1/admin/stats").json()["providers"]
    assert provider["credentials_ok"] is True and provider["last_success_at"] is not None
    assert provider["last_error_class"] == "misconfigured"  # the last error is still shown
