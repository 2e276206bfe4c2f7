"""A local APNs: the HTTP/2 provider API with token authentication, checked as strictly as Apple.

It issues its own signing key (the .p8 file Apple would give you), verifies every JWT against it
and every header and payload the way the documentation describes, answers with Apple's status
codes and ``{"reason": ...}`` bodies, and records what it accepted. Knobs: a ``FaultPlan``, a set
of dead tokens (410 Unregistered), extra topics (several apps on one fake), a per-token topic
(DeviceTokenNotForTopic), and the accepted JWT age.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chinwag.config import ApnsSettings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.h2server import FakeRequest, FakeResponse, H2FakeServer, ServerStats
from chinwag.fakes.tls import TestPKI, server_ssl_context

MAX_PAYLOAD_BYTES = 4096
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "location",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)
PRIORITIES = frozenset({"1", "5", "10"})
_PATH = re.compile(r"/3/device/(?P<token>[^/?]*)")
_HEX_TOKEN = re.compile(r"[0-9a-fA-F]{64,}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class ApnsRecord:
    token: str
    apns_id: str
    headers: Mapping[str, str]
    payload: dict[str, Any]
    received_at: float


class FakeApns:
    def __init__(
        self,
        pki: TestPKI,
        directory: Path,
        *,
        topic: str = "com.example.chat",
        faults: FaultPlan | None = None,
        key_id: str | None = None,
        team_id: str | None = None,
        max_concurrent_streams: int = 1000,
    ) -> None:
        self.topic = topic
        self.topics: set[str] = {topic}  # add more to serve several apps from one fake
        self.token_topics: dict[str, str] = {}  # token -> its app's topic, when it matters
        self.dead_tokens: set[str] = set()
        self.token_max_age = 3600.0  # Apple refuses JWTs older than one hour
        # Random ids per fake, as Apple's are per account: senders must never mix up keys.
        self.key_id = key_id or _apple_id()
        self.team_id = team_id or _apple_id()
        self.accepted: list[ApnsRecord] = []
        self.jwts_seen: Counter[str] = Counter()  # every distinct bearer JWT that verified
        self._lock = threading.Lock()
        self._verified: dict[str, int] = {}  # JWT -> its iat; verifying ECDSA once is enough
        self._private_key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = self._private_key.public_key()
        self.key_file = self.write_key(directory)
        self.server = H2FakeServer(
            self._handle,
            server_ssl_context(pki),
            faults=faults,
            max_concurrent_streams=max_concurrent_streams,
            fault_body=_fault_body,
        )

    def write_key(self, directory: Path) -> Path:
        """Write this fake's signing key as Apple ships it: AuthKey_<key id>.p8, PKCS#8 PEM."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"AuthKey_{self.key_id}.p8"
        path.write_bytes(
            self._private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    def settings(self, topic: str | None = None) -> ApnsSettings:
        return ApnsSettings(
            key_file=self.key_file,
            key_id=self.key_id,
            team_id=self.team_id,
            topic=topic or self.topic,
            url=self.url,
        )

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def __aenter__(self) -> FakeApns:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def faults(self) -> FaultPlan:
        return self.server.faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self.server.faults = plan

    @property
    def stats(self) -> ServerStats:
        return self.server.stats

    @property
    def distinct_jwts(self) -> int:
        return len(self.jwts_seen)

    # The protocol

    def _handle(self, request: FakeRequest) -> FakeResponse:
        # A plain function: the server answers it in the step that read the request, no task.
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4())
        verdict = self._check(request)
        if isinstance(verdict, _Refused):
            body: dict[str, Any] = {"reason": verdict.reason}
            if verdict.status == 410:
                body["timestamp"] = int(time.time() * 1000)
            return _answer(verdict.status, apns_id, json.dumps(body).encode())
        record = ApnsRecord(
            verdict.token, apns_id, dict(request.headers), verdict.payload, time.time()
        )
        with self._lock:
            self.accepted.append(record)
        return _answer(200, apns_id, b"")

    def _check(self, request: FakeRequest) -> _Refused | _Accepted:
        """Apple's checks, in the order Apple reports them."""
        if request.method != "POST":
            return _Refused(405, "MethodNotAllowed")
        match = _PATH.fullmatch(request.path)
        if match is None:
            return _Refused(404, "BadPath")
        token = match["token"]
        if not token:
            return _Refused(400, "MissingDeviceToken")
        headers = request.headers
        auth = self._auth_refusal(headers.get("authorization"))
        if auth is not None:
            return _Refused(403, auth)
        topic = headers.get("apns-topic")
        if not topic:
            return _Refused(400, "MissingTopic")
        if topic not in self.topics:
            return _Refused(400, "BadTopic")
        if not _HEX_TOKEN.fullmatch(token):
            return _Refused(400, "BadDeviceToken")
        expected_topic = self.token_topics.get(token.lower())
        if expected_topic is not None and expected_topic != topic:
            return _Refused(400, "DeviceTokenNotForTopic")
        if headers.get("apns-push-type", "alert") not in PUSH_TYPES:
            return _Refused(400, "InvalidPushType")
        if headers.get("apns-priority", "10") not in PRIORITIES:
            return _Refused(400, "BadPriority")
        if headers.get("apns-push-type") == "background" and headers.get("apns-priority") != "5":
            # Apple: background notifications must be sent with priority 5.
            return _Refused(400, "BadPriority")
        if "apns-id" in headers and not _UUID.fullmatch(headers["apns-id"]):
            return _Refused(400, "BadMessageId")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return _Refused(400, "BadExpirationDate")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return _Refused(400, "BadCollapseId")
        if not request.body:
            return _Refused(400, "PayloadEmpty")
        if len(request.body) > MAX_PAYLOAD_BYTES:
            return _Refused(413, "PayloadTooLarge")
        try:
            payload = json.loads(request.body)
        except ValueError:
            return _Refused(400, "BadPayload")
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return _Refused(400, "BadPayload")
        if aps_problem(payload["aps"]) is not None:
            return _Refused(400, "BadPayload")
        if token.lower() in self.dead_tokens:
            return _Refused(410, "Unregistered")
        return _Accepted(token.lower(), payload)

    def _auth_refusal(self, authorization: str | None) -> str | None:
        if not authorization:
            return "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "InvalidProviderToken"
        iat = self._verified.get(token)
        if iat is None:
            try:
                header = jwt.get_unverified_header(token)
                if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                    return "InvalidProviderToken"
                claims = jwt.decode(
                    token,
                    self.public_key,
                    algorithms=["ES256"],
                    options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
                )
            except jwt.PyJWTError:
                return "InvalidProviderToken"
            if claims.get("iss") != self.team_id or not isinstance(claims.get("iat"), int):
                return "InvalidProviderToken"
            iat = int(claims["iat"])
            with self._lock:
                self._verified[token] = iat
        now = time.time()
        if iat > now + 60:
            return "InvalidProviderToken"
        if now - iat > self.token_max_age:
            return "ExpiredProviderToken"
        with self._lock:
            self.jwts_seen[token] += 1
        return None


