"""The operator route /v1/admin/stats (admins only, the same figures as /metrics) and the pages
served at /, /admin and /static/."""

from __future__ import annotations

import httpx
from tests.conftest import Api, LiveServer
from tests.web.support import assert_error
from tests.web.test_metrics import fan_out_one_message, scrape, value

from chinwag.chat.accounts import set_admin
from chinwag.store.database import Database


def test_stats_refuse_anonymous_and_non_admin_users(api: Api) -> None:
    """No token is 401; a signed-in member who is not an operator is 403 in the error shape."""
    assert_error(api.anonymous.get("/v1/admin/stats"), 401)
    bob = api.user("bob")
    assert_error(bob.get("/v1/admin/stats"), 403, "forbidden")


def test_stats_agree_with_metrics_and_explain_failures(
    api: Api, db: Database, server: LiveServer
) -> None:
    """Queue, statuses, throughput, outcomes and recent failures after a fan-out with failures."""
    alice, message_id = fan_out_one_message(api, db)
    set_admin(db, "alice", True)
    stats = alice.get("/v1/admin/stats")
    assert stats.status_code == 200, stats.text
    body = stats.json()
    samples = scrape(server)
    assert body["outbox"]["pending"] == value(samples, "chinwag_outbox_pending") == 0
    assert body["deliveries_by_status"] == {"delivered": 1, "token_dead": 1, "failed": 1}
    assert body["deliveries_by_status"] == {
        s.labels["status"]: s.value for s in samples["chinwag_deliveries"]
    }
    assert len(body["throughput"]) == 600 // body["step_seconds"]
    assert sum(p["delivered"] for p in body["throughput"]) == 1
    assert sum(p["failed"] for p in body["throughput"]) == 2
    outcomes = {(o["provider"], o["status"], o["reason"]): o["count"] for o in body["outcomes"]}
    assert outcomes[("apns", "delivered", None)] == 1
    assert any(s == "token_dead" and "Unregistered" in (r or "") for _, s, r in outcomes)
    failures = body["recent_failures"]
    assert {f["status"] for f in failures} == {"token_dead", "failed"}
    assert all(f["message_id"] == message_id and f["user"] == "bob" for f in failures)
    routes = {(r["method"], r["route"]) for r in body["http"]}
    assert ("GET", "/v1/admin/stats") in routes or ("POST", "/v1/chats") in routes


def test_stats_route_is_in_the_openapi_document(server: LiveServer) -> None:
    """The operator route is mounted by create_app and listed in /openapi.json for clients."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert "get" in document["paths"]["/v1/admin/stats"]


def test_pages_are_served_from_the_package_with_a_strict_policy(server: LiveServer) -> None:
    """/ and /admin are HTML that may load nothing from another origin; assets are typed."""
    for path, marker in (("/", 'id="composer"'), ("/admin", 'id="throughput"')):
        page = httpx.get(server.url + path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert marker in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy
        assert "http" not in page.text.replace("http-equiv", "").split("<body>")[0].replace(
            "http://www.w3.org", ""
        ), "no asset may come from elsewhere"
    script = httpx.get(f"{server.url}/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert (
        httpx.get(f"{server.url}/static/style.css").headers["content-type"].startswith("text/css")
    )


def test_static_files_cannot_escape_their_directory(server: LiveServer) -> None:
    """A path climbing out of the static directory is a 404 in the error shape, not a file."""
    for path in ("/static/../pages.py", "/static/%2e%2e/pages.py", "/static/nope.js"):
        assert_error(httpx.get(server.url + path), 404)
