"""The central classification of provider answers, row by row."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from typing import Any

import pytest

from chinwag.push.model import OutcomeKind
from chinwag.push.outcome import (
    APNS_REASONS,
    FCM_BAD_REQUEST_TYPE,
    FCM_ERROR_CODES,
    FCM_ERROR_TYPE,
    classify_apns,
    classify_fcm,
    classify_smtp,
    classify_webhook,
    classify_webpush,
    parse_retry_after,
)

DELIVERED = OutcomeKind.DELIVERED
RETRY = OutcomeKind.RETRY
TOKEN_DEAD = OutcomeKind.TOKEN_DEAD
REJECTED = OutcomeKind.REJECTED
MISCONFIGURED = OutcomeKind.MISCONFIGURED

APNS_ROWS = [
    (410, "Unregistered", TOKEN_DEAD),
    (410, "ExpiredToken", TOKEN_DEAD),
    (400, "BadDeviceToken", TOKEN_DEAD),
    (400, "DeviceTokenNotForTopic", TOKEN_DEAD),
    (403, "InvalidProviderToken", MISCONFIGURED),
    (403, "ExpiredProviderToken", MISCONFIGURED),
    (403, "MissingProviderToken", MISCONFIGURED),
    (403, "BadCertificate", MISCONFIGURED),
    (403, "BadCertificateEnvironment", MISCONFIGURED),
    (403, "Forbidden", MISCONFIGURED),
    (403, "UnrelatedKeyIdInToken", MISCONFIGURED),
    (403, "BadEnvironmentKeyInToken", MISCONFIGURED),
    (400, "BadTopic", MISCONFIGURED),
    (400, "TopicDisallowed", MISCONFIGURED),
    (400, "MissingTopic", MISCONFIGURED),
    (404, "BadPath", MISCONFIGURED),
    (413, "PayloadTooLarge", REJECTED),
    (400, "PayloadEmpty", REJECTED),
    (400, "BadPriority", REJECTED),
    (400, "BadExpirationDate", REJECTED),
    (400, "BadCollapseId", REJECTED),
    (400, "BadMessageId", REJECTED),
    (400, "DuplicateHeaders", REJECTED),
    (400, "InvalidPushType", REJECTED),
    (400, "MissingDeviceToken", REJECTED),
    (405, "MethodNotAllowed", REJECTED),
    (400, "IdleTimeout", RETRY),
    (429, "TooManyRequests", RETRY),
    (429, "TooManyProviderTokenUpdates", RETRY),
    (500, "InternalServerError", RETRY),
    (503, "ServiceUnavailable", RETRY),
    (503, "Shutdown", RETRY),
    # Reasons Apple may add later fall back on the status.
    (400, "SomethingNew", REJECTED),
    (403, None, MISCONFIGURED),
    (410, None, TOKEN_DEAD),
    (429, None, RETRY),
    (502, None, RETRY),
]


def test_apns_200_is_delivered() -> None:
    """APNs 200 is delivered, with no reason and no retry hint."""
    outcome = classify_apns(200, None, None)
    assert (outcome.kind, outcome.reason, outcome.retry_after, outcome.status) == (
        DELIVERED,
        "",
        None,
        200,
    )


@pytest.mark.parametrize(("status", "reason", "kind"), APNS_ROWS)
def test_apns_rows(status: int, reason: str | None, kind: OutcomeKind) -> None:
    """Each APNs status/reason pair maps to its outcome and keeps the reason for the record."""
    outcome = classify_apns(status, reason, 5.0)
    assert outcome.kind is kind
    assert outcome.reason == (reason or f"http_{status}")
    assert outcome.status == status
    assert outcome.retry_after == (5.0 if kind is RETRY else None)


def test_apns_table_is_fully_covered_by_the_rows() -> None:
    """Every reason in the APNs table has a row above, so none is untested."""
    assert set(APNS_REASONS) <= {reason for _, reason, _ in APNS_ROWS}


def _fcm_error(code: str) -> dict[str, Any]:
    return {"@type": FCM_ERROR_TYPE, "errorCode": code}


def _bad_field(field: str) -> dict[str, Any]:
    return {
        "@type": FCM_BAD_REQUEST_TYPE,
        "fieldViolations": [{"field": field, "description": "bad"}],
    }


FCM_ROWS: list[tuple[int, str | None, list[Mapping[str, Any]], OutcomeKind, str]] = [
    (404, "NOT_FOUND", [_fcm_error("UNREGISTERED")], TOKEN_DEAD, "UNREGISTERED"),
    (
        403,
        "PERMISSION_DENIED",
        [_fcm_error("SENDER_ID_MISMATCH")],
        TOKEN_DEAD,
        "SENDER_ID_MISMATCH",
    ),
    (
        400,
        "INVALID_ARGUMENT",
        [_fcm_error("INVALID_ARGUMENT"), _bad_field("message.token")],
        TOKEN_DEAD,
        "INVALID_ARGUMENT",
    ),
    (400, "INVALID_ARGUMENT", [_bad_field("message.token")], TOKEN_DEAD, "INVALID_ARGUMENT"),
    (
        400,
        "INVALID_ARGUMENT",
        [_fcm_error("INVALID_ARGUMENT"), _bad_field("message.data")],
        REJECTED,
        "INVALID_ARGUMENT",
    ),
    (400, "INVALID_ARGUMENT", [], REJECTED, "INVALID_ARGUMENT"),
    (429, "RESOURCE_EXHAUSTED", [_fcm_error("QUOTA_EXCEEDED")], RETRY, "QUOTA_EXCEEDED"),
    (503, "UNAVAILABLE", [_fcm_error("UNAVAILABLE")], RETRY, "UNAVAILABLE"),
    (500, "INTERNAL", [_fcm_error("INTERNAL")], RETRY, "INTERNAL"),
    (
        401,
        "UNAUTHENTICATED",
        [_fcm_error("THIRD_PARTY_AUTH_ERROR")],
        MISCONFIGURED,
        "THIRD_PARTY_AUTH_ERROR",
    ),
    (401, "UNAUTHENTICATED", [], MISCONFIGURED, "UNAUTHENTICATED"),
    (403, "PERMISSION_DENIED", [], MISCONFIGURED, "PERMISSION_DENIED"),
    (404, "NOT_FOUND", [], MISCONFIGURED, "NOT_FOUND"),
    (429, "RESOURCE_EXHAUSTED", [], RETRY, "RESOURCE_EXHAUSTED"),
    (504, "DEADLINE_EXCEEDED", [], RETRY, "DEADLINE_EXCEEDED"),
    (400, None, [_fcm_error("UNSPECIFIED_ERROR")], REJECTED, "http_400"),
    (502, None, [], RETRY, "http_502"),
    (503, None, [], RETRY, "http_503"),
    (429, None, [], RETRY, "http_429"),
    (401, None, [], MISCONFIGURED, "http_401"),
]


@pytest.mark.parametrize(("status", "error_status", "details", "kind", "reason"), FCM_ROWS)
def test_fcm_rows(
    status: int,
    error_status: str | None,
    details: list[Mapping[str, Any]],
    kind: OutcomeKind,
    reason: str,
) -> None:
    """Each FCM v1 error shape maps to its outcome; the errorCode wins over the status."""
    outcome = classify_fcm(status, error_status, details, 2.0)
    assert (outcome.kind, outcome.reason, outcome.status) == (kind, reason, status)
    assert outcome.retry_after == (2.0 if kind is RETRY else None)


def test_fcm_table_is_fully_covered_by_the_rows() -> None:
    """Every FCM errorCode in the table has a row above."""
    codes = {detail["errorCode"] for row in FCM_ROWS for detail in row[2] if "errorCode" in detail}
    assert set(FCM_ERROR_CODES) <= codes


def test_fcm_200_is_delivered() -> None:
    """FCM 200 is delivered."""
    assert classify_fcm(200, None, [], None).kind is DELIVERED


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, DELIVERED),
        (201, DELIVERED),
        (202, DELIVERED),
        (404, TOKEN_DEAD),
        (410, TOKEN_DEAD),
        (413, REJECTED),
        (400, REJECTED),
        (401, MISCONFIGURED),
        (403, MISCONFIGURED),
        (429, RETRY),
        (500, RETRY),
        (502, RETRY),
        (503, RETRY),
        (418, REJECTED),
    ],
)
def test_webpush_rows(status: int, kind: OutcomeKind) -> None:
    """Each Web Push status maps to its outcome; Retry-After kept only when retrying."""
    outcome = classify_webpush(status, 9.0)
    assert outcome.kind is kind
    assert outcome.retry_after == (9.0 if kind is RETRY else None)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, DELIVERED),
        (202, DELIVERED),
        (204, DELIVERED),
        (410, TOKEN_DEAD),
        (408, RETRY),
        (425, RETRY),
        (429, RETRY),
        (500, RETRY),
        (503, RETRY),
        (400, REJECTED),
        (401, REJECTED),
        (404, REJECTED),
        (413, REJECTED),
        (301, REJECTED),
    ],
)
def test_webhook_rows(status: int, kind: OutcomeKind) -> None:
    """Each webhook status maps to its outcome."""
    assert classify_webhook(status, 1.0).kind is kind


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (250, DELIVERED),
        (251, DELIVERED),
        (421, RETRY),
        (450, RETRY),
        (451, RETRY),
        (452, RETRY),
        (550, TOKEN_DEAD),
        (551, TOKEN_DEAD),
        (553, TOKEN_DEAD),
        (556, TOKEN_DEAD),
        (535, MISCONFIGURED),
        (534, MISCONFIGURED),
        (530, MISCONFIGURED),
        (552, REJECTED),
        (554, REJECTED),
        (500, REJECTED),
    ],
)
def test_smtp_rows(code: int, kind: OutcomeKind) -> None:
    """Each SMTP reply code maps to its outcome, with the code kept as status."""
    outcome = classify_smtp(code)
    assert (outcome.kind, outcome.status) == (kind, code)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", None),
        ("soon", None),
        ("inf", None),
    ],
)
def test_parse_retry_after_delta_seconds(value: str | None, expected: float | None) -> None:
    """Delta-seconds parse to seconds; garbage and negatives give None."""
    assert parse_retry_after(value, now=1_700_000_000.0) == expected


def test_parse_retry_after_http_date() -> None:
    """An HTTP-date gives the seconds from now, never negative."""
    now = 1_700_000_000.0
    future = email.utils.formatdate(now + 90, usegmt=True)
    past = email.utils.formatdate(now - 90, usegmt=True)
    zone_less = email.utils.formatdate(now + 30).rsplit(" ", 1)[0] + " -0000"
    assert parse_retry_after(future, now) == pytest.approx(90.0)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after(zone_less, now) == pytest.approx(30.0)
