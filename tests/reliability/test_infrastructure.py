"""Infrastructure faults: PostgreSQL restarted mid-run, Redis flushed and restarted.

These stop services the whole machine shares, so they run only when CI=true or
CHINWAG_TEST_DISRUPTIVE=1 (as root, with the services of the CI image), and always leave the
service running and answering when they end.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import redis as redis_lib
from tests.conftest import (
    IN_CI,
    PG_ADMIN_DSN,
    REDIS_URL,
    Api,
    LiveServer,
    PostgresSchema,
    require_postgres,
    require_redis,
)
from tests.reliability.support import (
    PairCount,
    WebProcess,
    apns_tokens,
    delivery_rows,
    received_pairs,
    sign_in,
    write_figures,
)
from tests.support.processes import ChinwagProcess, chinwag_env, wait_until
from tests.support.seed import add_devices

from chinwag.config import Settings
from chinwag.fakes.suite import RunningFakes
from chinwag.fanout import Doorbell
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.web import Services

DISRUPTIVE = IN_CI or os.environ.get("CHINWAG_TEST_DISRUPTIVE") == "1"
pytestmark = [
    pytest.mark.slow,
    # Restarts PostgreSQL and Redis for the whole machine: never alongside other tests.
    pytest.mark.serial,
    pytest.mark.timeout(150),
    pytest.mark.skipif(
        not DISRUPTIVE, reason="restarts shared services: set CI=true or CHINWAG_TEST_DISRUPTIVE=1"
    ),
]

REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def _pg_cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _postgres_answers() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _redis_answers() -> bool:
    try:
        return bool(redis_lib.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis_lib.RedisError:
        return False


class Poster(threading.Thread):
    """Sends messages one after another, retrying each (same client_id) until it is stored, and
    notes every answer's status and time: what a phone app would see during the outage."""

    def __init__(self, base: str, token: str, chat_id: int, count: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.chat_id, self.count, self.pause = (
            base,
            token,
            chat_id,
            count,
            pause,
        )
        self.message_ids: list[int] = []
        self.answers: list[tuple[int, float]] = []  # (status, seconds taken)
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.base,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=15,
            ) as client:
                for n in range(self.count):
                    self.message_ids.append(self._send(client, n))
                    time.sleep(self.pause)
        except BaseException as exc:
            self.failure = exc

    def _send(self, client: httpx.Client, n: int) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            began = time.monotonic()
            response = client.post(
                f"/v1/chats/{self.chat_id}/messages", json={"body": f"m{n}", "client_id": f"c{n}"}
            )
            self.answers.append((response.status_code, time.monotonic() - began))
            if response.status_code == 201:
                return int(response.json()["message"]["id"])
            assert response.status_code == 503, response.text
            assert response.headers.get("retry-after"), response.headers
            time.sleep(0.1)
        raise AssertionError(f"message {n} was never stored")


