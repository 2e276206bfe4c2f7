"""The FCM v1 sender against the FCM fake over real TLS and HTTP/2."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chinwag.config import ConfigError, FcmSettings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.fcm import FakeFcm, FcmRecord
from chinwag.fakes.tls import TestPKI, make_pki
from chinwag.push.base import Network
from chinwag.push.fcm import FcmSender
from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind, Platform
from chinwag.push.registry import Senders
from chinwag.push.slots import ProviderSlots

T = TypeVar("T")
NOTE = Notification(
    chat_id=42, message_id=7, chat_title="Climbing", sender_name="Ada", preview="Hi!", badge=3
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def device(token: str = "fcm-token-1", device_id: int = 1) -> DeviceTarget:
    return DeviceTarget(device_id, Platform.FCM, token, f"delivery-{device_id}")


def run(
    pki: TestPKI,
    directory: Path,
    scenario: Callable[[FakeFcm, FcmSender], Awaitable[T]],
    *,
    expires_in: int = 3600,
    timeout: float = 10.0,
) -> T:
    async def main() -> T:
        fake = FakeFcm(pki, directory, expires_in=expires_in)
        await fake.start()
        sender = FcmSender(
            settings=fake.settings(), network=Network(ca_file=pki.ca_file, timeout=timeout)
        )
        try:
            return await scenario(fake, sender)
        finally:
            await sender.aclose()
            await fake.stop()

    return asyncio.run(main())


def test_delivers_the_exact_message(pki: TestPKI, tmp_path: Path) -> None:
    """A send is DELIVERED and FCM receives title, body, string data and the chat's tag; no
    collapse key (FCM keeps four per device: a chat's messages must not replace each other)."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> tuple[Outcome, list[FcmRecord]]:
        return await sender.send(device(), NOTE), fake.accepted

    outcome, accepted = run(pki, tmp_path, scenario)
    assert outcome.kind is OutcomeKind.DELIVERED
    [record] = accepted
    assert record.token == "fcm-token-1"
    assert record.message["notification"] == {"title": "Climbing", "body": "Ada: Hi!"}
    assert record.message["data"] == {"chat_id": "42", "message_id": "7", "badge": "3"}
    assert record.message["android"] == {"priority": "high", "notification": {"tag": "42"}}


def test_access_token_is_cached_and_granted_once_under_concurrency(
    pki: TestPKI, tmp_path: Path
) -> None:
    """Fifty concurrent sends on a cold sender share a single OAuth2 grant."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> tuple[list[Outcome], int]:
        outcomes = await asyncio.gather(
            *(sender.send(device(f"tok-{i}", i), NOTE) for i in range(50))
        )
        outcomes.append(await sender.send(device(), NOTE))
        return outcomes, fake.token_grants

    outcomes, grants = run(pki, tmp_path, scenario)
    assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
    assert grants == 1


def test_access_token_is_refreshed_before_it_expires(pki: TestPKI, tmp_path: Path) -> None:
    """A token within five minutes of expiry is replaced before the next send."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> tuple[list[Outcome], int]:
        outcomes = [await sender.send(device(), NOTE) for _ in range(3)]
        return outcomes, fake.token_grants

    # Tokens that live exactly the refresh margin are stale the moment they arrive.
    outcomes, grants = run(pki, tmp_path, scenario, expires_in=300)
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 3
    assert grants == 3


def test_revoked_token_is_refreshed_on_401(pki: TestPKI, tmp_path: Path) -> None:
    """A 401 triggers one fresh grant and the same send then succeeds."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> tuple[Outcome, Outcome, int]:
        first = await sender.send(device(), NOTE)
        fake.revoke_tokens()
        second = await sender.send(device(), NOTE)
        return first, second, fake.token_grants

    first, second, grants = run(pki, tmp_path, scenario)
    assert first.kind is OutcomeKind.DELIVERED
    assert second.kind is OutcomeKind.DELIVERED
    assert grants == 2


@pytest.mark.parametrize(
    ("status", "error_code", "field", "kind"),
    [
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.token", OutcomeKind.TOKEN_DEAD),
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.data", OutcomeKind.REJECTED),
        ("PERMISSION_DENIED", "SENDER_ID_MISMATCH", None, OutcomeKind.TOKEN_DEAD),
        ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", None, OutcomeKind.MISCONFIGURED),
        ("UNAVAILABLE", "UNAVAILABLE", None, OutcomeKind.RETRY),
        ("INTERNAL", "INTERNAL", None, OutcomeKind.RETRY),
    ],
)
def test_v1_errors_are_classified(
    pki: TestPKI, tmp_path: Path, status: str, error_code: str, field: str | None, kind: OutcomeKind
) -> None:
    """Each v1 error body the service can send maps to its outcome class."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> Outcome:
        fake.fail_token("scripted", status, error_code, field)
        return await sender.send(device("scripted"), NOTE)

    assert run(pki, tmp_path, scenario).kind is kind


def test_dead_and_malformed_tokens_are_token_dead(pki: TestPKI, tmp_path: Path) -> None:
    """UNREGISTERED (404) and an empty token (INVALID_ARGUMENT on message.token) are TOKEN_DEAD."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> tuple[Outcome, Outcome]:
        fake.dead_tokens.add("gone")
        return await sender.send(device("gone"), NOTE), await sender.send(device(""), NOTE)

    gone, empty = run(pki, tmp_path, scenario)
    assert (gone.kind, gone.reason, gone.status) == (OutcomeKind.TOKEN_DEAD, "UNREGISTERED", 404)
    assert empty.kind is OutcomeKind.TOKEN_DEAD


@pytest.mark.parametrize(("fault", "status"), [("429", 429), ("5xx", 503)])
def test_quota_and_unavailable_honour_retry_after(
    pki: TestPKI, tmp_path: Path, fault: str, status: int
) -> None:
    """429 QUOTA_EXCEEDED and 503 UNAVAILABLE are RETRY carrying the Retry-After seconds."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> Outcome:
        assert (await sender.send(device(), NOTE)).kind is OutcomeKind.DELIVERED
        fake.server.faults = FaultPlan(error_rate=1.0, faults=(fault,), retry_after=7)
        return await sender.send(device(), NOTE)

    outcome = run(pki, tmp_path, scenario)
    assert (outcome.kind, outcome.status, outcome.retry_after) == (OutcomeKind.RETRY, status, 7)


@pytest.mark.parametrize("fault", ["drop", "goaway"])
def test_lost_connection_is_retry_and_the_next_send_reconnects(
    pki: TestPKI, tmp_path: Path, fault: str
) -> None:
    """A dropped connection or GOAWAY is RETRY, never an exception; the next send gets through."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> tuple[Outcome, Outcome]:
        assert (await sender.send(device(), NOTE)).kind is OutcomeKind.DELIVERED
        fake.server.faults = FaultPlan(error_rate=1.0, faults=(fault,))
        lost = await sender.send(device(), NOTE)
        fake.server.faults = FaultPlan()
        return lost, await sender.send(device(), NOTE)

    lost, after = run(pki, tmp_path, scenario)
    assert lost.kind is OutcomeKind.RETRY
    assert after.kind is OutcomeKind.DELIVERED


def test_stalled_request_times_out_as_retry(pki: TestPKI, tmp_path: Path) -> None:
    """A provider that never answers yields RETRY after the sender's timeout."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> Outcome:
        assert (await sender.send(device(), NOTE)).kind is OutcomeKind.DELIVERED
        fake.server.faults = FaultPlan(error_rate=1.0, faults=("stall",), stall_seconds=5)
        return await sender.send(device(), NOTE)

    outcome = run(pki, tmp_path, scenario, timeout=0.3)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "timeout")


