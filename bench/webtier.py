"""Measurement 5: sends per second the web tier sustains (gunicorn, several workers) on SQLite and
on PostgreSQL, as a ratio to ``GET /healthz`` on the same server. Measurement 6: scale-out, one
against two worker processes on PostgreSQL + Redis.

The load tool is wrk (a Lua script makes it POST JSON with a bearer token). Where wrk is not
installed a small threaded Python client stands in, and the results say which tool ran.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.stack import ChinwagStack
from bench.support import ROOT, FakeApnsProcess, cpu_seconds, say

PG_ADMIN_DSN = os.environ.get("CHINWAG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# A Redis database of its own, so no other chinwag on this machine hears our doorbells.
REDIS_URL = os.environ.get("CHINWAG_BENCH_REDIS", "redis://127.0.0.1:6379/9")
WEB_WORKERS = 4
CONNECTIONS = 16

WRK_POST = """wrk.method = "POST"
wrk.body = '{"body": "Lunch at noon?"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except redis.RedisError:
        return False


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A throwaway schema in the test database, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    base = PG_ADMIN_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}?options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def load(url: str, seconds: float, workdir: Path, token: str | None = None) -> dict[str, Any]:
    """Requests per second at ``url`` (POST a message when a token is given, else GET)."""
    if shutil.which("wrk"):
        return _wrk(url, seconds, workdir, token)
    return _python_load(url, seconds, token)


def _wrk(url: str, seconds: float, workdir: Path, token: str | None) -> dict[str, Any]:
    argv = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency"]
    if token is not None:
        script = workdir / "post.lua"
        script.write_text(WRK_POST % token)
        argv += ["-s", str(script)]
    output = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    requests = int(total.group(1)) if total else 0
    non_2xx = int(bad.group(1)) if bad else 0
    all_rate = float(rate.group(1)) if rate else 0.0
    return {
        "tool": "wrk",
        # Only answers that did the work count: a 429 or 5xx is not a stored message.
        "per_second": all_rate * (requests - non_2xx) / requests if requests else 0.0,
        "all_answers_per_second": all_rate,
        "requests": requests,
        "non_2xx": non_2xx,
        "socket_errors": errors.group(0) if errors else "",
        "p50_ms": _ms(p50),
        "p99_ms": _ms(p99),
    }


def _ms(match: re.Match[str] | None) -> float | None:
    if match is None:
        return None
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


