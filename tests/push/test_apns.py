"""The APNs sender against the APNs fake, over real TLS and HTTP/2."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest

from chinwag.fakes.apns import FakeApns
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.tls import TestPKI, make_pki
from chinwag.push.apns import (
    MAX_PAYLOAD_BYTES,
    TOKEN_MIN_LIFETIME,
    TOKEN_REFRESH_AFTER,
    ApnsSender,
    ProviderTokens,
    SigningKey,
    apns_payload,
)
from chinwag.push.base import Network
from chinwag.push.model import (
    DeviceTarget,
    Notification,
    NotificationKind,
    Outcome,
    OutcomeKind,
    Platform,
    delivery_uuid,
)
from chinwag.push.registry import Senders
from chinwag.push.slots import ProviderSlots

NOTE = Notification(
    chat_id=7, message_id=42, chat_title="Climbing", sender_name="Ann", preview="Rope?", badge=3
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _device(device_id: int = 1, token: str | None = None) -> DeviceTarget:
    return DeviceTarget(
        device_id,
        Platform.APNS,
        token or secrets.token_hex(32),
        delivery_uuid(NOTE.message_id, device_id),
    )


Scenario = Callable[[FakeApns, Callable[..., ApnsSender]], Awaitable[None]]


def _limited(apns: ApnsSender, in_flight: int) -> Senders:
    """The registry around one APNs sender, with ``in_flight`` slots per provider."""
    slots = ProviderSlots(dict.fromkeys(Platform, in_flight))
    return Senders({(Platform.APNS, "default"): apns}, slots=slots)


def _run(pki: TestPKI, directory: Path, scenario: Scenario, **fake_options: Any) -> FakeApns:
    """Start a fake, hand the scenario a sender factory, close every sender afterwards."""

    async def main() -> FakeApns:
        fake = FakeApns(pki, directory, **fake_options)
        senders: list[ApnsSender] = []

        def sender(**options: Any) -> ApnsSender:
            settings = options.pop("settings", None) or fake.settings()
            network = Network(
                ca_file=options.pop("ca_file", pki.ca_file),
                timeout=options.pop("timeout", 10.0),
                max_connections=options.pop("max_connections", 2),
            )
            created = ApnsSender(settings=settings, network=network, **options)
            senders.append(created)
            return created

        async with fake:
            try:
                await scenario(fake, sender)
            finally:
                for created in senders:
                    await created.aclose()
        return fake

    return asyncio.run(main())


def test_delivers_with_exact_headers_and_payload(pki: TestPKI, tmp_path: Path) -> None:
    """A send is DELIVERED and Apple receives the documented headers and payload, byte-exact."""
    device = _device()

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        outcome = await sender().send(device, NOTE)
        assert outcome == Outcome(OutcomeKind.DELIVERED, status=200)

    fake = _run(pki, tmp_path, scenario)
    [record] = fake.accepted
    assert record.token == device.token
    assert record.apns_id == device.delivery_id
    headers = record.headers
    assert headers["apns-topic"] == "com.example.chat"
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "m42"  # per message: a re-send replaces, never doubles
    assert headers["apns-id"] == device.delivery_id
    assert abs(int(headers["apns-expiration"]) - (time.time() + 86400)) < 60
    bearer = headers["authorization"].removeprefix("bearer ")
    assert jwt.get_unverified_header(bearer)["kid"] == fake.key_id
    claims = jwt.decode(bearer, fake.public_key, algorithms=["ES256"])
    assert claims["iss"] == fake.team_id
    assert abs(claims["iat"] - time.time()) < 60
    assert record.payload == {
        "aps": {
            "alert": {"title": "Climbing", "body": "Ann: Rope?"},
            "sound": "default",
            "badge": 3,
            "thread-id": "7",  # per chat: the device groups a chat's notifications
        },
        "chat_id": 7,
        "message_id": 42,
    }


def test_badge_is_left_out_when_unknown() -> None:
    """Without a badge count the payload carries no badge key (so the icon is left alone)."""
    payload = json.loads(apns_payload(_device(), replace(NOTE, badge=None)))
    assert "badge" not in payload["aps"]


def test_dead_and_malformed_tokens_are_token_dead(pki: TestPKI, tmp_path: Path) -> None:
    """410 Unregistered is TOKEN_DEAD; a non-hex token is TOKEN_DEAD without any request."""
    dead = _device(1)

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        fake.dead_tokens.add(dead.token)
        apns = sender()
        outcome = await apns.send(dead, NOTE)
        assert (outcome.kind, outcome.reason, outcome.status) == (
            OutcomeKind.TOKEN_DEAD,
            "Unregistered",
            410,
        )
        requests = fake.stats.requests
        malformed = await apns.send(_device(2, token="../../3/device/" + "a" * 64), NOTE)
        assert (malformed.kind, malformed.reason) == (OutcomeKind.TOKEN_DEAD, "BadDeviceToken")
        assert fake.stats.requests == requests

    assert _run(pki, tmp_path, scenario).accepted == []


def test_wrong_topic_is_misconfigured_and_foreign_token_is_dead(
    pki: TestPKI, tmp_path: Path
) -> None:
    """A topic the key may not push to is MISCONFIGURED; a token of another app is TOKEN_DEAD."""
    foreign = _device(2)

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        wrong = sender(settings=fake.settings(topic="com.example.other"))
        outcome = await wrong.send(_device(1), NOTE)
        assert (outcome.kind, outcome.reason) == (OutcomeKind.MISCONFIGURED, "BadTopic")
        fake.topics.add("com.example.other")
        fake.token_topics[foreign.token] = "com.example.other"
        outcome = await sender().send(foreign, NOTE)
        assert (outcome.kind, outcome.reason) == (OutcomeKind.TOKEN_DEAD, "DeviceTokenNotForTopic")

    _run(pki, tmp_path, scenario)


def test_several_apps_share_one_fake_each_with_its_topic(pki: TestPKI, tmp_path: Path) -> None:
    """Two apps (two senders, two topics) each deliver under their own apns-topic."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        fake.topics.add("com.example.work")
        chat, work = sender(), sender(settings=fake.settings(topic="com.example.work"))
        outcomes = await asyncio.gather(chat.send(_device(1), NOTE), work.send(_device(2), NOTE))
        assert {outcome.kind for outcome in outcomes} == {OutcomeKind.DELIVERED}

    fake = _run(pki, tmp_path, scenario)
    assert sorted(record.headers["apns-topic"] for record in fake.accepted) == [
        "com.example.chat",
        "com.example.work",
    ]


