"""Composition: build the web tier's services and the worker from settings. Used by the entry
points (cli, wsgi) so both wire chinwag the same way."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chinwag.config import Settings
from chinwag.fanout import Doorbell, RetryPolicy, Worker, WorkerOptions
from chinwag.push.model import Dispatcher
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade

if TYPE_CHECKING:
    from chinwag.web import Services

log = logging.getLogger("chinwag")


def open_database(settings: Settings, *, migrate: bool = False, pool_size: int = 5) -> Database:
    db = Database(settings.database_url, pool_size=pool_size)
    if migrate:
        upgrade(db)
    return db


def web_services(settings: Settings, db: Database | None = None) -> Services:
    # Imported here so that a worker process does not load the web tier it never serves.
    from chinwag.web import Services

    database = db or open_database(settings)
    doorbell = Doorbell(settings.effective_queue_url)
    return Services(settings=settings, db=database, ring_doorbell=doorbell.ring)


def worker_options(settings: Settings) -> WorkerOptions:
    return WorkerOptions(
        lease_seconds=settings.lease_seconds,
        sweep_interval=settings.sweep_interval_seconds,
        email_digest_seconds=settings.email_digest_seconds,
        device_stale_days=settings.device_stale_days,
        retry=RetryPolicy(
            max_attempts=settings.delivery_max_attempts,
            base_seconds=settings.retry_base_seconds,
        ),
    )


def build_worker(settings: Settings, db: Database, sender: Dispatcher | None = None) -> Worker:
    if sender is None:
        from chinwag.push.registry import Senders

        sender = Senders.from_settings(settings.push)
    return Worker(db, sender, worker_options(settings))
