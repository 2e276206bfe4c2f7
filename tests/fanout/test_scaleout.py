"""Scale-out: several worker processes on PostgreSQL + Redis share one large fan-out."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from tests.conftest import (
    REDIS_URL,
    Api,
    LiveServer,
    PostgresSchema,
    require_postgres,
    require_redis,
)
from tests.support.processes import (
    ChinwagProcess,
    chinwag_env,
    delivery_statuses,
    wait_until,
)
from tests.support.seed import add_devices

from chinwag.config import Settings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.suite import RunningFakes
from chinwag.fanout import Doorbell
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.web import Services

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

STATS = re.compile(r"stopped; (\{.*\})")


def _delivered_by(process: ChinwagProcess) -> int:
    match = STATS.search(process.output())
    assert match, process.output()[-2000:]
    return int(ast.literal_eval(match.group(1)).get("delivered", 0))


def test_two_workers_share_one_large_fanout_without_duplicates(tmp_path: Path) -> None:
    """Two workers on PostgreSQL + Redis split 3,000 devices: each sends some, none twice."""
    require_postgres()
    require_redis()
    schema = PostgresSchema()
    db = Database(schema.url)
    upgrade(db)
    fakes = RunningFakes.start(tmp_path / "fakes", faults=FaultPlan(latency=0.05))
    doorbell = Doorbell(REDIS_URL)
    live = LiveServer(Services(Settings(database_url=db.url), db, ring_doorbell=doorbell.ring))
    processes: list[ChinwagProcess] = []
    try:
        api = Api(live)
        sender, member = api.user("sender"), api.user("member")
        tokens = [f"{i:064x}" for i in range(1, 3001)]
        add_devices(db, member.get("/v1/me").json()["id"], "apns", tokens)
        chat = sender.post("/v1/chats", json={"title": "All", "members": ["member"]}).json()
        env = chinwag_env(db.url, REDIS_URL, fakes.env(), CHINWAG_MAX_IN_FLIGHT="100")
        for n in range(2):
            processes.append(ChinwagProcess(["worker"], env, tmp_path / f"worker-{n}.log"))
        wait_until(lambda: all("started" in p.output() for p in processes), 20, "both workers up")
        sender.post(f"/v1/chats/{chat['id']}/messages", json={"body": "everyone"})
        accepted = fakes.providers.apns.accepted
        wait_until(lambda: len(accepted) >= 3000, 60, "3,000 notifications")
        wait_until(lambda: delivery_statuses(db) == {"delivered": 3000}, 20, "all recorded")
        for process in processes:
            assert process.terminate() == 0
        shares = [_delivered_by(p) for p in processes]
        assert sum(shares) == 3000
        assert min(shares) > 0, shares
        assert len(accepted) == len({r.token for r in accepted}) == 3000
    finally:
        for process in processes:
            process.stop()
        live.stop()
        fakes.stop()
        db.dispose()
        schema.drop()
