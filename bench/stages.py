"""CPU per notification by stage of the worker: ``python -m bench.stages``.

One ``chinwag worker`` process pinned to core 1 (the fake on core 0) fans a message out to 10,000
APNs devices at 0 ms provider latency, several times. The CPU time of each of its threads comes
from /proc: the main thread runs the event loop (send: the sender, HTTP/2, HPACK, TLS, asyncio),
the database thread runs every SQL statement. py-spy samples the process from outside at the
same time, and the database thread's samples are put in the stage their stack is in: claim
(``claim_outbox``, ``claim_deliveries``, and ``load_claimed``, which reads what to send the rows
an expansion wrote already claimed), expand (``expand_batch``), record (``record_outcomes``)
and other database work (lease renewals, summaries, due-time reads). CPU per notification of a
database stage = the database thread's CPU ÷ notifications x the stage's share of its samples
(shares, not counts: on a loaded machine a thread waiting for a core is sampled too).

``--src A --src B`` runs the worker from other source trees too (e.g. an export of main), in
alternating rounds in one run, so a change is measured side by side with what it changes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.profile import record
from bench.stack import ChinwagStack
from bench.support import ROOT, FakeApnsProcess, say
from bench.throughput import MEASURED_CORE

STAGES = ("claim", "expand", "send", "record", "other database", "other threads")
DATABASE_STAGES = ("claim", "expand", "record", "other database")
DATABASE_THREAD = "concurrent/futures/thread.py"  # the worker's one-thread executor
MARKERS = (
    ("claim_deliveries", "claim"),
    ("claim_outbox", "claim"),
    ("load_claimed", "claim"),
    ("expand_batch", "expand"),
    ("record_outcomes", "record"),
    ("renew_leases", "other database"),
    ("next_due_at", "other database"),
    ("_publish_delivery_events", "other database"),
    ("delivery_summaries", "other database"),
    ("events.prune", "other database"),
)


def stage_of(stack: str) -> str:
    for marker, stage in MARKERS:
        if marker in stack:
            return stage
    return "other database"


def database_shares(raw: Path) -> tuple[int, dict[str, float]]:
    """(samples, each stage's share of them) of the database thread, from py-spy's stacks."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if stack and weight.isdigit() and DATABASE_THREAD in stack:
            counts[stage_of(stack)] += int(weight)
    total = sum(counts.values())
    return total, {stage: counts[stage] / total if total else 0.0 for stage in DATABASE_STAGES}


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` so far."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = cpu_seconds(pid, int(task.name))
        except (OSError, ValueError):
            continue
    return found


def cpu_seconds(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    fakes: FakeApnsProcess, workdir: Path, src: Path, size: int, repeats: int
) -> list[dict[str, Any]]:
    """``repeats`` profiled fan-outs by a worker run from the source tree ``src``."""
    stack = ChinwagStack(
        workdir,
        f"sqlite:///{workdir / 'chinwag.db'}",
        f"sqlite:///{workdir / 'queue.db'}",
        fakes.env(),
        web_core=0,
    )
    # The worker (only) runs the code under test; the web tier and the harness stay as they are.
    stack.env = {**stack.env, "PYTHONPATH": os.pathsep.join([str(src), stack.env["PYTHONPATH"]])}
    runs = []
    try:
        chat_id, warm = stack.group(size), stack.group(1)
        worker = stack.start_worker(core=MEASURED_CORE)
        stack.send(warm, "warm-up")
        fakes.wait_for(1, 30)
        for attempt in range(repeats):
            time.sleep(0.5)
            fakes.reset()
            raw = workdir / f"worker-{attempt}.raw"
            before = thread_cpu(worker.pid)
            sampler = record(worker.pid, 1 + size / 2000, raw)
            time.sleep(0.3)
            started, _ = stack.send(chat_id)
            arrival = fakes.wait_for(size, 120)
            sampler.wait(60)
            time.sleep(0.3)  # the last outcomes are written
            after = thread_cpu(worker.pid)
            used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
            loop_cpu = used.pop(worker.pid, 0.0)
            # The busiest other thread is the database thread; the rest (the doorbell listener,
            # the resolver's) are "other threads".
            database_cpu = max(used.values(), default=0.0)
            other_cpu = sum(used.values()) - database_cpu
            samples, shares = database_shares(raw)
            us = 1e6 / size
            by_stage = {stage: database_cpu * shares[stage] * us for stage in DATABASE_STAGES}
            by_stage["send"] = loop_cpu * us
            by_stage["other threads"] = other_cpu * us
            runs.append(
                {
                    "seconds": arrival.last_at - started,
                    "per_second": size / (arrival.last_at - started),
                    "cpu_seconds": loop_cpu + database_cpu + other_cpu,
                    "cpu_us_per_notification": (loop_cpu + database_cpu + other_cpu) * us,
                    "database_samples": samples,
                    "us_by_stage": by_stage,
                    "all_arrived": arrival.distinct >= size,
                }
            )
    finally:
        stack.stop()
    return runs


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "per_second": statistics.median(r["per_second"] for r in runs),
        "cpu_us_per_notification": statistics.median(r["cpu_us_per_notification"] for r in runs),
        "us_by_stage": {
            stage: statistics.median(r["us_by_stage"][stage] for r in runs) for stage in STAGES
        },
        "runs": runs,
    }


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    names = list(results)
    lines = [
        "| stage | " + " | ".join(f"{name} (µs)" for name in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for stage in STAGES:
        cells = " | ".join(f"{results[n]['us_by_stage'][stage]:.0f}" for n in names)
        lines.append(f"| {stage} | {cells} |")
    total = " | ".join(f"**{results[n]['cpu_us_per_notification']:.0f}**" for n in names)
    # (the stages are medians of the runs one by one, so they need not add up to the total)
    rate = " | ".join(f"{results[n]['per_second']:.0f}" for n in names)
    return [*lines, f"| CPU per notification | {total} |", f"| notifications/s | {rate} |"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per tree")
    parser.add_argument("--repeats", type=int, default=2, help="fan-outs per round")
    parser.add_argument("--src", type=Path, action="append", default=[], help="another src/")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stages.json")
    args = parser.parse_args()
    trees = {"this tree": ROOT / "src", **{str(path): path for path in args.src}}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="chinwag-stages-") as scratch:
        fakes = FakeApnsProcess(Path(scratch) / "fake", core=0)
        try:
            for round_ in range(args.rounds):
                for index, (name, src) in enumerate(trees.items()):
                    workdir = Path(scratch) / f"r{round_}-{index}"
                    runs[name] += measure(fakes, workdir, src, args.devices, args.repeats)
                    say(f"round {round_ + 1}, {name}: {runs[name][-1]['per_second']:.0f}/s")
        finally:
            fakes.stop()
    results = {name: summary(found) for name, found in runs.items()}
    print("\n".join(table(results)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