def test_postgres_restart_mid_run_loses_nothing(tmp_path: Path, fakes: RunningFakes) -> None:
    """PostgreSQL stopped and started while messages flow: the web tier answers 503 quickly while
    it is down and 201 again after, the worker resumes, every notification arrives."""
    require_postgres()
    schema = PostgresSchema()
    db = Database(schema.url)
    upgrade(db)
    env = chinwag_env(
        schema.url, f"sqlite:///{tmp_path / 'queue.db'}", fakes.env(), CHINWAG_LEASE_SECONDS="3"
    )
    web = WebProcess(env, tmp_path / "web.log")
    worker = ChinwagProcess(["worker"], env, tmp_path / "worker.log")
    down_for = 0.0
    try:
        web.wait_ready()
        token = sign_in(web.url, "sender", "outage-password")
        member = sign_in(web.url, "member", "outage-password")
        member_id = httpx.get(
            f"{web.url}/v1/me", headers={"Authorization": f"Bearer {member}"}
        ).json()["id"]
        tokens = apns_tokens(7, 5)
        add_devices(db, member_id, "apns", tokens)
        chat = httpx.post(
            f"{web.url}/v1/chats",
            json={"title": "Outage", "members": ["member"]},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        poster = Poster(web.url, token, chat["id"], 30, pause=0.1)
        poster.start()
        wait_until(lambda: len(poster.message_ids) >= 8, 30, "messages before the outage")
        stopped_at = time.monotonic()
        _pg_cluster("stop")
        try:
            time.sleep(2.0)  # long enough for the poster and the worker to meet the outage
            health = httpx.get(f"{web.url}/healthz", timeout=10)
        finally:
            _pg_cluster("start")
            down_for = time.monotonic() - stopped_at
            wait_until(_postgres_answers, 60, "PostgreSQL back")
        poster.join(timeout=90)
        assert poster.failure is None, poster.failure
        expected = {(m, t) for m in poster.message_ids for t in tokens}
        wait_until(
            lambda: not PairCount(expected, received_pairs(fakes.providers)).lost,
            60,
            "every notification after the restart",
            poll=0.2,
        )
        wait_until(
            lambda: delivery_rows(db, poster.message_ids) == {"delivered": len(expected)},
            30,
            "every row delivered",
        )
    finally:
        if not _postgres_answers():
            _pg_cluster("start")
            wait_until(_postgres_answers, 60, "PostgreSQL back")
        web.process.stop()
        worker.stop()
        db.dispose()
        schema.drop()
    unavailable = [took for status, took in poster.answers if status == 503]
    result = PairCount(expected, received_pairs(fakes.providers))
    write_figures(
        "postgres_restart",
        {
            "messages": len(poster.message_ids),
            "devices": len(tokens),
            "down_seconds": round(down_for, 1),
            "answers_503": len(unavailable),
            "slowest_503_ms": round(1000 * max(unavailable, default=0.0)),
            "healthz_while_down": health.status_code,
            "pairs_lost": len(result.lost),
            "duplicates": result.duplicates,
        },
    )
    assert health.status_code == 503
    assert unavailable, "no send met the outage"
    assert max(unavailable) < 2.0, unavailable
    assert not result.lost
    assert "fan-out step failed" in worker.output() or "unavailable" in worker.output()


def test_redis_flushed_and_restarted_loses_no_fanout(tmp_path: Path, fakes: RunningFakes) -> None:
    """Rings queued in Redis, then Redis flushed and shut down (no save) and started again: sends
    keep answering 201 meanwhile, and the sweep delivers every pending fan-out."""
    require_redis()
    db = Database(f"sqlite:///{tmp_path / 'chinwag.db'}")
    upgrade(db)
    doorbell = Doorbell(REDIS_URL)
    live = LiveServer(Services(Settings(database_url=db.url), db, ring_doorbell=doorbell.ring))
    env = chinwag_env(db.url, REDIS_URL, fakes.env(), CHINWAG_SWEEP_INTERVAL="1")
    worker: ChinwagProcess | None = None
    try:
        api = Api(live)
        alice, bob = api.user("alice"), api.user("bob")
        tokens = apns_tokens(9, 3)
        add_devices(db, bob.get("/v1/me").json()["id"], "apns", tokens)
        chat = alice.post("/v1/chats", json={"title": "Flush", "members": ["bob"]}).json()

        def send(n: int) -> tuple[int, float]:
            began = time.monotonic()
            sent = alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": f"r{n}"})
            assert sent.status_code == 201, sent.text
            return int(sent.json()["message"]["id"]), time.monotonic() - began

        before = [send(n)[0] for n in range(5)]  # no worker yet: their rings wait in Redis
        assert doorbell.pending() >= 5
        redis_lib.Redis.from_url(REDIS_URL).flushall()
        subprocess.run(["redis-cli", "shutdown", "nosave"], capture_output=True, timeout=10)
        wait_until(lambda: not _redis_answers(), 10, "Redis down")
        during = [send(n) for n in range(5, 10)]
        worker = ChinwagProcess(["worker"], env, tmp_path / "worker.log")
        subprocess.run(REDIS_START, check=True, capture_output=True, timeout=10)
        wait_until(_redis_answers, 20, "Redis back")
        assert doorbell.pending() == 0  # every ring is gone
        message_ids = before + [m for m, _ in during]
        expected = {(m, t) for m in message_ids for t in tokens}
        took = wait_until(
            lambda: not PairCount(expected, received_pairs(fakes.providers)).lost,
            30,
            "the sweep to deliver every pending fan-out",
        )
        after, _ = send(10)
        rung_in = wait_until(
            lambda: {(after, t) for t in tokens} <= set(received_pairs(fakes.providers)),
            10,
            "a message after Redis is back",
        )
    finally:
        if not _redis_answers():
            subprocess.run(REDIS_START, capture_output=True, timeout=10)
            wait_until(_redis_answers, 20, "Redis back")
        if worker is not None:
            worker.stop()
        live.stop()
        db.dispose()
    result = PairCount(expected, received_pairs(fakes.providers))
    write_figures(
        "redis_flush_restart",
        {
            "pending_fanouts": len(message_ids),
            "sent_while_redis_down": len(during),
            "slowest_send_while_down_ms": round(1000 * max(t for _, t in during)),
            "recovered_by_sweep_seconds": round(took, 1),
            "first_message_after_restart_seconds": round(rung_in, 2),
            "pairs_lost": len(result.lost),
            "duplicates": result.duplicates,
        },
    )
    assert not result.lost
    assert max(t for _, t in during) < 2.0
