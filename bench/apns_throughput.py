"""Notifications per second one process sends to the APNs fake.

The fake runs in its own process, so the number is what the sender's single core achieves. The
CPU time of both sides is reported per notification: the sender's, and the fake's event loop's
(1,000,000 ÷ the fake's µs per request is the most a fake on one core can accept):

    PYTHONPATH=src .venv/bin/python bench/apns_throughput.py     # 10,000 devices, 0 and 200 ms
    PYTHONPATH=src .venv/bin/python bench/apns_throughput.py --devices 20000 --latency 0
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import secrets
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from chinwag.config import ApnsSettings
from chinwag.fakes.apns import FakeApns
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.tls import make_pki
from chinwag.push.apns import ApnsSender
from chinwag.push.base import Network
from chinwag.push.model import (
    DeviceTarget,
    Notification,
    Outcome,
    OutcomeKind,
    Platform,
    delivery_uuid,
)
from chinwag.push.slots import InFlight


@dataclass(frozen=True)
class Result:
    devices: int
    latency: float
    seconds: float
    cpu_seconds: float
    delivered: int
    accepted_by_fake: int
    connections: int
    max_streams_in_flight: int
    fake_cpu_seconds: float  # the fake's event-loop thread, from its start to the stop

    @property
    def fake_us_per_request(self) -> float:
        return self.fake_cpu_seconds / (self.accepted_by_fake + 1) * 1e6

    @property
    def per_second(self) -> float:
        return self.devices / self.seconds


def _serve_fake(directory: str, latency: float, channel: Connection) -> None:
    async def serve() -> None:
        pki = make_pki(Path(directory) / "pki")
        fake = FakeApns(pki, Path(directory) / "keys", faults=FaultPlan(latency=latency))
        async with fake:
            channel.send((fake.settings(), str(pki.ca_file)))
            loop = asyncio.get_running_loop()
            cpu_started = time.thread_time()  # this thread runs the event loop, nothing else
            await loop.run_in_executor(None, channel.recv)  # "stop"
            channel.send(
                (
                    len(fake.accepted),
                    fake.stats.connections_opened,
                    fake.stats.max_streams_in_flight,
                    time.thread_time() - cpu_started,
                )
            )

    asyncio.run(serve())


async def _send_all(
    settings: ApnsSettings, ca_file: Path, devices: int, max_in_flight: int
) -> tuple[float, float, int]:
    sender = ApnsSender(settings=settings, network=Network(ca_file=ca_file))
    # The registry's per-provider limit, without the registry's metrics.
    limit = InFlight(max_in_flight)

    async def send(target: DeviceTarget) -> Outcome:
        async with limit:
            return await sender.send(target, notification)

    notification = Notification(
        chat_id=7, message_id=42, chat_title="Benchmarks", sender_name="Ann", preview="x" * 80
    )
    targets = [
        DeviceTarget(i, Platform.APNS, secrets.token_hex(32), delivery_uuid(42, i))
        for i in range(devices)
    ]
    warm = await sender.send(targets[0], notification)  # connection and JWT, outside the timing
    assert warm.kind is OutcomeKind.DELIVERED, warm
    started, cpu_started = time.perf_counter(), time.process_time()
    outcomes = await asyncio.gather(*(send(target) for target in targets))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await sender.aclose()
    return seconds, cpu, sum(outcome.kind is OutcomeKind.DELIVERED for outcome in outcomes)


def measure(devices: int, latency: float, max_in_flight: int) -> Result:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as directory:
        ours, theirs = context.Pipe()
        fake = context.Process(target=_serve_fake, args=(directory, latency, theirs), daemon=True)
        fake.start()
        settings, ca_file = ours.recv()
        try:
            seconds, cpu, delivered = asyncio.run(
                _send_all(settings, Path(ca_file), devices, max_in_flight)
            )
        finally:
            ours.send("stop")
            accepted, connections, max_streams, fake_cpu = ours.recv()
            fake.join(10)
    return Result(
        devices, latency, seconds, cpu, delivered, accepted - 1, connections, max_streams, fake_cpu
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.2])
    parser.add_argument("--max-in-flight", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for latency in args.latency:
        for _ in range(args.repeat):
            result = measure(args.devices, latency, args.max_in_flight)
            print(
                f"latency {latency * 1000:5.0f} ms  devices {result.devices:6d}  "
                f"max_in_flight {args.max_in_flight:4d}  "
                f"{result.per_second:8.0f} notifications/s  "
                f"({result.seconds:.2f} s wall, {result.cpu_seconds:.2f} s CPU, "
                f"{result.cpu_seconds / result.devices * 1e6:.0f} µs a notification; the fake "
                f"{result.fake_us_per_request:.0f} µs a request)  "
                f"delivered {result.delivered}  fake accepted {result.accepted_by_fake}  "
                f"connections {result.connections}  "
                f"max streams in flight {result.max_streams_in_flight}"
            )


if __name__ == "__main__":
    main()
