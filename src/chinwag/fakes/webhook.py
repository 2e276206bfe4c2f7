"""A local webhook receiver that checks ``X-Chinwag-Signature`` the way a user's server should."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.h2server import FakeRequest, FakeResponse, H2FakeServer
from chinwag.fakes.tls import TestPKI, server_ssl_context


@dataclass(frozen=True)
class WebhookRecord:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = field(default_factory=time.time)


class FakeWebhookReceiver:
    def __init__(
        self, pki: TestPKI, *, secret: str | None = None, faults: FaultPlan | None = None
    ) -> None:
        self.secret = secret
        # A device's own signing key, as its owner would configure their receiver with it (shown
        # once at registration); hooks not listed here are checked against ``secret``.
        self.hook_secrets: dict[str, str] = {}
        self.dead_tokens: set[str] = set()  # hook URLs that answer 410 Gone
        self.accepted: list[WebhookRecord] = []
        self.refused: list[tuple[int, str]] = []
        self.server = H2FakeServer(self._handle, server_ssl_context(pki), faults=faults)

    @property
    def dead_urls(self) -> set[str]:
        return self.dead_tokens

    @property
    def url(self) -> str:
        return self.server.url

    def hook_url(self, name: str = "hook") -> str:
        return f"{self.url}/hooks/{name}"

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def _handle(self, request: FakeRequest) -> FakeResponse:
        status, reason = self._check(request)
        if status >= 300:
            self.refused.append((status, reason))
        return FakeResponse(status, {"content-type": "text/plain"}, reason.encode())

    def _check(self, request: FakeRequest) -> tuple[int, str]:
        url = f"{self.url}{request.path}"
        if url in self.dead_tokens:
            return 410, "gone"
        if request.method != "POST":
            return 405, "POST required"
        if not request.headers.get("content-type", "").startswith("application/json"):
            return 415, "application/json required"
        secret = self.hook_secrets.get(url, self.secret)
        if secret is not None:
            expected = (
                "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
            )
            given = request.headers.get("x-chinwag-signature", "")
            if not hmac.compare_digest(expected, given):
                return 401, "bad signature"
        try:
            body = json.loads(request.body)
        except ValueError:
            return 400, "body is not JSON"
        if not isinstance(body, dict):
            return 400, "body is not a JSON object"
        self.accepted.append(WebhookRecord(url, dict(request.headers), body))
        return 204, ""
