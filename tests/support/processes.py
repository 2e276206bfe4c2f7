"""Real chinwag processes for end-to-end tests: workers and web tiers started as the user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from chinwag.store.database import Database

# Retries and sweeps sooner than in production, so tests wait less. The lease is the default:
# a live worker renews its claims, so a dead one's are taken over within seconds anyway.
FAST_ENGINE = {
    "CHINWAG_SWEEP_INTERVAL": "0.5",
    "CHINWAG_RETRY_BASE_SECONDS": "0.05",
    "CHINWAG_LOG_LEVEL": "INFO",
    # These tests are about delivery; email verification has its own (tests/web/test_devices.py).
    "CHINWAG_VERIFY_EMAIL_DEVICES": "false",
    # One process per `chinwag worker`, as the tests that kill or freeze a worker expect; the
    # multi-process worker has tests of its own (tests/fanout/test_worker_processes.py).
    "CHINWAG_WORKER_PROCESSES": "1",
}


def chinwag_env(
    database_url: str, queue_url: str, fakes_env: dict[str, str], **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
    env.update(fakes_env)
    env.update(FAST_ENGINE)
    env.update({"CHINWAG_DATABASE_URL": database_url, "CHINWAG_QUEUE_URL": queue_url})
    env.update(extra)
    return env


class ChinwagProcess:
    """``python -m chinwag <args>`` with its output captured in a file for the test to read."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 -- closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chinwag", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a machine dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._log.close()
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if not self._log.closed:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid``, from /proc (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: the state and the parent pid follow
        # the last ")". A zombie has exited already.
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05
) -> float:
    """Poll until ``condition`` holds; return the seconds taken, or fail naming what we awaited."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - start


def delivery_statuses(db: Database, message_ids: list[int] | None = None) -> dict[str, int]:
    from chinwag.store.schema import deliveries

    query = sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)
    if message_ids is not None:
        query = query.where(deliveries.c.message_id.in_(message_ids))
    with db.read() as conn:
        return {status: count for status, count in conn.execute(query)}


OPEN_STATUSES = ("pending", "sending", "retrying")


def fanout_settled(db: Database, message_ids: list[int]) -> bool:
    """Every outbox row of these messages is expanded and no delivery of them is still open: the
    fakes have seen everything these messages will ever send (outcomes are recorded after the
    provider answered), so a test may count what arrived without sleeping first."""
    from chinwag.store.schema import deliveries, outbox

    with db.read() as conn:
        unexpanded = conn.execute(
            sa.select(sa.func.count())
            .select_from(outbox)
            .where(outbox.c.message_id.in_(message_ids), outbox.c.state != "done")
        ).scalar_one()
        still_open = conn.execute(
            sa.select(sa.func.count())
            .select_from(deliveries)
            .where(
                deliveries.c.message_id.in_(message_ids),
                deliveries.c.status.in_(OPEN_STATUSES),
            )
        ).scalar_one()
    return unexpanded == 0 and still_open == 0
