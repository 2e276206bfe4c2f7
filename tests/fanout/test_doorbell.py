"""The doorbell on each queue backend: a ring in one process wakes a listener in another."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import PG_ADMIN_DSN, REDIS_URL, require_postgres, require_redis

from chinwag.bootstrap import web_services
from chinwag.config import Settings
from chinwag.fanout.doorbell import BackgroundRinger, Doorbell


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


def _wait_until(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_background_ring_returns_before_the_queue_answers() -> None:
    """A ring through BackgroundRinger returns while the doorbell itself is still blocked."""
    release = threading.Event()
    rung: list[int] = []

    def slow_ring(message_id: int) -> None:
        release.wait(10)
        rung.append(message_id)

    ring = BackgroundRinger(slow_ring)
    started = time.monotonic()
    ring(7)
    assert time.monotonic() - started < 5.0  # the doorbell itself is held for 10 s
    assert rung == []
    release.set()
    assert _wait_until(lambda: rung == [7])


def test_background_rings_during_a_ring_fold_into_one() -> None:
    """Rings asked for while one is under way become one more ring, with the latest id."""
    entered, release = threading.Event(), threading.Event()
    rung: list[int] = []

    def slow_ring(message_id: int) -> None:
        entered.set()
        release.wait(10)
        rung.append(message_id)

    ring = BackgroundRinger(slow_ring)
    ring(1)
    assert entered.wait(10)
    for message_id in (2, 3, 4):
        ring(message_id)
    release.set()
    assert _wait_until(lambda: len(rung) == 2)
    assert rung == [1, 4]
    time.sleep(0.1)  # a bounded look for an unwanted third ring, not a wait for a condition
    assert rung == [1, 4]


def test_background_ringer_survives_a_failing_ring() -> None:
    """A doorbell that raises does not stop the thread: the next ring still goes out."""
    rung: list[int] = []

    def flaky_ring(message_id: int) -> None:
        if message_id == 1:
            raise RuntimeError("queue down")
        rung.append(message_id)

    ring = BackgroundRinger(flaky_ring)
    ring(1)
    assert _wait_until(lambda: ring._latest is None)
    ring(2)
    assert _wait_until(lambda: rung == [2])


def test_background_ringer_rings_in_a_forked_child() -> None:
    """A ringer made before a fork (gunicorn --preload) rings from the child too, through a
    thread of its own: the parent's does not exist there."""
    read_end, write_end = os.pipe()
    rung: list[int] = []

    def ring_to_pipe(message_id: int) -> None:
        rung.append(message_id)
        os.write(write_end, f"{os.getpid()}:{message_id}\n".encode())

    ring = BackgroundRinger(ring_to_pipe)
    ring(1)  # the parent's thread is running when the child is forked
    assert _wait_until(lambda: rung == [1])
    pid = os.fork()
    if pid == 0:  # the child: ring, then leave without running the parent's cleanup
        ring(2)
        os._exit(0 if _wait_until(lambda: rung == [1, 2]) else 1)
    _, status = os.waitpid(pid, 0)
    os.close(write_end)
    assert os.waitstatus_to_exitcode(status) == 0
    with os.fdopen(read_end) as lines:
        assert lines.read().split() == [f"{os.getpid()}:1", f"{pid}:2"]


def test_web_services_ring_through_the_queue(tmp_path: Path) -> None:
    """The web tier's services (bootstrap.web_services) ring the configured queue, in the
    background: a worker-side listener hears the message id."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'chinwag.db'}",
        queue_url=f"sqlite:///{tmp_path / 'queue.db'}",
    )
    heard: list[int] = []
    stop = threading.Event()
    thread = Doorbell(settings.effective_queue_url).listen(heard.append, stop)
    services = web_services(settings)
    try:
        services.ring_doorbell(42)
        assert _wait_until(lambda: 42 in heard)
    finally:
        stop.set()
        thread.join(timeout=5)
        services.db.dispose()
