"""Crashes: a steady stream of messages to a 50-device group while a chaos driver SIGKILLs worker
and web processes at random moments and starts new ones. Every (message, device) pair must reach
the fakes and be recorded delivered; repeats are counted and must stay under 1%."""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from tests.reliability.support import (
    PairCount,
    WebProcess,
    apns_tokens,
    delivery_rows,
    fcm_tokens,
    received_pairs,
    sign_in,
    write_figures,
)
from tests.support.processes import ChinwagProcess, chinwag_env, wait_until
from tests.support.seed import add_devices

from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.suite import RunningFakes
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.store.schema import messages

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MESSAGES = 200
MEMBERS = 10
APNS_PER_MEMBER, FCM_PER_MEMBER = 3, 2  # 10 members x 5 devices = 50 devices
KILLS_EACH = 5
WEB_PROCESSES = 2
WORKER_PROCESSES = 2
SEND_PAUSE = 0.05
CHAOS_PAUSE = (0.8, 2.0)  # seconds between two kills, drawn at random


@dataclass
class Cluster:
    """The processes of one chinwag deployment, replaced as the chaos driver kills them."""

    env: dict[str, str]
    logs: Path
    webs: list[WebProcess] = field(default_factory=list)
    workers: list[ChinwagProcess] = field(default_factory=list)
    retired: list[ChinwagProcess] = field(default_factory=list)
    started = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _log(self, kind: str) -> Path:
        self.started += 1
        return self.logs / f"{kind}-{self.started}.log"

    def start_web(self) -> WebProcess:
        web = WebProcess(self.env, self._log("web"))
        web.wait_ready()
        with self.lock:
            self.webs.append(web)
        return web

    def start_worker(self) -> ChinwagProcess:
        worker = ChinwagProcess(["worker"], self.env, self._log("worker"))
        self.workers.append(worker)
        return worker

    def web_urls(self) -> list[str]:
        with self.lock:
            return [web.url for web in self.webs]

    def kill_web(self, rng: random.Random) -> None:
        with self.lock:
            victim = self.webs.pop(rng.randrange(len(self.webs)))
        victim.process.kill()
        self.retired.append(victim.process)

    def kill_worker(self, rng: random.Random) -> None:
        victim = self.workers.pop(rng.randrange(len(self.workers)))
        victim.kill()
        self.retired.append(victim)

    def stop(self) -> None:
        for process in [*(w.process for w in self.webs), *self.workers, *self.retired]:
            process.stop()


@pytest.fixture
def cluster(database_url: str, tmp_path: Path) -> Iterator[tuple[Cluster, Database, RunningFakes]]:
    """The deployment on a SQLite file, then on a PostgreSQL schema (the scale-out shape)."""
    db = Database(database_url)
    upgrade(db)
    fakes = RunningFakes.start(tmp_path / "fakes", faults=FaultPlan(latency=0.01))
    env = chinwag_env(
        db.url,
        f"sqlite:///{tmp_path / 'queue.db'}",
        fakes.env(),
        # The default lease: live workers renew their claims, a killed one's run out in seconds.
        CHINWAG_SWEEP_INTERVAL="0.5",
        # What is in flight at a kill, and its outcomes not yet written, is sent again: about
        # 5 x 2 providers + 10 ms of outcomes per kill, which keeps 5-7 kills under the 1% bar.
        CHINWAG_MAX_IN_FLIGHT="5",
        CHINWAG_LOG_LEVEL="WARNING",
    )
    group = Cluster(env, tmp_path)
    try:
        yield group, db, fakes
    finally:
        group.stop()
        fakes.stop()
        db.dispose()


class Sender(threading.Thread):
    """Sends MESSAGES messages through whichever web process is alive, retrying a send whose web
    process died under it with the same client_id, as a phone app would."""

    def __init__(self, cluster: Cluster, token: str, chat_id: int, rng: random.Random) -> None:
        super().__init__(name="chaos-sender", daemon=True)
        self.cluster, self.token, self.chat_id, self.rng = cluster, token, chat_id, rng
        self.message_ids: dict[str, int] = {}
        self.retries = 0
        self.latencies: list[float] = []
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            for n in range(MESSAGES):
                self.message_ids[f"chaos-{n}"] = self._send(n)
                time.sleep(SEND_PAUSE)
        except BaseException as exc:
            self.failure = exc

    def _send(self, n: int) -> int:
        body = {"body": f"chaos {n}", "client_id": f"chaos-{n}"}
        headers = {"Authorization": f"Bearer {self.token}"}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            urls = self.cluster.web_urls()
            if urls:
                url = self.rng.choice(urls)
                try:
                    began = time.monotonic()
                    response = httpx.post(
                        f"{url}/v1/chats/{self.chat_id}/messages",
                        json=body,
                        headers=headers,
                        timeout=5,
                    )
                    if response.status_code == 201:
                        self.latencies.append(time.monotonic() - began)
                        return int(response.json()["message"]["id"])
                    assert response.status_code >= 500, response.text
                except httpx.TransportError:
                    pass
            self.retries += 1
            time.sleep(0.02)
        raise AssertionError(f"message {n} could not be sent within 30 s")


