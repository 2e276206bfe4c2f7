"""Hostile input, generated: schemathesis reads /openapi.json from a live server and throws
generated requests (valid and invalid) at every route, authenticated as a fixture user, with the
ids of a chat, message and device that exist mixed in. No answer may be a 5xx, and every answer
must match the schema: a documented status, the declared content type, the declared body."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import hypothesis
import pytest
import schemathesis
from argon2 import PasswordHasher, profiles
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tests.conftest import Api, LiveServer
from tests.reliability.support import write_figures

from chinwag.chat import accounts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

EXAMPLES_PER_OPERATION_AND_MODE = 15  # x 2 modes x every operation: about 900 requests
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# Operations that end the caller's session: each of their cases gets a token of its own, and
# they run last, so that the fixture token stays valid for every other operation.
ENDS_THE_SESSION = {"DELETE /v1/tokens/current", "PUT /v1/me/password"}


@dataclass
class Fixture:
    token: str
    ids: dict[str, Any]
    new_token: Callable[[], str]


@pytest.fixture
def fixture_world(api: Api, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    # Generated sign-ups hash passwords: at argon2's cheapest cost, as tests/web does.
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher.from_parameters(profiles.CHEAPEST))
    alice = api.user("alice", password="p" * 8)
    api.user("bob", password="p" * 8)
    chat = alice.post("/v1/chats", json={"title": "Fuzz", "members": ["bob"]}).json()
    sent = alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "seed"}).json()
    device = alice.post("/v1/devices", json={"platform": "apns", "token": "ab" * 32}).json()
    token = alice.headers["Authorization"].removeprefix("Bearer ")

    def new_token() -> str:  # straight from the domain: the sign-in rate limit is not the point
        return accounts.issue_token(api.server.services.db, "alice", "p" * 8)[0]

    return Fixture(
        token,
        {
            "chat_id": chat["id"],
            "message_id": sent["message"]["id"],
            "device_id": device["id"],
            "username": "bob",
        },
        new_token,
    )


@dataclass
class Run:
    """One operation in one generation mode: draw cases, call the live server, check answers."""

    base_url: str
    headers: dict[str, str]
    label: str
    mode: str
    real_ids: dict[str, Any]
    statuses: Counter[str]
    failures: list[str]
    new_token: Callable[[], str] | None = None  # for operations that end the session

    def exercise(self, strategy: st.SearchStrategy[Any]) -> None:
        @hypothesis.given(case=strategy, use_real=st.booleans())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def one(case: Any, use_real: bool) -> None:
            self.call(case, use_real)

        one()

    def call(self, case: Any, use_real: bool) -> None:
        if use_real and self.real_ids and case.path_parameters is not None:
            case.path_parameters = {**case.path_parameters, **self.real_ids}
        query = case.query if isinstance(case.query, dict) else {}
        if isinstance(query.get("wait"), int) and query["wait"] > 1:
            query["wait"] = 1  # a long poll holds its answer back that many seconds, by design
        headers = self.headers
        if self.new_token is not None:
            headers = {"Authorization": f"Bearer {self.new_token()}"}
        response = case.call(base_url=self.base_url, headers=headers, timeout=10)
        self.statuses[f"{self.label} {response.status_code}"] += 1
        sent = response.request.headers.get("Authorization", "")
        if response.status_code == 401 and sent != headers["Authorization"]:
            self.statuses["401 with a generated Authorization header"] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except AssertionError as exc:  # schemathesis reports a failed check as an AssertionError
            self.failures.append(f"{self.label} [{self.mode}]: {str(exc)[:600]}")


def test_generated_requests_over_every_route_get_no_5xx_and_match_the_schema(
    server: LiveServer, fixture_world: Fixture
) -> None:
    """Over 1,000 generated requests to every operation in /openapi.json: no 5xx, and every
    response conforms to the documented status codes, content type and body schema."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),  # type: ignore[union-attr]
        key=lambda op: op.label in ENDS_THE_SESSION,
    )
    assert len(operations) >= 16, [op.label for op in operations]
    headers = {"Authorization": f"Bearer {fixture_world.token}"}
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()

    for operation in operations:
        real = {k: v for k, v in fixture_world.ids.items() if f"{{{k}}}" in operation.path}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = Run(server.url, headers, operation.label, mode.value, real, statuses, failures)
            if operation.label in ENDS_THE_SESSION:
                run.new_token = fixture_world.new_token
            try:
                run.exercise(operation.as_strategy(generation_mode=mode))
            except hypothesis.errors.Unsatisfiable:
                # Nothing to make invalid (no body, no parameters): positive mode covered it.
                assert mode is GenerationMode.NEGATIVE, operation.label

    generated_auth = statuses.pop("401 with a generated Authorization header", 0)
    total = sum(statuses.values())
    per_status: Counter[int] = Counter()
    for key, count in statuses.items():
        per_status[int(key.rsplit(" ", 1)[1])] += count
    write_figures(
        "schemathesis",
        {
            "schemathesis": version("schemathesis"),
            "operations": len(operations),
            "requests": total,
            "by_status": dict(sorted(per_status.items())),
            "failures": len(failures),
            "unauthorized_with_generated_auth_header": generated_auth,
            "unauthorized_by_operation": {
                key.rsplit(" ", 1)[0]: n for key, n in statuses.items() if key.endswith(" 401")
            },
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    # every operation was exercised (two modes, some examples rejected), not just reached
    assert total >= EXAMPLES_PER_OPERATION_AND_MODE * len(operations)
    touched = {key.rsplit(" ", 1)[0] for key in statuses}
    assert touched == {op.label for op in operations}
    assert not any(status >= 500 for status in per_status), per_status
    assert failures == [], "\n".join(failures[:10])
