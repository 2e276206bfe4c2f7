"""The doorbell on each queue backend: a ring in one process wakes a listener in another."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from tests.conftest import PG_ADMIN_DSN, REDIS_URL, require_postgres, require_redis

from chinwag.fanout.doorbell import Doorbell


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    if request.param == "redis":
        require_redis()
        return REDIS_URL  # this test process's own database
    require_postgres()
    return PG_ADMIN_DSN


def test_ring_wakes_a_listener(queue_url: str) -> None:
    """Three rings from a web-side Doorbell reach a worker-side listener, each message id once."""
    heard: list[int] = []
    stop = threading.Event()
    listener = Doorbell(queue_url)
    listener.huey.flush()
    thread = listener.listen(heard.append, stop)
    try:
        ringer = Doorbell(queue_url)
        for message_id in (11, 12, 13):
            ringer.ring(message_id)
        deadline = time.monotonic() + 10
        while sorted(heard) != [11, 12, 13] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(heard) == [11, 12, 13]
    finally:
        stop.set()
        thread.join(timeout=5)


def test_ring_never_raises_when_the_queue_is_down() -> None:
    """An unreachable queue costs the sender nothing: ring() logs and returns."""
    Doorbell("redis://127.0.0.1:1/0").ring(1)
