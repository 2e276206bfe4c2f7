"""``GET /metrics``: what the web process can see, in Prometheus text format.

Two kinds of figures live here. HTTP request latency by route is measured in this process, by a
Bottle plugin around every route. The fan-out's state (outbox depth, the age of the oldest pending
fan-out, deliveries by platform and status) belongs to no process: it is read from the database
at scrape time by a collector, so every web process reports the same truth and a restart loses
nothing; so is each provider's health (per platform and app: last success, last error and its
class, whether its credentials work), which the worker writes to ``provider_health`` with every
batch of outcomes. The operator page (``web/admin.py``) reads the very same figures through
``read_figures`` and ``read_provider_health``.

The worker's own counters (sends by provider and outcome, send latency, in flight, dead tokens;
``push/registry.py``) live in the worker process and are exported by it (``CHINWAG_METRICS_PORT``).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

import bottle
import sqlalchemy as sa
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from chinwag.store.database import Database
from chinwag.store.schema import deliveries, outbox, provider_health
from chinwag.store.states import OutboxState
from chinwag.web.api import error_response

HTTP_SECONDS = Histogram(
    "chinwag_http_request_seconds",
    "Time spent answering an HTTP request, by route template",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@dataclass(frozen=True)
class Figures:
    """The fan-out's state at one instant, as read from the database."""

    outbox_pending: int
    oldest_pending_age_seconds: float
    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)  # (platform, status) → n

    def by_status(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (_platform, status), count in self.deliveries.items():
            totals[status] = totals.get(status, 0) + count
        return totals


def read_figures(
    db: Database, now: float | None = None, *, delivery_counts: DeliveryCounts | None = None
) -> Figures:
    """The outbox figures, read now (an indexed count of the few pending rows), and the delivery
    counts, which scan the whole deliveries table: taken from ``delivery_counts`` when given."""
    now = time.time() if now is None else now
    with db.read() as conn:
        depth, oldest = conn.execute(
            sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(
                outbox.c.state == OutboxState.PENDING
            )
        ).one()
    counts = delivery_counts.get(db) if delivery_counts else count_deliveries(db)
    return Figures(
        outbox_pending=int(depth),
        oldest_pending_age_seconds=max(0.0, now - float(oldest)) if oldest is not None else 0.0,
        deliveries=counts,
    )


def count_deliveries(db: Database) -> dict[tuple[str, str], int]:
    with db.read() as conn:
        counts = conn.execute(
            sa.select(deliveries.c.platform, deliveries.c.status, sa.func.count()).group_by(
                deliveries.c.platform, deliveries.c.status
            )
        ).all()
    return {(platform, status): int(count) for platform, status, count in counts}


@dataclass(frozen=True)
class ProviderHealth:
    """What the worker last heard from one provider for one app (``provider_health``)."""

    platform: str
    app: str
    last_success_at: float | None
    last_error_at: float | None
    last_error_class: str | None
    last_error: str | None
    credentials_ok: bool


def read_provider_health(db: Database) -> list[ProviderHealth]:
    """One row per provider and app the worker has heard from: a table of a handful of rows."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(provider_health).order_by(provider_health.c.platform, provider_health.c.app)
        ).mappings()
        return [
            ProviderHealth(
                platform=row["platform"],
                app=row["app"],
                last_success_at=row["last_success_at"],
                last_error_at=row["last_error_at"],
                last_error_class=row["last_error_class"],
                last_error=row["last_error"],
                credentials_ok=bool(row["credentials_ok"]),
            )
            for row in rows
        ]


class DeliveryCounts:
    """The deliveries-by-status GROUP BY, at most once per ``ttl_seconds`` however often
    Prometheus (or anyone: /metrics may be public) scrapes; concurrent scrapes share one query."""

    def __init__(self, ttl_seconds: float = 30.0) -> None:
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._taken_at = float("-inf")
        self._counts: dict[tuple[str, str], int] = {}

    def get(self, db: Database) -> dict[tuple[str, str], int]:
        with self._lock:
            if time.monotonic() - self._taken_at >= self.ttl_seconds:
                self._counts = count_deliveries(db)
                self._taken_at = time.monotonic()
            return dict(self._counts)


class FanoutCollector(Collector):
    """Reads the outbox and delivery tables when Prometheus scrapes, never in between."""

    def __init__(self, db: Database, delivery_counts: DeliveryCounts | None = None) -> None:
        self.db = db
        self.delivery_counts = delivery_counts or DeliveryCounts()

    def collect(self) -> Iterator[Metric]:
        figures = read_figures(self.db, delivery_counts=self.delivery_counts)
        depth = GaugeMetricFamily(
            "chinwag_outbox_pending",
            "Fan-outs not yet expanded: new messages, read updates, deletions, settings changes, "
            "device tests",
        )
        depth.add_metric([], figures.outbox_pending)
        age = GaugeMetricFamily(
            "chinwag_outbox_oldest_pending_age_seconds",
            "Age of the oldest message whose fan-out has not finished (0 when none)",
        )
        age.add_metric([], figures.oldest_pending_age_seconds)
        rows = GaugeMetricFamily(
            "chinwag_deliveries",
            "Delivery records (one per message and device) by platform and status",
            labels=["platform", "status"],
        )
        for (platform, status), count in sorted(figures.deliveries.items()):
            rows.add_metric([platform, status], count)
        yield from (depth, age, rows)
        yield from provider_metrics(read_provider_health(self.db))


def provider_metrics(health: list[ProviderHealth]) -> Iterator[Metric]:
    labels = ["platform", "app"]
    success = GaugeMetricFamily(
        "chinwag_provider_last_success_timestamp",
        "When the provider last accepted a notification for the app (UNIX time)",
        labels=labels,
    )
    error = GaugeMetricFamily(
        "chinwag_provider_last_error_timestamp",
        "When the provider last failed a notification for the app, by outcome class (UNIX time)",
        labels=[*labels, "error_class"],
    )
    credentials = GaugeMetricFamily(
        "chinwag_provider_credentials_ok",
        "0 when the latest answer refused our credentials for the app (or none are configured)",
        labels=labels,
    )
    for row in health:
        if row.last_success_at is not None:
            success.add_metric([row.platform, row.app], row.last_success_at)
        if row.last_error_at is not None and row.last_error_class:
            error.add_metric([row.platform, row.app, row.last_error_class], row.last_error_at)
        credentials.add_metric([row.platform, row.app], 1.0 if row.credentials_ok else 0.0)
    yield from (success, error, credentials)


class _Exposition:
    """This process's registry plus the database collector, rendered together."""

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


class LatencyPlugin:
    """Times every route callback; labels with the route template, never the concrete path, so
    ``/v1/chats/1`` and ``/v1/chats/2`` share one series."""

    name = "chinwag_latency"
    api = 2

    def apply(self, callback: Callable[..., Any], route: bottle.Route) -> Callable[..., Any]:
        method, rule = route.method, route.rule

        @wraps(callback)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            status = 500
            try:
                result = callback(*args, **kwargs)
                status = bottle.response.status_code
                return result
            except bottle.HTTPResponse as answer:  # static_file's 404, redirects
                status = answer.status_code
                raise
            finally:
                HTTP_SECONDS.labels(method, rule, str(status)).observe(
                    time.perf_counter() - started
                )

        return timed


def mount_metrics(app: bottle.Bottle, db: Database, token: str | None = None) -> None:
    """``GET /metrics`` and request timing on every route of ``app``. With ``token``
    (CHINWAG_METRICS_TOKEN) a scrape must send ``Authorization: Bearer <token>``."""
    exposition = _Exposition(REGISTRY, FanoutCollector(db))
    expected = f"Bearer {token}".encode() if token else None

    def metrics() -> bytes | str:
        if expected is not None:
            given = bottle.request.get_header("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response(
                    401,
                    "unauthorized",
                    "send 'Authorization: Bearer <CHINWAG_METRICS_TOKEN>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        bottle.response.content_type = CONTENT_TYPE_LATEST
        return generate_latest(exposition)

    app.route("/metrics", "GET", metrics)
    app.install(LatencyPlugin())
