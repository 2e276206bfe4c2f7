"""What a batch of outcomes says besides each delivery's status: about each device (its last
success or failure, shown by GET /v1/devices) and about each provider and app (its health, in
``provider_health``, shown by /admin and /metrics). Written in the batch's transaction, a few
statements per batch whatever its size."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from chinwag.push.model import DeviceTarget, Outcome, OutcomeKind
from chinwag.store.database import Database
from chinwag.store.schema import devices, provider_health


def error_text(outcome: Outcome) -> str:
    """How an outcome is stored (deliveries.last_error, devices.last_failure_reason): its class
    first, which ``chinwag.chat.device_tests.outcome_class`` reads back."""
    status = f" (HTTP {outcome.status})" if outcome.status else ""
    return f"{outcome.kind.value}: {outcome.reason}{status}"


# Outcomes that prove the provider accepted our credentials, and those that say it did not (or
# that there are none). RETRY proves neither: a 503 says nothing about the key.
_CREDENTIALS_WORK = (OutcomeKind.DELIVERED, OutcomeKind.TOKEN_DEAD, OutcomeKind.REJECTED)
_CREDENTIALS_FAIL = (OutcomeKind.MISCONFIGURED, OutcomeKind.UNAVAILABLE)


@dataclass
class _ProviderNews:
    delivered: bool = False
    error: Outcome | None = None  # the batch's last error that concerns the provider
    credentials_ok: bool | None = None  # None: this batch does not tell


@dataclass
class OutcomeNews:
    """What one batch of outcomes says about each device and each (platform, app)."""

    succeeded: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)
    providers: dict[tuple[str, str], _ProviderNews] = field(default_factory=dict)

    def add(self, target: DeviceTarget, outcome: Outcome) -> None:
        kind = outcome.kind
        if kind is OutcomeKind.DELIVERED:
            self.succeeded.add(target.device_id)
            self.failed.pop(target.device_id, None)
        else:
            self.failed[target.device_id] = error_text(outcome)
            self.succeeded.discard(target.device_id)
        news = self.providers.setdefault((target.platform.value, target.app), _ProviderNews())
        if kind is OutcomeKind.DELIVERED:
            news.delivered = True
        elif kind is not OutcomeKind.TOKEN_DEAD:  # a dead token is the device's, not the provider's
            news.error = outcome
        if kind in _CREDENTIALS_FAIL:
            news.credentials_ok = False
        elif kind in _CREDENTIALS_WORK and news.credentials_ok is None:
            news.credentials_ok = True  # a refusal in the same batch outweighs it

    def write(self, conn: Connection, db: Database, now: float) -> None:
        if self.succeeded:
            conn.execute(
                devices.update()
                .where(devices.c.id.in_(sorted(self.succeeded)))
                .values(last_success_at=now)
            )
        if self.failed:
            conn.execute(
                devices.update()
                .where(devices.c.id == sa.bindparam("d_id"))
                .values(last_failure_at=now, last_failure_reason=sa.bindparam("d_reason")),
                [{"d_id": i, "d_reason": r[:500]} for i, r in sorted(self.failed.items())],
            )
        dialect_insert = postgresql.insert if db.is_postgres else sqlite.insert
        for (platform, app), news in sorted(self.providers.items()):
            changes: dict[str, object] = {"updated_at": now}
            if news.delivered:
                changes["last_success_at"] = now
            if news.error is not None:
                changes["last_error_at"] = now
                changes["last_error_class"] = news.error.kind.value
                changes["last_error"] = error_text(news.error)[:500]
            if news.credentials_ok is not None:
                changes["credentials_ok"] = news.credentials_ok
            conn.execute(
                dialect_insert(provider_health)
                .values(platform=platform, app=app, **changes)
                .on_conflict_do_update(index_elements=["platform", "app"], set_=changes)
            )
