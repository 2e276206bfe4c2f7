"""A local Web Push service (RFC 8030) that verifies VAPID and decrypts every message.

``new_subscription()`` plays the browser: it creates the user agent's P-256 key pair and auth
secret and returns the subscription object a page would hand to chinwag. Every push is decrypted
with that key, so a test sees exactly what the browser's service worker would see.

Like a real push service, a subscription made for an application server key (the
``applicationServerKey`` a page passes to ``PushManager.subscribe``) accepts only pushes whose
VAPID ``k=`` is that key (403 otherwise). Its endpoint's path may have any shape (``path``):
``/push/<id>`` by default, or e.g. ntfy's UnifiedPush ``/upAbCdEf?up=1``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.h2server import FakeRequest, FakeResponse, H2FakeServer
from chinwag.fakes.tls import TestPKI, server_ssl_context

# Push services must accept at least 4096 bytes of encrypted payload (RFC 8030 §7.2).
MAX_PAYLOAD = 4096
_URGENCIES = {"very-low", "low", "normal", "high"}
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_VAPID = re.compile(r"^vapid\s+t=([^,\s]+)\s*,\s*k=([A-Za-z0-9_-]+)$")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class WebPushRecord:
    endpoint: str
    headers: dict[str, str]
    payload: dict[str, Any]
    received_at: float = field(default_factory=time.time)


@dataclass
class _UserAgent:
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None = None


class FakeWebPush:
    def __init__(self, pki: TestPKI, *, faults: FaultPlan | None = None) -> None:
        self.dead_tokens: set[str] = set()  # endpoints whose subscription expired (410)
        self.accepted: list[WebPushRecord] = []
        self.refused: list[tuple[int, str]] = []
        self._agents: dict[str, _UserAgent] = {}
        self.server = H2FakeServer(self._handle, server_ssl_context(pki), faults=faults)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    def new_subscription(
        self, application_server_key: str | None = None, *, path: str | None = None
    ) -> dict[str, Any]:
        """What ``PushManager.subscribe()`` gives a page: endpoint plus the agent's keys.

        With ``application_server_key`` (base64url) only pushes signed by that VAPID key are
        accepted; ``path`` (path and query, e.g. ``/upAbCdEf?up=1``) replaces ``/push/<id>``."""
        path = path or f"/push/{secrets.token_urlsafe(16)}"
        if not path.startswith("/") or path == "/subscriptions" or path in self._agents:
            raise ValueError(f"cannot make a subscription at {path!r}")
        agent = _UserAgent(
            ec.generate_private_key(ec.SECP256R1()), os.urandom(16), application_server_key
        )
        self._agents[path] = agent
        public = agent.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{self.url}{path}",
            "keys": {"p256dh": _b64(public), "auth": _b64(agent.auth)},
        }

    async def _handle(self, request: FakeRequest) -> FakeResponse:
        response = self._check(request)
        if response.status >= 300:
            self.refused.append((response.status, response.body.decode()))
        return response

    def _check(self, request: FakeRequest) -> FakeResponse:
        if request.path == "/subscriptions" and request.method == "POST":
            # Lets a process other than the fake's own play the browser (demo, benchmarks).
            body = json.dumps(self.new_subscription()).encode()
            return FakeResponse(201, {"content-type": "application/json"}, body)
        endpoint = f"{self.url}{request.path}"
        agent = self._agents.get(request.path)
        if agent is None:
            return _error(404, "no such subscription")
        if endpoint in self.dead_tokens:
            return _error(410, "subscription expired")
        if request.method != "POST":
            return _error(405, "POST required")
        problem = self._vapid_problem(request.headers.get("authorization", ""), agent)
        if problem is not None:
            return _error(401 if problem.startswith("missing") else 403, problem)
        headers = request.headers
        if not headers.get("ttl", "").isdigit():
            return _error(400, "TTL header required")
        if "urgency" in headers and headers["urgency"] not in _URGENCIES:
            return _error(400, "invalid Urgency")
        if "topic" in headers and not _TOPIC.match(headers["topic"]):
            return _error(400, "invalid Topic")
        if headers.get("content-encoding") != "aes128gcm":
            return _error(415, "Content-Encoding aes128gcm required")
        if len(request.body) > MAX_PAYLOAD:
            return _error(413, "payload too large")
        try:
            plaintext = http_ece.decrypt(
                request.body,
                private_key=agent.private_key,
                auth_secret=agent.auth,
                version="aes128gcm",
            )
            payload = json.loads(plaintext)
        except Exception as exc:  # http_ece raises plain ECEException/ValueError/InvalidTag
            return _error(400, f"decryption failed: {type(exc).__name__}")
        self.accepted.append(WebPushRecord(endpoint, dict(headers), payload))
        message_id = secrets.token_urlsafe(12)
        return FakeResponse(201, {"location": f"{self.url}/message/{message_id}"})

    def _vapid_problem(self, authorization: str, agent: _UserAgent) -> str | None:
        match = _VAPID.match(authorization.strip())
        if match is None:
            return "missing or malformed VAPID authorization"
        token, key = match.groups()
        expected = agent.application_server_key
        if expected is not None and _unb64(key) != _unb64(expected):
            # What FCM and Mozilla answer: the subscription belongs to another server's key.
            return "VAPID key differs from the subscription's applicationServerKey"
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(key))
            claims = jwt.decode(
                token,
                public,
                algorithms=["ES256"],
                audience=self.url,
                options={"require": ["aud", "exp", "sub"]},
            )
        except (ValueError, jwt.PyJWTError) as exc:
            return f"VAPID token refused: {exc}"
        if int(claims["exp"]) > time.time() + 24 * 3600:
            return "VAPID token expires more than 24 hours ahead"
        subject = str(claims["sub"])
        if not subject.startswith(("mailto:", "https:")):
            return "VAPID sub must be a mailto: or https: URL"
        return None


def _error(status: int, reason: str) -> FakeResponse:
    body = json.dumps({"code": status, "errno": status, "message": reason}).encode()
    return FakeResponse(status, {"content-type": "application/json"}, body)