def test_key_not_matching_the_key_id_is_misconfigured(pki: TestPKI, tmp_path: Path) -> None:
    """A JWT signed by a different .p8 under the right key id is InvalidProviderToken."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        impostor = FakeApns(pki, tmp_path / "other", key_id=fake.key_id, team_id=fake.team_id)
        settings = replace(fake.settings(), key_file=impostor.key_file)
        outcome = await sender(settings=settings).send(_device(), NOTE)
        assert (outcome.kind, outcome.reason, outcome.status) == (
            OutcomeKind.MISCONFIGURED,
            "InvalidProviderToken",
            403,
        )

    _run(pki, tmp_path, scenario)


def test_unreadable_key_fails_at_construction(tmp_path: Path, pki: TestPKI) -> None:
    """A key file that is not a P-256 .p8 raises ValueError when the sender is built."""
    fake = FakeApns(pki, tmp_path)
    fake.key_file.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError):
        ApnsSender(settings=fake.settings())


@pytest.mark.parametrize(
    ("fault", "status", "reason"),
    [("429", 429, "TooManyRequests"), ("5xx", 503, "ServiceUnavailable")],
)
def test_throttling_and_outages_retry_after_the_given_time(
    pki: TestPKI, tmp_path: Path, fault: str, status: int, reason: str
) -> None:
    """429 and 503 are RETRY with Apple's reason and the Retry-After seconds."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        fake.faults = FaultPlan(error_rate=1.0, faults=(fault,), retry_after=7)
        outcome = await sender().send(_device(), NOTE)
        assert outcome == Outcome(OutcomeKind.RETRY, reason, 7.0, status)

    _run(pki, tmp_path, scenario)


