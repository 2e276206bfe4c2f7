"""``python -m bench``: every benchmark of issues 5, 12 and 15, side by side, on this machine.

python -m bench           # full: results/results.json, docs/img/*.png, docs/benchmarks.md
python -m bench --quick   # seconds, small sizes: results/quick.json; fails if any
                          # notification did not arrive (CI runs it so the harness never rots)
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cores, fanout, live, stages, statements, throughput, webtier
from bench.support import ROOT, FakeApnsProcess, machine, say
from bench.targets import ratios, targets

RESULTS = Path(__file__).resolve().parent / "results"

FULL = {
    "fanout": fanout.FanoutPlan(
        sizes=(1, 100, 1000, 10_000),
        latencies=(0.0, 0.2),
        sends={1: 20, 100: 20, 1000: 10, 10_000: 5},
        baseline_cap=25.0,
        tuned_in_flight=500,
    ),
    "throughput_size": 10_000,
    "throughput_repeats": 3,
    "stages_repeats": 3,  # profiled fan-outs for the CPU by stage (py-spy); 0: not measured
    "web_seconds": 10.0,
    "scaleout_size": 10_000,
    "scaleout_latencies": (0.0, 0.2),
    "scaleout_repeats": 3,
    "cores": cores.FULL,
    "live": live.FULL,
}
QUICK = {
    "fanout": fanout.FanoutPlan(
        sizes=(1, 100), latencies=(0.0, 0.2), sends={1: 3, 100: 3}, baseline_cap=2.0
    ),
    "throughput_size": 100,
    "throughput_repeats": 1,
    "stages_repeats": 0,
    "web_seconds": 1.0,
    "scaleout_size": 100,
    "scaleout_latencies": (0.0,),
    "scaleout_repeats": 1,
    "cores": cores.QUICK,
    "live": live.QUICK,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds, for CI")
    parser.add_argument("--out", type=Path, help="where the JSON goes (default bench/results/)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite docs/benchmarks.md and the plots from bench/results/results.json",
    )
    args = parser.parse_args()
    if args.report_only:
        from bench.report import write_report

        write_report(json.loads((RESULTS / "results.json").read_text()))
        say("wrote docs/benchmarks.md and docs/img/*.png from bench/results/results.json")
        return 0
    mode = "quick" if args.quick else "full"
    plan: dict[str, Any] = QUICK if args.quick else FULL
    out = args.out or RESULTS / ("quick.json" if args.quick else "results.json")
    started = time.monotonic()
    say(f"chinwag benchmarks, {mode} mode; results to {out}")
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as scratch:
        workdir = Path(scratch)
        fakes = FakeApnsProcess(workdir / "fake", core=0)
        try:
            results: dict[str, Any] = {
                "mode": mode,
                "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "command": "python -m bench" + (" --quick" if args.quick else ""),
                "argv": shlex.join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
                "machine": machine(),
                "fanout": fanout.run(fakes, workdir, plan["fanout"]),
            }
            tp = throughput.run(fakes, workdir, plan["throughput_size"], plan["throughput_repeats"])
            results["rss"] = tp.pop("rss")
            results["throughput"] = tp
            if plan["stages_repeats"]:
                results["stages"] = stages.summary(
                    stages.measure(
                        fakes,
                        workdir / "stages",
                        ROOT / "src",
                        plan["throughput_size"],
                        plan["stages_repeats"],
                    )
                )
            results["web"] = webtier.run_web(fakes, workdir, plan["web_seconds"])
            results["statements"] = statements.run()
            results["scaleout"] = webtier.run_scaleout(
                fakes,
                workdir,
                plan["scaleout_size"],
                plan["scaleout_latencies"],
                plan["scaleout_repeats"],
            )
            results["cores"] = cores.run(fakes, workdir, plan["cores"])
        finally:
            fakes.stop()
        # Last: it needs no fake, and 10,000 connections are the heaviest load on the machine.
        results["live"] = live.run(workdir / "live", plan["live"])
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    results["all_arrived"] = all_arrived(results)
    results["duration_s"] = round(time.monotonic() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    for target in [*results["targets"], *results["live"]["targets"]]:
        say(
            f"target: {target['name']}: {target['measured']} -> "
            f"{'met' if target['met'] else 'MISSED'}"
        )
    if not args.quick:
        from bench.report import write_report

        write_report(results)
        say("wrote docs/benchmarks.md and docs/img/*.png")
    if not results["all_arrived"]:
        say("FAILED: some notifications or live messages never arrived")
        return 1
    say(f"done in {results['duration_s']:.0f} s; every notification arrived")
    return 0


def all_arrived(results: dict[str, Any]) -> bool:
    rows = [*results["fanout"], *results["scaleout"]]
    measured = results["cores"]
    return (
        all(row.get("all_arrived", True) for row in rows)
        and all(bool(measured[part]["all_arrived"]) for part in ("processes", "serve", "growth"))
        and bool(results["throughput"]["all_arrived"])
        and bool(results["live"]["all_arrived"])
    )


if __name__ == "__main__":
    raise SystemExit(main())
