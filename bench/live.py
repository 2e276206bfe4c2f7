"""The live gateway under 10,000 connections: ``python -m bench.live``.

One ``chinwag live`` process on SQLite (the gateway and the web tier on one port, as users run
it) is what is measured; the connections come from a load client in another process
(``bench.live_client``). In one run, side by side:

- opening 10,000 connections (half SSE, half WebSocket; 1,000 users with 10 each): total time and
  per-connection p50/p99;
- the gateway's resident memory before and with them open, per connection;
- ``GET /healthz`` and a send's latency idle and with the connections open (the sends go to a
  two-member chat whose members hold no connection, so what is measured is the cost of holding
  the connections, not of fanning a message out to them);
- send-to-receive latency in a chat of all 1,000 users: every connection records when each of
  the spaced-out messages reached it;
- the gateway's reads of the event log (its ``chinwag_live_tail_reads`` counter) and its CPU
  time per second at 0, 10,000 and 1,000 connections over the same interval and message rate;
- then two gateway processes on PostgreSQL + Redis: a message sent through one reaches the
  clients connected to the other.

Users and tokens are written straight into the store (argon2 for 1,000 sign-ups would only
measure argon2); tokens are stored as the product stores them, as ``accounts.token_digest``.

python -m bench.live            # full; updates the "live" part of bench/results/results.json
                                # and rewrites docs/benchmarks.md
python -m bench.live --quick    # seconds, 200 connections, SQLite only; bench/results/quick.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.support.network import free_port
from tests.support.seed import add_api_tokens, add_chat, add_members, add_users

from bench.live_client import LoadClientProcess, raise_open_files
from bench.support import (
    ROOT,
    Child,
    base_env,
    cpu_seconds,
    machine,
    percentile,
    python_argv,
    say,
    wait_for_http,
)
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade

RESULTS = Path(__file__).resolve().parent / "results"
OPEN_FILES = 65_536
TAIL_READS = re.compile(r"^chinwag_live_tail_reads_total (\S+)$", re.MULTILINE)
CONNECTIONS = re.compile(r"^chinwag_live_connections\{[^}]*\} (\S+)$", re.MULTILINE)
FANOUT_BUCKET = re.compile(
    r'^chinwag_live_fanout_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.MULTILINE
)


@dataclass(frozen=True)
class LivePlan:
    users: int  # every user is a member of the big chat
    per_user: int  # connections per user, alternately SSE and WebSocket
    healthz_probes: int
    send_probes: int
    reads_seconds: float  # each reads interval
    reads_rate: float  # messages per second sent to the big chat during a reads interval
    middle: int  # connections kept open for the middle reads point
    messages: int  # send-to-receive latency: messages sent to the big chat
    spacing: float  # seconds between them
    cluster_users: int  # PostgreSQL + Redis, two gateways; 0 = skipped
    cluster_per_user: int
    cluster_messages: int
    settle: float  # seconds to wait after opening connections before measuring memory
    ws_memory_users: int  # WebSocket memory with and without permessage-deflate; 0 = skipped


FULL = LivePlan(
    users=1000,
    per_user=10,
    healthz_probes=300,
    send_probes=100,
    reads_seconds=5.0,
    reads_rate=2.0,
    middle=1000,
    messages=20,
    spacing=1.0,
    cluster_users=200,
    cluster_per_user=10,
    cluster_messages=20,
    settle=2.0,
    ws_memory_users=400,
)
QUICK = LivePlan(
    users=20,
    per_user=10,
    healthz_probes=20,
    send_probes=5,
    reads_seconds=1.0,
    reads_rate=2.0,
    middle=20,
    messages=3,
    spacing=0.1,
    cluster_users=0,
    cluster_per_user=0,
    cluster_messages=0,
    settle=0.3,
    ws_memory_users=0,
)


# -- the store ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    tokens: list[tuple[int, str]]  # (user id, token) of the users who connect, the sender first
    big_chat: int  # every user who connects
    small_chat: int  # the bystander alone: sends there reach no connection
    bystander: str  # the token of a user who never connects


def seed(db: Database, count: int) -> Seeded:
    """``count`` users with a token each and a chat of all of them; a bystander and their chat.

    Users cannot sign in (no password hash: argon2 x 1,000 would take minutes); their tokens are
    random and stored as the product stores them (tests/support/seed.py).
    """
    ids = add_users(db, [f"live{i}" for i in range(count + 1)])  # the last one is the bystander
    tokens = add_api_tokens(db, ids)
    big = add_chat(db, f"All {count}", ids[0])
    add_members(db, big, ids[:count])
    small = add_chat(db, "Two", ids[0])
    add_members(db, small, ids[count:])
    pairs = list(zip(ids, tokens, strict=True))
    return Seeded(pairs[:count], big, small, tokens[count])


# -- the gateway process --------------------------------------------------------------------


def _lift_open_files() -> None:
    raise_open_files(OPEN_FILES)


def env_for(database_url: str, queue_url: str, port: int) -> dict[str, str]:
    return base_env(
        CHINWAG_DATABASE_URL=database_url,
        CHINWAG_QUEUE_URL=queue_url,
        CHINWAG_HOST="127.0.0.1",
        CHINWAG_PORT=str(port),
        CHINWAG_LOG_LEVEL="WARNING",
        # The sender posts hundreds of messages in a minute; 300 a minute is the default cap.
        CHINWAG_RATE_SENDS_PER_MINUTE=str(10**9),
    )


def migrate_and_seed(database_url: str, users_count: int) -> Seeded:
    """The schema (as ``chinwag migrate`` makes it, in this process: a child costs seconds of
    start-up in quick mode) and the users, tokens and chats."""
    db = Database(database_url)
    try:
        upgrade(db)
        return seed(db, users_count)
    finally:
        db.dispose()


class GatewayProcess:
    """``chinwag live`` as a child process with RLIMIT_NOFILE lifted; what it holds and reads."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        database_url: str,
        queue_url: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child = Child(
            python_argv("-m", "chinwag", "live"),
            {**env_for(database_url, queue_url, self.port), **(extra_env or {})},
            workdir / f"gateway-{name}.log",
            before_exec=_lift_open_files,
        )
        wait_for_http(f"{self.url}/healthz", timeout=60, child=self.child)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.child.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def open_files_limit(self) -> int:
        for line in Path(f"/proc/{self.child.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        return -1

    def tail_reads(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        found = TAIL_READS.search(text)
        if found is None:
            raise RuntimeError("chinwag_live_tail_reads_total is missing from /metrics")
        return float(found.group(1))

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.child.pid)

    def stop(self) -> None:
        self.child.stop()


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def reads_point(gateway: GatewayProcess, seeded: Seeded, plan: LivePlan) -> dict[str, Any]:
    """Event-log reads and CPU of the gateway over one fixed interval, while messages go to the
    big chat on a fixed schedule (from this process, so a busy load client cannot slow it)."""
    count = max(1, round(plan.reads_seconds * plan.reads_rate))
    time.sleep(min(0.5, plan.settle))  # let what the previous step started settle
    answered: list[float] = []
    sender = threading.Thread(
        target=_send_on_schedule,
        args=(gateway.url, seeded.tokens[0][1], seeded.big_chat, count, plan, answered),
    )
    reads, cpu, started = gateway.tail_reads(), gateway.cpu_seconds(), time.monotonic()
    sender.start()
    time.sleep(plan.reads_seconds)
    seconds = time.monotonic() - started
    reads_after, cpu_after = gateway.tail_reads(), gateway.cpu_seconds()
    sender.join(timeout=120)
    result = {
        "connections": gateway_connections(gateway),
        "seconds": seconds,
        "messages": count,
        "messages_answered_in_interval": sum(1 for t in answered if t - started <= seconds),
        "tail_reads": reads_after - reads,
        "tail_reads_per_s": (reads_after - reads) / seconds,
        "cpu_per_s": (cpu_after - cpu) / seconds,
        "load": load_average(),
    }
    say(
        f"reads at {result['connections']:>6,} connections: "
        f"{result['tail_reads_per_s']:.1f} tail reads/s, "
        f"gateway CPU {result['cpu_per_s']:.2f} s/s, "
        f"{result['messages_answered_in_interval']}/{count} sends answered in {seconds:.1f} s"
    )
    return result


def _send_on_schedule(
    url: str, token: str, chat_id: int, count: int, plan: LivePlan, answered: list[float]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        first = time.monotonic()
        for i in range(count):
            time.sleep(max(0.0, first + i / plan.reads_rate - time.monotonic()))
            answer = http.post(f"/v1/chats/{chat_id}/messages", json={"body": f"rate {i}"})
            if answer.status_code == 201:
                answered.append(time.monotonic())


def gateway_connections(gateway: GatewayProcess) -> int:
    """Open live connections by the gateway's own gauge (both transports)."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=30).text
    return round(sum(float(v) for v in CONNECTIONS.findall(text)))


def fanout_histogram(gateway: GatewayProcess) -> dict[float, float]:
    """The gateway's ``chinwag_live_fanout_seconds`` buckets: upper bound -> cumulative count."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=30).text
    return {float(le): float(n) for le, n in FANOUT_BUCKET.findall(text)}


def fanout_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """From event creation to the write on a connection, as the gateway measured it: the bucket
    bound under which 50% and 99% of the writes in between fell."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(float("inf"), 0.0)
    found: dict[str, Any] = {"writes": total}
    for name, share in (("p50_le_s", 0.5), ("p99_le_s", 0.99)):
        found[name] = next((le for le, n in delta.items() if total and n >= share * total), None)
    return found


def _ms(summary: dict[str, Any]) -> str:
    return f"p50 {summary['p50_s'] * 1000:.1f} ms, p99 {summary['p99_s'] * 1000:.1f} ms"


def run_single(
    workdir: Path,
    plan: LivePlan,
    client: LoadClientProcess,
    profile: bool = False,
    deflate: bool = True,
) -> dict[str, Any]:
    """Measurements 1-3 on one gateway process on SQLite."""
    connections = plan.users * plan.per_user
    say(
        f"live gateway on SQLite: {connections:,} connections ({plan.users:,} users x "
        f"{plan.per_user}), half SSE, half WebSocket"
    )
    database_url = f"sqlite:///{workdir / 'live.db'}"
    queue_url = f"sqlite:///{workdir / 'live-queue.db'}"
    seeded = migrate_and_seed(database_url, plan.users)
    gateway = GatewayProcess(workdir, "sqlite", database_url, queue_url)
    result: dict[str, Any] = {"database": "sqlite", "plan": asdict(plan), "ws_deflate": deflate}
    try:
        result["open_files_limit"] = {
            "gateway": gateway.open_files_limit(),
            "client": client.open_files_limit,
        }
        client.ask("target", gateway.port)
        sender = seeded.bystander
        probe = (sender, seeded.small_chat, plan.healthz_probes, plan.send_probes)
        client.ask("probe", sender, seeded.small_chat, 20, 5)  # warm-up: imports, pools, caches
        result["rss_idle_kib"] = gateway.rss_kib()
        result["load_before"] = load_average()
        result["idle"] = client.ask("probe", *probe)
        say(f"idle: healthz {_ms(result['idle']['healthz'])}; send {_ms(result['idle']['send'])}")
        result["reads"] = [reads_point(gateway, seeded, plan)]

        # SSE slots first, then the WebSocket ones: the memory of each transport on its own.
        stages = {}
        rss = {"none": gateway.rss_kib()}
        for transport in ("sse", "ws"):
            stages[transport] = client.ask(
                "open", seeded.tokens, plan.per_user, gateway.port, "sqlite", transport, deflate
            )
            time.sleep(plan.settle)  # the hub's last_active_at round, the handshakes' garbage
            rss[transport] = gateway.rss_kib()
        result["open"] = _combine(stages)
        opened = result["open"]
        say(
            f"opened {opened['opened']:,}/{opened['requested']:,} connections in "
            f"{opened['total_s']:.1f} s (per connection p50 {opened['p50_s'] * 1000:.0f} ms, "
            f"p99 {opened['p99_s'] * 1000:.0f} ms); {opened['failed']} failed"
        )
        result["rss_open_kib"] = rss["ws"]
        held = max(1, client.ask("count_open"))
        result["kib_per_connection"] = (result["rss_open_kib"] - result["rss_idle_kib"]) / held
        result["kib_per_sse"] = (rss["sse"] - rss["none"]) / max(1, stages["sse"]["opened"])
        result["kib_per_ws"] = (rss["ws"] - rss["sse"]) / max(1, stages["ws"]["opened"])
        say(
            f"gateway RSS {result['rss_idle_kib'] / 1024:.1f} MiB idle -> "
            f"{result['rss_open_kib'] / 1024:.1f} MiB with {held:,} open: "
            f"{result['kib_per_connection']:.1f} KiB per connection "
            f"(SSE {result['kib_per_sse']:.1f}, WebSocket {result['kib_per_ws']:.1f})"
        )
        result["load_open"] = load_average()
        result["loaded"] = client.ask("probe", *probe)
        say(
            f"with {result['loaded']['open_now']:,} open: healthz "
            f"{_ms(result['loaded']['healthz'])}; send {_ms(result['loaded']['send'])}"
        )
        result["reads"].append(reads_point(gateway, seeded, plan))
        sampler = None
        if profile:
            from bench.profile import record

            sampler = record(
                gateway.child.pid, plan.messages * plan.spacing, workdir / "gateway.raw"
            )
        histogram = fanout_histogram(gateway)
        cpu = gateway.cpu_seconds()
        result["load_latency_start"] = load_average()
        result["latency"] = client.ask(
            "latency",
            seeded.tokens[0][1],
            seeded.big_chat,
            plan.messages,
            plan.spacing,
            1,
            30.0,
            timeout=600,
        )
        latency = result["latency"]
        latency["gateway_cpu_s"] = gateway.cpu_seconds() - cpu
        latency["gateway_fanout"] = fanout_quantiles(histogram, fanout_histogram(gateway))
        # CPU per frame written: what the machine's load cannot change, unlike the latencies.
        latency["gateway_cpu_us_per_frame"] = 1e6 * latency["gateway_cpu_s"] / latency["expected"]
        latency["client_cpu_us_per_frame"] = 1e6 * latency["client_cpu_s"] / latency["expected"]
        say(
            f"send to receive, {latency['connections']:,} connections x {plan.messages} "
            f"messages: {_ms(latency['all'])}, max {latency['all']['max_s'] * 1000:.0f} ms; "
            f"{latency['arrived']:,}/{latency['expected']:,} arrived; the gateway's own "
            f"event-to-write p50 <= {latency['gateway_fanout']['p50_le_s']} s, "
            f"p99 <= {latency['gateway_fanout']['p99_le_s']} s; CPU per frame: gateway "
            f"{latency['gateway_cpu_us_per_frame']:.0f} us, load client "
            f"{latency['client_cpu_us_per_frame']:.0f} us"
        )
        result["load_latency"] = load_average()
        if sampler is not None:
            sampler.wait(60)
            name = "live-profile.md" if deflate else "live-profile-no-deflate.md"
            _write_profile(workdir / "gateway.raw", connections, plan, name)
        result["rss_peak_kib"] = _peak_kib(gateway.child.pid)
        client.ask("close", plan.middle)
        result["reads"].append(reads_point(gateway, seeded, plan))
        client.ask("close", 0)
        time.sleep(1.0)
        result["idle_after"] = client.ask("probe", *probe)
        say(
            f"idle again: healthz {_ms(result['idle_after']['healthz'])}; "
            f"send {_ms(result['idle_after']['send'])}"
        )
        result["idle_pooled"] = {
            what: _pooled(result["idle"][what], result["idle_after"][what])
            for what in ("healthz", "send")
        }
        for key in ("idle", "loaded", "idle_after"):  # the raw samples served the pooling
            for what in ("healthz", "send"):
                result[key][what].pop("samples", None)
    finally:
        gateway.stop()
    if plan.ws_memory_users and deflate:
        result["ws_memory"] = ws_memory(workdir, plan, client, seeded, database_url, queue_url)
    return result


def ws_memory(
    workdir: Path,
    plan: LivePlan,
    client: LoadClientProcess,
    seeded: Seeded,
    database_url: str,
    queue_url: str,
) -> dict[str, Any]:
    """Resident memory per WebSocket connection with and without permessage-deflate, each on a
    fresh gateway process (memory freed by closed connections would be reused otherwise)."""
    found: dict[str, Any] = {}
    for deflate in (True, False):
        gateway = GatewayProcess(workdir, f"ws-{deflate}", database_url, queue_url)
        try:
            client.ask("target", gateway.port)
            client.ask("probe", seeded.bystander, seeded.small_chat, 20, 5)
            before = gateway.rss_kib()
            opened = client.ask(
                "open",
                seeded.tokens[: plan.ws_memory_users],
                plan.per_user,
                gateway.port,
                "ws-memory",
                "ws",
                deflate,
            )
            time.sleep(plan.settle)
            held = max(1, opened["opened"])
            key = "deflate" if deflate else "no_compression"
            found[key] = {
                "connections": opened["opened"],
                "failed": opened["failed"],
                "kib_per_connection": (gateway.rss_kib() - before) / held,
            }
            client.ask("close", 0)
        finally:
            gateway.stop()
        say(
            f"WebSocket memory, {'permessage-deflate' if deflate else 'no compression'}: "
            f"{found[key]['kib_per_connection']:.1f} KiB per connection ({held:,} connections)"
        )
    return found


def trace_memory(workdir: Path, client: LoadClientProcess, users_count: int = 200) -> None:
    """Where a connection's memory goes: tracemalloc snapshots of a fresh gateway (through
    ``bench/tracemalloc_hook``) idle, after its SSE connections, after its WebSocket ones;
    bench/results/live-memory.md gets the biggest differences per connection."""
    import signal
    import tracemalloc

    database_url = f"sqlite:///{workdir / 'trace.db'}"
    seeded = migrate_and_seed(database_url, users_count)
    out = workdir / "snapshot"
    hook = Path(__file__).resolve().parent / "tracemalloc_hook"
    env = {
        "CHINWAG_BENCH_SNAPSHOT": str(out),
        "PYTHONPATH": os.pathsep.join([str(hook), base_env()["PYTHONPATH"]]),
    }
    queue_url = f"sqlite:///{workdir / 'trace-queue.db'}"
    gateway = GatewayProcess(workdir, "trace", database_url, queue_url, env)
    snapshots: dict[str, tracemalloc.Snapshot] = {}
    counts: dict[str, int] = {}

    def snap(name: str) -> None:
        done = Path(str(out) + ".done")
        done.unlink(missing_ok=True)
        os.kill(gateway.child.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while not done.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway wrote no tracemalloc snapshot")
            time.sleep(0.2)
        snapshots[name] = tracemalloc.Snapshot.load(str(out))

    try:
        client.ask("target", gateway.port)
        client.ask("probe", seeded.bystander, seeded.small_chat, 20, 5)
        snap("idle")
        for transport in ("sse", "ws"):
            opened = client.ask("open", seeded.tokens, 10, gateway.port, "trace", transport, True)
            counts[transport] = opened["opened"]
            time.sleep(1.0)
            snap(transport)
        client.ask("close", 0)
    finally:
        gateway.stop()
    lines = [
        "### Where a connection's memory goes",
        "",
        "`python -m bench.live --trace-memory`: tracemalloc in a fresh gateway process",
        f"({users_count} users x 10 connections: {counts['sse']:,} SSE, then {counts['ws']:,}",
        "WebSocket with permessage-deflate); the allocation sites that grew most, in bytes per",
        "connection. Python's allocations only (and zlib's, which go through Python's allocator);",
        "RSS adds the allocator's slack and the kernel's per-socket memory is not in RSS.",
    ]
    for transport, before in (("sse", "idle"), ("ws", "sse")):
        stats = snapshots[transport].compare_to(snapshots[before], "lineno")
        total = sum(stat.size_diff for stat in stats)
        per = max(1, counts[transport])
        lines += [
            "",
            f"{transport.upper()}: {total / per / 1024:.1f} KiB per connection traced in all.",
            "",
            "| bytes per connection | blocks per connection | allocated at |",
            "|---:|---:|---|",
        ]
        for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:12]:
            frame = stat.traceback[0]
            where = _short_path(frame.filename)
            lines.append(
                f"| {stat.size_diff / per:,.0f} | {stat.count_diff / per:.1f} | "
                f"`{where}:{frame.lineno}` |"
            )
    (RESULTS / "live-memory.md").write_text("\n".join(lines) + "\n")
    say("wrote bench/results/live-memory.md")


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _combine(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    times = [t for stage in stages.values() for t in stage.pop("times")]
    return {
        "requested": sum(stage["requested"] for stage in stages.values()),
        "opened": len(times),
        "failed": sum(stage["failed"] for stage in stages.values()),
        "failures": [f for stage in stages.values() for f in stage["failures"]][:10],
        "total_s": sum(stage["total_s"] for stage in stages.values()),
        "p50_s": percentile(times, 0.5),
        "p99_s": percentile(times, 0.99),
        "max_s": max(times, default=float("nan")),
        "stages": stages,
    }


def _pooled(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    samples = [*first["samples"], *second["samples"]]
    return {
        "count": len(samples),
        "p50_s": percentile(samples, 0.5),
        "p99_s": percentile(samples, 0.99),
        "max_s": max(samples, default=float("nan")),
    }


def _write_profile(raw: Path, connections: int, plan: LivePlan, name: str) -> None:
    from bench.profile import section

    if not raw.exists():
        say("py-spy wrote no profile")
        return
    lines = [
        "### Profile: the gateway during the send-to-receive test",
        "",
        "`python -m bench.live --profile`: py-spy sampling the `chinwag live` process from",
        f"outside while {plan.messages} messages reach {connections:,} connections.",
        "",
        *section("gateway process", raw)[2:],
    ]
    (RESULTS / name).write_text("\n".join(lines) + "\n")
    say(f"wrote bench/results/{name}")


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def run_cluster(workdir: Path, plan: LivePlan, client: LoadClientProcess) -> dict[str, Any]:
    """Measurement 4: two gateways on PostgreSQL + Redis; sends through A, clients on A and B."""
    from bench.webtier import REDIS_URL, postgres_available, postgres_schema, redis_available

    if not plan.cluster_users:
        return {"skipped": "not in this mode"}
    if not (postgres_available() and redis_available()):
        say("two gateways on PostgreSQL: skipped, PostgreSQL or Redis is not reachable")
        return {"skipped": "PostgreSQL or Redis not reachable"}
    half = plan.cluster_users // 2
    say(
        f"two gateways on PostgreSQL + Redis: {plan.cluster_users * plan.cluster_per_user:,} "
        f"connections, half on each; messages sent through gateway a"
    )
    with postgres_schema() as database_url:
        seeded = migrate_and_seed(database_url, plan.cluster_users)
        gateways = {}
        try:
            for name in ("a", "b"):
                gateways[name] = GatewayProcess(workdir, f"pg-{name}", database_url, REDIS_URL)
            client.ask("target", gateways["a"].port)
            opened = {
                name: client.ask("open", tokens, plan.cluster_per_user, gateways[name].port, name)
                for name, tokens in (("a", seeded.tokens[:half]), ("b", seeded.tokens[half:]))
            }
            for name, figures in opened.items():
                figures.pop("times")
                say(
                    f"gateway {name}: {figures['opened']:,} connections in "
                    f"{figures['total_s']:.1f} s, {figures['failed']} failed"
                )
            time.sleep(1.0)
            latency = client.ask(
                "latency",
                seeded.tokens[0][1],
                seeded.big_chat,
                plan.cluster_messages,
                0.5,
                10_001,
                30.0,
                timeout=600,
            )
            client.ask("close", 0)
        finally:
            for gateway in gateways.values():
                gateway.stop()
    for name in ("a", "b"):
        summary = latency.get(f"gateway {name}")
        if summary:
            say(f"sent through a, received on {name}: {_ms(summary)}, {summary['count']} arrivals")
    return {
        "database": "postgresql",
        "queue": "redis",
        "open": opened,
        "latency": latency,
        "load": load_average(),
    }


def run(
    workdir: Path, plan: LivePlan, *, profile: bool = False, deflate: bool = True
) -> dict[str, Any]:
    """Every live measurement of ``plan``; the figures, the targets and how to reproduce them."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    raise_open_files(OPEN_FILES)
    client = LoadClientProcess()
    try:
        results: dict[str, Any] = {
            "command": "python -m bench.live" + (" --quick" if plan == QUICK else ""),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "load_start": load_average(),
            "single": run_single(workdir, plan, client, profile, deflate),
            "cluster": run_cluster(workdir, plan, client),
        }
    finally:
        client.stop()
    results["load_end"] = load_average()
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = targets(results)
    results["all_arrived"] = all_arrived(results)
    return results


def all_arrived(results: dict[str, Any]) -> bool:
    single = results["single"]
    rows = [single["latency"]]
    if "latency" in results["cluster"]:
        rows.append(results["cluster"]["latency"])
    return single["open"]["failed"] == 0 and all(r["arrived"] == r["expected"] for r in rows)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    single = results["single"]
    held = single["loaded"]["open_now"]
    found = []
    kib = single["kib_per_connection"]
    found.append(
        {
            "name": f"gateway memory under 30 KB per connection ({held:,} open)",
            "measured": f"{kib * 1.024:.1f} KB ({kib:.1f} KiB)",
            "value": kib * 1.024,
            "met": kib * 1.024 < 30,
        }
    )
    for what in ("healthz", "send"):
        idle = single["idle_pooled"][what]
        loaded = single["loaded"][what]
        ratio50 = loaded["p50_s"] / idle["p50_s"]
        ratio99 = loaded["p99_s"] / idle["p99_s"]
        label = "GET /healthz" if what == "healthz" else "send (POST /v1/chats/{id}/messages)"
        found.append(
            {
                "name": f"{label} p50/p99 with {held:,} open within 1.5x of idle "
                "(before and after, pooled)",
                "measured": f"p50 {loaded['p50_s'] * 1000:.1f} vs {idle['p50_s'] * 1000:.1f} ms "
                f"= {ratio50:.2f}x; p99 {loaded['p99_s'] * 1000:.1f} vs "
                f"{idle['p99_s'] * 1000:.1f} ms = {ratio99:.2f}x",
                "value": max(ratio50, ratio99),
                "met": ratio50 <= 1.5 and ratio99 <= 1.5,
            }
        )
    latency = single["latency"]
    found.append(
        {
            "name": f"send to receive p99 within 1 s ({latency['connections']:,} connections, "
            f"{latency['messages']} messages)",
            "measured": f"p99 {latency['all']['p99_s'] * 1000:.0f} ms, max "
            f"{latency['all']['max_s'] * 1000:.0f} ms; {latency['arrived']:,}/"
            f"{latency['expected']:,} arrived",
            "value": latency["all"]["p99_s"],
            "met": latency["all"]["p99_s"] <= 1.0 and latency["arrived"] == latency["expected"],
        }
    )
    reads = single["reads"]
    base = reads[0]["tail_reads_per_s"]
    most = max(point["tail_reads_per_s"] for point in reads)
    found.append(
        {
            "name": "event-log reads per second do not grow with the connections held "
            "(at most 1.2x the rate at 0 connections)",
            "measured": ", ".join(
                f"{p['tail_reads_per_s']:.1f}/s at {p['connections']:,}" for p in reads
            ),
            "value": most / base if base else float("inf"),
            "met": bool(base) and most <= 1.2 * base,
        }
    )
    cluster = results["cluster"]
    if "latency" in cluster:
        across = cluster["latency"].get("gateway b")
        if across:
            found.append(
                {
                    "name": "two gateways (PostgreSQL + Redis): sent through a, received on b",
                    "measured": f"p50 {across['p50_s'] * 1000:.0f} ms, p99 "
                    f"{across['p99_s'] * 1000:.0f} ms; {cluster['latency']['arrived']:,}/"
                    f"{cluster['latency']['expected']:,} arrived",
                    "value": across["p99_s"],
                    "met": across["p99_s"] <= 1.0
                    and cluster["latency"]["arrived"] == cluster["latency"]["expected"],
                }
            )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 connections, SQLite only")
    parser.add_argument("--out", type=Path, help="a JSON file of its own for these results")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the gateway with py-spy during the send-to-receive test "
        "(bench/results/live-profile.md)",
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="only: where a connection's memory goes, by tracemalloc in a fresh gateway "
        "(bench/results/live-memory.md)",
    )
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="what-if: WebSocket clients do not offer permessage-deflate (as if the gateway "
        "refused it); results to bench/results/live-no-deflate.json unless --out",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.trace_memory:
        raise_open_files(OPEN_FILES)
        client = LoadClientProcess()
        try:
            with tempfile.TemporaryDirectory(prefix="chinwag-live-trace-") as scratch:
                trace_memory(Path(scratch), client)
        finally:
            client.stop()
        return 0
    with tempfile.TemporaryDirectory(prefix="chinwag-live-bench-") as scratch:
        live = run(Path(scratch), plan, profile=args.profile, deflate=not args.no_deflate)
    if args.no_deflate:
        live["command"] += " --no-deflate"
        args.out = args.out or RESULTS / "live-no-deflate.json"
    for target in live["targets"]:
        say(f"target: {target['name']}: {target['measured']} -> " + _verdict(target))
    if args.out is not None:
        args.out.write_text(json.dumps(live, indent=2) + "\n")
        say(f"wrote {args.out}")
    elif not args.quick:
        path = RESULTS / "results.json"
        results = json.loads(path.read_text())
        results["live"] = live
        path.write_text(json.dumps(results, indent=2) + "\n")
        from bench.report import write_report

        write_report(results)
        say(f"wrote the live part of {path.relative_to(ROOT)} and docs/benchmarks.md")
    if not live["all_arrived"]:
        say("FAILED: a connection did not open or a message did not arrive")
        return 1
    return 0


def _verdict(target: dict[str, Any]) -> str:
    return "met" if target["met"] else "MISSED"


if __name__ == "__main__":
    raise SystemExit(main())
