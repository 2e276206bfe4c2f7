"""Devices: where a member's notifications go; each platform's address is validated."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from chinwag.chat import verification
from chinwag.chat.errors import Conflict, InvalidInput, NotFound
from chinwag.chat.models import Device, User
from chinwag.push.model import PayloadMode, Platform, endpoint_refusal, parse_key
from chinwag.store.database import Database
from chinwag.store.schema import devices

APNS_TOKEN = re.compile(r"^[0-9a-f]{64,200}$")
FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-.]{16,4096}$")
APP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_URL_LENGTH = 2048
# Tokens a provider issues to one app install; they move with the install (see register_device).
INSTALL_BOUND = frozenset({Platform.APNS, Platform.FCM, Platform.WEBPUSH})


def device_from_row(row: RowMapping) -> Device:
    return Device(
        id=row["id"],
        user_id=row["user_id"],
        platform=row["platform"],
        app=row["app"],
        token=row["token"],
        active=bool(row["active"]),
        created_at=row["created_at"],
        verified=bool(row["verified"]),
        payload=row["payload"],
        refreshed_at=row["refreshed_at"],
        last_success_at=row["last_success_at"],
        last_failure_at=row["last_failure_at"],
        last_failure_reason=row["last_failure_reason"],
    )


def normalize_token(
    platform: str, token: str | Mapping[str, Any], allow_private: Sequence[str] = ()
) -> str:
    """Return the canonical text form of a device address, or raise InvalidInput."""
    try:
        kind = Platform(platform)
    except ValueError:
        choices = ", ".join(p.value for p in Platform)
        raise InvalidInput(f"platform must be one of: {choices}", field="platform") from None
    if kind is Platform.WEBPUSH:
        return _webpush_subscription(token, allow_private)
    if not isinstance(token, str):
        raise InvalidInput(f"a {kind} token must be a string", field="token")
    if kind is Platform.APNS:
        hex_token = token.strip().lower()
        if not APNS_TOKEN.fullmatch(hex_token):
            raise InvalidInput("an APNs token is 64 or more hexadecimal digits", field="token")
        return hex_token
    if kind is Platform.FCM:
        if not FCM_TOKEN.fullmatch(token.strip()):
            raise InvalidInput("this is not an FCM registration token", field="token")
        return token.strip()
    if kind is Platform.EMAIL:
        try:
            return validate_email(token.strip(), check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise InvalidInput(f"invalid email address: {exc}", field="token") from None
    return _https_url(token.strip(), allow_private, field="token")


@dataclass(frozen=True)
class PayloadChoice:
    """What a registration asked the provider to see. ``mode`` None: the request did not say
    (a device already registered to the same user keeps its mode; otherwise ``full``)."""

    mode: PayloadMode | None = None
    encryption_key: str | None = field(default=None, repr=False)  # canonical base64


def payload_choice(payload: str | None, encryption_key: str | None) -> PayloadChoice:
    """Validate ``payload`` and ``encryption_key`` together, or raise InvalidInput."""
    try:
        mode = PayloadMode(payload) if payload is not None else None
    except ValueError:
        choices = ", ".join(m.value for m in PayloadMode)
        raise InvalidInput(f"payload must be one of: {choices}", field="payload") from None
    if mode is not PayloadMode.ENCRYPTED:
        if encryption_key is not None:
            raise InvalidInput(
                'encryption_key is only for "payload": "encrypted"', field="encryption_key"
            )
        return PayloadChoice(mode)
    if encryption_key is None:
        raise InvalidInput(
            'an "encrypted" device needs encryption_key: 32 random bytes, base64',
            field="encryption_key",
        )
    try:
        key = parse_key(encryption_key)
    except ValueError as exc:
        # Say what is wrong with it, never echo it: the key is a secret.
        raise InvalidInput(
            f"encryption_key must be 32 bytes in base64 ({exc})", field="encryption_key"
        ) from None
    return PayloadChoice(mode, base64.b64encode(key).decode("ascii"))


def token_hash(canonical: str) -> str:
    """What the devices table keys a device by: the SHA-256 of its canonical token."""
    return hashlib.sha256(canonical.encode()).hexdigest()


def device_scope(platform: Platform, user_id: int) -> int:
    """0 for a token bound to an app install (it moves with the install); else the user's id."""
    return 0 if platform in INSTALL_BOUND else user_id


