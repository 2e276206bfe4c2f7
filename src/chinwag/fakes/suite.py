"""All fake providers at once, sharing one PKI: for tests, benchmarks, the demo and `chinwag fakes`.

``FakeProviders`` runs on the caller's event loop; ``RunningFakes`` runs it on a loop of its own
in a background thread, for tests whose code under test lives in other processes (a web server,
workers) and only needs the environment printed by ``env()``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chinwag.config import DEFAULT_APP, AppSettings, PushSettings, WebPushSettings
from chinwag.fakes.apns import FakeApns
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.fcm import FakeFcm
from chinwag.fakes.smtp import FakeSmtp
from chinwag.fakes.tls import make_pki
from chinwag.fakes.webhook import FakeWebhookReceiver
from chinwag.fakes.webpush import FakeWebPush
from chinwag.files import write_private

T = TypeVar("T")

# The fakes all listen on 127.0.0.1; this lets chinwag's SSRF guard reach them and nothing else.
ALLOW_PRIVATE = "127.0.0.1/32"
VAPID_SUBJECT = "mailto:push@example.com"
EMAIL_FROM = "chinwag@example.com"
SUMMARY_INTERVAL = 5.0


def write_vapid_key(directory: Path) -> Path:
    """A P-256 application-server key in PEM, reused if one is already in ``directory``."""
    path = directory / "vapid.pem"
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return path


class FakeProviders:
    def __init__(
        self,
        directory: Path,
        *,
        faults: FaultPlan | None = None,
        apns_topic: str = "com.example.chat",
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.pki = make_pki(directory)
        self.webhook_secret = secrets.token_urlsafe(24)
        self.vapid_key_file = write_vapid_key(directory)
        self.apns = FakeApns(self.pki, directory, topic=apns_topic, faults=faults)
        self.fcm = FakeFcm(self.pki, directory, faults=faults)
        self.webpush = FakeWebPush(self.pki, faults=faults)
        self.smtp = FakeSmtp(self.pki, faults=faults, email_from=EMAIL_FROM)
        self.webhook = FakeWebhookReceiver(self.pki, secret=self.webhook_secret, faults=faults)

    def _fakes(self) -> list[Any]:
        return [self.apns, self.fcm, self.webpush, self.smtp, self.webhook]

    async def start(self) -> None:
        for fake in self._fakes():
            await fake.start()

    async def stop(self) -> None:
        for fake in self._fakes():
            await fake.stop()

    def add_dead_token(self, token: str) -> None:
        """Make every fake treat ``token`` as gone (device token, endpoint, address or URL)."""
        self.apns.dead_tokens.add(token)
        self.fcm.dead_tokens.add(token)
        self.webpush.dead_tokens.add(token)
        self.smtp.dead_tokens.add(token.lower())
        self.webhook.dead_tokens.add(token)

    def settings(self) -> PushSettings:
        return PushSettings(
            apps={
                DEFAULT_APP: AppSettings(
                    DEFAULT_APP, apns=self.apns.settings(), fcm=self.fcm.settings()
                )
            },
            webpush=WebPushSettings(self.vapid_key_file, VAPID_SUBJECT),
            smtp=self.smtp.settings(),
            webhook_secret=self.webhook_secret,
            ca_file=self.pki.ca_file,
            allow_private_endpoints=(ALLOW_PRIVATE,),
        )

    def env(self) -> dict[str, str]:
        apns = self.apns.settings()
        return {
            "CHINWAG_APNS_KEY_FILE": str(apns.key_file),
            "CHINWAG_APNS_KEY_ID": apns.key_id,
            "CHINWAG_APNS_TEAM_ID": apns.team_id,
            "CHINWAG_APNS_TOPIC": apns.topic,
            "CHINWAG_APNS_URL": apns.url,
            "CHINWAG_FCM_CREDENTIALS": str(self.fcm.credentials_file),
            "CHINWAG_FCM_URL": self.fcm.url,
            "CHINWAG_VAPID_PRIVATE_KEY": str(self.vapid_key_file),
            "CHINWAG_VAPID_SUBJECT": VAPID_SUBJECT,
            "CHINWAG_SMTP_URL": self.smtp.url,
            "CHINWAG_EMAIL_FROM": EMAIL_FROM,
            "CHINWAG_WEBHOOK_SECRET": self.webhook_secret,
            "CHINWAG_CA_FILE": str(self.pki.ca_file),
            "CHINWAG_ALLOW_PRIVATE_ENDPOINTS": ALLOW_PRIVATE,
        }

    def accepted_counts(self) -> dict[str, int]:
        return {
            "apns": len(self.apns.accepted),
            "fcm": len(self.fcm.accepted),
            "webpush": len(self.webpush.accepted),
            "email": len(self.smtp.accepted),
            "webhook": len(self.webhook.accepted),
        }

    def delivered_count(self) -> int:
        return sum(self.accepted_counts().values())


class RunningFakes:
    """``FakeProviders`` on its own event loop in a daemon thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._loop = loop
        self._thread = thread
        self.providers: FakeProviders

    @classmethod
    def start(cls, directory: Path, **kwargs: Any) -> RunningFakes:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="chinwag-fakes", daemon=True)
        thread.start()
        running = cls(loop, thread)

        async def build() -> FakeProviders:
            providers = FakeProviders(directory, **kwargs)
            await providers.start()
            return providers

        try:
            running.providers = running.call(build)
        except BaseException:
            running._stop_loop()
            raise
        return running

    def env(self) -> dict[str, str]:
        return self.providers.env()

    def call(self, coro_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``coro_fn(*args)`` on the fakes' loop and wait for its result."""

        async def invoke() -> T:
            return await coro_fn(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(timeout=60)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the fakes' loop (e.g. ``webpush.new_subscription``)."""

        async def invoke() -> T:
            return fn(*args)

        return self.call(invoke)

    def stop(self) -> None:
        try:
            self.call(self.providers.stop)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chinwag fakes",
        description="Run local fake APNs, FCM, Web Push, SMTP and webhook servers.",
    )
    parser.add_argument("--dir", type=Path, help="where keys and certificates go (default: temp)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of faulty answers")
    parser.add_argument(
        "--dead-token", action="append", default=[], help="a token every fake treats as gone"
    )
    parser.add_argument("--seed", type=int, help="seed of the fault choice, for repeatable runs")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace, directory: Path) -> None:
    faults = FaultPlan(latency=args.latency, error_rate=args.error_rate, seed=args.seed)
    providers = FakeProviders(directory, faults=faults)
    await providers.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        for token in args.dead_token:
            providers.add_dead_token(token)
        print(f"# chinwag fakes: keys and certificates in {directory}")
        for name, value in providers.env().items():
            print(f"export {name}={shlex.quote(value)}")
        print(f"# Web Push: POST {providers.webpush.url}/subscriptions for a new subscription")
        sys.stdout.flush()
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), SUMMARY_INTERVAL)
            except TimeoutError:
                counts = providers.accepted_counts()
                print("# accepted " + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
    finally:
        await providers.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`chinwag fakes`: run every fake in the foreground until SIGINT or SIGTERM."""
    args = _parse_args(argv)
    try:
        FaultPlan(latency=args.latency, error_rate=args.error_rate)
    except ValueError as exc:
        print(f"chinwag fakes: {exc}", file=sys.stderr)
        return 2
    directory = args.dir or Path(tempfile.mkdtemp(prefix="chinwag-fakes-"))
    asyncio.run(_serve(args, directory))
    return 0
