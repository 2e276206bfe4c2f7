"""/metrics: Prometheus text that prometheus-client's own parser reads, with request latency by
route template and the fan-out's state read from the database at scrape time."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tests.conftest import Api, LiveServer
from tests.fanout.recording import RecordingDispatcher

from chinwag.fanout import Worker
from chinwag.push.model import DeviceTarget, Outcome, OutcomeKind
from chinwag.store.database import Database

GOOD, DEAD, REJECTED = "aa" * 32, "dd" * 32, "ee" * 32


def provider_answer(device: DeviceTarget, _attempt: int) -> Outcome:
    """What a provider would say: one device gone, one payload refused, the rest delivered."""
    if device.token == DEAD:
        return Outcome(OutcomeKind.TOKEN_DEAD, reason="Unregistered", status=410)
    if device.token == REJECTED:
        return Outcome(OutcomeKind.REJECTED, reason="PayloadTooLarge", status=413)
    return Outcome(OutcomeKind.DELIVERED)


def fan_out_one_message(api: Api, db: Database) -> tuple[httpx.Client, int]:
    """alice sends to bob's three phones; a real worker fans out against a scripted provider."""
    alice, bob = api.user("alice"), api.user("bob")
    for token in (GOOD, DEAD, REJECTED):
        assert bob.post("/v1/devices", json={"platform": "apns", "token": token}).is_success
    chat = alice.post("/v1/chats", json={"title": "Lunch", "members": ["bob"]}).json()
    sent = alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "noon?"})
    assert sent.status_code == 201, sent.text
    asyncio.run(Worker(db, RecordingDispatcher(provider_answer)).run_until_idle(30))
    return alice, sent.json()["message"]["id"]


def scrape(server: LiveServer) -> dict[str, list[Sample]]:
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    found = [s.value for s in samples.get(name, []) if s.labels == labels]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def test_metrics_parse_and_time_requests_by_route_template(api: Api, server: LiveServer) -> None:
    """Requests to /v1/chats/1 and /v1/chats/2 count under one route-template series."""
    alice = api.user("alice")
    ids = [alice.post("/v1/chats", json={"title": t}).json()["id"] for t in ("a", "b")]
    before = scrape(server)
    route = "/v1/chats/<chat_id:int>"
    old = [
        s.value
        for s in before.get("chinwag_http_request_seconds_count", [])
        if s.labels == {"method": "GET", "route": route, "status": "200"}
    ]
    for chat_id in ids:
        assert alice.get(f"/v1/chats/{chat_id}").status_code == 200
    assert alice.get("/v1/chats/999").status_code == 404
    samples = scrape(server)
    count = value(
        samples, "chinwag_http_request_seconds_count", method="GET", route=route, status="200"
    )
    assert count == (old[0] if old else 0) + 2
    assert (
        value(
            samples, "chinwag_http_request_seconds_count", method="GET", route=route, status="404"
        )
        >= 1
    )
    # The concrete path never becomes a label: that would be one series per chat.
    routes = {s.labels["route"] for s in samples["chinwag_http_request_seconds_count"]}
    assert not any(str(i) in r.split("/") for r in routes for i in ids)


def test_outbox_depth_and_age_come_from_the_database(api: Api, server: LiveServer) -> None:
    """A stored message that no worker has fanned out shows as depth 1 with a positive age."""
    alice = api.user("alice")
    chat = alice.post("/v1/chats", json={"title": "Lunch"}).json()
    empty = scrape(server)
    assert value(empty, "chinwag_outbox_pending") == 0
    assert value(empty, "chinwag_outbox_oldest_pending_age_seconds") == 0
    alice.post(f"/v1/chats/{chat['id']}/messages", json={"body": "anyone?"})
    samples = scrape(server)
    assert value(samples, "chinwag_outbox_pending") == 1
    assert 0 < value(samples, "chinwag_outbox_oldest_pending_age_seconds") < 60


def test_deliveries_by_platform_and_status_after_a_fanout(
    api: Api, db: Database, server: LiveServer
) -> None:
    """After a real worker's fan-out, /metrics reports each delivery row by platform and status."""
    fan_out_one_message(api, db)
    samples = scrape(server)
    assert value(samples, "chinwag_outbox_pending") == 0
    by_status = {
        s.labels["status"]: s.value
        for s in samples["chinwag_deliveries"]
        if s.labels["platform"] == "apns"
    }
    assert by_status == {"delivered": 1, "token_dead": 1, "failed": 1}