def register_device(
    db: Database,
    user: User,
    platform: str,
    token: str | Mapping[str, Any],
    app: str = "default",
    allow_private: Sequence[str] = (),
    *,
    verify_email: bool = False,
    max_devices: int = 0,
    payload: PayloadChoice = PayloadChoice(),
) -> Device:
    """Register (or re-register) a device. The same address again gives back the same device.

    APNs, FCM and Web Push tokens belong to one install: registered by someone else, the device
    moves to them (a phone that changed hands must notify its new owner, never its old one).
    Email addresses and webhook URLs are per user: two users registering the same address get
    two devices, and nobody can take another user's away. With ``verify_email`` a new email
    device is unverified and gets only a verification code until ``verify_device`` succeeds.
    ``max_devices`` (0: no cap) bounds a user's active devices. ``payload`` (see
    ``payload_choice``) sets what the provider may see; registering again may change it.
    """
    if not APP_NAME.fullmatch(app):
        raise InvalidInput("app must be 1-64 characters: letters, digits, _ . -", field="app")
    canonical = normalize_token(platform, token, allow_private)
    options = _Options(verify_email=verify_email, max_devices=max_devices, payload=payload)
    try:
        return _upsert_device(db, user, Platform(platform), app, canonical, options)
    except IntegrityError:
        # The same address registered concurrently (PostgreSQL lets the two overlap): the other
        # insert won, so this time the device is found (and moved, if install-bound).
        return _upsert_device(db, user, Platform(platform), app, canonical, options)


@dataclass(frozen=True)
class _Options:
    verify_email: bool
    max_devices: int
    payload: PayloadChoice


def _upsert_device(
    db: Database, user: User, platform: Platform, app: str, canonical: str, options: _Options
) -> Device:
    digest = token_hash(canonical)
    scope = device_scope(platform, user.id)
    now = time.time()
    secret: str | None = None
    key = (devices.c.platform == platform.value) & (devices.c.app == app)
    key &= (devices.c.token_hash == digest) & (devices.c.scope == scope)
    with db.write() as conn:
        existing = conn.execute(
            sa.select(devices.c.id, devices.c.user_id, devices.c.active, devices.c.verified).where(
                key
            )
        ).first()
        already_mine = existing is not None and existing.user_id == user.id and existing.active
        if not already_mine:
            _check_device_cap(conn, user, options.max_devices)
        if existing:
            values: dict[str, object] = {
                "user_id": user.id,
                "active": True,
                "deactivated_reason": None,
                "updated_at": now,
                "refreshed_at": now,
            }
            if options.payload.mode is not None or not already_mine:
                # Said again, or taken over by another user: the mode is what this request says.
                values["payload"] = (options.payload.mode or PayloadMode.FULL).value
                values["encryption_key"] = options.payload.encryption_key
            if platform is Platform.WEBHOOK and not existing.active:
                # Brought back after a delete: its old secret may be lost; it gets a new one.
                secret = values["webhook_secret"] = new_webhook_secret()
            conn.execute(devices.update().where(devices.c.id == existing.id).values(**values))
            device_id = existing.id
            if not existing.verified:
                verification.renew_code(conn, device_id, now)
        else:
            unverified = platform is Platform.EMAIL and options.verify_email
            if platform is Platform.WEBHOOK:
                secret = new_webhook_secret()
            device_id = conn.execute(
                devices.insert()
                .returning(devices.c.id)
                .values(
                    user_id=user.id,
                    platform=platform.value,
                    app=app,
                    token=canonical,
                    token_hash=digest,
                    scope=scope,
                    verified=not unverified,
                    webhook_secret=secret,
                    payload=(options.payload.mode or PayloadMode.FULL).value,
                    encryption_key=options.payload.encryption_key,
                    active=True,
                    created_at=now,
                    updated_at=now,
                    refreshed_at=now,
                )
            ).scalar_one()
            if unverified:
                verification.issue_code(conn, device_id, now)
        row = conn.execute(sa.select(devices).where(devices.c.id == device_id)).mappings().one()
    return dataclasses.replace(device_from_row(row), webhook_secret=secret)