@pytest.mark.parametrize("fault", ["drop", "goaway"])
def test_lost_connection_is_retry_and_next_send_reconnects(
    pki: TestPKI, tmp_path: Path, fault: str
) -> None:
    """A dropped connection or GOAWAY gives RETRY (no exception); the next send reconnects."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        apns = sender()
        assert (await apns.send(_device(1), NOTE)).kind is OutcomeKind.DELIVERED
        fake.faults = FaultPlan(error_rate=1.0, faults=(fault,))
        lost = await apns.send(_device(2), NOTE)
        assert lost.kind is OutcomeKind.RETRY
        assert lost.reason == ("goaway" if fault == "goaway" else "connection_lost")
        fake.faults = FaultPlan()
        assert (await apns.send(_device(3), NOTE)).kind is OutcomeKind.DELIVERED

    fake = _run(pki, tmp_path, scenario)
    assert fake.stats.connections_opened == 2
    assert len(fake.accepted) == 2


def test_connection_faults_under_load_give_retry_never_an_exception(
    pki: TestPKI, tmp_path: Path
) -> None:
    """GOAWAYs and drops among 300 concurrent sends: every outcome DELIVERED or RETRY."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        fake.faults = FaultPlan(latency=0.005, error_rate=0.01, faults=("goaway", "drop"), seed=3)
        apns = sender()
        registry = _limited(apns, 20)
        outcomes = await asyncio.gather(*(registry.send(_device(i), NOTE) for i in range(300)))
        kinds = [outcome.kind for outcome in outcomes]
        assert set(kinds) == {OutcomeKind.DELIVERED, OutcomeKind.RETRY}
        # At least once: an answer lost with its connection may follow an accepted notification.
        assert kinds.count(OutcomeKind.DELIVERED) <= len(fake.accepted)
        assert apns.connections_opened == fake.stats.connections_opened >= 2

    _run(pki, tmp_path, scenario)


def test_stalled_stream_times_out_as_retry_without_blocking_others(
    pki: TestPKI, tmp_path: Path
) -> None:
    """A stalled answer becomes RETRY after the sender's timeout; the connection stays usable."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        apns = sender(timeout=0.3)
        fake.faults = FaultPlan(error_rate=1.0, faults=("stall",), stall_seconds=10)
        started = time.perf_counter()
        outcome = await apns.send(_device(1), NOTE)
        assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "timeout")
        assert 0.3 <= time.perf_counter() - started < 5  # the stall lasts 10 s
        fake.faults = FaultPlan()
        assert (await apns.send(_device(2), NOTE)).kind is OutcomeKind.DELIVERED
        assert apns.connections_opened == 1

    _run(pki, tmp_path, scenario)


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_each_request_keeps_its_own_time_limit_and_a_timed_out_stream_is_reset(
    pki: TestPKI, tmp_path: Path
) -> None:
    """Requests started at different moments time out each at its own deadline (the connection
    keeps one timer for all), and a timed-out stream is reset, so the provider frees it at once
    rather than when its stall ends."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        apns = sender(timeout=1.5)
        assert (await apns.send(_device(1), NOTE)).kind is OutcomeKind.DELIVERED
        fake.faults = FaultPlan(error_rate=1.0, faults=("stall",), stall_seconds=30)
        started = time.monotonic()

        async def timed(device: int, delay: float) -> tuple[Outcome, float]:
            await asyncio.sleep(delay)
            outcome = await apns.send(_device(device), NOTE)
            return outcome, time.monotonic() - started

        # Deadlines at 1.5 s and (at least) 2.5 s, the streams open together from 1 s on.
        (first, first_at), (second, second_at) = await asyncio.gather(timed(2, 0.0), timed(3, 1.0))
        assert (first.kind, first.reason) == (second.kind, second.reason)
        assert (first.kind, first.reason) == (OutcomeKind.RETRY, "timeout")
        # Neither before its own limit; the first before the second's (one timer at the later
        # deadline would end both together; a second of slack for a loaded machine); both long
        # before the 30 s stall ends.
        assert 1.5 <= first_at < 2.5
        assert 2.5 <= second_at < 10
        await _until(lambda: fake.stats.streams_in_flight == 0)
        fake.faults = FaultPlan()
        assert (await apns.send(_device(4), NOTE)).kind is OutcomeKind.DELIVERED
        assert apns.connections_opened == 1

    _run(pki, tmp_path, scenario)


