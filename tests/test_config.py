"""The settings table: what Settings reads, and docs/operations.md held to it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chinwag.config import (
    DEFAULT_VAPID_SUBJECT,
    SETTINGS,
    ConfigError,
    PushSettings,
    Settings,
    WebPushSettings,
)

OPERATIONS = Path(__file__).parent.parent / "docs" / "operations.md"
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<meaning>[^|]*?) \| (?P<default>[^|]*?) \|$")


def documented_settings() -> dict[str, str]:
    """The rows of the "Settings" table of docs/operations.md: variable -> default as written."""
    section = OPERATIONS.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match and match["name"].startswith("CHINWAG_"):
            rows[match["name"]] = match["default"]
    return rows


def test_operations_lists_every_setting_with_its_default() -> None:
    """Every variable of the table has a row of its own in docs/operations.md, same default."""
    documented = documented_settings()
    for setting in SETTINGS:
        assert setting.name in documented, f"{setting.name} is not in docs/operations.md"
        written = documented[setting.name].replace("`", "")
        assert written == setting.documented_default.replace("`", ""), setting.name


def test_operations_names_no_setting_the_table_lacks() -> None:
    """Each CHINWAG_* variable named anywhere in docs/operations.md is one of the table's."""
    named = set(re.findall(r"CHINWAG_[A-Z0-9_]*[A-Z0-9]", OPERATIONS.read_text()))
    assert named - {setting.name for setting in SETTINGS} == set()


def test_defaults_of_settings_are_the_tables() -> None:
    """An empty environment gives the declared defaults, and so does Settings() (but for Web Push,
    which the environment always turns on, with a generated key, while code turns it on itself)."""
    from_env = Settings.from_env({})
    web_push_on = WebPushSettings(vapid_private_key=None, vapid_subject=DEFAULT_VAPID_SUBJECT)
    assert from_env == Settings(push=PushSettings(webpush=web_push_on))
    for setting in SETTINGS:
        if setting.field is None:
            continue
        holder = from_env.push if setting.field.startswith("push.") else from_env
        assert getattr(holder, setting.field.removeprefix("push.")) == setting.default


def test_values_are_read_by_kind() -> None:
    """Numbers, flags and lists are parsed; a malformed one is a ConfigError naming it."""
    settings = Settings.from_env(
        {
            "CHINWAG_PORT": "9000",
            "CHINWAG_LEASE_SECONDS": "2.5",
            "CHINWAG_VERIFY_EMAIL_DEVICES": "off",
            "CHINWAG_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1",
            "CHINWAG_MAX_IN_FLIGHT": "7",
            "CHINWAG_LOG_FORMAT": "JSON",
        }
    )
    assert (settings.port, settings.lease_seconds, settings.verify_email_devices) == (
        9000,
        2.5,
        False,
    )
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.1")
    assert settings.push.max_in_flight == 7 and settings.log_json
    for name, raw in [
        ("CHINWAG_PORT", "eighty"),
        ("CHINWAG_TOKEN_IDLE_DAYS", "soon"),
        ("CHINWAG_VERIFY_EMAIL_DEVICES", "maybe"),
        ("CHINWAG_TRUSTED_PROXIES", "proxy.internal"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: raw})
