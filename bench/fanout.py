"""Measurements 1 and 2: send latency and time until the last device is notified, against group
size and provider latency, for chinwag and the two original-pattern baselines side by side.

Each send waits for its whole fan-out before the next one starts, so every sample is one message
on an otherwise idle system. The baselines push one device at a time, so at 200 ms provider
latency a group of N takes at least N x 0.2 s by construction; sizes whose floor exceeds the cap
are not run, and the floor is reported instead of a made-up number.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.support.network import free_port

from bench.baselines.original import add_devices
from bench.stack import ChinwagStack
from bench.support import (
    Child,
    FakeApnsProcess,
    base_env,
    device_token,
    percentile,
    python_argv,
    say,
    wait_for_http,
)

SYSTEMS = ("chinwag", "sync_bottle", "mp_bottle")
TUNED = "chinwag_tuned"


@dataclass(frozen=True)
class FanoutPlan:
    sizes: tuple[int, ...]
    latencies: tuple[float, ...]
    sends: dict[int, int]  # group size -> sends per (system, latency)
    baseline_cap: float  # seconds one serial baseline send may take by construction
    tuned_in_flight: int = 0  # also run chinwag with this CHINWAG_MAX_IN_FLIGHT (0: don't)


def summarize(
    system: str, latency: float, size: int, samples: list[dict[str, float]]
) -> dict[str, Any]:
    sends = [s["send_s"] for s in samples]
    lasts = [s["last_s"] for s in samples]
    return {
        "system": system,
        "latency": latency,
        "size": size,
        "samples": samples,
        "send_p50": statistics.median(sends),
        "send_p99": percentile(sends, 0.99),
        "last_p50": statistics.median(lasts),
        "last_max": max(lasts),
        "all_arrived": all(s["notified"] >= size for s in samples),
    }


def _await_fanout(
    fakes: FakeApnsProcess, size: int, latency: float, started: float
) -> dict[str, float]:
    # Generous: a serial baseline needs size x (latency + a round trip).
    arrival = fakes.wait_for(size, timeout=30 + size * (latency + 0.01))
    return {"last_s": arrival.last_at - started, "notified": arrival.distinct}


def run_chinwag(
    fakes: FakeApnsProcess,
    workdir: Path,
    plan: FanoutPlan,
    results: list[dict[str, Any]],
    system: str = "chinwag",
    **extra_env: str,
) -> None:
    stack = ChinwagStack(
        workdir / system,
        f"sqlite:///{workdir / system / 'chinwag.db'}",
        f"sqlite:///{workdir / system / 'queue.db'}",
        {**fakes.env(), **extra_env},  # the settings of this run, beside the fakes'
    )
    try:
        groups = {size: stack.group(size) for size in plan.sizes}
        stack.start_worker()
        _warm_up(stack, fakes, groups[plan.sizes[0]], plan.sizes[0])
        for latency in plan.latencies:
            fakes.set_latency(latency)
            for size in plan.sizes:
                samples = []
                for _ in range(plan.sends[size]):
                    fakes.reset()
                    started, send_s = stack.send(groups[size])
                    samples.append(
                        {"send_s": send_s, **_await_fanout(fakes, size, latency, started)}
                    )
                    time.sleep(0.05)  # let the worker record outcomes before the next send
                results.append(summarize(system, latency, size, samples))
                say(_line(results[-1]))
    finally:
        stack.stop()


def _warm_up(stack: ChinwagStack, fakes: FakeApnsProcess, chat_id: int, size: int) -> None:
    """One unmeasured send: the worker opens its APNs connection and signs its JWT."""
    fakes.set_latency(0.0)
    fakes.reset()
    stack.send(chat_id, "warm-up")
    fakes.wait_for(size, timeout=30)


def run_baseline(
    system: str,
    fakes: FakeApnsProcess,
    workdir: Path,
    plan: FanoutPlan,
    results: list[dict[str, Any]],
) -> None:
    store = workdir / system / "original.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    for group, size in enumerate(plan.sizes, start=1):
        add_devices(str(store), group, [device_token(1000 + group, i) for i in range(size)])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Child(
        python_argv("-m", f"bench.baselines.{system}", "--port", str(port), "--store", str(store)),
        base_env(**fakes.env()),
        workdir / system / "server.log",
    )
    client = httpx.Client(base_url=url, timeout=None)
    try:
        wait_for_http(f"{url}/healthz", child=server)
        for latency in plan.latencies:
            fakes.set_latency(latency)
            for group, size in enumerate(plan.sizes, start=1):
                floor = size * latency
                if floor > plan.baseline_cap:
                    results.append(
                        {
                            "system": system,
                            "latency": latency,
                            "size": size,
                            "skipped": f"serial by design: at least {floor:.0f} s per send",
                            "floor_s": floor,
                            "all_arrived": True,
                        }
                    )
                    say(
                        f"{system:12s} latency {latency * 1000:3.0f} ms size {size:6d}: skipped, "
                        f">= {floor:.0f} s per send by construction"
                    )
                    continue
                samples = []
                # A serial send at 200 ms takes size x 0.2 s: fewer samples, same cap on time.
                sends = plan.sends[size]
                if floor > 0:
                    sends = min(sends, max(2, int(2 * plan.baseline_cap / floor)))
                for _ in range(sends):
                    fakes.reset()
                    started_wall, started = time.time(), time.perf_counter()
                    answer = client.post(
                        "/groupchat/send",
                        json={"conversation": group, "message": "Lunch at noon?"},
                        headers={"X-User": "Ann"},
                    )
                    send_s = time.perf_counter() - started
                    answer.raise_for_status()
                    samples.append(
                        {"send_s": send_s, **_await_fanout(fakes, size, latency, started_wall)}
                    )
                    time.sleep(0.05)
                results.append(summarize(system, latency, size, samples))
                say(_line(results[-1]))
    finally:
        client.close()
        server.stop()


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['system']:12s} latency {row['latency'] * 1000:3.0f} ms size {row['size']:6d}: "
        f"send p50 {row['send_p50'] * 1000:8.1f} ms p99 {row['send_p99'] * 1000:8.1f} ms, "
        f"last device {row['last_p50']:7.2f} s (max {row['last_max']:.2f} s), "
        f"{'all arrived' if row['all_arrived'] else 'MISSING NOTIFICATIONS'}"
    )


def run(fakes: FakeApnsProcess, workdir: Path, plan: FanoutPlan) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    say("measurements 1-2: chinwag (waitress web + 1 worker, SQLite)")
    run_chinwag(fakes, workdir, plan, results)
    if plan.tuned_in_flight and 0.2 in plan.latencies:
        # The default keeps 2,000 sends in flight per provider. The former default, 500, alone
        # caps a worker at 2,500/s at 200 ms; running it on the case it limits shows why.
        say(f"measurements 1-2: chinwag with CHINWAG_MAX_IN_FLIGHT={plan.tuned_in_flight}")
        largest = max(plan.sizes)
        tuned = FanoutPlan((largest,), (0.2,), plan.sends, plan.baseline_cap)
        run_chinwag(
            fakes,
            workdir,
            tuned,
            results,
            system=TUNED,
            CHINWAG_MAX_IN_FLIGHT=str(plan.tuned_in_flight),
        )
    for system in SYSTEMS[1:]:
        say(f"measurements 1-2: baseline {system}")
        run_baseline(system, fakes, workdir, plan, results)
    fakes.set_latency(0.0)
    return results
