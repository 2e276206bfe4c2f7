"""Helpers for the reliability tests: web tiers as real processes, a client that rides out their
deaths, and the (message, device) pairs the fakes received."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from tests.support.network import free_port
from tests.support.processes import ChinwagProcess, wait_until

from chinwag.fakes.suite import FakeProviders
from chinwag.store.database import Database
from chinwag.store.schema import deliveries

Pair = tuple[int, str]  # (message id, device token)


def answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class WebProcess:
    """``chinwag web`` on a port of its own: the process a load balancer would send traffic to."""

    def __init__(self, env: dict[str, str], log_path: Path, *extra_args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = ChinwagProcess(
            [*extra_args, "web", "--port", str(self.port), "--threads", "8"], env, log_path
        )

    def wait_ready(self, timeout: float = 60) -> float:
        # A generous bound: a cold start imports the web tier, which takes seconds on a loaded
        # machine (6 s measured for the import alone at a load of 17 on 2 cores).
        return wait_until(lambda: answers(self.url), timeout, f"web on {self.url}", poll=0.05)

    @property
    def alive(self) -> bool:
        return self.process.process.poll() is None


def sign_in(base: str, username: str, password: str) -> str:
    with httpx.Client(base_url=base, timeout=10) as client:
        created = client.post("/v1/users", json={"username": username, "password": password})
        assert created.status_code == 201, created.text
        signed_in = client.post("/v1/tokens", json={"username": username, "password": password})
        assert signed_in.status_code == 201, signed_in.text
        return str(signed_in.json()["token"])


def apns_tokens(prefix: int, count: int) -> list[str]:
    return [f"{prefix:08x}{i:056x}" for i in range(count)]


def fcm_tokens(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-fcm-{i:04d}-APA91b" for i in range(count)]


def received_pairs(providers: FakeProviders) -> list[Pair]:
    """Every (message, token) APNs and FCM accepted, repeats included."""
    pairs = [(int(r.payload["message_id"]), r.token) for r in list(providers.apns.accepted)]
    pairs += [(int(r.message["data"]["message_id"]), r.token) for r in list(providers.fcm.accepted)]
    return pairs


@dataclass
class PairCount:
    expected: set[Pair]
    received: list[Pair]
    counts: Counter[Pair] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = Counter(self.received)

    @property
    def lost(self) -> set[Pair]:
        return self.expected - set(self.counts)

    @property
    def unexpected(self) -> set[Pair]:
        return set(self.counts) - self.expected

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.counts.values())


def delivery_rows(db: Database, message_ids: Iterable[int]) -> dict[str, int]:
    ids = list(message_ids)
    query = (
        sa.select(deliveries.c.status, sa.func.count())
        .where(deliveries.c.message_id.in_(ids))
        .group_by(deliveries.c.status)
    )
    with db.read() as conn:
        return {str(status): int(count) for status, count in conn.execute(query)}


def write_figures(name: str, figures: dict[str, Any]) -> None:
    """Print a run's figures (``pytest -s`` shows them); with CHINWAG_RELIABILITY_FIGURES set,
    also append them as one JSON line to that file, for docs/reliability.md."""
    line = json.dumps({"test": name, **figures}, sort_keys=True)
    print(line)
    target = os.environ.get("CHINWAG_RELIABILITY_FIGURES")
    if target:
        with open(target, "a") as handle:
            handle.write(line + "\n")
