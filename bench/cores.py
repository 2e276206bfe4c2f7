"""Measurements 8 to 10 (issue 15): every core used, sends during fan-outs, a 100,000-device group.

8. ``chinwag worker --processes 1`` against ``--processes 2`` on SQLite, the fake pinned to core 0
   and the workers free to use every core: notifications per second, and the cores the worker
   processes kept busy (their CPU seconds over the wall-clock time of the fan-out).
9. Under ``chinwag serve`` (its web process and one worker process per core): the send p50 to a
   2,000-device group while the fan-outs of the sends before it still run, against the send p50
   to a 1-member group on the idle system. Run as shipped (workers at nice 10, write
   transactions of 200 rows) and as before (``--worker-nice 0``, ``CHINWAG_WORKER_BATCH=1000``),
   side by side.
10. Growth: one worker process; the send p50 to a 100,000-device group against a 1-device one,
    the worker's peak RSS, and the time to the last device against 100,000 ÷ the rate the same
    worker reached on a 10,000-device group.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.support.network import free_port

from bench.stack import ChinwagStack
from bench.support import (
    Child,
    FakeApnsProcess,
    add_members_with_devices,
    base_env,
    cpu_seconds,
    peak_rss_mb,
    percentile,
    python_argv,
    say,
    wait_for_http,
)
from chinwag.store.database import Database
from chinwag.supervisor import SERVE_WORKER_BATCH, SERVE_WORKER_NICENESS


@dataclass(frozen=True)
class CoresPlan:
    processes_size: int  # devices per fan-out in measurement 8
    processes_repeats: int
    serve_size: int  # the big group of measurement 9 (the 2,000)
    serve_idle_sends: int  # sends to the 1-member group, idle system
    serve_busy_sends: int  # sends to the big group, one every serve_spacing seconds
    serve_spacing: float
    serve_before: bool  # also run serve as before (--worker-nice 0, 1,000-row batches)
    growth_small: int  # the group whose rate sets the expectation (the 10,000)
    growth_large: int  # the 100,000
    growth_repeats: int


FULL = CoresPlan(
    processes_size=10_000,
    processes_repeats=3,
    serve_size=2000,
    serve_idle_sends=40,
    serve_busy_sends=40,
    serve_spacing=0.25,
    serve_before=True,
    growth_small=10_000,
    growth_large=100_000,
    growth_repeats=2,
)
QUICK = CoresPlan(
    processes_size=200,
    processes_repeats=1,
    serve_size=50,
    serve_idle_sends=5,
    serve_busy_sends=5,
    serve_spacing=0.1,
    serve_before=False,
    growth_small=100,
    growth_large=1000,
    growth_repeats=1,
)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its live descendants."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


# 8. Every core used


def run_processes(fakes: FakeApnsProcess, workdir: Path, plan: CoresPlan) -> dict[str, Any]:
    size = plan.processes_size
    fakes.set_latency(0.0)
    say(f"measurement 8: chinwag worker --processes 1 and 2, {size} devices, SQLite")
    stack = ChinwagStack(
        workdir / "processes",
        f"sqlite:///{workdir / 'processes' / 'chinwag.db'}",
        f"sqlite:///{workdir / 'processes' / 'queue.db'}",
        fakes.env(),
        web_core=0,
    )
    rows: list[dict[str, Any]] = []
    try:
        chat_id = stack.group(size)
        for processes in (1, 2):
            worker = stack.start_worker(processes=processes)
            fakes.reset()
            stack.send(chat_id, "warm-up")  # every process opens its connection, signs its JWT
            fakes.wait_for(size, timeout=120)
            time.sleep(1.0)
            runs = []
            for _ in range(plan.processes_repeats):
                fakes.reset()
                cpu_started = tree_cpu_seconds(worker.pid)
                started, _ = stack.send(chat_id)
                arrival = fakes.wait_for(size, timeout=120)
                seconds = arrival.last_at - started
                cpu = tree_cpu_seconds(worker.pid) - cpu_started
                runs.append(
                    {
                        "seconds": seconds,
                        "per_second": size / seconds,
                        "cpu_seconds": cpu,
                        "cores_busy": cpu / seconds,
                        "notified": arrival.distinct,
                    }
                )
                time.sleep(0.5)  # the last outcomes are recorded before the next send
            row = {
                "processes": processes,
                "size": size,
                "runs": runs,
                "per_second": statistics.median(r["per_second"] for r in runs),
                "cores_busy": statistics.median(r["cores_busy"] for r in runs),
                "all_arrived": all(r["notified"] >= size for r in runs),
            }
            rows.append(row)
            say(
                f"worker --processes {processes}: {row['per_second']:.0f} notifications/s, "
                f"{row['cores_busy']:.2f} cores busy"
            )
            stack.stop_workers()
    finally:
        stack.stop()
    return {
        "nproc": os.cpu_count(),
        "rows": rows,
        "two_vs_one": rows[1]["per_second"] / rows[0]["per_second"],
        "all_arrived": all(r["all_arrived"] for r in rows),
    }


# 9. Sends during fan-outs, under chinwag serve


class ServeStack:
    """``chinwag serve`` as a user runs it (SQLite in a directory of its own)."""

    def __init__(
        self,
        workdir: Path,
        provider_env: dict[str, str],
        *,
        worker_nice: int | None = None,
        **extra_env: str,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        database_url = f"sqlite:///{workdir / 'chinwag.db'}"
        env = base_env(
            CHINWAG_DATABASE_URL=database_url,
            CHINWAG_HOST="127.0.0.1",
            CHINWAG_PORT=str(self.port),
            CHINWAG_SWEEP_INTERVAL="1",
            CHINWAG_RATE_SENDS_PER_MINUTE=str(10**9),
            **provider_env,
            **extra_env,
        )
        argv = python_argv("-m", "chinwag", "serve")
        if worker_nice is not None:
            argv += ["--worker-nice", str(worker_nice)]
        self.serve = Child(argv, env, workdir / "serve.log")
        wait_for_http(f"{self.url}/healthz", timeout=60, child=self.serve)
        self.db = Database(database_url)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        password = "benchmark password"
        self.client.post("/v1/users", json={"username": "sender", "password": password})
        token = self.client.post("/v1/tokens", json={"username": "sender", "password": password})
        self.client.headers["Authorization"] = f"Bearer {token.json()['token']}"
        self._groups = 0
        deadline = time.monotonic() + 60
        while self.serve.output().count(" started") < self.worker_count():
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start:\n{self.serve.output()[-3000:]}")
            time.sleep(0.1)

    def worker_count(self) -> int:
        return len(process_tree(self.serve.pid)) - 2  # minus serve itself and its web process

    def group(self, size: int) -> int:
        self._groups += 1
        chat = self.client.post("/v1/chats", json={"title": f"Group of {size}", "members": []})
        chat_id = int(chat.json()["id"])
        add_members_with_devices(self.db, chat_id, 500 + self._groups, size)
        return chat_id

    def send(self, chat_id: int, body: str = "Lunch at noon?") -> float:
        started = time.perf_counter()
        answer = self.client.post(f"/v1/chats/{chat_id}/messages", json={"body": body})
        if answer.status_code != 201:
            raise RuntimeError(f"send failed: {answer.status_code} {answer.text}")
        return time.perf_counter() - started

    def stop(self) -> None:
        self.client.close()
        self.serve.stop(timeout=40)
        self.db.dispose()


def _serve_round(
    fakes: FakeApnsProcess, workdir: Path, plan: CoresPlan, label: str, **options: Any
) -> dict[str, Any]:
    stack = ServeStack(workdir, fakes.env(), **options)
    try:
        workers = stack.worker_count()
        one, big = stack.group(1), stack.group(plan.serve_size)
        fakes.reset()
        stack.send(one, "warm-up")
        stack.send(big, "warm-up")
        fakes.wait_for(plan.serve_size + 1, timeout=60)
        time.sleep(1.0)
        idle = []
        for _ in range(plan.serve_idle_sends):
            idle.append(stack.send(one))
            time.sleep(0.05)
        time.sleep(1.0)
        fakes.reset()
        busy = []
        started, started_wall = time.monotonic(), time.time()
        for index in range(plan.serve_busy_sends):
            # A fixed schedule: each send starts while the fan-outs of the ones before it run.
            time.sleep(max(0.0, started + index * plan.serve_spacing - time.monotonic()))
            busy.append(stack.send(big))
        expected = plan.serve_busy_sends * plan.serve_size
        deadline = time.monotonic() + 120
        arrival = fakes.arrival()
        while arrival.count < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            arrival = fakes.arrival()
        span = arrival.last_at - started_wall
    finally:
        stack.stop()
    result = {
        "label": label,
        "worker_nice": options.get("worker_nice", SERVE_WORKER_NICENESS),
        "worker_batch": int(options.get("CHINWAG_WORKER_BATCH", SERVE_WORKER_BATCH)),
        "worker_processes": workers,
        "idle_one_p50": statistics.median(idle),
        "idle_one_p99": percentile(idle, 0.99),
        "busy_big_p50": statistics.median(busy),
        "busy_big_p99": percentile(busy, 0.99),
        "size": plan.serve_size,
        "sends": plan.serve_busy_sends,
        "spacing_s": plan.serve_spacing,
        "notified": arrival.count,
        "expected": expected,
        "fanout_rate": arrival.count / span if span > 0 else 0.0,
        "all_arrived": arrival.count >= expected,
    }
    result["ratio"] = result["busy_big_p50"] / result["idle_one_p50"]
    say(
        f"serve {label}: send p50 to {plan.serve_size:,} during "
        f"fan-outs {result['busy_big_p50'] * 1000:.1f} ms vs 1 member idle "
        f"{result['idle_one_p50'] * 1000:.1f} ms = {result['ratio']:.2f}x; "
        f"{arrival.count:,}/{expected:,} notified at {result['fanout_rate']:.0f}/s"
    )
    return result


def run_serve(fakes: FakeApnsProcess, workdir: Path, plan: CoresPlan) -> dict[str, Any]:
    fakes.set_latency(0.0)
    say(
        f"measurement 9: chinwag serve, sends to {plan.serve_size:,} devices every "
        f"{plan.serve_spacing:g} s while the earlier fan-outs run"
    )
    rounds = [_serve_round(fakes, workdir / "serve-default", plan, "as shipped")]
    if plan.serve_before:
        rounds.append(
            _serve_round(
                fakes,
                workdir / "serve-before",
                plan,
                "as before (nice 0, 1,000-row batches)",
                worker_nice=0,
                CHINWAG_WORKER_BATCH="1000",
            )
        )
    return {"rounds": rounds, "all_arrived": all(r["all_arrived"] for r in rounds)}


# 10. Growth


def run_growth(fakes: FakeApnsProcess, workdir: Path, plan: CoresPlan) -> dict[str, Any]:
    small, large = plan.growth_small, plan.growth_large
    fakes.set_latency(0.0)
    say(f"measurement 10: growth, {small:,} and {large:,} devices, one worker process")
    stack = ChinwagStack(
        workdir / "growth",
        f"sqlite:///{workdir / 'growth' / 'chinwag.db'}",
        f"sqlite:///{workdir / 'growth' / 'queue.db'}",
        fakes.env(),
    )
    try:
        one, small_chat, large_chat = stack.group(1), stack.group(small), stack.group(large)
        worker = stack.start_worker()
        fakes.reset()
        stack.send(one, "warm-up")
        fakes.wait_for(1, timeout=30)
        one_sends = []
        for _ in range(10):
            one_sends.append(stack.send(one)[1])
            time.sleep(0.05)
        samples: dict[int, list[dict[str, float]]] = {small: [], large: []}
        for size, chat_id in ((small, small_chat), (large, large_chat)):
            for _ in range(plan.growth_repeats):
                time.sleep(0.5)
                fakes.reset()
                started, send_s = stack.send(chat_id)
                arrival = fakes.wait_for(size, timeout=60 + size / 500)
                samples[size].append(
                    {
                        "send_s": send_s,
                        "last_s": arrival.last_at - started,
                        "notified": arrival.distinct,
                    }
                )
                say(
                    f"growth {size:7,}: send {send_s * 1000:.1f} ms, last device after "
                    f"{arrival.last_at - started:.2f} s"
                )
        time.sleep(0.5)
        rss = peak_rss_mb(worker.pid)
    finally:
        stack.stop()
    small_last = statistics.median(s["last_s"] for s in samples[small])
    large_last = statistics.median(s["last_s"] for s in samples[large])
    rate = small / small_last
    expected = large / rate
    large_send = statistics.median(s["send_s"] for s in samples[large])
    one_send = statistics.median(one_sends)
    result: dict[str, Any] = {
        "small": small,
        "large": large,
        "samples": {str(k): v for k, v in samples.items()},
        "one_send_p50": one_send,
        "large_send_p50": large_send,
        "send_ratio": large_send / one_send,
        "small_last_p50": small_last,
        "small_rate": rate,
        "large_last_p50": large_last,
        "large_expected": expected,
        "last_ratio": large_last / expected,
        "peak_rss_mb": rss,
        "all_arrived": all(s["notified"] >= size for size in samples for s in samples[size]),
    }
    say(
        f"growth: {large:,} last device {large_last:.1f} s vs {expected:.1f} s expected "
        f"({result['last_ratio']:.2f}x), send {result['send_ratio']:.2f}x of 1 device, "
        f"worker peak RSS {rss:.1f} MiB"
    )
    return result


def run(fakes: FakeApnsProcess, workdir: Path, plan: CoresPlan) -> dict[str, Any]:
    return {
        "processes": run_processes(fakes, workdir, plan),
        "serve": run_serve(fakes, workdir, plan),
        "growth": run_growth(fakes, workdir, plan),
    }


def main() -> int:
    """``python -m bench.cores [--quick] [--only processes,serve,growth]``: these measurements
    alone, printed as JSON (``python -m bench`` runs them and writes the report)."""
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.cores", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="processes,serve,growth")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    steps = {"processes": run_processes, "serve": run_serve, "growth": run_growth}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-cores-") as scratch:
        fakes = FakeApnsProcess(Path(scratch) / "fake", core=0)
        try:
            for name in args.only.split(","):
                results[name] = steps[name](fakes, Path(scratch), plan)
        finally:
            fakes.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
