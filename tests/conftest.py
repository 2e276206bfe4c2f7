"""Shared fixtures: real databases (SQLite files, PostgreSQL schemas), a real WSGI server, and the
real ASGI app (live gateway + WSGI app) on a real uvicorn server."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
import pytest
import redis as redis_lib
from argon2 import PasswordHasher
from argon2 import profiles as argon2_profiles
from waitress import wasyncore
from waitress.server import create_server

from chinwag.asgi import create_application
from chinwag.chat import accounts
from chinwag.config import Settings
from chinwag.fakes.suite import RunningFakes
from chinwag.live import Gateway
from chinwag.live.server import GatewayServer, listening_socket, uvicorn_config
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.web import Services, create_app
from chinwag.web.app import server_options

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_DSN = os.environ.get("CHINWAG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first: under pytest-xdist a long test picked up last makes the run wait for it
    alone, while the short ones fill the gaps anywhere."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _redis_url_of_this_worker(base: str) -> str:
    """Under pytest-xdist each worker process gets a Redis database of its own (by default 1-8),
    so that a test that flushes its queue cannot empty another's; a serial run uses the one
    named."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return base
    # Counted from the database the URL names, so that two parallel runs given different bases
    # (CHINWAG_TEST_REDIS=.../0 and .../8) do not flush each other's queues.
    prefix, _, named = base.rpartition("/")
    first = int(named) if named.isdigit() else 0
    return f"{prefix}/{(first + 1 + int(worker[2:]) % 8) % 16}"


REDIS_URL = _redis_url_of_this_worker(
    os.environ.get("CHINWAG_TEST_REDIS", "redis://127.0.0.1:6379/0")
)


def _postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _redis_available() -> bool:
    try:
        return bool(redis_lib.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except redis_lib.RedisError:
        return False


def require_postgres() -> None:
    if not _postgres_available():
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI but {PG_ADMIN_DSN} is unreachable")
        pytest.skip("PostgreSQL not available")


def require_redis() -> None:
    if not _redis_available():
        if IN_CI:
            pytest.fail(f"Redis is required in CI but {REDIS_URL} is unreachable")
        pytest.skip("Redis not available")


@pytest.fixture(autouse=True)
def cheap_password_hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its cheapest cost inside the test process: a production hash costs ~0.1 s of CPU
    and 64 MiB, the suite signs up hundreds of users, and that was a fifth of the API tests' CPU.
    Tests marked ``full_password_cost`` (tests/chat/test_passwords.py) prove the production cost,
    and every chinwag process a test starts (web, serve, worker) keeps it."""
    if request.node.get_closest_marker("full_password_cost") is None:
        monkeypatch.setattr(
            accounts, "_hasher", PasswordHasher.from_parameters(argon2_profiles.CHEAPEST)
        )


class PostgresSchema:
    """A throwaway schema in the test database, so runs never see each other's rows."""

    def __init__(self) -> None:
        self.name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.name}"')
        base = PG_ADMIN_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
        self.url = f"{base}?options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chinwag.db'}"
        return
    require_postgres()
    schema = PostgresSchema()
    try:
        yield schema.url
    finally:
        schema.drop()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    upgrade(database)
    yield database
    database.dispose()


class LiveServer:
    """The real WSGI app on a real waitress server on a free port, in a background thread."""

    def __init__(self, services: Services) -> None:
        self.services = services
        # Any: types-waitress lacks effective_port and _map, and types the trigger as an int.
        self.server = cast(
            Any,
            create_server(
                create_app(services),
                host="127.0.0.1",
                port=0,
                threads=8,
                **server_options(services.settings),
            ),
        )
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def stop(self) -> None:
        # Workers first: a worker finishing a response pulls the trigger, which must still be
        # open. Then close the sockets from the server's own loop thread: closing them under its
        # running select() kills that thread with EBADF and leaves the worker threads behind.
        self.server.task_dispatcher.shutdown()
        try:
            self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
        except OSError:
            # The trigger's pipe is already closed (seen once in a full run, after the browser
            # tests): the loop cannot be woken, so close its sockets from here.
            wasyncore.close_all(self.server._map)
        self.thread.join(timeout=5)


class LiveGateway:
    """``chinwag.asgi``'s app (the live gateway in front of the WSGI app) on a real uvicorn server
    on a free port, in a background thread with its own event loop: what ``chinwag live`` runs."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.app = create_application(services)
        self.gateway: Gateway = self.app.state.gateway
        sock = listening_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.server = GatewayServer(
            uvicorn_config(self.app, services.settings), self.gateway.hub.close_all
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
            time.sleep(0.01)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def gateway_settings(db: Database, **overrides: Any) -> Settings:
    """Settings for a test gateway: a short heartbeat so idle streams show signs of life."""
    return Settings(database_url=db.url, stream_heartbeat_seconds=0.5).with_overrides(**overrides)


@pytest.fixture
def rung() -> list[int]:
    """Message ids the web tier rang the doorbell for."""
    return []


@pytest.fixture
def server(db: Database, rung: list[int]) -> Iterator[LiveServer]:
    # No worker runs behind this server: a test notification is never tried, so say so soon.
    settings = Settings(
        database_url=db.url, stream_heartbeat_seconds=0.5, device_test_wait_seconds=0.2
    )
    live = LiveServer(Services(settings, db, ring_doorbell=rung.append))
    yield live
    live.stop()


class Api:
    """A tiny client of the chinwag API for tests: sign up, sign in, call."""

    def __init__(self, server: LiveServer | LiveGateway) -> None:
        self.server = server
        self.anonymous = server.client()

    def user(self, username: str, password: str = "correct horse", **extra: Any) -> httpx.Client:
        created = self.anonymous.post(
            "/v1/users", json={"username": username, "password": password, **extra}
        )
        assert created.status_code == 201, created.text
        token = self.anonymous.post("/v1/tokens", json={"username": username, "password": password})
        assert token.status_code == 201, token.text
        return self.server.client(token.json()["token"])


@pytest.fixture
def api(server: LiveServer) -> Api:
    return Api(server)


@pytest.fixture
def gateway(db: Database, rung: list[int]) -> Iterator[LiveGateway]:
    """The ASGI app (gateway + API) on uvicorn, on the test's database."""
    live = LiveGateway(Services(gateway_settings(db), db, ring_doorbell=rung.append))
    yield live
    live.stop()


@pytest.fixture
def gateway_api(gateway: LiveGateway) -> Api:
    """The Api helper speaking to the gateway's port (the API behind it is the same app)."""
    return Api(gateway)


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[RunningFakes]:
    """The local fake providers (APNs, FCM, Web Push, SMTP, webhooks) on loopback, over TLS."""
    running = RunningFakes.start(tmp_path / "fakes")
    yield running
    running.stop()
