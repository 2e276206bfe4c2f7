"""Settings, read once from the environment (and an optional TOML file for several apps).

The environment variables are part of the public contract (docs/operations.md lists them); a
config file named by ``CHINWAG_CONFIG`` may add more, chiefly one ``[apps.<name>]`` table per
mobile app so that one chinwag serves several APNs topics / FCM projects. The single-app
variables keep working: they define the app named ``default``.

Every variable is declared once, in ``SETTINGS``: its name, how its text is read, its default and
what it means. ``Settings`` takes its defaults from there, and ``tests/test_config.py`` holds
docs/operations.md to the same table.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal

DEFAULT_APP = "default"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


Kind = Literal["text", "int", "number", "bool", "list", "networks", "path"]


@dataclass(frozen=True)
class Setting:
    """One environment variable of the contract."""

    name: str  # CHINWAG_*
    kind: Kind
    default: Any
    help: str
    # The attribute of Settings it fills ("push.x": of PushSettings); None when it is read by
    # its own code (the provider groups, CHINWAG_CONFIG, the log settings).
    field: str | None = None
    # The default in words, where it is not a value (computed, or the absence of one).
    shown: str | None = None

    @property
    def documented_default(self) -> str:
        """The default as docs/operations.md writes it."""
        if self.shown is not None:
            return self.shown
        if self.default is None:
            return "—"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)

    def read(self, env: Mapping[str, str]) -> Any:
        """The value in ``env``, or the default when the variable is unset or empty."""
        raw = (env.get(self.name) or "").strip()
        if not raw:
            return self.default
        # A malformed value is a ConfigError that names the variable and says what it is for.
        return _READERS[self.kind](f"{self.name} ({self.help})", raw)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "CHINWAG_DATABASE_URL",
        "text",
        "sqlite:///chinwag.db",
        "SQLAlchemy URL (`sqlite:///…`, `postgresql://…`)",
        "database_url",
    ),
    Setting(
        "CHINWAG_QUEUE_URL",
        "text",
        None,
        "`sqlite:///…`, `redis://…`, `postgresql://…`",
        "queue_url",
        shown="SQLite file beside the database",
    ),
    Setting("CHINWAG_HOST", "text", "127.0.0.1", "web listen address", "host"),
    Setting("CHINWAG_PORT", "int", 8080, "web listen port", "port"),
    Setting("CHINWAG_APNS_KEY_FILE", "path", None, "APNs token auth: the .p8 key"),
    Setting("CHINWAG_APNS_KEY_ID", "text", None, "APNs token auth: the key id"),
    Setting("CHINWAG_APNS_TEAM_ID", "text", None, "APNs token auth: the team id"),
    Setting("CHINWAG_APNS_TOPIC", "text", None, "APNs token auth: the bundle id"),
    Setting("CHINWAG_APNS_URL", "text", "https://api.push.apple.com", "APNs base URL"),
    Setting("CHINWAG_FCM_CREDENTIALS", "path", None, "Google service-account JSON file"),
    Setting("CHINWAG_FCM_URL", "text", "https://fcm.googleapis.com", "FCM base URL"),
    Setting(
        "CHINWAG_VAPID_PRIVATE_KEY",
        "path",
        None,
        "Web Push VAPID key (P-256 PEM file)",
        shown='generated once and kept in the database (see "Web Push keys and UnifiedPush")',
    ),
    Setting(
        "CHINWAG_VAPID_SUBJECT",
        "text",
        None,
        "the contact in every VAPID token: `mailto:` or `https:` URL",
        shown="`mailto:` + the address of `CHINWAG_EMAIL_FROM` when set, "
        "else `mailto:chinwag@localhost`",
    ),
    Setting("CHINWAG_SMTP_URL", "text", None, "`smtp://user:pass@host:port` or `smtps://`"),
    Setting("CHINWAG_EMAIL_FROM", "text", None, "sender of notification emails"),
    Setting(
        "CHINWAG_WEBHOOK_SECRET",
        "text",
        None,
        "HMAC-SHA256 key of the `X-Chinwag-Signature` header",
        "push.webhook_secret",
    ),
    Setting(
        "CHINWAG_CA_FILE", "path", None, "extra CA bundle for provider connections", "push.ca_file"
    ),
    Setting(
        "CHINWAG_ALLOW_PRIVATE_ENDPOINTS",
        "list",
        (),
        "hosts or CIDRs webhook and Web Push endpoints may reach although private",
        "push.allow_private_endpoints",
        shown="none",
    ),
    Setting("CHINWAG_CONFIG", "path", None, "TOML file with `[apps.<name>]` tables"),
    # HTTP/2 multiplexes the requests over few connections (APNs allows 1,000 streams per
    # connection; the APNs sender keeps two). At 200 ms a provider round trip, 500 capped a
    # worker at 2,500/s; with 2,000, 10,000 devices are notified in under 5 s (docs/benchmarks.md).
    Setting(
        "CHINWAG_MAX_IN_FLIGHT",
        "int",
        2000,
        "sends in flight per provider in each worker process",
        "push.max_in_flight",
    ),
    Setting(
        "CHINWAG_DELIVERY_MAX_ATTEMPTS",
        "int",
        8,
        "attempts before a delivery is `failed`",
        "delivery_max_attempts",
    ),
    Setting("CHINWAG_RETRY_BASE_SECONDS", "number", 2.0, "first retry delay", "retry_base_seconds"),
    Setting(
        "CHINWAG_LEASE_SECONDS",
        "number",
        10.0,
        "how long a claim lasts unless its worker renews it",
        "lease_seconds",
    ),
    Setting(
        "CHINWAG_SWEEP_INTERVAL",
        "number",
        5.0,
        "seconds between sweeps when no doorbell rings",
        "sweep_interval_seconds",
    ),
    Setting(
        "CHINWAG_EMAIL_DIGEST_SECONDS",
        "number",
        180.0,
        "at most one email per device and chat this often",
        "email_digest_seconds",
    ),
    Setting("CHINWAG_MAX_BODY_BYTES", "int", 64 * 1024, "largest request body", "max_body_bytes"),
    Setting(
        "CHINWAG_STREAMS_PER_USER",
        "int",
        20,
        "live connections per user per gateway process",
        "streams_per_user",
    ),
    Setting(
        "CHINWAG_STREAM_HEARTBEAT_SECONDS",
        "number",
        25.0,
        "heartbeat on idle live connections",
        "stream_heartbeat_seconds",
    ),
    Setting(
        "CHINWAG_STREAM_QUEUE_SIZE",
        "int",
        1000,
        "events queued for one live connection before it is dropped",
        "stream_queue_size",
    ),
    Setting(
        "CHINWAG_RATE_SIGNIN_PER_MINUTE",
        "int",
        10,
        "sign-ins per account (and address) per minute",
        "rate_signin_per_account",
    ),
    Setting(
        "CHINWAG_RATE_SIGNIN_PER_ADDRESS_PER_MINUTE",
        "int",
        100,
        "sign-ins per client address per minute",
        "rate_signin_per_address",
    ),
    Setting(
        "CHINWAG_RATE_SENDS_PER_MINUTE",
        "int",
        300,
        "messages sent per user per minute",
        "rate_sends_per_user",
    ),
    Setting(
        "CHINWAG_RATE_SIGNUP_PER_ADDRESS_PER_HOUR",
        "int",
        20,
        "sign-ups per client address per hour",
        "rate_signup_per_address_per_hour",
    ),
    Setting(
        "CHINWAG_TRUSTED_PROXIES",
        "networks",
        (),
        "addresses or CIDRs of the reverse proxies whose X-Forwarded-For is believed",
        "trusted_proxies",
        shown="none: `X-Forwarded-For` is ignored",
    ),
    Setting(
        "CHINWAG_MAX_DEVICES_PER_USER", "int", 50, "active devices per user", "max_devices_per_user"
    ),
    Setting(
        "CHINWAG_VERIFY_EMAIL_DEVICES",
        "bool",
        True,
        "a new email device gets nothing but a code until the code comes back",
        "verify_email_devices",
    ),
    Setting(
        "CHINWAG_TOKEN_IDLE_DAYS",
        "number",
        90.0,
        "an API token unused this many days stops working",
        "token_idle_days",
    ),
    Setting(
        "CHINWAG_DEVICE_STALE_DAYS",
        "number",
        270.0,
        "a device not registered again for this many days is deactivated",
        "device_stale_days",
    ),
    Setting(
        "CHINWAG_DEVICE_TEST_WAIT_SECONDS",
        "number",
        10.0,
        "how long POST /v1/devices/{id}/test waits for its outcome before a 202",
        "device_test_wait_seconds",
    ),
    Setting(
        "CHINWAG_METRICS_TOKEN",
        "text",
        None,
        "bearer token the web tier's /metrics wants",
        "metrics_token",
        shown="none: `/metrics` is public",
    ),
    Setting(
        "CHINWAG_METRICS_PORT",
        "int",
        0,
        "port of `chinwag worker`'s own /metrics",
        "metrics_port",
        shown="off",
    ),
    # Each of a worker's write transactions (claim, expansion, outcomes) holds SQLite's one write
    # lock while it runs; a send waits for it. `chinwag serve` bounds them to 200 rows.
    Setting(
        "CHINWAG_WORKER_BATCH",
        "int",
        1000,
        "rows a worker claims, expands or records per write transaction",
        "worker_batch",
    ),
    # 0: one per core the process may run on (chinwag.supervisor.worker_processes).
    Setting(
        "CHINWAG_WORKER_PROCESSES",
        "int",
        0,
        "worker processes of `chinwag worker` and `chinwag serve`",
        "worker_processes",
        shown="one per core",
    ),
    Setting("CHINWAG_LOG_FORMAT", "text", "text", "`json` for one JSON object per log line"),
    Setting("CHINWAG_LOG_LEVEL", "text", "INFO", "log level"),
)
SETTING = {setting.name: setting for setting in SETTINGS}


def default(name: str) -> Any:
    """The declared default of one variable."""
    return SETTING[name].default


@dataclass(frozen=True)
class ApnsSettings:
    key_file: Path
    key_id: str
    team_id: str
    topic: str
    url: str = default("CHINWAG_APNS_URL")


@dataclass(frozen=True)
class FcmSettings:
    credentials: Path
    url: str = default("CHINWAG_FCM_URL")


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
    webhook_secret: str | None = default("CHINWAG_WEBHOOK_SECRET")
    ca_file: Path | None = field(default=default("CHINWAG_CA_FILE"))
    allow_private_endpoints: tuple[str, ...] = default("CHINWAG_ALLOW_PRIVATE_ENDPOINTS")
    max_in_flight: int = default("CHINWAG_MAX_IN_FLIGHT")


@dataclass(frozen=True)
class Settings:
    """What the environment says, with each default from ``SETTINGS`` (the meanings are there)."""

    database_url: str = default("CHINWAG_DATABASE_URL")
    queue_url: str | None = default("CHINWAG_QUEUE_URL")
    host: str = default("CHINWAG_HOST")
    port: int = default("CHINWAG_PORT")
    push: PushSettings = field(default_factory=PushSettings)
    max_body_bytes: int = default("CHINWAG_MAX_BODY_BYTES")
    max_message_chars: int = 4000  # not a setting: the contract's limit
    delivery_max_attempts: int = default("CHINWAG_DELIVERY_MAX_ATTEMPTS")
    retry_base_seconds: float = default("CHINWAG_RETRY_BASE_SECONDS")
    email_digest_seconds: float = default("CHINWAG_EMAIL_DIGEST_SECONDS")
    lease_seconds: float = default("CHINWAG_LEASE_SECONDS")
    sweep_interval_seconds: float = default("CHINWAG_SWEEP_INTERVAL")
    log_json: bool = False  # CHINWAG_LOG_FORMAT=json
    stream_heartbeat_seconds: float = default("CHINWAG_STREAM_HEARTBEAT_SECONDS")
    streams_per_user: int = default("CHINWAG_STREAMS_PER_USER")
    stream_queue_size: int = default("CHINWAG_STREAM_QUEUE_SIZE")
    # Windows counted in the database (one minute; sign-ups one hour), shared by every web
    # process; 0 turns one off.
    rate_signin_per_account: int = default("CHINWAG_RATE_SIGNIN_PER_MINUTE")
    rate_signin_per_address: int = default("CHINWAG_RATE_SIGNIN_PER_ADDRESS_PER_MINUTE")
    rate_sends_per_user: int = default("CHINWAG_RATE_SENDS_PER_MINUTE")
    rate_signup_per_address_per_hour: int = default("CHINWAG_RATE_SIGNUP_PER_ADDRESS_PER_HOUR")
    metrics_port: int = default("CHINWAG_METRICS_PORT")
    worker_processes: int = default("CHINWAG_WORKER_PROCESSES")
    worker_batch: int = default("CHINWAG_WORKER_BATCH")
    trusted_proxies: tuple[str, ...] = default("CHINWAG_TRUSTED_PROXIES")
    max_devices_per_user: int = default("CHINWAG_MAX_DEVICES_PER_USER")
    verify_email_devices: bool = default("CHINWAG_VERIFY_EMAIL_DEVICES")
    token_idle_days: float = default("CHINWAG_TOKEN_IDLE_DAYS")
    device_stale_days: float = default("CHINWAG_DEVICE_STALE_DAYS")
    device_test_wait_seconds: float = default("CHINWAG_DEVICE_TEST_WAIT_SECONDS")
    metrics_token: str | None = default("CHINWAG_METRICS_TOKEN")

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
        values = {s.field: s.read(env) for s in SETTINGS if s.field}
        push_values = {
            name.removeprefix("push."): values.pop(name)
            for name in list(values)
            if name.startswith("push.")
        }
        file_values = _read_config_file(SETTING["CHINWAG_CONFIG"].read(env))
        push = PushSettings(
            apps=_apps_from(env, file_values.get("apps", {})),
            webpush=_webpush_from(env),
            smtp=_smtp_from(env),
            **push_values,
        )
        log_json = SETTING["CHINWAG_LOG_FORMAT"].read(env).lower() == "json"
        return cls(push=push, log_json=log_json, **values)


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _bool(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _networks(name: str, raw: str) -> tuple[str, ...]:
    entries = _list(name, raw)
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {entry!r} is not an address or CIDR") from None
    return entries


def _list(_name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _text(_name: str, raw: str) -> str:
    return raw


def _path(_name: str, raw: str) -> Path:
    return Path(raw)


_READERS: dict[Kind, Callable[[str, str], Any]] = {
    "text": _text,
    "int": _int,
    "number": _number,
    "bool": _bool,
    "list": _list,
    "networks": _networks,
    "path": _path,
}


_APNS_REQUIRED = ("key_file", "key_id", "team_id", "topic")


def _read_config_file(path: Path | None) -> dict[str, Any]:
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
    apns = {key: env.get(f"CHINWAG_APNS_{key.upper()}") for key in (*_APNS_REQUIRED, "url")}
    fcm = {key: env.get(f"CHINWAG_FCM_{key.upper()}") for key in ("credentials", "url")}
    single = AppSettings(
        name=DEFAULT_APP,
        apns=_apns_from(apns, "CHINWAG_APNS_*"),
        fcm=_fcm_from(fcm, "CHINWAG_FCM_*"),
    )
    if single.apns or single.fcm:
        apps[DEFAULT_APP] = single
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
    required = _APNS_REQUIRED
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
        url=str(values.get("url") or default("CHINWAG_APNS_URL")),
    )


def _fcm_from(values: Mapping[str, Any], where: str) -> FcmSettings | None:
    if not values.get("credentials"):
        if values.get("url"):
            raise ConfigError(f"{where}: an FCM url was given without credentials")
        return None
    return FcmSettings(
        credentials=Path(values["credentials"]),
        url=str(values.get("url") or default("CHINWAG_FCM_URL")),
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
