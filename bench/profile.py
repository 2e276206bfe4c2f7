"""Where the time goes, for the targets a run missed: ``python -m bench.profile``.

Samples with py-spy (``pip install py-spy``), from outside the process, so chinwag runs unchanged:
- the worker during a 10,000-device fan-out at 0 ms provider latency, pinned to one core;
- one gunicorn worker of the web tier while wrk posts messages (SQLite).
Prints each profile's top functions by own time and by inclusive time, and writes
bench/results/profile.md, which ``python -m bench`` appends to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.stack import ChinwagStack
from bench.support import FakeApnsProcess, say
from bench.throughput import MEASURED_CORE
from bench.webtier import load

RESULTS = Path(__file__).resolve().parent / "results"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top(raw: Path, count: int = 15) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, by own time, by inclusive time) from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if not stack or not weight.isdigit():
            continue
        samples = int(weight)
        frames = [_short(frame) for frame in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            # Inclusive time is telling for chinwag's own functions; the rest is scaffolding.
            if "(chinwag/" in frame or "huey/" in frame:
                inclusive[frame] += samples
    return total, own.most_common(count), inclusive.most_common(count)


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module path from site-packages or src)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where.rsplit(':', 1)[0]})"


def profile_worker(fakes: FakeApnsProcess, workdir: Path, size: int) -> Path:
    stack = ChinwagStack(
        workdir / "pw",
        f"sqlite:///{workdir / 'pw.db'}",
        f"sqlite:///{workdir / 'pw-queue.db'}",
        fakes.env(),
        web_core=0,
    )
    raw = workdir / "worker.raw"
    try:
        chat_id, warm = stack.group(size), stack.group(1)
        worker = stack.start_worker(core=MEASURED_CORE)
        stack.send(warm, "warm-up")
        fakes.wait_for(1, 30)
        fakes.reset()
        sampler = record(worker.pid, 6, raw)
        time.sleep(0.5)
        started, _ = stack.send(chat_id)
        arrival = fakes.wait_for(size, 60)
        say(f"profiled fan-out: {size} devices in {arrival.last_at - started:.2f} s")
        sampler.wait(30)
    finally:
        stack.stop()
    return raw


def profile_web(fakes: FakeApnsProcess, workdir: Path, seconds: float) -> Path:
    stack = ChinwagStack(
        workdir / "pweb",
        f"sqlite:///{workdir / 'pweb.db'}",
        f"sqlite:///{workdir / 'pweb-queue.db'}",
        fakes.env(),
        web="gunicorn",
        CHINWAG_RATE_SENDS_PER_MINUTE=str(10**9),
    )
    raw = workdir / "web.raw"
    try:
        chat_id = stack.group(1)
        children = subprocess.run(
            ["pgrep", "-P", str(stack.web.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        sampler = record(int(children[0]), seconds, raw)
        result = load(f"{stack.url}/v1/chats/{chat_id}/messages", seconds, workdir, stack.token)
        say(f"profiled web tier: {result['per_second']:.0f} sends/s")
        sampler.wait(30)
    finally:
        stack.stop()
    return raw


def section(title: str, raw: Path) -> list[str]:
    total, own, inclusive = top(raw)
    lines = [f"### {title}", "", f"py-spy, {total} samples at 200 Hz.", ""]
    lines += ["| own time | function |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f}% | `{name}` |" for name, n in own]
    lines += ["", "| inclusive | chinwag (and huey) function |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f}% | `{name}` |" for name, n in inclusive]
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chinwag-profile-") as scratch:
        workdir = Path(scratch)
        fakes = FakeApnsProcess(workdir / "fake", core=0)
        try:
            worker_raw = profile_worker(fakes, workdir, args.devices)
            web_raw = profile_web(fakes, workdir, args.seconds)
            lines = [
                "## Profiles",
                "",
                "From `python -m bench.profile` (py-spy sampling from outside the process).",
                "",
                *section(f"Worker, {args.devices:,}-device fan-out, 0 ms, one core", worker_raw),
                *section("One gunicorn worker of the web tier under wrk, SQLite", web_raw),
            ]
        finally:
            fakes.stop()
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "profile-raw.md").write_text(text)
    say("wrote bench/results/profile-raw.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
