"""All fakes together: FakeProviders, RunningFakes and the `chinwag fakes` command."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from chinwag.config import Settings
from chinwag.fakes.suite import FakeProviders, RunningFakes
from chinwag.push import DeviceTarget, Notification, Outcome, OutcomeKind, Platform, Senders

ROOT = Path(__file__).resolve().parents[2]
NOTE = Notification(chat_id=1, message_id=2, chat_title="All", sender_name="Eve", preview="hey")
APNS_TOKEN = "c0ffee" * 11 + "00"


def targets(subscription: dict[str, object], hook_url: str) -> list[DeviceTarget]:
    tokens = [
        (Platform.APNS, APNS_TOKEN),
        (Platform.FCM, "fcm-token"),
        (Platform.WEBPUSH, json.dumps(subscription)),
        (Platform.EMAIL, "someone@example.org"),
        (Platform.WEBHOOK, hook_url),
    ]
    return [
        DeviceTarget(i, platform, token, f"00000000-0000-4000-8000-{i:012d}")
        for i, (platform, token) in enumerate(tokens, start=1)
    ]


async def send_all(senders: Senders, devices: list[DeviceTarget]) -> list[Outcome]:
    try:
        return list(await asyncio.gather(*(senders.send(d, NOTE) for d in devices)))
    finally:
        await senders.aclose()


def test_fake_providers_accept_one_notification_per_platform(tmp_path: Path) -> None:
    """settings() points every sender at its fake; each platform delivers and is counted."""

    async def main() -> tuple[list[Outcome], int, dict[str, int]]:
        fakes = FakeProviders(tmp_path)
        await fakes.start()
        try:
            devices = targets(fakes.webpush.new_subscription(), fakes.webhook.hook_url())
            outcomes = await send_all(Senders.from_settings(fakes.settings()), devices)
            return outcomes, fakes.delivered_count(), fakes.accepted_counts()
        finally:
            await fakes.stop()

    outcomes, delivered, counts = asyncio.run(main())
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 5, outcomes
    assert delivered == 5
    assert set(counts.values()) == {1}


def test_env_configures_chinwag_like_settings(tmp_path: Path) -> None:
    """env() read back by Settings.from_env gives the same push settings as settings()."""

    async def main() -> tuple[dict[str, str], Settings, FakeProviders]:
        fakes = FakeProviders(tmp_path)
        await fakes.start()
        await fakes.stop()
        return fakes.env(), Settings.from_env(fakes.env()), fakes

    env, settings, fakes = asyncio.run(main())
    assert settings.push == fakes.settings()
    assert env["CHINWAG_ALLOW_PRIVATE_ENDPOINTS"] == "127.0.0.1/32"
    for name in ("APNS_KEY_FILE", "FCM_CREDENTIALS", "VAPID_PRIVATE_KEY", "CA_FILE"):
        assert Path(env[f"CHINWAG_{name}"]).is_file()


def test_running_fakes_serve_code_on_another_loop(tmp_path: Path) -> None:
    """RunningFakes runs on its own thread; a sender on the test's loop delivers to it."""
    running = RunningFakes.start(tmp_path)
    try:
        subscription = running.run(running.providers.webpush.new_subscription)
        running.run(running.providers.add_dead_token, "dead@example.org")
        settings = Settings.from_env(running.env())
        devices = targets(subscription, running.providers.webhook.hook_url())
        devices.append(DeviceTarget(9, Platform.EMAIL, "dead@example.org", "d9"))
        outcomes = asyncio.run(send_all(Senders.from_settings(settings.push), devices))
        delivered = running.run(running.providers.delivered_count)
    finally:
        running.stop()
    assert [o.kind for o in outcomes[:5]] == [OutcomeKind.DELIVERED] * 5
    assert outcomes[5].kind is OutcomeKind.TOKEN_DEAD
    assert delivered == 5


def test_chinwag_fakes_command_prints_working_settings(tmp_path: Path) -> None:
    """`chinwag fakes` prints shell exports that reach live fakes, and stops on SIGTERM."""
    command = [
        sys.executable,
        "-c",
        "import sys; from chinwag.fakes.suite import main; sys.exit(main())",
        "--dir",
        str(tmp_path),
        "--latency",
        "0",
        "--error-rate",
        "0",
        "--seed",
        "1",
        "--dead-token",
        "gone-token",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        assert process.stdout is not None
        exported: dict[str, str] = {}
        for line in process.stdout:
            if line.startswith("export "):
                [assignment] = shlex.split(line.removeprefix("export "))
                name, _, value = assignment.partition("=")
                exported[name] = value
            if line.startswith("# Web Push"):
                break
        settings = Settings.from_env(exported)
        devices = [
            DeviceTarget(1, Platform.FCM, "fcm-token", "d1"),
            DeviceTarget(2, Platform.FCM, "gone-token", "d2"),
            DeviceTarget(3, Platform.APNS, APNS_TOKEN, "00000000-0000-4000-8000-000000000003"),
        ]
        outcomes = asyncio.run(send_all(Senders.from_settings(settings.push), devices))
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert set(exported) >= {
        "CHINWAG_APNS_KEY_FILE",
        "CHINWAG_APNS_KEY_ID",
        "CHINWAG_APNS_TEAM_ID",
        "CHINWAG_APNS_TOPIC",
        "CHINWAG_APNS_URL",
        "CHINWAG_FCM_CREDENTIALS",
        "CHINWAG_FCM_URL",
        "CHINWAG_VAPID_PRIVATE_KEY",
        "CHINWAG_VAPID_SUBJECT",
        "CHINWAG_SMTP_URL",
        "CHINWAG_EMAIL_FROM",
        "CHINWAG_WEBHOOK_SECRET",
        "CHINWAG_CA_FILE",
        "CHINWAG_ALLOW_PRIVATE_ENDPOINTS",
    }
    assert [o.kind for o in outcomes] == [
        OutcomeKind.DELIVERED,
        OutcomeKind.TOKEN_DEAD,
        OutcomeKind.DELIVERED,
    ]
