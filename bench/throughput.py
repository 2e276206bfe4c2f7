"""Measurements 3 and 4: notifications per second per worker process on one core, at zero provider
latency, chinwag against aioapns; and the worker's peak RSS during a large fan-out.

Core 1 runs what is measured; the APNs fake (and chinwag's idle web tier) stay on core 0. Three
things are timed on core 1, alternately, so drift hits them alike:
- the chinwag worker process, end to end: claim the outbox row, expand it into delivery rows,
  send over HTTP/2, record every outcome in SQLite (from the send request to the last device);
- chinwag's APNs sender alone (``ApnsSender``), as a pure client like the peer;
- aioapns, the same 10,000 notifications (baseline 3).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.stack import ChinwagStack
from bench.support import (
    FakeApnsProcess,
    cpu_seconds,
    device_token,
    peak_rss_mb,
    pin_to,
    say,
)
from chinwag.config import ApnsSettings

MEASURED_CORE = 1


def _client_run(
    kind: str, settings: ApnsSettings, ca_file: str, tokens: list[str], out: Connection
) -> None:
    pin_to(MEASURED_CORE)
    cpu_started = time.process_time()
    if kind == "aioapns":
        from bench.baselines.aioapns_peer import fan_out

        seconds, delivered = asyncio.run(fan_out(settings, ca_file, tokens))
    else:
        seconds, delivered = asyncio.run(_chinwag_sender(settings, Path(ca_file), tokens))
    out.send((seconds, delivered, time.process_time() - cpu_started))


async def _chinwag_sender(
    settings: ApnsSettings, ca_file: Path, tokens: list[str]
) -> tuple[float, int]:
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

    sender = ApnsSender(settings=settings, network=Network(ca_file=ca_file))
    limit = InFlight(500)  # the in-flight bound the sender kept itself before the registry did

    async def send(target: DeviceTarget) -> Outcome:
        async with limit:
            return await sender.send(target, notification)

    notification = Notification(
        chat_id=7, message_id=42, chat_title="Benchmarks", sender_name="Ann", preview="x" * 80
    )
    targets = [
        DeviceTarget(i, Platform.APNS, token, delivery_uuid(42, i))
        for i, token in enumerate(tokens)
    ]
    warm = await sender.send(targets[0], notification)  # connection and JWT, outside the timing
    if warm.kind is not OutcomeKind.DELIVERED:
        raise RuntimeError(f"warm-up failed: {warm}")
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(send(t) for t in targets[1:]))
    seconds = time.perf_counter() - started
    await sender.aclose()
    return seconds, 1 + sum(o.kind is OutcomeKind.DELIVERED for o in outcomes)


def client_rate(kind: str, fakes: FakeApnsProcess, size: int) -> dict[str, Any]:
    """One fan-out by a pure client in a fresh process on the measured core."""
    tokens = [device_token(9000, i) for i in range(size)]
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    fakes.reset()
    child = context.Process(
        target=_client_run, args=(kind, fakes.settings, str(fakes.ca_file), tokens, theirs)
    )
    child.start()
    seconds, delivered, cpu = ours.recv()
    child.join(30)
    arrival = fakes.arrival()
    timed = size - 1  # the warm-up request is not timed
    return {
        "seconds": seconds,
        "per_second": timed / seconds,
        "cpu_seconds": cpu,
        "delivered": delivered,
        "notified": arrival.distinct,
        "all_arrived": delivered == size and arrival.distinct == size,
    }


def run(fakes: FakeApnsProcess, workdir: Path, size: int, repeats: int) -> dict[str, Any]:
    fakes.set_latency(0.0)
    say(f"measurements 3-4: chinwag worker on core {MEASURED_CORE}, {size} devices x {repeats}")
    stack = ChinwagStack(
        workdir / "throughput",
        f"sqlite:///{workdir / 'throughput' / 'chinwag.db'}",
        f"sqlite:///{workdir / 'throughput' / 'queue.db'}",
        fakes.env(),
        web_core=0,
    )
    worker_runs: list[dict[str, Any]] = []
    sender_runs: list[dict[str, Any]] = []
    peer_runs: list[dict[str, Any]] = []
    try:
        chat_id = stack.group(size)
        warm_chat = stack.group(1)
        worker = stack.start_worker(core=MEASURED_CORE)
        fakes.reset()
        stack.send(warm_chat, "warm-up")
        fakes.wait_for(1, timeout=30)
        rss_before = peak_rss_mb(worker.pid)
        for attempt in range(repeats):
            fakes.reset()
            cpu_started = cpu_seconds(worker.pid)
            started, _ = stack.send(chat_id)
            arrival = fakes.wait_for(size, timeout=120)
            seconds = arrival.last_at - started
            time.sleep(0.3)  # outcomes are flushed in batches; count their CPU too
            cpu = cpu_seconds(worker.pid) - cpu_started
            worker_runs.append(
                {
                    "seconds": seconds,
                    "per_second": size / seconds,
                    "cpu_seconds": cpu,
                    "notified": arrival.distinct,
                    "all_arrived": arrival.distinct == size,
                }
            )
            say(
                f"chinwag worker  run {attempt + 1}: {size / seconds:7.0f} notifications/s "
                f"({seconds:.2f} s, worker CPU {cpu:.2f} s)"
            )
            sender_runs.append(client_rate("chinwag", fakes, size))
            say(
                f"chinwag sender  run {attempt + 1}: "
                f"{sender_runs[-1]['per_second']:7.0f} notifications/s"
            )
            peer_runs.append(client_rate("aioapns", fakes, size))
            say(
                f"aioapns         run {attempt + 1}: "
                f"{peer_runs[-1]['per_second']:7.0f} notifications/s"
            )
        rss_peak = peak_rss_mb(worker.pid)
        say(
            f"worker peak RSS {rss_peak:.1f} MiB (after start-up and warm-up: {rss_before:.1f} MiB)"
        )
    finally:
        stack.stop()

    def median(runs: list[dict[str, Any]]) -> float:
        return statistics.median(float(run["per_second"]) for run in runs)

    return {
        "size": size,
        "repeats": repeats,
        "worker": {"runs": worker_runs, "per_second": median(worker_runs)},
        "sender": {"runs": sender_runs, "per_second": median(sender_runs)},
        "aioapns": {"runs": peer_runs, "per_second": median(peer_runs)},
        "rss": {"size": size, "peak_mb": rss_peak, "after_warm_up_mb": rss_before},
        "all_arrived": all(r["all_arrived"] for r in worker_runs + sender_runs + peer_runs),
    }
