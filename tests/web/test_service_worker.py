"""The web client's service worker is served from the root, so that its scope is the whole app."""

from __future__ import annotations

from tests.conftest import LiveServer


def test_service_worker_is_served_at_the_root_like_the_pages(server: LiveServer) -> None:
    """GET /sw.js is JavaScript with the pages' Content-Security-Policy and no stale cache."""
    answer = server.client().get("/sw.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert 'addEventListener("push"' in answer.text
    assert 'addEventListener("notificationclick"' in answer.text
