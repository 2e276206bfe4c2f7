"""What every benchmark shares: the APNs fake in a process of its own, child processes, numbers.

The fake runs in a separate process (pinned to core 0 when asked) so that what a benchmark measures
is the sender's own work, not the fake's. The parent talks to it over a pipe: reset its record,
change its latency, wait for N notifications and learn when the last one arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from tests.support.seed import add_devices_of, add_members, add_users

from chinwag.config import ApnsSettings
from chinwag.store.database import Database

ROOT = Path(__file__).resolve().parent.parent
STARTED = time.monotonic()


def say(message: str) -> None:
    """A progress line: elapsed seconds since the run started, then what is happening."""
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile: with few samples p99 is simply the largest one."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def device_token(group: int, index: int) -> str:
    """A distinct 64-hex-digit APNs token per (group, device)."""
    return f"{group:08x}{index:056x}"


def pin_to(core: int) -> None:
    """Keep this process on one core, if the machine has it (a 1-core box just shares)."""
    if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


# The APNs fake, out of process


@dataclass(frozen=True)
class Arrival:
    """What the fake accepted since its last reset."""

    count: int
    distinct: int
    last_at: float


def _serve_fake(directory: str, core: int | None, channel: Connection) -> None:
    from chinwag.fakes.apns import FakeApns
    from chinwag.fakes.faults import FaultPlan
    from chinwag.fakes.tls import make_pki

    if core is not None:
        pin_to(core)

    async def serve() -> None:
        pki = make_pki(Path(directory) / "pki")
        # Apple allows 1,000 concurrent streams per connection; so does the fake by default.
        fake = FakeApns(pki, Path(directory) / "keys")
        async with fake:
            channel.send((fake.settings(), str(pki.ca_file)))
            loop = asyncio.get_running_loop()
            while True:
                command, argument = await loop.run_in_executor(None, channel.recv)
                if command == "stop":
                    channel.send(None)
                    return
                if command == "latency":
                    fake.faults = FaultPlan(latency=float(argument))
                    channel.send(None)
                elif command == "reset":
                    fake.accepted.clear()
                    channel.send(None)
                elif command == "arrival":
                    records = list(fake.accepted)
                    channel.send(
                        Arrival(
                            len(records),
                            len({record.token for record in records}),
                            max((r.received_at for r in records), default=math.nan),
                        )
                    )

    asyncio.run(serve())


class FakeApnsProcess:
    """``FakeApns`` in a spawned child process, driven over a pipe."""

    def __init__(self, directory: Path, *, core: int | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._channel, theirs = context.Pipe()
        self.process = context.Process(
            target=_serve_fake, args=(str(directory), core, theirs), daemon=True
        )
        self.process.start()
        deadline = time.monotonic() + 60
        while not self._channel.poll(0.1):
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the APNs fake did not start")
        settings, ca_file = self._channel.recv()
        self.settings: ApnsSettings = settings
        self.ca_file = Path(ca_file)

    def _ask(self, command: str, argument: object = None) -> Any:
        self._channel.send((command, argument))
        return self._channel.recv()

    def set_latency(self, seconds: float) -> None:
        self._ask("latency", seconds)

    def reset(self) -> None:
        self._ask("reset")

    def arrival(self) -> Arrival:
        result: Arrival = self._ask("arrival")
        return result

    def wait_for(self, count: int, timeout: float, poll: float = 0.02) -> Arrival:
        """Wait until ``count`` distinct devices were notified; return what arrived either way."""
        deadline = time.monotonic() + timeout
        while True:
            arrival = self.arrival()
            if arrival.distinct >= count or time.monotonic() > deadline:
                return arrival
            time.sleep(poll)

    def env(self) -> dict[str, str]:
        """chinwag's settings pointing at this fake (and nothing else: other providers are off)."""
        return {
            "CHINWAG_APNS_KEY_FILE": str(self.settings.key_file),
            "CHINWAG_APNS_KEY_ID": self.settings.key_id,
            "CHINWAG_APNS_TEAM_ID": self.settings.team_id,
            "CHINWAG_APNS_TOPIC": self.settings.topic,
            "CHINWAG_APNS_URL": self.settings.url,
            "CHINWAG_CA_FILE": str(self.ca_file),
        }

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._ask("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


# Child processes


class Child:
    """A command run as a child process, its output in a log file."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        core: int | None = None,
        before_exec: Callable[[], object] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 -- closed in stop()

        def prepare() -> None:
            if core is not None:
                pin_to(core)
            if before_exec is not None:
                before_exec()

        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=prepare if core is not None or before_exec is not None else None,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


def base_env(**extra: str) -> dict[str, str]:
    """The parent's environment without any CHINWAG_ setting, so nothing leaks into a run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
    paths = [str(ROOT / "src"), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def wait_for_http(url: str, timeout: float = 30, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.process.poll() is not None:
            raise RuntimeError(f"{child.log_path.name} exited early:\n{child.output()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of the process's resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# chinwag's store: a big group without argon2 and HTTP round trips per member


def add_members_with_devices(db: Database, chat_id: int, group: int, size: int) -> None:
    """``size`` members in the chat, one APNs device each, written straight into the store as
    the product would write them (tests/support/seed.py); the members cannot sign in."""
    user_ids = add_users(db, [f"g{group}m{i}" for i in range(size)])
    add_members(db, chat_id, user_ids)
    owned = [(user_id, device_token(group, i)) for i, user_id in enumerate(user_ids)]
    add_devices_of(db, owned, "apns")


# The machine


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = math.nan
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
