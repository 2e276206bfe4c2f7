"""Operator surfaces (security finding 12): /metrics behind a bearer and cheap per scrape, and
the SQLite files readable by their owner only."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from tests.conftest import Api, LiveServer
from tests.web.support import assert_error

from chinwag.config import Settings
from chinwag.fanout.doorbell import make_huey
from chinwag.store.database import Database
from chinwag.web import Services


def test_metrics_want_the_configured_bearer(db: Database) -> None:
    """With CHINWAG_METRICS_TOKEN, a scrape without it or with another is 401."""
    live = LiveServer(Services(Settings(database_url=db.url, metrics_token="scrape-me"), db))
    try:
        assert_error(httpx.get(f"{live.url}/metrics"), 401, "unauthorized")
        wrong = {"Authorization": "Bearer guess"}
        assert_error(httpx.get(f"{live.url}/metrics", headers=wrong), 401)
        right = httpx.get(f"{live.url}/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert right.status_code == 200 and "chinwag_outbox_pending" in right.text
    finally:
        live.stop()


def test_scrapes_do_not_group_every_delivery_each_time(api: Api, server: LiveServer) -> None:
    """Ten scrapes in a row run the deliveries GROUP BY once; the outbox figures stay live."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = server.services.db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(10):
            assert httpx.get(f"{server.url}/metrics").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    grouped = [s for s in statements if "GROUP BY" in s.upper()]
    assert len(grouped) == 1, grouped
    assert sum("outbox" in s for s in statements) == 10


@pytest.mark.parametrize("name", ["chinwag.db", "chinwag-queue.db"])
def test_sqlite_files_are_created_owner_only(tmp_path: Path, name: str) -> None:
    """The database and the queue file (and SQLite's -wal beside them) are 0600, not 0644."""
    path = tmp_path / name
    if name == "chinwag.db":
        database = Database(f"sqlite:///{path}")
        with database.write() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        database.dispose()
    else:
        make_huey(f"sqlite:///{path}").pending_count()  # opens the file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for sidecar in path.parent.glob(f"{name}-*"):
        assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600, sidecar
