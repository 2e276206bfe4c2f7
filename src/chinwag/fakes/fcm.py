"""A local FCM HTTP v1: the OAuth2 token endpoint and ``messages:send``, checked like Google.

The fake owns a service account (a fresh RSA key written as Google's JSON) whose ``token_uri``
is the fake's own ``/token``; the token endpoint verifies the RS256 assertion before granting a
bearer token, and the send endpoint refuses anything a real project would refuse.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chinwag.config import FcmSettings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.h2server import FakeRequest, FakeResponse, H2FakeServer
from chinwag.fakes.tls import TestPKI, server_ssl_context

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_MESSAGE_FIELDS = {
    "token", "topic", "condition", "name", "data", "notification", "android", "webpush",
    "apns", "fcm_options",
}  # fmt: skip
_TARGETS = ("token", "topic", "condition")
# FCM refuses a message whose notification and data parts exceed 4096 bytes.
MAX_PAYLOAD_BYTES = 4096
_ANDROID_NOTIFICATION_FIELDS = {
    "title", "body", "icon", "color", "sound", "tag", "click_action", "body_loc_key",
    "body_loc_args", "title_loc_key", "title_loc_args", "channel_id", "ticker", "sticky",
    "event_time", "local_only", "notification_priority", "default_sound",
    "default_vibrate_timings", "default_light_settings", "vibrate_timings", "visibility",
    "notification_count", "light_settings", "image", "bypass_proxy_notification", "proxy",
}  # fmt: skip
_NOTIFICATION_PRIORITIES = {
    "PRIORITY_UNSPECIFIED", "PRIORITY_MIN", "PRIORITY_LOW", "PRIORITY_DEFAULT",
    "PRIORITY_HIGH", "PRIORITY_MAX",
}  # fmt: skip
_STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
}


@dataclass(frozen=True)
class FcmRecord:
    project_id: str
    token: str
    message: dict[str, Any]
    name: str
    received_at: float = field(default_factory=time.time)


def fcm_error(
    status: str, message: str, error_code: str | None = None, field_name: str | None = None
) -> FakeResponse:
    """An error in the exact v1 shape: google.rpc.Status with FcmError / BadRequest details."""
    details: list[dict[str, Any]] = []
    if error_code is not None:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
    if field_name is not None:
        details.append(
            {
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": field_name, "description": message}],
            }
        )
    code = 404 if error_code == "UNREGISTERED" else _STATUS_CODES.get(status, 400)
    body = {"error": {"code": code, "message": message, "status": status, "details": details}}
    return FakeResponse(code, {"content-type": "application/json"}, json.dumps(body).encode())


def _fault_body(fault: str, status: int) -> bytes:
    if status == 429:
        return fcm_error("RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED").body
    if status >= 500:
        return fcm_error("UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE").body
    return b""


class FakeFcm:
    def __init__(
        self,
        pki: TestPKI,
        directory: Path,
        *,
        project_id: str = "chinwag-test",
        faults: FaultPlan | None = None,
        expires_in: int = 3600,
    ) -> None:
        self.pki = pki
        self.directory = directory
        self.project_id = project_id
        self.client_email = f"push@{project_id}.iam.gserviceaccount.com"
        self.expires_in = expires_in
        self.dead_tokens: set[str] = set()
        self.accepted: list[FcmRecord] = []
        self.token_grants = 0
        self.token_requests = 0  # granted or not
        self.refused: list[tuple[int, str]] = []  # (status, reason) of every refusal
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._access_tokens: dict[str, float] = {}  # token -> expiry time
        self._scripted: dict[str, FakeResponse] = {}
        self.server = H2FakeServer(
            self._handle, server_ssl_context(pki), faults=faults, fault_body=_fault_body
        )

    @property
    def faults(self) -> FaultPlan:
        """The fault plan, changeable at run time (it also applies to the token endpoint)."""
        return self.server.faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self.server.faults = plan

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def credentials_file(self) -> Path:
        return self.directory / f"fcm-{self.project_id}.json"

    async def start(self) -> None:
        await self.server.start()
        self.write_credentials()

    async def stop(self) -> None:
        await self.server.stop()

    def write_credentials(self) -> Path:
        """Google's service-account JSON, pointing ``token_uri`` at this fake (needs the port)."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        account = {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "1",
            "token_uri": self.token_uri,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        self.credentials_file.write_text(json.dumps(account, indent=2))
        self.credentials_file.chmod(0o600)
        return self.credentials_file

    def settings(self) -> FcmSettings:
        return FcmSettings(credentials=self.credentials_file, url=self.url)

    def fail_token(
        self,
        token: str,
        status: str,
        error_code: str | None = None,
        field_name: str | None = None,
    ) -> None:
        """Answer sends to ``token`` with this v1 error (for errors a valid request can't cause)."""
        self._scripted[token] = fcm_error(status, f"scripted {status}", error_code, field_name)

    def revoke_tokens(self) -> None:
        """Make every granted access token invalid, as a revoked key would."""
        self._access_tokens.clear()

    async def _handle(self, request: FakeRequest) -> FakeResponse:
        if request.path == "/token":
            return self._grant(request)
        return self._send(request)

    def _grant(self, request: FakeRequest) -> FakeResponse:
        self.token_requests += 1
        if request.method != "POST":
            return _oauth_error(405, "invalid_request", "POST required")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return _oauth_error(400, "invalid_request", "form-encoded body required")
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if form.get("grant_type") != [GRANT_TYPE] or len(form.get("assertion", [])) != 1:
            return _oauth_error(400, "unsupported_grant_type", "jwt-bearer grant required")
        try:
            claims = jwt.decode(
                form["assertion"][0],
                self._key.public_key(),
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.PyJWTError as exc:
            return _oauth_error(400, "invalid_grant", f"Invalid JWT: {exc}")
        if SCOPE not in str(claims["scope"]).split():
            return _oauth_error(400, "invalid_scope", "firebase.messaging scope required")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return _oauth_error(400, "invalid_grant", "JWT lifetime over one hour")
        token = "ya29." + secrets.token_urlsafe(32)
        self._access_tokens[token] = time.time() + self.expires_in
        self.token_grants += 1
        body = {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        return FakeResponse(200, {"content-type": "application/json"}, json.dumps(body).encode())

    def _send(self, request: FakeRequest) -> FakeResponse:
        response = self._check_send(request)
        if response.status != 200:
            self.refused.append((response.status, response.body.decode()))
        return response

    def _check_send(self, request: FakeRequest) -> FakeResponse:
        prefix, suffix = "/v1/projects/", "/messages:send"
        if not (request.path.startswith(prefix) and request.path.endswith(suffix)):
            return fcm_error("NOT_FOUND", f"no such method {request.path}")
        if request.method != "POST":
            return fcm_error("NOT_FOUND", "POST required")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expiry = self._access_tokens.get(token)
        if scheme.lower() != "bearer" or expiry is None or expiry < time.time():
            return fcm_error("UNAUTHENTICATED", "Request had invalid authentication credentials.")
        project = request.path[len(prefix) : -len(suffix)]
        if project != self.project_id:
            return fcm_error("PERMISSION_DENIED", f"no access to project {project}")
        try:
            envelope = json.loads(request.body)
        except ValueError:
            return fcm_error("INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = message_problem(envelope)
        if problem is not None:
            return fcm_error(
                "INVALID_ARGUMENT", problem[1], "INVALID_ARGUMENT", field_name=problem[0] or None
            )
        message = envelope["message"]
        target = message.get("token", "")
        if target in self._scripted:
            return self._scripted[target]
        if "token" in message and target in self.dead_tokens:
            return fcm_error("NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        name = f"projects/{project}/messages/{secrets.randbelow(10**16)}"
        self.accepted.append(FcmRecord(project, target, message, name))
        body = json.dumps({"name": name}).encode()
        return FakeResponse(200, {"content-type": "application/json"}, body)


def message_problem(envelope: Any) -> tuple[str, str] | None:
    """(field, description) of the first thing FCM would refuse in the request, else None."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
        return "message", "message is required"
    unknown = set(envelope) - {"message", "validate_only"}
    if unknown:
        return "", f"Unknown name in request: {sorted(unknown)}"
    message = envelope["message"]
    unknown = set(message) - _MESSAGE_FIELDS
    if unknown:
        return "message", f"Unknown name {sorted(unknown)} at 'message'"
    targets = [name for name in _TARGETS if name in message]
    if len(targets) != 1:
        return "message", "exactly one of token, topic, condition is required"
    if "token" in message and (not isinstance(message["token"], str) or not message["token"]):
        return "message.token", "The registration token is not a valid FCM registration token"
    for part in ("data", "notification"):
        values = message.get(part, {})
        if not isinstance(values, dict):
            return f"message.{part}", f"{part} must be an object"
        for key, value in values.items():
            if not isinstance(value, str):
                return f"message.{part}.{key}", "Invalid value: all values must be strings"
    if set(message.get("notification", {})) - {"title", "body", "image"}:
        return "message.notification", "Unknown name in notification"
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "message.android", "android must be an object"
    if str(android.get("priority", "normal")).lower() not in ("normal", "high"):
        return "message.android.priority", "Invalid value for priority"
    if not isinstance(android.get("collapse_key", ""), str):
        return "message.android.collapse_key", "collapse_key must be a string"
    problem = _android_notification_problem(android.get("notification", {}))
    if problem is not None:
        return problem
    counted = {part: message[part] for part in ("notification", "data") if part in message}
    if len(json.dumps(counted, ensure_ascii=False).encode()) > MAX_PAYLOAD_BYTES:
        return "message", "Message is too big"
    return None


def _android_notification_problem(notification: Any) -> tuple[str, str] | None:
    where = "message.android.notification"
    if not isinstance(notification, dict):
        return where, "notification must be an object"
    unknown = set(notification) - _ANDROID_NOTIFICATION_FIELDS
    if unknown:
        return where, f"Unknown name {sorted(unknown)} at '{where}'"
    for name in ("title", "body", "tag", "channel_id", "icon", "color", "sound"):
        if not isinstance(notification.get(name, ""), str):
            return f"{where}.{name}", f"{name} must be a string"
    priority = notification.get("notification_priority", "PRIORITY_UNSPECIFIED")
    if priority not in _NOTIFICATION_PRIORITIES:
        return f"{where}.notification_priority", "Invalid value for notification_priority"
    return None


def _oauth_error(status: int, error: str, description: str) -> FakeResponse:
    body = json.dumps({"error": error, "error_description": description}).encode()
    return FakeResponse(status, {"content-type": "application/json"}, body)
