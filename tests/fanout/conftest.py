"""Fixtures of the end-to-end engine tests: the web tier in-process with a real doorbell, and
``chinwag worker`` processes started as a user would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import Api, LiveServer
from tests.support.processes import ChinwagProcess, chinwag_env
from tests.support.seed import add_devices

from chinwag.config import PushSettings, Settings
from chinwag.fakes.suite import ALLOW_PRIVATE as ALLOW
from chinwag.fakes.suite import RunningFakes
from chinwag.fanout import Doorbell
from chinwag.store.database import Database
from chinwag.web import Services


@pytest.fixture
def queue_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


@pytest.fixture
def web(db: Database, queue_url: str) -> Iterator[LiveServer]:
    doorbell = Doorbell(queue_url)
    services = Services(web_settings(db), db, ring_doorbell=doorbell.ring)
    live = LiveServer(services)
    yield live
    live.stop()


@pytest.fixture
def web_api(web: LiveServer) -> Api:
    return Api(web)


def web_settings(db: Database) -> Settings:
    # The fakes listen on loopback, which the SSRF guard refuses unless allowed.
    return Settings(
        database_url=db.url,
        push=PushSettings(allow_private_endpoints=(ALLOW,)),
        verify_email_devices=False,  # about delivery; verification is tested in tests/web
    )


class Workers:
    def __init__(self, db: Database, queue_url: str, fakes: RunningFakes, tmp_path: Path) -> None:
        self.db, self.queue_url, self.fakes, self.tmp_path = db, queue_url, fakes, tmp_path
        self.started: list[ChinwagProcess] = []

    def start(self, **extra: str) -> ChinwagProcess:
        env = chinwag_env(self.db.url, self.queue_url, self.fakes.env(), **extra)
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        process = ChinwagProcess(["worker"], env, log)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture
def workers(db: Database, queue_url: str, fakes: RunningFakes, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(db, queue_url, fakes, tmp_path)
    yield group
    group.stop_all()


def apns_received(fakes: RunningFakes) -> list[str]:
    return [record.token for record in list(fakes.providers.apns.accepted)]


def big_group(api: Api, db: Database, size: int) -> tuple[httpx.Client, int, list[str]]:
    """A sender and one member with ``size`` APNs devices, in one chat."""
    sender = api.user("sender")
    member = api.user("member")
    member_id = member.get("/v1/me").json()["id"]
    tokens = [f"{i:064x}" for i in range(1, size + 1)]
    add_devices(db, member_id, "apns", tokens)
    chat = sender.post("/v1/chats", json={"title": "Everyone", "members": ["member"]}).json()
    return sender, chat["id"], tokens