def test_a_cancelled_send_resets_its_stream(pki: TestPKI, tmp_path: Path) -> None:
    """A caller that gives up on a send (its task cancelled) frees the stream on both ends."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        apns = sender()
        fake.faults = FaultPlan(error_rate=1.0, faults=("stall",), stall_seconds=30)
        task = asyncio.get_running_loop().create_task(apns.send(_device(1), NOTE))
        await _until(lambda: fake.stats.streams_in_flight == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _until(lambda: fake.stats.streams_in_flight == 0)

    _run(pki, tmp_path, scenario)


def test_unreachable_or_untrusted_provider_is_retry(pki: TestPKI, tmp_path: Path) -> None:
    """No listener, or a certificate we do not trust, gives RETRY with the reason, not a raise."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        nowhere = replace(fake.settings(), url=f"https://127.0.0.1:{closed_port}")
        outcome = await sender(settings=nowhere).send(_device(), NOTE)
        assert outcome.kind is OutcomeKind.RETRY
        assert outcome.reason.startswith("connect failed")
        untrusting = sender(ca_file=None)
        outcome = await untrusting.send(_device(), NOTE)
        assert outcome.kind is OutcomeKind.RETRY
        assert "TLS verification failed" in outcome.reason

    _run(pki, tmp_path, scenario)


def test_jwt_is_shared_by_senders_and_not_reissued_per_request(
    pki: TestPKI, tmp_path: Path
) -> None:
    """Two senders for one key send 100 notifications with one single JWT between them."""
    tokens = ProviderTokens()

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        first, second = sender(tokens=tokens), sender(tokens=tokens)
        outcomes = await asyncio.gather(
            *(first.send(_device(i), NOTE) for i in range(50)),
            *(second.send(_device(i + 50), NOTE) for i in range(50)),
        )
        assert {outcome.kind for outcome in outcomes} == {OutcomeKind.DELIVERED}

    fake = _run(pki, tmp_path, scenario)
    assert fake.distinct_jwts == 1
    assert tokens.issued == 1


