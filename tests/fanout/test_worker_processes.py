"""``chinwag worker --processes N``: one supervisor, N plain worker processes that share the work
through the database as separate workers do; a child that dies is restarted, and SIGTERM stops
them all gracefully."""

from __future__ import annotations

import ast
import os
import re
import signal
from pathlib import Path

import pytest
from tests.conftest import Api
from tests.fanout.conftest import Workers, big_group
from tests.support.processes import child_pids, delivery_statuses, fanout_settled, wait_until

from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.suite import RunningFakes
from chinwag.store.database import Database

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads children from /proc"),
]

STARTED = re.compile(r"worker \S+ started")
STATS = re.compile(r"stopped; (\{.*\})")


def test_processes_share_a_fanout_replace_a_killed_one_and_stop_on_sigterm(
    web_api: Api, db: Database, fakes: RunningFakes, workers: Workers
) -> None:
    """Two processes split 3,000 devices, none sent twice; a SIGKILLed one is replaced."""
    fakes.providers.apns.faults = FaultPlan(latency=0.05)
    sender, chat_id, tokens = big_group(web_api, db, 3000)
    parent = workers.start(CHINWAG_WORKER_PROCESSES="2", CHINWAG_MAX_IN_FLIGHT="100")
    pid = parent.process.pid
    wait_until(lambda: len(STARTED.findall(parent.output())) == 2, 30, "two worker processes")
    first, second = child_pids(pid)

    os.kill(first, signal.SIGKILL)

    def replaced() -> bool:
        now = child_pids(pid)  # one snapshot: the killed one may still be exiting
        return len(now) == 2 and first not in now

    wait_until(replaced, 30, "the supervisor to replace the killed process")
    wait_until(lambda: len(STARTED.findall(parent.output())) == 3, 30, "the new one to start")
    assert second in child_pids(pid)

    sent = sender.post(f"/v1/chats/{chat_id}/messages", json={"body": "all hands"})
    message_id = sent.json()["message"]["id"]
    wait_until(lambda: fanout_settled(db, [message_id]), 60, "the fan-out to settle")
    assert delivery_statuses(db, [message_id]) == {"delivered": 3000}

    assert parent.terminate() == 0  # forwarded to both children, which stop gracefully
    shares = [int(ast.literal_eval(m).get("delivered", 0)) for m in STATS.findall(parent.output())]
    assert len(shares) == 2 and sum(shares) == 3000, shares
    assert min(shares) > 0, shares  # both processes took part
    accepted = [record.token for record in list(fakes.providers.apns.accepted)]
    assert len(accepted) == len(set(accepted)) == 3000
    assert set(accepted) == set(tokens)