def _python_load(url: str, seconds: float, token: str | None) -> dict[str, Any]:
    counts = {"ok": 0, "bad": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def hammer() -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(headers=headers, timeout=30) as client:
            while time.monotonic() < deadline:
                if token:
                    answer = client.post(url, json={"body": "Lunch at noon?"})
                else:
                    answer = client.get(url)
                with lock:
                    counts["ok" if answer.status_code < 300 else "bad"] += 1

    threads = [threading.Thread(target=hammer) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = counts["ok"] + counts["bad"]
    return {
        "tool": "python-threads",
        "per_second": counts["ok"] / seconds,
        "all_answers_per_second": total / seconds,
        "requests": total,
        "non_2xx": counts["bad"],
        "socket_errors": "",
        "p50_ms": None,
        "p99_ms": None,
    }


def web_tier(
    fakes: FakeApnsProcess,
    workdir: Path,
    database: str,
    database_url: str,
    queue_url: str,
    seconds: float,
    src: Path | None = None,
) -> dict[str, Any]:
    stack = ChinwagStack(
        workdir / f"web-{database}",
        database_url,
        queue_url,
        fakes.env(),
        web="gunicorn",
        web_workers=WEB_WORKERS,
        src=src,
        # One benchmark user sends thousands of messages a minute; the per-user limit (300 a
        # minute by default) would answer 429 to nearly all of them and measure nothing.
        CHINWAG_RATE_SENDS_PER_MINUTE=str(10**9),
    )
    try:
        # No worker runs: this measures what the web tier alone accepts and makes durable.
        chat_id = stack.group(1)
        before = server_cpu(stack.web.pid)
        health = load(f"{stack.url}/healthz", seconds, stack.workdir)
        health["cpu"] = cpu_per_answer(before, server_cpu(stack.web.pid), health)
        before = server_cpu(stack.web.pid)
        sends = load(
            f"{stack.url}/v1/chats/{chat_id}/messages", seconds, stack.workdir, stack.token
        )
        sends["cpu"] = cpu_per_answer(before, server_cpu(stack.web.pid), sends)
    finally:
        stack.stop()
    result = {
        "database": database,
        "gunicorn_workers": WEB_WORKERS,
        "connections": CONNECTIONS,
        "seconds": seconds,
        "healthz": health,
        "send": sends,
        "ratio": sends["per_second"] / health["per_second"] if health["per_second"] else None,
    }
    say(
        f"web tier on {database:10s}: {sends['per_second']:7.0f} sends/s, "
        f"{health['per_second']:7.0f} healthz/s (ratio {result['ratio']:.2f}), "
        f"non-2xx {sends['non_2xx']}/{health['non_2xx']} via {sends['tool']}"
    )
    return result


# CPU time of the server side: the gunicorn workers and, on PostgreSQL, their backends. On a
# machine shared with other work the rates move with the load; the CPU per answer much less.


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _postgres_ports(pids: list[int]) -> list[int]:
    """Local ports of the pids' TCP connections to port 5432."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and remote.endswith(":1538"):  # 5432
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


def server_cpu(web_pid: int) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each gunicorn worker and of each PostgreSQL backend serving them."""
    workers = _children(web_pid)
    backends: list[int] = []
    ports = _postgres_ports(workers)
    if ports:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,)
            ).fetchall()
        backends = [int(row[0]) for row in rows]
    return {
        "web": {pid: cpu_seconds(pid) for pid in workers},
        "database": {pid: cpu_seconds(pid) for pid in backends},
    }


def cpu_per_answer(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], load: dict[str, Any]
) -> dict[str, float]:
    """µs of CPU per 2xx answer, by side (processes that started meanwhile count from 0)."""
    answers = max(1, load["requests"] - load["non_2xx"])
    return {
        side: sum(after[side][pid] - before[side].get(pid, 0.0) for pid in after[side])
        * 1e6
        / answers
        for side in ("web", "database")
    }


def run_web(fakes: FakeApnsProcess, workdir: Path, seconds: float) -> list[dict[str, Any]]:
    say(
        f"measurement 5: web tier, gunicorn x{WEB_WORKERS}, "
        f"{CONNECTIONS} connections, {seconds:.0f} s each"
    )
    results = [
        web_tier(
            fakes,
            workdir,
            "sqlite",
            f"sqlite:///{workdir / 'web-sqlite.db'}",
            f"sqlite:///{workdir / 'web-sqlite-queue.db'}",
            seconds,
        )
    ]
    if postgres_available() and redis_available():
        with postgres_schema() as url:
            results.append(web_tier(fakes, workdir, "postgresql", url, REDIS_URL, seconds))
    else:
        say("web tier on PostgreSQL: skipped, PostgreSQL or Redis is not reachable")
        results.append({"database": "postgresql", "skipped": "PostgreSQL or Redis not reachable"})
    return results


