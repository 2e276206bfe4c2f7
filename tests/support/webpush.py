"""Zero-configuration Web Push for tests: settings without a VAPID key file, and a worker run in
the test's process until the fan-out is done."""

from __future__ import annotations

import asyncio

from chinwag.bootstrap import build_worker, with_vapid_key
from chinwag.config import Settings
from chinwag.fakes.suite import RunningFakes
from chinwag.push.registry import Senders
from chinwag.store.database import Database


def zero_config_settings(database_url: str, fakes: RunningFakes, **env: str) -> Settings:
    """The fakes' settings (their CA, the loopback allowance) with no CHINWAG_VAPID_* at all."""
    environ = {k: v for k, v in fakes.env().items() if not k.startswith("CHINWAG_VAPID_")}
    environ.update({"CHINWAG_DATABASE_URL": database_url, "CHINWAG_VERIFY_EMAIL_DEVICES": "0"})
    environ.update(env)
    return Settings.from_env(environ)


def deliver_all(settings: Settings, db: Database) -> None:
    """One worker, composed as `chinwag worker` composes it, works until nothing is due."""

    async def main() -> None:
        senders = Senders.from_settings(with_vapid_key(settings, db).push)
        try:
            await build_worker(settings, db, senders).run_until_idle(limit_seconds=30)
        finally:
            await senders.aclose()

    asyncio.run(main())