def _account_variant(fake: FakeFcm, directory: Path, **changes: Any) -> FcmSettings:
    account = json.loads(fake.credentials_file.read_text())
    account.update(changes)
    path = directory / "variant.json"
    path.write_text(json.dumps(account))
    return FcmSettings(credentials=path, url=fake.url)


def test_wrong_project_is_misconfigured(pki: TestPKI, tmp_path: Path) -> None:
    """Credentials for another project are MISCONFIGURED (device kept), not TOKEN_DEAD."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> Outcome:
        settings = _account_variant(fake, tmp_path, project_id="someone-else")
        other = FcmSender(settings=settings, network=Network(ca_file=pki.ca_file))
        try:
            return await other.send(device(), NOTE)
        finally:
            await other.aclose()

    outcome = run(pki, tmp_path, scenario)
    assert (outcome.kind, outcome.status) == (OutcomeKind.MISCONFIGURED, 403)


def test_assertion_signed_with_a_foreign_key_is_misconfigured_and_not_retried(
    pki: TestPKI, tmp_path: Path
) -> None:
    """A refused grant is MISCONFIGURED, and twenty sends ask the token endpoint only once."""
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = foreign.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()

    async def scenario(fake: FakeFcm, sender: FcmSender) -> tuple[list[Outcome], int, int]:
        other = FcmSender(
            settings=_account_variant(fake, tmp_path, private_key=pem),
            network=Network(ca_file=pki.ca_file),
        )
        try:
            outcomes = await asyncio.gather(*(other.send(device(), NOTE) for _ in range(20)))
            return outcomes, fake.token_requests, fake.token_grants
        finally:
            await other.aclose()

    outcomes, requests, grants = run(pki, tmp_path, scenario)
    assert {(o.kind, o.reason) for o in outcomes} == {
        (OutcomeKind.MISCONFIGURED, "oauth_invalid_grant")
    }
    assert (requests, grants) == (1, 0)


def test_unreachable_token_endpoint_is_retry_without_a_storm(pki: TestPKI, tmp_path: Path) -> None:
    """A token endpoint that cannot be reached is RETRY; concurrent sends share one attempt."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> list[Outcome]:
        settings = _account_variant(fake, tmp_path, token_uri="https://127.0.0.1:1/token")
        other = FcmSender(settings=settings, network=Network(ca_file=pki.ca_file, timeout=2.0))
        try:
            return list(await asyncio.gather(*(other.send(device(), NOTE) for _ in range(20))))
        finally:
            await other.aclose()

    outcomes = run(pki, tmp_path, scenario)
    assert {o.kind for o in outcomes} == {OutcomeKind.RETRY}
    assert {o.reason for o in outcomes} == {"oauth_ConnectError"}