def run_scaleout(
    fakes: FakeApnsProcess, workdir: Path, size: int, latencies: tuple[float, ...], repeats: int
) -> list[dict[str, Any]]:
    say(f"measurement 6: scale-out on PostgreSQL + Redis, {size} devices, 1 vs 2 workers")
    if not (postgres_available() and redis_available()):
        say("scale-out: skipped, PostgreSQL or Redis is not reachable")
        return [{"skipped": "PostgreSQL or Redis not reachable"}]
    results: list[dict[str, Any]] = []
    with postgres_schema() as url:
        stack = ChinwagStack(workdir / "scaleout", url, REDIS_URL, fakes.env())
        try:
            chat_id = stack.group(size)
            for workers in (1, 2):
                for _ in range(workers):
                    stack.start_worker()
                fakes.set_latency(0.0)
                fakes.reset()
                stack.send(chat_id, "warm-up")  # every worker opens its connection
                fakes.wait_for(size, timeout=120)
                time.sleep(0.5)
                for latency in latencies:
                    fakes.set_latency(latency)
                    samples = []
                    for _ in range(repeats):
                        fakes.reset()
                        started, send_s = stack.send(chat_id)
                        arrival = fakes.wait_for(size, timeout=120 + size * latency / 100)
                        samples.append(
                            {
                                "send_s": send_s,
                                "last_s": arrival.last_at - started,
                                "notified": arrival.distinct,
                            }
                        )
                        time.sleep(0.3)
                    last = statistics.median(s["last_s"] for s in samples)
                    results.append(
                        {
                            "workers": workers,
                            "latency": latency,
                            "size": size,
                            "samples": samples,
                            "last_p50": last,
                            "per_second": size / last,
                            "all_arrived": all(s["notified"] >= size for s in samples),
                        }
                    )
                    say(
                        f"scale-out {workers} worker(s), latency {latency * 1000:3.0f} ms: "
                        f"last device after {last:.2f} s ({size / last:.0f} notifications/s)"
                    )
                stack.stop_workers()
        finally:
            fakes.set_latency(0.0)
            stack.stop()
    return results


def side_by_side(
    trees: dict[str, Path], databases: list[str], rounds: int, seconds: float
) -> dict[str, Any]:
    """Measurement 5 for each source tree, alternating tree by tree within each round."""
    runs: dict[str, list[dict[str, Any]]] = {
        f"{name} {db}": [] for name in trees for db in databases
    }
    with tempfile.TemporaryDirectory(prefix="chinwag-webtier-") as scratch:
        fakes = FakeApnsProcess(Path(scratch) / "fake")
        try:
            for round_ in range(rounds):
                for database in databases:
                    for index, (name, src) in enumerate(trees.items()):
                        workdir = Path(scratch) / f"r{round_}-{database}-{index}"
                        loadavg = Path("/proc/loadavg").read_text().split()[:3]
                        if database == "sqlite":
                            result = web_tier(
                                fakes,
                                workdir,
                                database,
                                f"sqlite:///{workdir / 'web-sqlite.db'}",
                                f"sqlite:///{workdir / 'web-sqlite-queue.db'}",
                                seconds,
                                src,
                            )
                        else:
                            with postgres_schema() as url:
                                result = web_tier(
                                    fakes, workdir, database, url, REDIS_URL, seconds, src
                                )
                        result["loadavg"] = loadavg
                        runs[f"{name} {database}"].append(result)
                        say(
                            f"  round {round_ + 1} {name} {database}: load {' '.join(loadavg)}; "
                            f"CPU µs per send web {result['send']['cpu']['web']:.0f} "
                            f"db {result['send']['cpu']['database']:.0f}, per healthz "
                            f"{result['healthz']['cpu']['web']:.0f}"
                        )
        finally:
            fakes.stop()
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webtier", description=__doc__)
    parser.add_argument("--src", type=Path, action="append", default=[], help="another src/")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per tree")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--database", action="append", choices=["sqlite", "postgresql"], default=[])
    args = parser.parse_args()
    trees = {"this tree": ROOT / "src", **{str(path): path for path in args.src}}
    runs = side_by_side(trees, args.database or ["sqlite", "postgresql"], args.rounds, args.seconds)
    print(
        "| tree, database | sends/s | healthz/s | ratio | send p50/p99 ms | "
        "CPU µs/send web + db | CPU µs/healthz | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, results in runs.items():
        for r in results:
            send, health = r["send"], r["healthz"]
            print(
                f"| {name} | {send['per_second']:.0f} | {health['per_second']:.0f} | "
                f"{r['ratio']:.3f} | {send['p50_ms']} / {send['p99_ms']} | "
                f"{send['cpu']['web']:.0f} + {send['cpu']['database']:.0f} | "
                f"{health['cpu']['web']:.0f} | {' '.join(r['loadavg'])} |"
            )
        ratios = [r["ratio"] for r in results]
        cpu = [r["send"]["cpu"]["web"] + r["send"]["cpu"]["database"] for r in results]
        print(
            f"| **{name}, median** | | | **{statistics.median(ratios):.3f}** | | "
            f"**{statistics.median(cpu):.0f}** | | |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
