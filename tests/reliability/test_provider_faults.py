"""Provider faults: APNs and FCM answering 30% of requests with 5xx, 429 + Retry-After, dropped
connections, GOAWAY or stalls, and dead tokens among the live ones. Everything live must be
delivered, nothing retried before the provider's Retry-After, no dead token tried twice; and a
stalled APNs must not hold up FCM."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import Api, LiveServer
from tests.reliability.support import (
    Pair,
    PairCount,
    apns_tokens,
    delivery_rows,
    fcm_tokens,
    received_pairs,
    write_figures,
)
from tests.support.processes import ChinwagProcess, chinwag_env, wait_until
from tests.support.seed import add_devices

from chinwag.config import Settings
from chinwag.fakes.faults import KNOWN_FAULTS, FaultPlan
from chinwag.fakes.fcm import fcm_error
from chinwag.fakes.h2server import FakeRequest, FakeResponse, H2FakeServer, answer_of
from chinwag.fakes.suite import RunningFakes
from chinwag.fanout import Doorbell
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.web import Services

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

THROTTLE_RETRY_AFTER = 2  # seconds, in our scripted per-device 429s
FCM_PATIENCE = 6.0  # seconds one FCM notification is awaited before it counts as held up


@dataclass(frozen=True)
class Seen:
    provider: str
    token: str
    message_id: int
    at: float
    throttled: bool  # answered 429 + Retry-After by the scripted throttle


class RequestLog:
    """Sits in front of a fake's handler (after its FaultPlan): records every send that reached
    the provider's logic, per device and message, and answers the first send of each message to
    a throttled device with 429 + Retry-After, as a provider throttling one device would.

    The FaultPlan's own 429s are answered before the handler and name no device, which is why the
    Retry-After check uses these scripted ones (see docs/reliability.md)."""

    def __init__(self, provider: str, server: H2FakeServer, throttled: set[str]) -> None:
        self.provider = provider
        self.throttled = throttled
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._inner = server.handler
        server.handler = self.handle

    async def handle(self, request: FakeRequest) -> FakeResponse:
        target = self._target(request)
        if target is None:
            return await answer_of(self._inner, request)
        token, message_id = target
        with self._lock:
            first = not any(s.token == token and s.message_id == message_id for s in self.seen)
            throttle = first and token in self.throttled
            self.seen.append(Seen(self.provider, token, message_id, time.time(), throttle))
        if throttle:
            return self._throttle()
        return await answer_of(self._inner, request)

    def _target(self, request: FakeRequest) -> tuple[str, int] | None:
        try:
            body = json.loads(request.body)
            if self.provider == "apns":
                return request.path.rsplit("/", 1)[1].lower(), int(body["message_id"])
            if request.path.endswith("/messages:send"):
                message = body["message"]
                return str(message["token"]), int(message["data"]["message_id"])
        except (ValueError, KeyError, IndexError, TypeError):
            pass
        return None

    def _throttle(self) -> FakeResponse:
        retry_after = {"retry-after": str(THROTTLE_RETRY_AFTER)}
        if self.provider == "apns":
            body = b'{"reason":"TooManyRequests"}'
            return FakeResponse(429, {"content-type": "application/json", **retry_after}, body)
        refusal = fcm_error("RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED")
        return FakeResponse(429, {**refusal.headers, **retry_after}, refusal.body)


@dataclass
class Stage:
    db: Database
    fakes: RunningFakes
    web: LiveServer
    api: Api
    tmp_path: Path
    queue_url: str

    def worker(self, **extra: str) -> ChinwagProcess:
        env = chinwag_env(self.db.url, self.queue_url, self.fakes.env(), **extra)
        return ChinwagProcess(["worker"], env, self.tmp_path / "worker.log")


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    db = Database(f"sqlite:///{tmp_path / 'chinwag.db'}")
    upgrade(db)
    queue_url = f"sqlite:///{tmp_path / 'queue.db'}"
    fakes = RunningFakes.start(tmp_path / "fakes")
    web = LiveServer(Services(Settings(database_url=db.url), db, Doorbell(queue_url).ring))
    try:
        yield Stage(db, fakes, web, Api(web), tmp_path, queue_url)
    finally:
        web.stop()
        fakes.stop()
        db.dispose()


def _group(stage: Stage, apns: list[str], fcm: list[str]) -> tuple[httpx.Client, int]:
    sender, member = stage.api.user("sender"), stage.api.user("member")
    member_id = member.get("/v1/me").json()["id"]
    add_devices(stage.db, member_id, "apns", apns)
    add_devices(stage.db, member_id, "fcm", fcm)
    chat = sender.post("/v1/chats", json={"title": "Faulty", "members": ["member"]}).json()
    return sender, int(chat["id"])


def _set_faults(stage: Stage, **plan: Any) -> None:
    # FakeFcm has no `faults` property (setting it is a silent no-op): go through the servers.
    providers = stage.fakes.providers
    for server, seed in ((providers.apns.server, 1), (providers.fcm.server, 2)):
        server.faults = FaultPlan(seed=seed, **plan)


def _send_all(
    stage: Stage,
    live: list[str],
    dead: list[str],
    messages: int,
    *,
    wait_for_rows: bool = True,
    **worker_env: str,
) -> tuple[list[int], set[Pair], float]:
    """Send ``messages`` messages to a group with these devices and wait until every live pair
    reached the fakes and every row is final; returns the message ids, the live pairs and the
    seconds until the last live pair arrived."""
    providers = stage.fakes.providers
    apns = [t for t in live + dead if not t.startswith("fcm:")]
    fcm = [t for t in live + dead if t.startswith("fcm:")]
    sender, chat_id = _group(stage, apns, fcm)
    # Enough attempts that faults cannot exhaust them by chance (0.3^20 per delivery).
    worker = stage.worker(CHINWAG_DELIVERY_MAX_ATTEMPTS="20", **worker_env)
    try:
        started = time.monotonic()
        message_ids = [
            sender.post(f"/v1/chats/{chat_id}/messages", json={"body": f"m{n}"}).json()["message"][
                "id"
            ]
            for n in range(messages)
        ]
        expected = {(m, t) for m in message_ids for t in live}
        wait_until(
            lambda: not PairCount(expected, received_pairs(providers)).lost,
            60,
            "every live pair despite the faults",
            poll=0.2,
        )
        took = time.monotonic() - started
        if wait_for_rows:
            wait_until(
                lambda: set(delivery_rows(stage.db, message_ids)) <= FINAL,
                30,
                "every delivery row final",
                poll=0.2,
            )
    finally:
        worker.stop()
    return message_ids, expected, took


FINAL = {"delivered", "token_dead", "skipped"}


def _fault_figures(stage: Stage) -> dict[str, Any]:
    providers = stage.fakes.providers
    servers = (("apns", providers.apns.server), ("fcm", providers.fcm.server))
    return {
        "requests": {name: server.stats.requests for name, server in servers},
        "faults_injected": {name: dict(server.stats.faults_injected) for name, server in servers},
    }


def test_thirty_percent_faults_of_every_kind_still_deliver_everything(stage: Stage) -> None:
    """30% of APNs and FCM requests answered 5xx, 429, dropped, GOAWAY'd or stalled: every live
    (message, device) pair is delivered and recorded; the dead tokens end token_dead."""
    providers = stage.fakes.providers
    live = apns_tokens(1, 20) + fcm_tokens("fcm:live", 20)
    dead = apns_tokens(2, 2) + fcm_tokens("fcm:dead", 2)
    for token in dead:
        providers.apns.dead_tokens.add(token)
        providers.fcm.dead_tokens.add(token)
    _set_faults(stage, error_rate=0.3, retry_after=1, stall_seconds=2.0)
    # Rows are not awaited here: a send whose answer a dropped connection lost was delivered but
    # looks failed to the worker, which retries it after a backoff that grows with each attempt.
    message_ids, expected, took = _send_all(stage, live, dead, 10, wait_for_rows=False)
    rows = delivery_rows(stage.db, message_ids)
    result = PairCount(expected, received_pairs(providers))
    faults = _fault_figures(stage)
    write_figures(
        "provider_faults_all_kinds",
        {
            **faults,
            "pairs_expected": len(expected),
            "pairs_lost": len(result.lost),
            "duplicates": result.duplicates,
            "rows": rows,
            "delivered_seconds": round(took, 1),
        },
    )
    assert not result.lost and not result.unexpected
    for name in ("apns", "fcm"):
        injected = sum(faults["faults_injected"][name].values())
        assert injected >= 0.2 * faults["requests"][name], (name, faults)
        assert set(faults["faults_injected"][name]) == KNOWN_FAULTS, faults
    assert "failed" not in rows, rows
    assert rows.get("token_dead", 0) >= 1, rows


def test_retry_after_and_dead_tokens_are_obeyed_under_faults(stage: Stage) -> None:
    """30% of requests answered 5xx / 429 / stall + 503, some devices throttled with 429 +
    Retry-After 2 s, dead tokens answered 410: no retry before Retry-After, and no dead token is
    sent the same message twice. (Dropped connections and GOAWAY are left out here: they can lose
    an answer in flight, and a client that never saw a Retry-After or a 410 must retry.)"""
    providers = stage.fakes.providers
    live = apns_tokens(1, 20) + fcm_tokens("fcm:live", 20)
    dead = apns_tokens(2, 2) + fcm_tokens("fcm:dead", 2)
    for token in dead:
        providers.apns.dead_tokens.add(token)
        providers.fcm.dead_tokens.add(token)
    throttled = set(live[:5] + live[20:25])
    logs = [
        RequestLog("apns", providers.apns.server, throttled),
        RequestLog("fcm", providers.fcm.server, throttled),
    ]
    _set_faults(
        stage, error_rate=0.3, faults=("5xx", "429", "stall"), retry_after=1, stall_seconds=1.0
    )
    message_ids, expected, took = _send_all(stage, live, dead, 10)
    seen = [s for log in logs for s in log.seen]
    early, retried = [], 0
    for s in (s for s in seen if s.throttled):
        following = [
            o.at for o in seen if (o.token, o.message_id) == (s.token, s.message_id) and o.at > s.at
        ]
        assert following, f"throttled {s} was never retried"
        retried += 1
        gap = min(following) - s.at
        if gap < THROTTLE_RETRY_AFTER:
            early.append((s.provider, s.token, s.message_id, round(gap, 3)))
    dead_sends = Counter((s.token, s.message_id) for s in seen if s.token in set(dead))
    result = PairCount(expected, received_pairs(providers))
    write_figures(
        "provider_faults_retry_after",
        {
            **_fault_figures(stage),
            "pairs_expected": len(expected),
            "pairs_lost": len(result.lost),
            "duplicates": result.duplicates,
            "throttled_with_retry_after": retried,
            "retried_early": len(early),
            "dead_token_sends": sum(dead_sends.values()),
            "dead_token_max_sends_per_message": max(dead_sends.values(), default=0),
            "rows": delivery_rows(stage.db, message_ids),
            "delivered_seconds": round(took, 1),
        },
    )
    assert not result.lost
    assert retried == len(message_ids) * len(throttled)
    assert early == [], early
    assert dead_sends and max(dead_sends.values()) == 1, dead_sends


def _fcm_delivery_seconds(
    stage: Stage, sender: httpx.Client, chat_id: int, fcm: list[str], n: int
) -> float:
    accepted = stage.fakes.providers.fcm.accepted
    before = len(accepted)
    started = time.monotonic()
    sender.post(f"/v1/chats/{chat_id}/messages", json={"body": f"timing {n}"})
    deadline = started + FCM_PATIENCE
    while len(accepted) < before + len(fcm) and time.monotonic() < deadline:
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("apns_devices", "max_in_flight"),
    [
        pytest.param(100, 500, id="stalled-within-bound"),
        pytest.param(100, 50, id="stalled-beyond-bound"),
    ],
)
def test_stalled_apns_does_not_delay_fcm(
    stage: Stage, apns_devices: int, max_in_flight: int
) -> None:
    """With every APNs request stalling, FCM devices are notified about as fast as when APNs is
    healthy, whether the stalled sends fit in the worker's in-flight bound or exceed it."""
    providers = stage.fakes.providers
    apns, fcm = apns_tokens(3, apns_devices), fcm_tokens("fast", 10)
    sender, chat_id = _group(stage, apns, fcm)
    worker = stage.worker(CHINWAG_MAX_IN_FLIGHT=str(max_in_flight))
    try:
        wait_until(lambda: "started" in worker.output(), 20, "the worker")
        healthy = [_fcm_delivery_seconds(stage, sender, chat_id, fcm, n) for n in range(3)]
        providers.apns.server.faults = FaultPlan(
            error_rate=1.0, faults=("stall",), stall_seconds=60
        )
        stalled = [_fcm_delivery_seconds(stage, sender, chat_id, fcm, n) for n in range(3, 6)]
        stalls = providers.apns.server.stats.faults_injected["stall"]
    finally:
        providers.apns.server.faults = FaultPlan()
        worker.stop()
    ratio = statistics.median(stalled) / statistics.median(healthy)
    write_figures(
        f"stalled_apns_{apns_devices}_devices_{max_in_flight}_in_flight",
        {
            "apns_devices": apns_devices,
            "fcm_devices": len(fcm),
            "worker_max_in_flight": max_in_flight,
            "apns_stalls": stalls,
            "fcm_healthy_median_ms": round(1000 * statistics.median(healthy)),
            "fcm_stalled_median_ms": round(1000 * statistics.median(stalled)),
            "fcm_stalled_max_ms": round(1000 * max(stalled)),
            "ratio": round(ratio, 2),
        },
    )
    assert stalls > 0
    assert statistics.median(stalled) <= 3 * statistics.median(healthy) + 0.25, (healthy, stalled)
