"""The APNs fake and its clients from several source trees, side by side: CPU per notification.

    .venv/bin/python -m bench.apns_side_by_side --fake-src /path/to/main/src \
        --client chinwag --client chinwag:/path/to/main/src --client aioapns --rounds 3

Every (fake tree, client) pair sends the same 10,000 notifications at 0 ms provider latency, in
alternating rounds, the fake pinned to core 0 and the client to core 1, each in a fresh process
whose ``chinwag`` comes from the tree named (this tree when none is). Reported per pair (medians):
notifications/s, the client's CPU per notification, and the CPU of the fake's event loop per
request, whose inverse is the most a fake on one core accepts. CPU times, not rates, are what a
shared machine measures well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.support import ROOT, device_token, pin_to


def _serve_fake(directory: Path, core: int) -> None:
    """Child: a FakeApns; commands on stdin ("cpu", "stop"), JSON answers on stdout."""
    from chinwag.fakes.apns import FakeApns
    from chinwag.fakes.tls import make_pki

    pin_to(core)

    async def serve() -> None:
        pki = make_pki(directory / "pki")
        fake = FakeApns(pki, directory / "keys")
        async with fake:
            settings = fake.settings()
            _say(
                key_file=str(settings.key_file),
                key_id=settings.key_id,
                team_id=settings.team_id,
                topic=settings.topic,
                url=settings.url,
                ca_file=str(pki.ca_file),
            )
            loop = asyncio.get_running_loop()
            while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "cpu":
                # This thread runs the event loop and nothing else.
                _say(cpu=time.thread_time(), accepted=len(fake.accepted))

    asyncio.run(serve())


def _run_client(kind: str, fake: dict[str, str], devices: int, core: int) -> None:
    """Child: one fan-out by chinwag's ApnsSender or aioapns; prints its seconds and CPU."""
    from chinwag.config import ApnsSettings

    pin_to(core)
    settings = ApnsSettings(
        key_file=Path(fake["key_file"]),
        key_id=fake["key_id"],
        team_id=fake["team_id"],
        topic=fake["topic"],
        url=fake["url"],
    )
    tokens = [device_token(9000, i) for i in range(devices + 1)]  # the first one warms up
    # Imported before the clock starts: their import is no notification's work.
    from bench.baselines.aioapns_peer import fan_out
    from bench.throughput import _chinwag_sender

    cpu_started = time.process_time()
    if kind == "aioapns":
        seconds, delivered = asyncio.run(fan_out(settings, fake["ca_file"], tokens))
    else:
        seconds, delivered = asyncio.run(_chinwag_sender(settings, Path(fake["ca_file"]), tokens))
    _say(seconds=seconds, cpu=time.process_time() - cpu_started, delivered=delivered)


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _child(src: Path, *arguments: str, **options: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    command = [sys.executable, "-m", "bench.apns_side_by_side", *arguments]
    return subprocess.Popen(command, env=env, text=True, **options)


def one_pair(fake_src: Path, kind: str, client_src: Path, devices: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="chinwag-apns-") as directory:
        fake = _child(
            fake_src,
            "--serve-fake",
            directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert fake.stdin is not None and fake.stdout is not None
        try:
            settings = json.loads(fake.stdout.readline())

            def fake_cpu() -> dict[str, float]:
                assert fake.stdin is not None and fake.stdout is not None
                fake.stdin.write("cpu\n")
                fake.stdin.flush()
                found: dict[str, float] = json.loads(fake.stdout.readline())
                return found

            before = fake_cpu()
            client = _child(
                client_src,
                "--run-client",
                kind,
                json.dumps(settings),
                str(devices),
                stdout=subprocess.PIPE,
            )
            output, _ = client.communicate(timeout=600)
            after = fake_cpu()
        finally:
            if fake.stdin is not None:
                fake.stdin.close()
            fake.wait(30)
    result = json.loads(output.strip().splitlines()[-1])
    requests = after["accepted"] - before["accepted"]
    return {
        "per_second": devices / result["seconds"],
        "client_us": result["cpu"] / (devices + 1) * 1e6,
        "fake_us": (after["cpu"] - before["cpu"]) / requests * 1e6,
        "delivered": result["delivered"],
        "accepted": requests,
        "load": float(Path("/proc/loadavg").read_text().split()[0]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apns_side_by_side", description=__doc__)
    parser.add_argument("--serve-fake", help=argparse.SUPPRESS)
    parser.add_argument("--run-client", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--fake-src", type=Path, action="append", default=[])
    parser.add_argument(
        "--client", action="append", default=[], help="chinwag or aioapns, optionally :SRC"
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.serve_fake:
        _serve_fake(Path(args.serve_fake), 0)
        return 0
    if args.run_client:
        kind, settings, devices = args.run_client
        _run_client(kind, json.loads(settings), int(devices), 1)
        return 0
    here = ROOT / "src"
    fakes = [here, *args.fake_src]
    clients = [
        (kind, Path(src) if src else here)
        for kind, _, src in (name.partition(":") for name in args.client or ["chinwag"])
    ]
    runs: dict[str, list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for fake_src in fakes:
            for kind, client_src in clients:
                name = f"fake {fake_src} · {kind} {client_src}"
                run = one_pair(fake_src, kind, client_src, args.devices)
                runs.setdefault(name, []).append(run)
                print(
                    f"round {round_ + 1}: {name}: {run['per_second']:.0f}/s, client "
                    f"{run['client_us']:.0f} µs a notification, fake {run['fake_us']:.0f} µs a "
                    f"request (delivered {run['delivered']:.0f}, load average {run['load']})",
                    flush=True,
                )
    print("| fake | client | notifications/s | client µs/notification | fake µs/request |")
    print("|---|---|---:|---:|---:|")
    for name, found in runs.items():
        fake_name, _, client_name = name.partition(" · ")
        rate, client_us, fake_us = (
            statistics.median(run[key] for run in found)
            for key in ("per_second", "client_us", "fake_us")
        )
        print(
            f"| {fake_name.removeprefix('fake ')} | {client_name} | {rate:.0f} | "
            f"{client_us:.0f} | {fake_us:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
