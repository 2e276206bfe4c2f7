"""CPU per notification by stage of the worker: ``python -m bench.stages``.

One ``chinwag worker`` process pinned to core 1 (the fake on core 0) fans a message out to 10,000
APNs devices at 0 ms provider latency, several times. Its CPU seconds come from /proc; py-spy
samples it from outside at the same time, and each sample is put in the stage its stack is in:
claim (``claim_outbox``, ``claim_deliveries``), expand (``expand_batch``), record
(``record_outcomes``), other database work (lease renewals, summaries, due-time reads) and send
(everything else: the event loop, HTTP/2, HPACK, TLS, the sender). CPU per notification of a
stage = the worker's CPU ÷ notifications x the stage's share of the samples.

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
from bench.support import ROOT, FakeApnsProcess, cpu_seconds, say
from bench.throughput import MEASURED_CORE

STAGES = ("claim", "expand", "send", "record", "other database")
MARKERS = (
    ("claim_deliveries", "claim"),
    ("claim_outbox", "claim"),
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
    return "send"


def stage_shares(raw: Path) -> tuple[int, dict[str, float]]:
    """(samples, share of the samples per stage) from py-spy's collapsed stacks."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if stack and weight.isdigit():
            counts[stage_of(stack)] += int(weight)
    total = sum(counts.values())
    return total, {stage: counts[stage] / total if total else 0.0 for stage in STAGES}


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
            cpu_started = cpu_seconds(worker.pid)
            sampler = record(worker.pid, 1 + size / 2000, raw)
            time.sleep(0.3)
            started, _ = stack.send(chat_id)
            arrival = fakes.wait_for(size, 120)
            sampler.wait(60)
            cpu = cpu_seconds(worker.pid) - cpu_started
            samples, shares = stage_shares(raw)
            runs.append(
                {
                    "seconds": arrival.last_at - started,
                    "per_second": size / (arrival.last_at - started),
                    "cpu_seconds": cpu,
                    "cpu_us_per_notification": cpu / size * 1e6,
                    "samples": samples,
                    "shares": shares,
                    "all_arrived": arrival.distinct >= size,
                }
            )
    finally:
        stack.stop()
    return runs


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cpu_us = statistics.median(r["cpu_us_per_notification"] for r in runs)
    shares = {stage: statistics.median(r["shares"][stage] for r in runs) for stage in STAGES}
    scale = sum(shares.values()) or 1.0
    return {
        "per_second": statistics.median(r["per_second"] for r in runs),
        "cpu_us_per_notification": cpu_us,
        "us_by_stage": {stage: cpu_us * share / scale for stage, share in shares.items()},
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
