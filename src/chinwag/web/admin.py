"""``GET /v1/admin/stats``: the operator page's figures, for users flagged by ``chinwag admin``.

Outbox depth and age and deliveries by platform and status are ``read_figures`` — exactly what
``/metrics`` exports. Throughput over time, outcomes by reason and recent failures are read from
the same delivery rows with their timestamps, so they survive restarts and agree across web
processes. The route is declared on this module's ``api``; ``create_app`` mounts it.
"""

from __future__ import annotations

import time
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel, Field

from chinwag.store.database import Database
from chinwag.store.schema import deliveries, users
from chinwag.store.states import DeliveryStatus
from chinwag.web.api import Api, HttpError, RequestContext
from chinwag.web.metrics import HTTP_SECONDS, read_figures, read_provider_health

THROUGHPUT_WINDOW_SECONDS = 600
THROUGHPUT_STEP_SECONDS = 10
RECENT_FAILURES = 25
OUTCOME_ROWS = 50
# Statuses that mean "did not arrive (yet)" and carry the provider's reason in last_error.
FAILURE_STATUSES = (DeliveryStatus.FAILED, DeliveryStatus.TOKEN_DEAD, DeliveryStatus.RETRYING)

api = Api()  # the route below; create_app mounts it


class OutboxStats(BaseModel):
    pending: int = Field(
        description="Fan-outs not yet expanded: new messages, read updates, deletions, tests"
    )
    oldest_pending_age_seconds: float


class ThroughputPoint(BaseModel):
    at: datetime = Field(description="Start of the interval")
    delivered: int
    failed: int = Field(description="Deliveries that ended failed or token_dead")


class OutcomeCount(BaseModel):
    provider: str
    status: str
    reason: str | None
    count: int


class ProviderStatus(BaseModel):
    provider: str
    app: str
    credentials_ok: bool = Field(
        description="False when the latest answer refused our credentials (or none are set)"
    )
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error_class: str | None = Field(description="retry, rejected, misconfigured, unavailable")
    last_error: str | None


class RecentFailure(BaseModel):
    delivery_id: int
    message_id: int | None = Field(description="null for a test notification")
    provider: str
    user: str
    status: str
    attempts: int
    reason: str | None
    updated_at: datetime


class RouteLatency(BaseModel):
    method: str
    route: str
    requests: int
    mean_seconds: float


class AdminStats(BaseModel):
    generated_at: datetime
    outbox: OutboxStats
    deliveries_by_status: dict[str, int]
    step_seconds: int
    throughput: list[ThroughputPoint] = Field(description="Oldest first, one per step")
    outcomes: list[OutcomeCount] = Field(
        description="By provider, status and reason; largest first"
    )
    recent_failures: list[RecentFailure]
    providers: list[ProviderStatus] = Field(
        description="Per provider and app, what the worker last heard from it"
    )
    http: list[RouteLatency] = Field(description="Requests answered by this web process")


@api.route(
    "GET",
    "/v1/admin/stats",
    summary="Operator figures: fan-out queue, throughput, outcomes, failures (admins only)",
    response=AdminStats,
    errors=(401, 403),
    tag="admin",
)
def admin_stats(ctx: RequestContext) -> AdminStats:
    if not ctx.member.is_admin:
        raise HttpError(403, "forbidden", "operators only (granted with `chinwag admin NAME`)")
    now = time.time()
    db = ctx.services.db
    figures = read_figures(db, now)
    return AdminStats(
        generated_at=datetime.fromtimestamp(now).astimezone(),
        outbox=OutboxStats(
            pending=figures.outbox_pending,
            oldest_pending_age_seconds=figures.oldest_pending_age_seconds,
        ),
        deliveries_by_status=figures.by_status(),
        step_seconds=THROUGHPUT_STEP_SECONDS,
        throughput=_throughput(db, now),
        outcomes=_outcomes(db),
        recent_failures=_recent_failures(db),
        providers=_providers(db),
        http=_http_latency(),
    )


