"""Every provider answer, classified once: delivered, retry, token dead, rejected, misconfigured.

The tables below are the whole policy; the senders only parse the provider's answer and call the
matching ``classify_*`` function. Two principles decide the unclear rows:

- A device is only declared dead on the provider's explicit word for it. An error that could as
  well be our configuration (a wrong project, a wrong URL) is MISCONFIGURED, which keeps the
  device and raises an alert, because deleting every user's devices over one typo is unrecoverable.
- RETRY is for what time fixes (throttling, provider trouble, the network). What time does not fix
  is final, so a broken payload never loops until the attempt cap.

APNs ``ExpiredProviderToken`` is MISCONFIGURED here. The APNs sender treats it first: it forces a
fresh JWT (if the one in use is old enough to be refreshed, see ``chinwag.push.apns``) and sends
once more; only if Apple still says expired does this classification apply — then the clock or
the key is wrong and retrying later would not help.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from chinwag.push.errors import TransportError
from chinwag.push.model import Outcome, OutcomeKind

DELIVERED = OutcomeKind.DELIVERED
RETRY = OutcomeKind.RETRY
TOKEN_DEAD = OutcomeKind.TOKEN_DEAD
REJECTED = OutcomeKind.REJECTED
MISCONFIGURED = OutcomeKind.MISCONFIGURED

# --- APNs: the ``reason`` of Apple's JSON error body, whatever the status ---------------------

APNS_REASONS: Mapping[str, OutcomeKind] = {
    # The device is gone or the token was never valid for us.
    "Unregistered": TOKEN_DEAD,
    "ExpiredToken": TOKEN_DEAD,
    "BadDeviceToken": TOKEN_DEAD,
    "DeviceTokenNotForTopic": TOKEN_DEAD,
    # Our credentials, topic or endpoint are wrong.
    "InvalidProviderToken": MISCONFIGURED,
    "ExpiredProviderToken": MISCONFIGURED,  # after the sender's one forced refresh; see above
    "MissingProviderToken": MISCONFIGURED,
    "UnrelatedKeyIdInToken": MISCONFIGURED,
    "BadEnvironmentKeyInToken": MISCONFIGURED,
    "BadCertificate": MISCONFIGURED,
    "BadCertificateEnvironment": MISCONFIGURED,
    "Forbidden": MISCONFIGURED,
    "BadTopic": MISCONFIGURED,
    "TopicDisallowed": MISCONFIGURED,
    "MissingTopic": MISCONFIGURED,
    "BadPath": MISCONFIGURED,
    # Our request is malformed: a bug, never fixed by retrying.
    "PayloadTooLarge": REJECTED,
    "PayloadEmpty": REJECTED,
    "BadPriority": REJECTED,
    "BadExpirationDate": REJECTED,
    "BadCollapseId": REJECTED,
    "BadMessageId": REJECTED,
    "DuplicateHeaders": REJECTED,
    "InvalidPushType": REJECTED,
    "MissingDeviceToken": REJECTED,
    "MethodNotAllowed": REJECTED,
    # Time fixes these.
    "IdleTimeout": RETRY,
    "TooManyRequests": RETRY,
    "TooManyProviderTokenUpdates": RETRY,
    "InternalServerError": RETRY,
    "ServiceUnavailable": RETRY,
    "Shutdown": RETRY,
}

# --- FCM HTTP v1: ``FcmError.errorCode`` first, then the google.rpc ``status`` -----------------

FCM_ERROR_CODES: Mapping[str, OutcomeKind] = {
    "UNREGISTERED": TOKEN_DEAD,
    "SENDER_ID_MISMATCH": TOKEN_DEAD,
    "INVALID_ARGUMENT": REJECTED,  # TOKEN_DEAD when a field violation names the token
    "QUOTA_EXCEEDED": RETRY,
    "UNAVAILABLE": RETRY,
    "INTERNAL": RETRY,
    "THIRD_PARTY_AUTH_ERROR": MISCONFIGURED,
}

FCM_STATUSES: Mapping[str, OutcomeKind] = {
    "INVALID_ARGUMENT": REJECTED,
    "UNAUTHENTICATED": MISCONFIGURED,
    "PERMISSION_DENIED": MISCONFIGURED,
    "NOT_FOUND": MISCONFIGURED,  # without errorCode UNREGISTERED: a wrong project, not a device
    "RESOURCE_EXHAUSTED": RETRY,
    "UNAVAILABLE": RETRY,
    "INTERNAL": RETRY,
    "DEADLINE_EXCEEDED": RETRY,
}

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
FCM_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
FCM_TOKEN_FIELDS = frozenset({"message.token", "token"})

# --- Web Push (RFC 8030 push services), webhooks, SMTP --------------------------------------

WEBPUSH_STATUSES: Mapping[int, OutcomeKind] = {
    200: DELIVERED,
    201: DELIVERED,
    202: DELIVERED,
    400: REJECTED,
    401: MISCONFIGURED,  # VAPID
    403: MISCONFIGURED,  # VAPID
    404: TOKEN_DEAD,
    410: TOKEN_DEAD,
    413: REJECTED,
    429: RETRY,
}

WEBHOOK_STATUSES: Mapping[int, OutcomeKind] = {
    408: RETRY,
    410: TOKEN_DEAD,
    425: RETRY,
    429: RETRY,
}

SMTP_CODES: Mapping[int, OutcomeKind] = {
    530: MISCONFIGURED,  # authentication required
    534: MISCONFIGURED,  # authentication mechanism too weak
    535: MISCONFIGURED,  # authentication credentials invalid
    550: TOKEN_DEAD,  # mailbox unavailable
    551: TOKEN_DEAD,  # user not local
    553: TOKEN_DEAD,  # mailbox name not allowed
    556: TOKEN_DEAD,  # domain does not accept mail (RFC 7504)
}


# SMTP: the stage of the dialogue a reply answers decides whose fault a 5xx is.


class SmtpStage(StrEnum):
    SESSION = "session"  # greeting, EHLO, STARTTLS, AUTH
    SENDER = "sender"  # MAIL FROM
    RECIPIENT = "recipient"  # RCPT TO
    DATA = "data"  # the message itself


# --- refused before asking the provider: what the sender saw in the device or the server ----

LOCAL_REFUSALS: Mapping[str, OutcomeKind] = {
    "BadDeviceToken": TOKEN_DEAD,  # an APNs token that is not hex: Apple would say the same
    "invalid_subscription": TOKEN_DEAD,  # a Web Push subscription that can never be encrypted to
    "invalid_address": TOKEN_DEAD,  # an email address no message can be addressed to
    "endpoint_refused": REJECTED,  # the SSRF guard refused a webhook / Web Push endpoint
    "starttls_unavailable": MISCONFIGURED,  # SMTP credentials would travel in clear text
    "smtp_extension_unsupported": REJECTED,  # e.g. an internationalised address, no SMTPUTF8
}

# All a user learns (in last_error) when their own endpoint cannot be reached: refused, reset,
# timed out and TLS failures look alike, so a webhook cannot be used to scan ports.
UNREACHABLE = "endpoint unreachable"


def classify_apns(status: int, reason: str | None, retry_after: float | None) -> Outcome:
    if status == 200:
        return Outcome(DELIVERED, status=status)
    kind = APNS_REASONS.get(reason or "")
    if kind is None:
        kind = _by_status(status)
    return _outcome(kind, reason or f"http_{status}", status, retry_after)


def classify_fcm(
    status: int,
    error_status: str | None,
    error_details: Sequence[Mapping[str, Any]],
    retry_after: float | None,
) -> Outcome:
    if status == 200:
        return Outcome(DELIVERED, status=status)
    error_code = _fcm_error_code(error_details)
    if error_code == "INVALID_ARGUMENT" or (
        error_code is None and error_status == "INVALID_ARGUMENT"
    ):
        kind = TOKEN_DEAD if _fcm_blames_token(error_details) else REJECTED
        return _outcome(kind, error_code or "INVALID_ARGUMENT", status, retry_after)
    if error_code is not None and error_code in FCM_ERROR_CODES:
        return _outcome(FCM_ERROR_CODES[error_code], error_code, status, retry_after)
    if error_status is not None and error_status in FCM_STATUSES:
        return _outcome(FCM_STATUSES[error_status], error_status, status, retry_after)
    reason = error_code or error_status or f"http_{status}"
    return _outcome(_by_status(status), reason, status, retry_after)


def classify_webpush(status: int, retry_after: float | None) -> Outcome:
    kind = WEBPUSH_STATUSES.get(status) or _by_status(status)
    return _outcome(kind, f"http_{status}", status, retry_after)


def classify_webhook(status: int, retry_after: float | None) -> Outcome:
    kind = WEBHOOK_STATUSES.get(status)
    if kind is None:
        if 200 <= status < 300:
            kind = DELIVERED
        elif 400 <= status < 500 or 300 <= status < 400:
            # A redirect is not followed (the endpoint was vetted, its target was not).
            kind = REJECTED
        else:
            kind = RETRY
    return _outcome(kind, f"http_{status}", status, retry_after)


def classify_smtp(code: int) -> Outcome:
    kind = SMTP_CODES.get(code)
    if kind is None:
        if 200 <= code < 300:
            kind = DELIVERED
        elif 400 <= code < 500:
            kind = RETRY
        elif 500 <= code < 600:
            kind = REJECTED
        else:
            kind = RETRY
    return _outcome(kind, f"smtp_{code}", code, None)


def classify_smtp_reply(code: int, stage: SmtpStage) -> Outcome:
    """Only a refused recipient means the address is dead; the stage decides whose fault it is."""
    if code >= 500 and stage is SmtpStage.SENDER:
        return Outcome(MISCONFIGURED, reason="smtp_sender_refused", status=code)
    if code >= 500 and stage is SmtpStage.DATA:
        # The message itself was refused (content policy, size): the mailbox may be fine.
        return Outcome(REJECTED, reason="smtp_message_refused", status=code)
    return classify_smtp(code)


def classify_oauth(status: int, error: str | None, retry_after: float | None) -> Outcome:
    """A refused OAuth2 token grant (FCM's service-account exchange); 200 is not asked here."""
    if status == 429 or status >= 500:
        return Outcome(RETRY, f"oauth_http_{status}", retry_after, status)
    # 400 invalid_grant / 401 invalid_client: the service account is wrong; retrying won't help.
    return Outcome(MISCONFIGURED, f"oauth_{error or 'error'}", None, status)


# A 200 from the token endpoint without a usable token: a proxy or an outage page, say.
OAUTH_BAD_RESPONSE = Outcome(RETRY, reason="oauth_bad_response", status=200)


def classify_oauth_transport(error: TransportError) -> Outcome:
    return Outcome(RETRY, reason=f"oauth_{error.reason}")


def classify_transport(error: TransportError, *, user_endpoint: bool = False) -> Outcome:
    """Network errors, timeouts, TLS failures and GOAWAY resets: the request may be re-sent.

    A user-supplied endpoint (webhook, Web Push) gets one reason for all of them.
    """
    return Outcome(RETRY, reason=UNREACHABLE if user_endpoint else error.reason)


def refused_locally(reason: str) -> Outcome:
    """A send the sender refused without asking the provider (``LOCAL_REFUSALS``)."""
    return Outcome(LOCAL_REFUSALS[reason], reason=reason)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if unusable.

    ``now`` is the current Unix time, passed in so that the function stays pure.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT; "-0000" parses as zone-less
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


def _by_status(status: int) -> OutcomeKind:
    """The fallback for codes the tables do not name."""
    if status in (401, 403, 404) or 300 <= status < 400:
        return MISCONFIGURED
    if status == 410:
        return TOKEN_DEAD
    if status in (408, 425, 429) or status >= 500:
        return RETRY
    if 200 <= status < 300:
        return DELIVERED
    if 400 <= status < 500:
        return REJECTED
    return RETRY


def _outcome(
    kind: OutcomeKind, reason: str, status: int | None, retry_after: float | None
) -> Outcome:
    return Outcome(
        kind,
        reason=reason if kind is not DELIVERED else "",
        retry_after=retry_after if kind is RETRY else None,
        status=status,
    )


def _fcm_error_code(details: Sequence[Mapping[str, Any]]) -> str | None:
    for detail in details:
        if detail.get("@type") == FCM_ERROR_TYPE and isinstance(detail.get("errorCode"), str):
            code: str = detail["errorCode"]
            return None if code == "UNSPECIFIED_ERROR" else code
    return None


def _fcm_blames_token(details: Sequence[Mapping[str, Any]]) -> bool:
    for detail in details:
        if detail.get("@type") != FCM_BAD_REQUEST_TYPE:
            continue
        violations = detail.get("fieldViolations")
        if not isinstance(violations, list):
            continue
        for violation in violations:
            if isinstance(violation, Mapping) and violation.get("field") in FCM_TOKEN_FIELDS:
                return True
    return False
