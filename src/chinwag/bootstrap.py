"""Composition: build the web tier's services and the worker from settings. Used by the entry
points (cli, wsgi) so both wire chinwag the same way."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from chinwag.config import Settings
from chinwag.fanout import BackgroundRinger, Doorbell, RetryPolicy, Worker, WorkerOptions
from chinwag.push.model import Dispatcher
from chinwag.push.vapid import application_server_key, generate_vapid_pem, vapid_key_of
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.store.server_keys import keep_server_key, read_server_key

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
    return Services(
        settings=settings,
        db=database,
        # Off the request path: a send is answered once its transaction commits.
        ring_doorbell=BackgroundRinger(doorbell.ring),
        vapid_public_key=vapid_public_key_source(settings, database),
    )


# The name of the generated VAPID key in the server_keys table.
VAPID_KEY_NAME = "vapid_private_key"


def with_vapid_key(settings: Settings, db: Database) -> Settings:
    """Settings whose Web Push key is loaded: the operator's file (CHINWAG_VAPID_PRIVATE_KEY)
    as it is, otherwise the key generated once for the deployment and kept in the database."""
    webpush = settings.push.webpush
    if webpush is None or webpush.vapid_private_key is not None:
        return settings
    if webpush.vapid_private_pem is None:
        pem = read_server_key(db, VAPID_KEY_NAME)
        if pem is None:
            candidate = generate_vapid_pem().decode("ascii")
            pem = keep_server_key(db, VAPID_KEY_NAME, candidate)
            if pem == candidate:  # another process may have stored its own first: that one
                log.info("Web Push: generated the VAPID key, kept in the database (server_keys)")
        webpush = replace(webpush, vapid_private_pem=pem.encode("ascii"))
    return settings.with_overrides(push=replace(settings.push, webpush=webpush))


def vapid_public_key_source(settings: Settings, db: Database) -> Callable[[], str | None]:
    """What ``GET /v1/push/vapid-public-key`` publishes, read on first use (a web process may
    start before its database answers) and then remembered: the key never changes while a
    process runs. None when Web Push is off; ConfigError when the operator's file is unusable."""
    found: list[str] = []
    lock = threading.Lock()

    def public_key() -> str | None:
        if settings.push.webpush is None:
            return None
        with lock:
            if not found:
                loaded = with_vapid_key(settings, db).push.webpush
                assert loaded is not None  # Web Push is on: checked above
                found.append(application_server_key(vapid_key_of(loaded)))
            return found[0]

    return public_key


def worker_options(settings: Settings) -> WorkerOptions:
    return WorkerOptions(
        lease_seconds=settings.lease_seconds,
        sweep_interval=settings.sweep_interval_seconds,
        email_digest_seconds=settings.email_digest_seconds,
        device_stale_days=settings.device_stale_days,
        claim_batch=settings.worker_batch,
        expand_batch=settings.worker_batch,
        flush_size=max(1, settings.worker_batch // 2),
        retry=RetryPolicy(
            max_attempts=settings.delivery_max_attempts,
            base_seconds=settings.retry_base_seconds,
        ),
    )


def build_worker(
    settings: Settings,
    db: Database,
    sender: Dispatcher | None = None,
    *,
    wake_peers: Callable[[], None] | None = None,
) -> Worker:
    if sender is None:
        from chinwag.push.registry import Senders

        sender = Senders.from_settings(with_vapid_key(settings, db).push)
    return Worker(db, sender, worker_options(settings), wake_peers=wake_peers)
