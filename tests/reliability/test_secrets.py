"""Secrets: a whole flow (sign-up, sign-in, wrong password, devices on every platform, a send
delivered everywhere) with the web and worker processes logging at DEBUG; then no password, API
token, provider key, provider bearer token, SMTP password or webhook secret may appear in any log
line or error body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from tests.reliability.support import WebProcess, write_figures
from tests.support.processes import ChinwagProcess, chinwag_env, wait_until

from chinwag.fakes.suite import RunningFakes
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PASSWORD = "correct horse battery staple"


def _key_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM key: any one of them in a log would leak part of the key."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def _logger_of(line: str) -> str:
    """The logger name in a default-format log line (time level name[pid] message)."""
    parts = line.split()
    return parts[3].split("[")[0] if len(parts) > 3 else "?"


def test_debug_logs_and_error_bodies_hold_no_secret(tmp_path: Path, fakes: RunningFakes) -> None:
    """Web and worker at DEBUG through a full flow: none of the secrets shows up anywhere."""
    providers = fakes.providers
    db = Database(f"sqlite:///{tmp_path / 'chinwag.db'}")
    upgrade(db)
    db.dispose()
    env = chinwag_env(
        f"sqlite:///{tmp_path / 'chinwag.db'}",
        f"sqlite:///{tmp_path / 'queue.db'}",
        fakes.env(),
        CHINWAG_LOG_LEVEL="DEBUG",
    )
    web = WebProcess(env, tmp_path / "web.log", "--log-level", "DEBUG")
    worker = ChinwagProcess(["--log-level", "DEBUG", "worker"], env, tmp_path / "worker.log")
    bodies: list[str] = []
    device_secrets: list[str] = []
    try:
        web.wait_ready()
        client = httpx.Client(base_url=web.url, timeout=10)
        for name in ("alice", "bob"):
            created = client.post("/v1/users", json={"username": name, "password": PASSWORD})
            assert created.status_code == 201, created.text
        wrong = client.post("/v1/tokens", json={"username": "alice", "password": PASSWORD + "!"})
        bodies.append(wrong.text)
        tokens = {}
        for name in ("alice", "bob"):
            signed_in = client.post("/v1/tokens", json={"username": name, "password": PASSWORD})
            tokens[name] = signed_in.json()["token"]
        garbled = client.get("/v1/me", headers={"Authorization": f"Bearer {tokens['bob']}x"})
        bodies.append(garbled.text)
        bob = {"Authorization": f"Bearer {tokens['bob']}"}
        alice = {"Authorization": f"Bearer {tokens['alice']}"}
        registrations: list[dict[str, Any]] = [
            {"platform": "apns", "token": "5e" * 32},
            {"platform": "fcm", "token": "secret-flow-fcm-token"},
            {"platform": "webpush", "token": fakes.run(providers.webpush.new_subscription)},
            {"platform": "email", "token": "bob@example.com"},
            {"platform": "webhook", "token": providers.webhook.hook_url("bob")},
        ]
        for registration in registrations:
            response = client.post("/v1/devices", json=registration, headers=bob)
            assert response.status_code == 201, response.text
            if response.json().get("webhook_secret"):
                device_secrets.append(response.json()["webhook_secret"])
                providers.webhook.hook_secrets[str(registration["token"])] = device_secrets[-1]
        chat = client.post(
            "/v1/chats", json={"title": "Secrets", "members": ["bob"]}, headers=alice
        ).json()
        sent = client.post(f"/v1/chats/{chat['id']}/messages", json={"body": "psst"}, headers=alice)
        assert sent.status_code == 201
        wait_until(lambda: providers.delivered_count() >= 5, 30, "all five platforms")
    finally:
        web.process.stop()
        worker.stop()
    logs = {"web": web.process.output(), "worker": worker.output()}
    assert "DEBUG" in logs["web"] + logs["worker"], "not logging at DEBUG?"

    smtp_password = urlsplit(providers.smtp.url).password or ""
    secrets: dict[str, list[str]] = {
        "password": [PASSWORD],
        "api tokens": list(tokens.values()),
        "APNs .p8 key": _key_lines(providers.apns.key_file.read_text()),
        "FCM private key": _key_lines(
            json.loads(providers.fcm.credentials_file.read_text())["private_key"]
        ),
        "VAPID key": _key_lines(providers.vapid_key_file.read_text()),
        "SMTP password": [smtp_password] if smtp_password else [],
        "webhook secret": [providers.webhook_secret],
        "webhook device secret": device_secrets,
        "APNs provider JWTs": list(providers.apns.jwts_seen),
        "FCM access tokens": list(providers.fcm._access_tokens),
    }
    assert all(secrets[k] for k in ("APNs .p8 key", "FCM private key", "APNs provider JWTs"))
    leaks = sorted(
        {
            (what, where, _logger_of(line))
            for what, values in secrets.items()
            for where, text in [*logs.items(), *(("error body", b) for b in bodies)]
            for line in text.splitlines()
            if any(value and value in line for value in values)
        }
    )
    write_figures(
        "secrets",
        {
            "log_bytes": {name: len(text) for name, text in logs.items()},
            "log_lines": {name: text.count("\n") for name, text in logs.items()},
            "secrets_checked": {what: len(values) for what, values in secrets.items()},
            "leaks": leaks,
        },
    )
    assert leaks == []
