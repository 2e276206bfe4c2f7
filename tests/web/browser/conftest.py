"""Headless Chromium (Debian's, never a downloaded one) against a real chinwag: the ASGI app (live
gateway + web tier) on uvicorn in-process, as ``chinwag serve`` runs it, one ``chinwag worker``
process, and the local fake providers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Api, LiveGateway
from tests.support.processes import ChinwagProcess, chinwag_env
from tests.web.browser.pages import open_contexts

from chinwag.config import PushSettings, Settings
from chinwag.fakes.suite import ALLOW_PRIVATE, RunningFakes
from chinwag.fanout import Doorbell
from chinwag.store.database import Database
from chinwag.web import Services

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The browser tests prove the client; SQLite is enough (the API tests cover PostgreSQL)."""
    return f"sqlite:///{tmp_path / 'chinwag.db'}"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # Module scope, not session: Playwright's sync API keeps an event loop running in this thread
    # while it is open, and other tests' asyncio.run() would fail under it.
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        # Like PostgreSQL and Redis: optional on a developer's machine, required in CI.
        missing = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def live(db: Database, tmp_path: Path, fakes: RunningFakes) -> Iterator[LiveGateway]:
    """The gateway and web tier on one port (WebSocket, SSE and the API), with a real doorbell,
    and one worker process ringing on the same queue."""
    queue_url = f"sqlite:///{tmp_path / 'queue.db'}"
    settings = Settings(
        database_url=db.url,
        push=PushSettings(allow_private_endpoints=(ALLOW_PRIVATE,)),
        verify_email_devices=False,  # the page's email device is about delivery, not verifying
        # A stream notices a closed page at its next heartbeat; let the server stop quickly.
        stream_heartbeat_seconds=0.5,
    )
    server = LiveGateway(Services(settings, db, ring_doorbell=Doorbell(queue_url).ring))
    worker = ChinwagProcess(
        ["worker"], chinwag_env(db.url, queue_url, fakes.env()), tmp_path / "worker.log"
    )
    yield server
    worker.stop()
    server.stop()


@pytest.fixture(autouse=True)
def close_browser_contexts(live: LiveGateway) -> Iterator[None]:
    """Each test's pages close before its server stops, so no open stream holds the server."""
    yield
    while open_contexts:
        open_contexts.pop().close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the tests' screenshots go: a temporary directory, so that a test run leaves the tree
    as it found it; `make screenshots` points CHINWAG_SCREENSHOTS at docs/img to refresh them."""
    target = os.environ.get("CHINWAG_SCREENSHOTS")
    path = Path(target) if target else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def people(live: LiveGateway) -> Api:
    return Api(live)