INTERRUPTION_LEVELS = frozenset({"passive", "active", "time-sensitive", "critical"})


def aps_problem(aps: dict[str, Any]) -> str | None:
    """What is wrong with an ``aps`` dictionary by Apple's payload reference, else None."""
    alert = aps.get("alert")
    if alert is not None:
        if isinstance(alert, dict):
            if not all(isinstance(alert.get(k, ""), str) for k in ("title", "subtitle", "body")):
                return "alert title, subtitle and body are strings"
        elif not isinstance(alert, str):
            return "alert is a string or a dictionary"
    if "thread-id" in aps and (not isinstance(aps["thread-id"], str) or not aps["thread-id"]):
        return "thread-id is a non-empty string"
    if "interruption-level" in aps and aps["interruption-level"] not in INTERRUPTION_LEVELS:
        return f"interruption-level is one of {sorted(INTERRUPTION_LEVELS)}"
    # The service extension only runs for a notification that shows an alert.
    if "mutable-content" in aps and (not _is_one(aps["mutable-content"]) or alert is None):
        return "mutable-content is 1, on a notification with an alert"
    if "content-available" in aps and not _is_one(aps["content-available"]):
        return "content-available is 1"
    if "badge" in aps and (not isinstance(aps["badge"], int) or isinstance(aps["badge"], bool)):
        return "badge is a number"
    return None


def _is_one(value: object) -> bool:
    """The number 1, as Apple documents these flags (JSON true is not a number)."""
    return type(value) is int and value == 1


@dataclass(frozen=True, slots=True)
class _Refused:
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Accepted:
    token: str
    payload: dict[str, Any]


def _answer(status: int, apns_id: str, body: bytes) -> FakeResponse:
    headers = {"apns-id": apns_id}
    if body:
        headers["content-type"] = "application/json"
    return FakeResponse(status, headers, body)


def _fault_body(fault: str, status: int) -> bytes:
    if fault == "goaway":
        return b'{"reason":"Shutdown"}'
    if status == 429:
        return b'{"reason":"TooManyRequests"}'
    return b'{"reason":"ServiceUnavailable"}'


def _apple_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(10))