def _bucket(db: Database, column: sa.ColumnElement[float]) -> sa.ColumnElement[int]:
    step = THROUGHPUT_STEP_SECONDS
    if db.is_sqlite:  # no floor() in every SQLite build; the cast truncates, times are positive
        return sa.cast(column / step, sa.Integer)
    return sa.cast(sa.func.floor(column / step), sa.BigInteger)


def _throughput(db: Database, now: float) -> list[ThroughputPoint]:
    step = THROUGHPUT_STEP_SECONDS
    last = int(now // step)
    first = last - THROUGHPUT_WINDOW_SECONDS // step + 1
    since = first * step
    delivered_bucket = _bucket(db, deliveries.c.delivered_at)
    failed_bucket = _bucket(db, deliveries.c.updated_at)
    with db.read() as conn:
        delivered = dict(
            conn.execute(
                sa.select(delivered_bucket, sa.func.count())
                .where(deliveries.c.delivered_at >= since)
                .group_by(delivered_bucket)
            ).all()
        )
        failed = dict(
            conn.execute(
                sa.select(failed_bucket, sa.func.count())
                .where(
                    deliveries.c.status.in_((DeliveryStatus.FAILED, DeliveryStatus.TOKEN_DEAD)),
                    deliveries.c.updated_at >= since,
                )
                .group_by(failed_bucket)
            ).all()
        )
    return [
        ThroughputPoint(
            at=datetime.fromtimestamp(bucket * step).astimezone(),
            delivered=int(delivered.get(bucket, 0)),
            failed=int(failed.get(bucket, 0)),
        )
        for bucket in range(first, last + 1)
    ]


def _outcomes(db: Database) -> list[OutcomeCount]:
    count = sa.func.count().label("n")
    query = (
        sa.select(deliveries.c.platform, deliveries.c.status, deliveries.c.last_error, count)
        .group_by(deliveries.c.platform, deliveries.c.status, deliveries.c.last_error)
        .order_by(count.desc(), deliveries.c.platform, deliveries.c.status)
        .limit(OUTCOME_ROWS)
    )
    with db.read() as conn:
        rows = conn.execute(query).all()
    return [
        OutcomeCount(provider=platform, status=status, reason=reason, count=int(n))
        for platform, status, reason, n in rows
    ]


def _recent_failures(db: Database) -> list[RecentFailure]:
    query = (
        sa.select(deliveries, users.c.username)
        .join(users, users.c.id == deliveries.c.user_id)
        .where(deliveries.c.status.in_(FAILURE_STATUSES))
        .order_by(deliveries.c.updated_at.desc(), deliveries.c.id.desc())
        .limit(RECENT_FAILURES)
    )
    with db.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        RecentFailure(
            delivery_id=row["id"],
            message_id=row["message_id"],
            provider=row["platform"],
            user=row["username"],
            status=row["status"],
            attempts=row["attempts"],
            reason=row["last_error"],
            updated_at=datetime.fromtimestamp(row["updated_at"]).astimezone(),
        )
        for row in rows
    ]


def _providers(db: Database) -> list[ProviderStatus]:
    def when(at: float | None) -> datetime | None:
        return datetime.fromtimestamp(at).astimezone() if at is not None else None

    return [
        ProviderStatus(
            provider=row.platform,
            app=row.app,
            credentials_ok=row.credentials_ok,
            last_success_at=when(row.last_success_at),
            last_error_at=when(row.last_error_at),
            last_error_class=row.last_error_class,
            last_error=row.last_error,
        )
        for row in read_provider_health(db)
    ]


def _http_latency() -> list[RouteLatency]:
    counts: dict[tuple[str, str], float] = {}
    sums: dict[tuple[str, str], float] = {}
    for family in HTTP_SECONDS.collect():
        for sample in family.samples:
            key = (sample.labels["method"], sample.labels["route"])
            if sample.name.endswith("_count"):
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                sums[key] = sums.get(key, 0.0) + sample.value
    return [
        RouteLatency(
            method=method,
            route=route,
            requests=int(n),
            mean_seconds=sums.get((method, route), 0.0) / n if n else 0.0,
        )
        for (method, route), n in sorted(counts.items(), key=lambda item: -item[1])
    ]