def test_unreadable_credentials_are_a_config_error(tmp_path: Path) -> None:
    """A missing or malformed service-account file fails loudly at construction."""
    with pytest.raises(ConfigError, match="cannot be read"):
        FcmSender(settings=FcmSettings(credentials=tmp_path / "missing.json"))
    (tmp_path / "partial.json").write_text(json.dumps({"project_id": "p"}))
    with pytest.raises(ConfigError, match="lack"):
        FcmSender(settings=FcmSettings(credentials=tmp_path / "partial.json"))
    fields = {"project_id": "p", "client_email": "e", "token_uri": "https://x/token"}
    (tmp_path / "badkey.json").write_text(json.dumps(dict(fields, private_key="nope")))
    with pytest.raises(ConfigError, match="RSA"):
        FcmSender(settings=FcmSettings(credentials=tmp_path / "badkey.json"))


def test_in_flight_requests_are_bounded(pki: TestPKI, tmp_path: Path) -> None:
    """With four FCM slots in the registry the fake never sees more than four streams at once."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> tuple[set[OutcomeKind], int]:
        fake.server.faults = FaultPlan(latency=0.02)
        slots = ProviderSlots(dict.fromkeys(Platform, 4))
        registry = Senders({(Platform.FCM, "default"): sender}, slots=slots)
        outcomes = await asyncio.gather(
            *(registry.send(device(f"t{i}", i), NOTE) for i in range(40))
        )
        return {o.kind for o in outcomes}, fake.server.stats.max_streams_in_flight

    kinds, most = run(pki, tmp_path, scenario)
    assert kinds == {OutcomeKind.DELIVERED}
    assert most <= 4


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"token": "t", "data": {"chat_id": 42}}, "message.data.chat_id"),
        ({"token": "t", "topic": "news"}, "message"),
        ({"notification": {"title": "x"}}, "message"),
        ({"token": "t", "notification": {"title": 1}}, "message.notification.title"),
        ({"token": "t", "android": {"priority": "urgent"}}, "message.android.priority"),
    ],
)
def test_fake_refuses_what_fcm_refuses(
    pki: TestPKI, tmp_path: Path, message: dict[str, Any], field: str
) -> None:
    """The fake is strict: non-string data, not exactly one target, bad enums → 400 on a field."""

    async def scenario(fake: FakeFcm, sender: FcmSender) -> httpx.Response:
        account = json.loads(fake.credentials_file.read_text())
        now = int(time.time())
        claims = {
            "iss": account["client_email"],
            "aud": account["token_uri"],
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "iat": now,
            "exp": now + 600,
        }
        assertion = jwt.encode(claims, account["private_key"], algorithm="RS256")
        verify = ssl.create_default_context(cafile=str(pki.ca_file))
        async with httpx.AsyncClient(http2=True, verify=verify) as client:
            grant = await client.post(
                account["token_uri"],
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": assertion,
                },
            )
            token = grant.json()["access_token"]
            return await client.post(
                f"{fake.url}/v1/projects/{fake.project_id}/messages:send",
                json={"message": message},
                headers={"authorization": f"Bearer {token}"},
            )

    response = run(pki, tmp_path, scenario)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    violations = [d for d in error["details"] if "fieldViolations" in d]
    assert violations[0]["fieldViolations"][0]["field"] == field