def test_default_token_cache_is_process_wide(pki: TestPKI, tmp_path: Path) -> None:
    """Senders built without an explicit cache share the module-level one."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        await sender().send(_device(1), NOTE)
        await sender().send(_device(2), NOTE)

    assert _run(pki, tmp_path, scenario).distinct_jwts == 1


def test_provider_token_refresh_schedule(tmp_path: Path, pki: TestPKI) -> None:
    """The JWT is reused for 40 minutes, and a forced refresh is refused within 20 minutes."""
    key = SigningKey.load(FakeApns(pki, tmp_path).settings())
    now = [1_000_000.0]
    tokens = ProviderTokens(clock=lambda: now[0])
    first = tokens.current(key)
    now[0] += TOKEN_REFRESH_AFTER - 1
    assert tokens.current(key) is first
    assert tokens.expire(key, first) is True  # older than 20 minutes: may be replaced
    second = tokens.current(key)
    assert second.value != first.value
    now[0] += TOKEN_MIN_LIFETIME - 1
    assert tokens.expire(key, second) is False  # an ExpiredProviderToken storm changes nothing
    assert tokens.current(key) is second
    now[0] += TOKEN_REFRESH_AFTER
    assert tokens.current(key).value != second.value
    assert tokens.issued == 3


def test_expired_provider_token_is_refreshed_once_then_delivered(
    pki: TestPKI, tmp_path: Path
) -> None:
    """Apple calling a 30-minute-old JWT expired forces one refresh and a successful re-send."""
    real = time.time()
    clock = [real - 30 * 60]
    tokens = ProviderTokens(clock=lambda: clock[0])

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        fake.token_max_age = 25 * 60
        apns = sender(tokens=tokens)
        tokens.current(SigningKey.load(fake.settings()))  # issued 30 minutes ago
        clock[0] = real
        outcome = await apns.send(_device(), NOTE)
        assert outcome.kind is OutcomeKind.DELIVERED
        assert tokens.issued == 2

    _run(pki, tmp_path, scenario)


def test_alerts_and_background_pushes_of_one_sender_keep_their_own_headers(
    pki: TestPKI, tmp_path: Path
) -> None:
    """The repeated headers, prepared once per JWT and kind, stay apart: alert/10 and
    background/5 alternate on one sender, each with the JWT and topic."""
    clear = replace(NOTE, kind=NotificationKind.CLEAR, preview="", badge=0)

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        apns = sender()
        for device in range(6):
            outcome = await apns.send(_device(device), clear if device % 2 else NOTE)
            assert outcome.kind is OutcomeKind.DELIVERED

    fake = _run(pki, tmp_path, scenario)
    kinds = [(r.headers["apns-push-type"], r.headers["apns-priority"]) for r in fake.accepted]
    assert kinds == [("alert", "10"), ("background", "5")] * 3
    assert {r.headers["apns-topic"] for r in fake.accepted} == {fake.topic}
    assert fake.distinct_jwts == 1


def test_expired_provider_token_on_a_young_jwt_is_misconfigured(
    pki: TestPKI, tmp_path: Path
) -> None:
    """A JWT younger than 20 minutes called expired (clock skew) is MISCONFIGURED, not re-signed."""
    skewed = ProviderTokens(clock=lambda: time.time() - 2 * 3600)

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        outcome = await sender(tokens=skewed).send(_device(), NOTE)
        assert (outcome.kind, outcome.reason) == (
            OutcomeKind.MISCONFIGURED,
            "ExpiredProviderToken",
        )
        assert skewed.issued == 1

    _run(pki, tmp_path, scenario)


def test_long_message_is_truncated_to_fit_and_still_delivered(pki: TestPKI, tmp_path: Path) -> None:
    """A 10 KB preview (multi-byte, quotes) is cut to fit 4096 bytes, ends in "…", is delivered."""
    preview = ('Ünïcödé "quoted" \\ 漢字 🎉 ' * 400)[:10_000]
    note = replace(NOTE, preview=preview)
    payload = apns_payload(_device(), note)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert len(payload) > MAX_PAYLOAD_BYTES - 8  # cut no more than needed
    body = json.loads(payload)["aps"]["alert"]["body"]
    assert body.endswith("…")
    assert preview.startswith(body.removeprefix("Ann: ").removesuffix("…"))

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        assert (await sender().send(_device(), note)).kind is OutcomeKind.DELIVERED

    fake = _run(pki, tmp_path, scenario)
    assert fake.accepted[0].payload["aps"]["alert"]["body"] == body


def test_huge_title_and_name_still_fit() -> None:
    """Even a 5,000-character title and sender name give a valid payload under 4096 bytes."""
    note = replace(NOTE, chat_title="T" * 5000, sender_name="N" * 5000, preview="p" * 5000)
    payload = apns_payload(_device(), note)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert json.loads(payload)["aps"]["alert"]["title"].endswith("…")


def test_in_flight_bound_holds_and_streams_share_a_connection(pki: TestPKI, tmp_path: Path) -> None:
    """With 20 APNs slots in the registry, the fake never sees more than 20 streams, all on one
    connection."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        fake.faults = FaultPlan(latency=0.02)
        registry = _limited(sender(), 20)
        outcomes = await asyncio.gather(*(registry.send(_device(i), NOTE) for i in range(300)))
        assert {outcome.kind for outcome in outcomes} == {OutcomeKind.DELIVERED}

    fake = _run(pki, tmp_path, scenario)
    assert fake.stats.max_streams_in_flight == 20
    assert fake.stats.connections_opened == 1