def test_sigkilled_workers_and_web_processes_lose_no_notification(
    cluster: tuple[Cluster, Database, RunningFakes],
) -> None:
    """200 messages x 50 devices while >=5 workers and >=5 web processes are SIGKILLed at random:
    every pair arrives and is recorded delivered; duplicates under 1%."""
    group, db, fakes = cluster
    seed = int(os.environ.get("CHINWAG_CHAOS_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    for _ in range(WEB_PROCESSES):
        group.start_web()
    for _ in range(WORKER_PROCESSES):
        group.start_worker()
    base = group.web_urls()[0]
    sender_token = sign_in(base, "sender", "chaos-password")
    tokens: list[str] = []
    for m in range(MEMBERS):
        member_token = sign_in(base, f"member{m}", "chaos-password")
        me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {member_token}"})
        apns, fcm = apns_tokens(m + 1, APNS_PER_MEMBER), fcm_tokens(f"m{m}", FCM_PER_MEMBER)
        add_devices(db, me.json()["id"], "apns", apns)
        add_devices(db, me.json()["id"], "fcm", fcm)
        tokens += [t.lower() for t in apns] + fcm
    chat = httpx.post(
        f"{base}/v1/chats",
        json={"title": "Chaos", "members": [f"member{m}" for m in range(MEMBERS)]},
        headers={"Authorization": f"Bearer {sender_token}"},
    )
    assert chat.status_code == 201, chat.text
    chat_id = chat.json()["id"]

    started = time.monotonic()
    sender = Sender(group, sender_token, chat_id, random.Random(rng.random()))
    sender.start()
    kills = {"web": 0, "worker": 0}
    while sender.is_alive() or min(kills.values()) < KILLS_EACH:
        time.sleep(rng.uniform(*CHAOS_PAUSE))
        kind = (
            rng.choice(["web", "worker"])
            if min(kills.values()) >= KILLS_EACH
            else ("web" if kills["web"] <= kills["worker"] else "worker")
        )
        if kind == "web":
            group.kill_web(rng)
            group.start_web()
        else:
            group.kill_worker(rng)
            group.start_worker()
        kills[kind] += 1
        if time.monotonic() - started > 90:
            break
    sender.join(timeout=60)
    assert sender.failure is None, sender.failure
    sending_took = time.monotonic() - started

    message_ids = sorted(sender.message_ids.values())
    expected = {(m, t) for m in message_ids for t in tokens}
    assert len(expected) == MESSAGES * len(tokens) == 10_000
    wait_until(
        lambda: not PairCount(expected, received_pairs(fakes.providers)).lost,
        60,
        "every (message, device) pair at the fakes",
        poll=0.25,
    )
    wait_until(
        lambda: delivery_rows(db, message_ids) == {"delivered": len(expected)},
        30,
        "every delivery row recorded delivered",
        poll=0.25,
    )
    finished = time.monotonic() - started
    with db.read() as conn:
        stored = conn.execute(
            sa.select(sa.func.count()).where(messages.c.chat_id == chat_id)
        ).scalar_one()
    result = PairCount(expected, received_pairs(fakes.providers))
    figures = {
        "seed": seed,
        "messages": MESSAGES,
        "devices": len(tokens),
        "pairs_expected": len(expected),
        "pairs_lost": len(result.lost),
        "unexpected": len(result.unexpected),
        "duplicates": result.duplicates,
        "duplicate_rate": round(result.duplicates / len(expected), 5),
        "web_kills": kills["web"],
        "worker_kills": kills["worker"],
        "send_retries": sender.retries,
        "send_p50_ms": round(1000 * statistics.median(sender.latencies)),
        "send_max_ms": round(1000 * max(sender.latencies)),
        "messages_stored": stored,
        "sending_seconds": round(sending_took, 1),
        "all_delivered_seconds": round(finished, 1),
    }
    write_figures("chaos", figures)
    assert stored == MESSAGES  # retried sends returned the first message, never a second
    assert kills["web"] >= KILLS_EACH and kills["worker"] >= KILLS_EACH, kills
    assert not result.lost and not result.unexpected
    assert result.duplicates < 0.01 * len(expected), figures
