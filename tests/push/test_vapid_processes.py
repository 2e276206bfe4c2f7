"""The generated VAPID key across real processes: a `chinwag worker` started before its database
is migrated waits for it, then generates the key and keeps it in the database."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import ChinwagProcess, chinwag_env, wait_until

from chinwag.bootstrap import VAPID_KEY_NAME
from chinwag.push.vapid import application_server_key, load_vapid_key
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.store.server_keys import read_server_key


def test_worker_waits_for_the_schema_then_generates_the_key(tmp_path: Path) -> None:
    """A worker on an unmigrated database retries, and after `migrate` stores the key once."""
    url = f"sqlite:///{tmp_path / 'chinwag.db'}"
    env = chinwag_env(url, f"sqlite:///{tmp_path / 'queue.db'}", {})
    worker = ChinwagProcess(["worker"], env, tmp_path / "worker.log")
    db = Database(url)
    try:
        wait_until(lambda: "cannot read the Web Push key yet" in worker.output(), 30, "a retry")
        assert worker.process.poll() is None  # waiting, not dead
        upgrade(db)
        wait_until(lambda: "generated the VAPID key" in worker.output(), 30, "the key")
        wait_until(lambda: "'webpush': ['*']" in worker.output(), 30, "Web Push configured")
        # Its SIGTERM handler is installed once the worker runs: stop it only then.
        wait_until(lambda: "started" in worker.output(), 30, "the worker to run")
        pem = read_server_key(db, VAPID_KEY_NAME)
        assert pem is not None
        assert len(application_server_key(load_vapid_key(pem.encode(), "test"))) == 87
        assert "PRIVATE KEY" not in worker.output()
        assert worker.terminate() == 0
    finally:
        worker.stop()
        db.dispose()