def _check_device_cap(conn: Connection, user: User, max_devices: int) -> None:
    if max_devices <= 0:
        return
    active = conn.execute(
        sa.select(sa.func.count())
        .select_from(devices)
        .where(devices.c.user_id == user.id, devices.c.active.is_(True))
    ).scalar_one()
    if active >= max_devices:
        raise Conflict(f"at most {max_devices} devices per user; remove one first")


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def list_devices(db: Database, user: User) -> list[Device]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(devices)
            .where(devices.c.user_id == user.id, devices.c.active.is_(True))
            .order_by(devices.c.id)
        ).mappings()
        return [device_from_row(row) for row in rows]


def get_device(db: Database, user: User, device_id: int) -> Device:
    with db.read() as conn:
        row = (
            conn.execute(
                sa.select(devices).where(
                    devices.c.id == device_id,
                    devices.c.user_id == user.id,
                    devices.c.active.is_(True),
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"no device {device_id}")
    return device_from_row(row)


def delete_device(db: Database, user: User, device_id: int) -> None:
    """Deactivate rather than delete: delivery records keep pointing at the device."""
    with db.write() as conn:
        updated = conn.execute(
            devices.update()
            .where(
                devices.c.id == device_id,
                devices.c.user_id == user.id,
                devices.c.active.is_(True),
            )
            .values(active=False, deactivated_reason="deleted by owner", updated_at=time.time())
        ).rowcount
    if not updated:
        raise NotFound(f"no device {device_id}")


STALE_REASON = "stale: not registered again for {days:g} days"


def stale_since(cutoff: float) -> sa.ColumnElement[bool]:
    """Active devices not registered again since ``cutoff``: ix_devices_active_refreshed_at."""
    return sa.and_(devices.c.active.is_(True), devices.c.refreshed_at < cutoff)


def deactivate_stale(db: Database, now: float, stale_days: float) -> int:
    """Deactivate the active devices whose app has not registered them again for
    ``stale_days`` (CHINWAG_DEVICE_STALE_DAYS; 0: never); return how many. An app refreshes its
    token by registering it again, so a device silent this long is most likely uninstalled, and
    FCM expires such tokens itself. Registering it again brings it back."""
    if stale_days <= 0:
        return 0
    cutoff = now - stale_days * 86400.0
    with db.write() as conn:
        return int(
            conn.execute(
                devices.update()
                .where(stale_since(cutoff))
                .values(
                    active=False,
                    deactivated_reason=STALE_REASON.format(days=stale_days),
                    updated_at=now,
                )
            ).rowcount
        )


def _https_url(url: str, allow_private: Sequence[str], *, field: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"URL longer than {MAX_URL_LENGTH} characters", field=field)
    problem = endpoint_refusal(url, allow_private)
    if problem:
        raise InvalidInput(problem, field=field)
    return url


def _webpush_subscription(token: str | Mapping[str, Any], allow_private: Sequence[str]) -> str:
    subscription: Any = token
    if isinstance(token, str):
        try:
            subscription = json.loads(token)
        except ValueError:
            raise InvalidInput("a webpush token is a subscription object", field="token") from None
    if not isinstance(subscription, Mapping):
        raise InvalidInput("a webpush token is a subscription object", field="token")
    endpoint = subscription.get("endpoint")
    keys = subscription.get("keys")
    if not isinstance(endpoint, str) or not isinstance(keys, Mapping):
        raise InvalidInput("a subscription needs endpoint and keys", field="token")
    endpoint = _https_url(endpoint, allow_private, field="token.endpoint")
    p256dh = _b64url(keys.get("p256dh"), "token.keys.p256dh")
    auth = _b64url(keys.get("auth"), "token.keys.auth")
    if len(p256dh) != 65 or p256dh[0] != 4:
        raise InvalidInput("p256dh must be an uncompressed P-256 point", field="token.keys.p256dh")
    if len(auth) != 16:
        raise InvalidInput("auth must be 16 bytes", field="token.keys.auth")
    canonical = {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}
    return json.dumps(canonical, separators=(",", ":"), sort_keys=True)


def _b64url(value: object, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidInput("must be a base64url string", field=field)
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInput("must be a base64url string", field=field) from None
