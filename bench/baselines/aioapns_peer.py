"""Baseline (3), the peer: the same fan-out done with aioapns, the most used asyncio APNs client.

aioapns always dials api.push.apple.com:443; its connection class names the host and port, so a
subclass points it at the local fake, and an SSL context trusting the fake's CA is passed in as
aioapns allows. Everything else is aioapns as shipped: its pool (10 connections by default), its
JWT provider, its stream accounting.

One shim, for older trees' fakes only: they ended a body-less 200 with an empty DATA frame, where
Apple (and this tree's fake) ends the HEADERS frame itself; aioapns parses every DATA frame as JSON
and drops the connection on an empty one. The subclass skips empty DATA frames, which changes
nothing else (``bench.apns_side_by_side`` runs aioapns against an older tree's fake too).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsProductionClientProtocol

from chinwag.config import ApnsSettings


class _FakeApnsProtocol(APNsProductionClientProtocol):
    def on_data_received(self, raw_data: bytes, stream_id: int) -> None:
        if raw_data:
            super().on_data_received(raw_data, stream_id)


def client_for(settings: ApnsSettings, ca_file: str) -> APNs:
    address = urlsplit(settings.url)
    protocol = type(
        "FakeApnsProtocol",
        (_FakeApnsProtocol,),
        {"APNS_SERVER": address.hostname, "APNS_PORT": address.port or 443},
    )
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    client = APNs(
        key=settings.key_file.read_text(),
        key_id=settings.key_id,
        team_id=settings.team_id,
        topic=settings.topic,
        ssl_context=context,
    )
    client.pool.protocol_class = protocol
    return client


def _request(token: str) -> NotificationRequest:
    message: dict[str, Any] = {
        "aps": {"alert": {"title": "Benchmarks", "body": "Ann: " + "x" * 80}, "sound": "default"},
        "chat_id": 7,
        "message_id": 42,
    }
    return NotificationRequest(
        device_token=token,
        message=message,
        notification_id=str(uuid.uuid4()),
        push_type=PushType.ALERT,
    )


async def fan_out(settings: ApnsSettings, ca_file: str, tokens: list[str]) -> tuple[float, int]:
    """Send to every token at once (aioapns queues on its pool); return (seconds, delivered).
    The first request, which opens a connection and signs the JWT, is outside the timing."""
    client = client_for(settings, ca_file)
    warm = await client.send_notification(_request(tokens[0]))
    if not warm.is_successful:
        raise RuntimeError(f"aioapns warm-up failed: {warm.status} {warm.description}")
    started = time.perf_counter()
    results = await asyncio.gather(*(client.send_notification(_request(t)) for t in tokens[1:]))
    seconds = time.perf_counter() - started
    client.pool.close()
    return seconds, 1 + sum(result.is_successful for result in results)