def test_server_stream_limit_opens_a_second_connection(pki: TestPKI, tmp_path: Path) -> None:
    """When the server allows 10 streams per connection, 30 in flight spread over 2 connections."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        fake.faults = FaultPlan(latency=0.05)
        registry = _limited(sender(max_connections=2), 30)
        await registry.send(_device(0), NOTE)  # learn the server's SETTINGS first
        outcomes = await asyncio.gather(*(registry.send(_device(i), NOTE) for i in range(1, 91)))
        assert {outcome.kind for outcome in outcomes} == {OutcomeKind.DELIVERED}

    fake = _run(pki, tmp_path, scenario, max_concurrent_streams=10)
    assert fake.stats.connections_opened == 2
    assert fake.stats.max_streams_per_connection <= 10
    assert fake.stats.max_streams_in_flight == 20


class _FreezableProxy:
    """A TCP relay whose current connections can be turned into black holes (a dead peer)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen: set[asyncio.StreamWriter] = set()
        self.live: set[asyncio.StreamWriter] = set()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze_current(self) -> None:
        self.frozen |= self.live

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.live:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self.live |= {writer, upstream_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if sink not in self.frozen:
                    sink.write(data)
            sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))


def test_silent_dead_connection_is_abandoned_after_an_unanswered_ping(
    pki: TestPKI, tmp_path: Path
) -> None:
    """When the peer goes silent, a timeout triggers a PING; no ACK means a fresh connection."""

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        proxy = _FreezableProxy(fake.server.port)
        await proxy.start()
        try:
            via_proxy = replace(fake.settings(), url=f"https://127.0.0.1:{proxy.port}")
            apns = sender(settings=via_proxy, timeout=0.3)
            assert (await apns.send(_device(1), NOTE)).kind is OutcomeKind.DELIVERED
            proxy.freeze_current()
            lost = await apns.send(_device(2), NOTE)
            assert (lost.kind, lost.reason) == (OutcomeKind.RETRY, "timeout")
            await asyncio.sleep(0.5)  # the PING deadline (the connect timeout, 0.3 s) passes
            assert (await apns.send(_device(3), NOTE)).kind is OutcomeKind.DELIVERED
            assert apns.connections_opened == 2
        finally:
            await proxy.stop()

    _run(pki, tmp_path, scenario)


def test_silent_clear_update_is_a_background_push(pki: TestPKI, tmp_path: Path) -> None:
    """A CLEAR update goes as apns-push-type background, priority 5, badge, no alert."""
    device = _device()
    clear = replace(NOTE, kind=NotificationKind.CLEAR, preview="", badge=0)

    async def scenario(fake: FakeApns, sender: Callable[..., ApnsSender]) -> None:
        outcome = await sender().send(device, clear)
        assert outcome.kind is OutcomeKind.DELIVERED

    fake = _run(pki, tmp_path, scenario)
    [record] = fake.accepted
    assert record.headers["apns-push-type"] == "background"
    assert record.headers["apns-priority"] == "5"
    assert record.headers["apns-collapse-id"] == "c7"  # per chat: the newest read marker wins
    assert record.payload == {
        "aps": {"content-available": 1, "badge": 0},
        "type": "clear",
        "chat_id": 7,
        "message_id": 42,
    }
