"""Settings, read once from the environment (and an optional TOML file for several apps).

The environment variables are part of the public contract (see DESIGN.md); a config file named by
``CHINWAG_CONFIG`` may add more, chiefly one ``[apps.<name>]`` table per mobile app so that one
chinwag serves several APNs topics / FCM projects. The single-app variables keep working: they
define the app named ``default``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any

DEFAULT_APP = "default"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


@dataclass(frozen=True)
class ApnsSettings:
    key_file: Path
    key_id: str
    team_id: str
    topic: str
    url: str = "https://api.push.apple.com"


@dataclass(frozen=True)
class FcmSettings:
    credentials: Path
    url: str = "https://fcm.googleapis.com"


@dataclass(frozen=True)
class AppSettings:
    """The push identity of one mobile app: which APNs topic and which FCM project."""

    name: str
    apns: ApnsSettings | None = None
    fcm: FcmSettings | None = None


# RFC 8292 wants a contact; push services accept any mailto: or https: URL. Set
# CHINWAG_VAPID_SUBJECT in production (Apple's push service refuses a localhost address).
DEFAULT_VAPID_SUBJECT = "mailto:chinwag@localhost"


@dataclass(frozen=True)
class WebPushSettings:
    # None: the key chinwag generated and keeps in the database (see chinwag.bootstrap).
    vapid_private_key: Path | None
    vapid_subject: str = DEFAULT_VAPID_SUBJECT
    # The generated key's PEM, filled in from the database at startup; never printed.
    vapid_private_pem: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SmtpSettings:
    url: str
    email_from: str


@dataclass(frozen=True)
class PushSettings:
    apps: Mapping[str, AppSettings] = field(default_factory=dict)
    webpush: WebPushSettings | None = None
    smtp: SmtpSettings | None = None
    webhook_secret: str | None = None
    ca_file: Path | None = None
    allow_private_endpoints: tuple[str, ...] = ()
    # Upper bound of requests in flight per provider; HTTP/2 multiplexes them over few connections
    # (APNs allows 1,000 streams per connection; the APNs sender keeps two). At 200 ms a
    # provider round trip, 500 capped a worker at 2,500/s and left it idle between waves;
    # with 2,000, 10,000 devices are notified in under 5 s (docs/benchmarks.md).
    max_in_flight: int = 2000


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///chinwag.db"
    queue_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    push: PushSettings = field(default_factory=PushSettings)
    max_body_bytes: int = 64 * 1024
    max_message_chars: int = 4000
    delivery_max_attempts: int = 8
    retry_base_seconds: float = 2.0
    email_digest_seconds: float = 180.0
    # Claims last this long unless their worker renews them (every third of it): a dead
    # worker's deliveries are taken over within about this long.
    lease_seconds: float = 10.0
    sweep_interval_seconds: float = 5.0
    log_json: bool = False
    # A comment line on idle SSE streams (a ping on WebSockets) this often: keeps proxies from
    # closing them and lets the gateway notice a client that went away.
    stream_heartbeat_seconds: float = 25.0
    # Open live connections (SSE, WebSocket, waiting long polls) per user per gateway process.
    streams_per_user: int = 20
    # Events waiting to be written to one connection; a reader that falls this far behind is
    # disconnected (it resumes from the database when it reconnects).
    stream_queue_size: int = 1000
    # One-minute windows (from a subject's first hit) shared by every web process through the
    # database; 0 turns one off.
    rate_signin_per_account: int = 10
    rate_signin_per_address: int = 100
    rate_sends_per_user: int = 300
    # Where `chinwag worker` serves its own /metrics (push outcomes, in-flight); 0 = not served.
    metrics_port: int = 0
    # Sign-ups per client address per hour (0: off).
    rate_signup_per_address_per_hour: int = 20
    # Networks of reverse proxies whose X-Forwarded-For is believed (CIDRs or addresses).
    trusted_proxies: tuple[str, ...] = ()
    max_devices_per_user: int = 50
    # A new email device gets a verification code and nothing else until the code comes back.
    verify_email_devices: bool = True
    # A token unused this many days stops working (0: never expires).
    token_idle_days: float = 90.0
    # When set, GET /metrics wants "Authorization: Bearer <this>".
    metrics_token: str | None = None

    @property
    def effective_queue_url(self) -> str:
        """The queue defaults to a SQLite file beside the database (or beside cwd)."""
        if self.queue_url:
            return self.queue_url
        if self.database_url.startswith("sqlite:///") and self.database_url != "sqlite:///:memory:":
            db_path = Path(self.database_url.removeprefix("sqlite:///"))
            return f"sqlite:///{db_path.with_name(db_path.stem + '-queue.db')}"
        return "sqlite:///chinwag-queue.db"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        file_values = _read_config_file(env.get("CHINWAG_CONFIG"))
        apps = _apps_from(env, file_values.get("apps", {}))
        push = PushSettings(
            apps=apps,
            webpush=_webpush_from(env),
            smtp=_smtp_from(env),
            webhook_secret=env.get("CHINWAG_WEBHOOK_SECRET") or None,
            ca_file=_optional_path(env.get("CHINWAG_CA_FILE")),
            allow_private_endpoints=_list(env.get("CHINWAG_ALLOW_PRIVATE_ENDPOINTS", "")),
            max_in_flight=_int(env, "CHINWAG_MAX_IN_FLIGHT", PushSettings.max_in_flight),
        )
        return cls(
            database_url=env.get("CHINWAG_DATABASE_URL") or "sqlite:///chinwag.db",
            queue_url=env.get("CHINWAG_QUEUE_URL") or None,
            host=env.get("CHINWAG_HOST") or "127.0.0.1",
            port=_int(env, "CHINWAG_PORT", 8080),
            push=push,
            max_body_bytes=_int(env, "CHINWAG_MAX_BODY_BYTES", 64 * 1024),
            delivery_max_attempts=_int(env, "CHINWAG_DELIVERY_MAX_ATTEMPTS", 8),
            retry_base_seconds=float(env.get("CHINWAG_RETRY_BASE_SECONDS") or 2.0),
            email_digest_seconds=float(env.get("CHINWAG_EMAIL_DIGEST_SECONDS") or 180.0),
            lease_seconds=float(env.get("CHINWAG_LEASE_SECONDS") or 10.0),
            sweep_interval_seconds=float(env.get("CHINWAG_SWEEP_INTERVAL") or 5.0),
            log_json=(env.get("CHINWAG_LOG_FORMAT") or "").lower() == "json",
            rate_signin_per_account=_int(env, "CHINWAG_RATE_SIGNIN_PER_MINUTE", 10),
            rate_signin_per_address=_int(env, "CHINWAG_RATE_SIGNIN_PER_ADDRESS_PER_MINUTE", 100),
            rate_sends_per_user=_int(env, "CHINWAG_RATE_SENDS_PER_MINUTE", 300),
            metrics_port=_int(env, "CHINWAG_METRICS_PORT", 0),
            stream_heartbeat_seconds=float(env.get("CHINWAG_STREAM_HEARTBEAT_SECONDS") or 25.0),
            streams_per_user=_int(env, "CHINWAG_STREAMS_PER_USER", 20),
            stream_queue_size=_int(env, "CHINWAG_STREAM_QUEUE_SIZE", 1000),
            rate_signup_per_address_per_hour=_int(
                env, "CHINWAG_RATE_SIGNUP_PER_ADDRESS_PER_HOUR", 20
            ),
            trusted_proxies=_networks(env, "CHINWAG_TRUSTED_PROXIES"),
            max_devices_per_user=_int(env, "CHINWAG_MAX_DEVICES_PER_USER", 50),
            verify_email_devices=_bool(env, "CHINWAG_VERIFY_EMAIL_DEVICES", True),
            token_idle_days=_float(env, "CHINWAG_TOKEN_IDLE_DAYS", 90.0),
            metrics_token=env.get("CHINWAG_METRICS_TOKEN") or None,
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    entries = _list(env.get(name, ""))
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {entry!r} is not an address or CIDR") from None
    return entries


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _optional_path(raw: str | None) -> Path | None:
    return Path(raw) if raw else None


def _read_config_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"CHINWAG_CONFIG names {path!r}, which does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"CHINWAG_CONFIG {path!r} is not valid TOML: {exc}") from None


def _apps_from(env: Mapping[str, str], file_apps: Mapping[str, Any]) -> dict[str, AppSettings]:
    apps: dict[str, AppSettings] = {}
    default = AppSettings(
        name=DEFAULT_APP,
        apns=_apns_from(
            {
                "key_file": env.get("CHINWAG_APNS_KEY_FILE"),
                "key_id": env.get("CHINWAG_APNS_KEY_ID"),
                "team_id": env.get("CHINWAG_APNS_TEAM_ID"),
                "topic": env.get("CHINWAG_APNS_TOPIC"),
                "url": env.get("CHINWAG_APNS_URL"),
            },
            "CHINWAG_APNS_*",
        ),
        fcm=_fcm_from(
            {"credentials": env.get("CHINWAG_FCM_CREDENTIALS"), "url": env.get("CHINWAG_FCM_URL")},
            "CHINWAG_FCM_*",
        ),
    )
    if default.apns or default.fcm:
        apps[DEFAULT_APP] = default
    for name, table in file_apps.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"[apps.{name}] must be a table")
        apps[name] = AppSettings(
            name=name,
            apns=_apns_from(table.get("apns", {}), f"[apps.{name}.apns]"),
            fcm=_fcm_from(table.get("fcm", {}), f"[apps.{name}.fcm]"),
        )
    return apps


def _apns_from(values: Mapping[str, Any], where: str) -> ApnsSettings | None:
    required = ("key_file", "key_id", "team_id", "topic")
    present = [key for key in required if values.get(key)]
    if not present:
        return None
    missing = [key for key in required if not values.get(key)]
    if missing:
        raise ConfigError(f"{where}: APNs needs {', '.join(required)}; missing {missing}")
    return ApnsSettings(
        key_file=Path(values["key_file"]),
        key_id=str(values["key_id"]),
        team_id=str(values["team_id"]),
        topic=str(values["topic"]),
        url=str(values.get("url") or "https://api.push.apple.com"),
    )


def _fcm_from(values: Mapping[str, Any], where: str) -> FcmSettings | None:
    if not values.get("credentials"):
        if values.get("url"):
            raise ConfigError(f"{where}: an FCM url was given without credentials")
        return None
    return FcmSettings(
        credentials=Path(values["credentials"]),
        url=str(values.get("url") or "https://fcm.googleapis.com"),
    )


def _webpush_from(env: Mapping[str, str]) -> WebPushSettings:
    """Web Push is always on: without CHINWAG_VAPID_PRIVATE_KEY a key is generated once and kept
    in the database; without CHINWAG_VAPID_SUBJECT the subject is CHINWAG_EMAIL_FROM's address."""
    key = env.get("CHINWAG_VAPID_PRIVATE_KEY")
    subject = env.get("CHINWAG_VAPID_SUBJECT")
    if not subject:
        address = parseaddr(env.get("CHINWAG_EMAIL_FROM") or "")[1]
        subject = f"mailto:{address}" if "@" in address else DEFAULT_VAPID_SUBJECT
    if not subject.startswith(("mailto:", "https:")):
        raise ConfigError("CHINWAG_VAPID_SUBJECT must be a mailto: or https: URL")
    return WebPushSettings(vapid_private_key=Path(key) if key else None, vapid_subject=subject)


def _smtp_from(env: Mapping[str, str]) -> SmtpSettings | None:
    url = env.get("CHINWAG_SMTP_URL")
    if not url:
        return None
    sender = env.get("CHINWAG_EMAIL_FROM")
    if not sender:
        raise ConfigError("CHINWAG_SMTP_URL is set but CHINWAG_EMAIL_FROM is not")
    return SmtpSettings(url=url, email_from=sender)
