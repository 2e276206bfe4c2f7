"""``chinwag demo``: a fan-out to watch in under a minute, with nothing to configure.

Starts the local fake providers, migrates a SQLite database in a directory of its own, seeds
alice, bob and carol with fake devices of every platform and a group chat, then runs one web
process and one worker (supervised child processes, as ``chinwag serve`` does) pointed at the
fakes, and prints the URL and the credentials.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chinwag.config import Settings
from chinwag.fakes.suite import RunningFakes
from chinwag.store.database import Database

DEMO_PASSWORD = "chinwag-demo"
CHAT_TITLE = "Lunch"
PEOPLE = (("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol"))
# Quick retries and sweeps so that a newcomer sees every state change within seconds.
ENGINE_ENV = {"CHINWAG_SWEEP_INTERVAL": "1", "CHINWAG_RETRY_BASE_SECONDS": "0.5"}


@dataclass(frozen=True)
class SeededDevice:
    username: str
    platform: str
    token: str | dict[str, Any]


def demo_devices(fakes: RunningFakes) -> list[SeededDevice]:
    """One device of every platform, each pointing at a fake that accepts it."""
    providers = fakes.providers
    return [
        SeededDevice("alice", "apns", "a1" * 32),
        SeededDevice("alice", "email", "alice@example.com"),
        SeededDevice("bob", "apns", "b0" * 32),
        SeededDevice("bob", "fcm", "bob-fcm-registration-token-0001"),
        SeededDevice("bob", "webpush", fakes.run(providers.webpush.new_subscription)),
        SeededDevice("carol", "email", "carol@example.com"),
        SeededDevice("carol", "webhook", providers.webhook.hook_url("carol")),
    ]


def seed(db: Database, fakes: RunningFakes) -> list[SeededDevice]:
    """Users (created once; alice is an operator), their devices and the group."""
    from chinwag.chat import accounts, chats, devices
    from chinwag.chat.errors import Conflict

    users = {}
    for username, display_name in PEOPLE:
        # A demo directory used again keeps its people and history.
        with contextlib.suppress(Conflict):
            accounts.create_user(db, username, DEMO_PASSWORD, display_name)
        _token, users[username] = accounts.issue_token(db, username, DEMO_PASSWORD)
    accounts.set_admin(db, "alice", True)
    allow = fakes.providers.settings().allow_private_endpoints
    seeded = demo_devices(fakes)
    for device in seeded:
        registered = devices.register_device(
            db, users[device.username], device.platform, device.token, allow_private=allow
        )
        if registered.webhook_secret:  # the receiver checks the device's own signing key
            fakes.providers.webhook.hook_secrets[registered.token] = registered.webhook_secret
    if not any(c.title == CHAT_TITLE for c in chats.list_chats(db, users["alice"])):
        chats.create_chat(db, users["alice"], CHAT_TITLE, ["bob", "carol"])
    return seeded


def _free_port(host: str, wanted: int = 0) -> int | None:
    """``wanted`` if nothing listens there (any free port for 0), else None."""
    with socket.socket() as probe:
        # As waitress does, so that connections of a previous run in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, wanted))
        except OSError:
            return None
        port: int = probe.getsockname()[1]
        return port


def _parse(argv: Sequence[str], settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chinwag demo", description="Fake providers, seeded users and a running chinwag."
    )
    parser.add_argument("--dir", type=Path, help="database and fake keys (default: a temp dir)")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port, help="0 picks a free port")
    parser.add_argument("--log-level", default="WARNING", help="of the web and worker processes")
    return parser.parse_args(list(argv))


def _wait_healthy(url: str, timeout: float, stopping: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping.is_set():
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def run_demo(settings: Settings, argv: Sequence[str]) -> int:
    args = _parse(argv, settings)
    port = _free_port(args.host, args.port)
    if port is None:
        print(
            f"chinwag demo: {args.host}:{args.port} is in use; pick another --port", file=sys.stderr
        )
        return 2
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        return _run_demo_in(args, settings, args.dir, port)
    # A directory of our own making goes when the demo stops, Ctrl-C included.
    with tempfile.TemporaryDirectory(prefix="chinwag-demo-") as temporary:
        return _run_demo_in(args, settings, Path(temporary), port)


def _run_demo_in(args: argparse.Namespace, settings: Settings, directory: Path, port: int) -> int:
    from chinwag.bootstrap import open_database
    from chinwag.supervisor import Supervisor

    url = f"http://{args.host}:{port}"
    database_url = f"sqlite:///{directory / 'chinwag.db'}"
    fakes = RunningFakes.start(directory / "fakes")
    try:
        db = open_database(settings.with_overrides(database_url=database_url), migrate=True)
        try:
            seeded = seed(db, fakes)
        finally:
            db.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
        env.update(fakes.env())
        env.update(ENGINE_ENV)
        env.update(
            {
                "CHINWAG_DATABASE_URL": database_url,
                "CHINWAG_HOST": args.host,
                "CHINWAG_PORT": str(port),
            }
        )
        supervisor = Supervisor(
            {"web": ["web"], "worker": ["worker", "--processes", "1"]}, env, args.log_level
        )
        stopping = threading.Event()

        def stop(*_: object) -> None:
            stopping.set()
            supervisor.request_stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
        result: list[int] = []
        running = threading.Thread(target=lambda: result.append(supervisor.run()), daemon=True)
        running.start()
        if _wait_healthy(url, 30, stopping):
            _print_banner(url, directory, seeded)
        elif not stopping.is_set():
            print("chinwag demo: the web process did not come up; see its output above")
            stop()
        # Join in slices so that the main thread keeps handling Ctrl-C.
        while running.is_alive():
            running.join(0.2)
        return result[0] if result else 1
    finally:
        fakes.stop()


def _print_banner(url: str, directory: Path, seeded: list[SeededDevice]) -> None:
    devices: dict[str, list[str]] = {}
    for device in seeded:
        devices.setdefault(device.username, []).append(device.platform)
    print(f"\nchinwag demo running at {url}\n", flush=True)
    print(f'  sign in as alice, bob or carol, password "{DEMO_PASSWORD}"')
    print(f"  the group {CHAT_TITLE!r} has all three; alice is an operator: {url}/admin")
    for username, platforms in devices.items():
        print(f"  {username}'s devices: {', '.join(platforms)}")
    print(f"  metrics: {url}/metrics · API: {url}/openapi.json")
    print(f"  database and fake providers' keys in {directory}")
    print("  send a message as alice and click the line under it to watch each device.")
    print("  Ctrl-C stops.\n", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    return run_demo(Settings.from_env(), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
