"""docs/benchmarks.md and docs/img/*.png, written from one full run's results and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.support import ROOT

DOCS = ROOT / "docs"
IMG = DOCS / "img"
LABELS = {
    "chinwag": "chinwag",
    "sync_bottle": "(1) original, synchronous",
    "mp_bottle": "(2) original, Process per request",
    "chinwag_tuned": "chinwag, CHINWAG_MAX_IN_FLIGHT=500",
}
PROFILE_NOTES = Path(__file__).resolve().parent / "results" / "profile.md"


def _rows(results: dict[str, Any], system: str, latency: float) -> list[dict[str, Any]]:
    return sorted(
        (
            r
            for r in results["fanout"]
            if r["system"] == system and r["latency"] == latency and "skipped" not in r
        ),
        key=lambda r: r["size"],
    )


def plot_send_latency(results: dict[str, Any]) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for system, label in LABELS.items():
        rows = _rows(results, system, 0.0)
        if not rows:
            continue
        axis.plot(
            [r["size"] for r in rows], [r["send_p50"] * 1000 for r in rows], "o-", label=label
        )
    axis.set(
        xscale="log",
        yscale="log",
        xlabel="devices in the group",
        ylabel="send latency p50 (ms)",
        title="Time until the sender gets an answer (0 ms provider)",
    )
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    return _save(figure, "send_latency.png")


def plot_last_device(results: dict[str, Any]) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, latency in zip(axes, (0.0, 0.2), strict=True):
        for system, label in LABELS.items():
            rows = _rows(results, system, latency)
            if not rows:
                continue
            marker = "*" if system == "chinwag_tuned" else "o-"
            axis.plot([r["size"] for r in rows], [r["last_p50"] for r in rows], marker, label=label)
        axis.set(
            xscale="log",
            yscale="log",
            xlabel="devices in the group",
            title=f"provider latency {latency * 1000:.0f} ms",
        )
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("send to last device notified, p50 (s)")
    axes[0].legend()
    return _save(figure, "last_device.png")


def plot_throughput(results: dict[str, Any]) -> Path:
    tp = results["throughput"]
    names = [
        "chinwag worker\n(end to end, SQLite)",
        "chinwag APNs sender\n(client only)",
        "aioapns\n(client only)",
    ]
    values = [tp["worker"]["per_second"], tp["sender"]["per_second"], tp["aioapns"]["per_second"]]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    bars = axis.bar(names, values, color=["tab:blue", "tab:cyan", "tab:gray"])
    axis.bar_label(bars, fmt="%.0f")
    axis.axhline(6000, color="tab:red", linestyle="--", label="target 6,000/s (issue 15)")
    axis.set(
        ylabel="notifications per second, one core",
        title=f"{tp['size']:,} notifications, 0 ms provider latency (median of {tp['repeats']})",
    )
    axis.legend()
    return _save(figure, "throughput.png")


def plot_cores(results: dict[str, Any]) -> Path:
    """Measurements 8 to 10 side by side: processes, sends during fan-outs, growth."""
    cores = results["cores"]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    rows = cores["processes"]["rows"]
    bars = axes[0].bar(
        [f"--processes {row['processes']}" for row in rows],
        [row["per_second"] for row in rows],
        color=["tab:blue", "tab:cyan"],
    )
    axes[0].bar_label(bars, fmt="%.0f")
    axes[0].set(
        ylabel="notifications per second",
        title=f"8. chinwag worker, {rows[0]['size']:,} devices, SQLite",
    )
    rounds = cores["serve"]["rounds"]
    labels, values = ["1 member, idle"], [rounds[0]["idle_one_p50"] * 1000]
    for row in rounds:
        labels.append(f"{row['size']:,}, fan-outs running\n({row['label']})")
        values.append(row["busy_big_p50"] * 1000)
    bars = axes[1].bar(labels, values, color=["tab:gray", "tab:blue", "tab:orange"][: len(values)])
    axes[1].bar_label(bars, fmt="%.1f")
    axes[1].axhline(values[0] * 1.25, color="tab:red", linestyle="--", label="1.25x idle")
    axes[1].set(ylabel="send p50 (ms)", title="9. sends under chinwag serve")
    axes[1].legend()
    growth = cores["growth"]
    sizes = [growth["small"], growth["large"]]
    lasts = [growth["small_last_p50"], growth["large_last_p50"]]
    axes[2].plot(sizes, lasts, "o-", label="measured")
    axes[2].plot(
        sizes,
        [growth["small_last_p50"], growth["large_expected"]],
        "--",
        color="tab:gray",
        label=f"linear at the {growth['small']:,}-device rate",
    )
    axes[2].set(
        xscale="log",
        yscale="log",
        xlabel="devices in the group",
        ylabel="send to last device, p50 (s)",
        title="10. growth, one worker process",
    )
    axes[2].grid(True, which="both", alpha=0.3)
    axes[2].legend()
    return _save(figure, "cores.png")


def cores_section(results: dict[str, Any]) -> list[str]:
    cores = results["cores"]
    png = plot_cores(results)
    processes = cores["processes"]
    lines = [
        "## 8. Every core: `chinwag worker --processes N`",
        "",
        f"![cores]({png.relative_to(DOCS)})",
        "",
        "SQLite, `chinwag web` and the APNs fake pinned to core 0, the worker processes free to",
        f"run on any of the {processes['nproc']} cores; 0 ms provider latency, median of "
        f"{len(processes['rows'][0]['runs'])} fan-outs after one unmeasured one. *Cores busy* =",
        "the CPU seconds of the worker processes over the fan-out's wall-clock time.",
        "",
        "| worker processes | devices | notifications/s | cores busy | runs (notifications/s) |",
        "|---:|---:|---:|---:|---|",
    ]
    for row in processes["rows"]:
        runs = ", ".join(f"{run['per_second']:.0f}" for run in row["runs"])
        lines.append(
            f"| {row['processes']} | {row['size']:,} | {row['per_second']:.0f} | "
            f"{row['cores_busy']:.2f} | {runs} |"
        )
    lines += [
        "",
        f"Two processes ÷ one: {processes['two_vs_one']:.2f}x.",
        "",
        "## 9. Sends during fan-outs, under `chinwag serve`",
        "",
        "`chinwag serve` as shipped (one `chinwag live` web process and one worker process per",
        "core, SQLite). The 1-member group's sends come first, on an idle system, one every",
        "50 ms; then sends to the big group go out on a fixed schedule, each while the",
        "fan-outs of the ones before it still run. *As shipped*: workers at nice 10, write",
        "transactions of 200 rows; *as before*: the same `chinwag serve` with `--worker-nice 0`",
        "and `CHINWAG_WORKER_BATCH=1000` (serve's behaviour before issue 15), in the same run.",
        "",
        "| serve | workers | nice | batch | 1 member, idle: p50 / p99 (ms) | big group during "
        "fan-outs: p50 / p99 (ms) | ratio of p50s | sends | notified | fan-out rate (/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in cores["serve"]["rounds"]:
        lines.append(
            f"| {row['label']} | {row['worker_processes']} | {row['worker_nice']} | "
            f"{row['worker_batch']} | "
            f"{_ms(row['idle_one_p50'])} / {_ms(row['idle_one_p99'])} | "
            f"{_ms(row['busy_big_p50'])} / {_ms(row['busy_big_p99'])} | {row['ratio']:.2f}x | "
            f"{row['sends']} to {row['size']:,} devices, one every {row['spacing_s']:g} s | "
            f"{row['notified']:,} / {row['expected']:,} | {row['fanout_rate']:.0f} |"
        )
    growth = cores["growth"]
    lines += [
        "",
        f"## 10. Growth: a {growth['large']:,}-device group",
        "",
        "SQLite, `chinwag web` and one `chinwag worker` process, 0 ms provider latency; each",
        "send's fan-out finishes before the next.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| send p50, 1-device group (10 sends) | {_ms(growth['one_send_p50'])} ms |",
        f"| send p50, {growth['large']:,}-device group | {_ms(growth['large_send_p50'])} ms |",
        f"| last device, {growth['small']:,} devices (p50) | {growth['small_last_p50']:.2f} s "
        f"({growth['small_rate']:.0f}/s) |",
        f"| last device, {growth['large']:,} devices (p50) | {growth['large_last_p50']:.2f} s |",
        f"| expected at the {growth['small']:,}-device rate | {growth['large_expected']:.2f} s |",
        f"| measured ÷ expected | {growth['last_ratio']:.2f}x |",
        f"| worker peak RSS (VmHWM) | {growth['peak_rss_mb']:.1f} MiB |",
    ]
    return lines


def _stages_lines(results: dict[str, Any]) -> list[str]:
    """The worker's CPU per notification by stage (bench.stages), if measured."""
    if "stages" not in results:
        return []
    found = results["stages"]
    lines = [
        "### The worker's CPU per notification, by stage",
        "",
        f"`bench.stages` in the same run: {len(found['runs'])} more fan-outs of "
        f"{results['throughput']['size']:,} devices by a worker on core 1, its threads' CPU time",
        "read from /proc: the event loop's is *send* (the sender, HTTP/2, HPACK, TLS, asyncio);",
        "the database thread's is split by py-spy's samples of it (claim, expand, record, other).",
        "",
        "| stage | µs of CPU per notification |",
        "|---|---:|",
    ]
    for stage, micros in found["us_by_stage"].items():
        lines.append(f"| {stage} | {micros:.0f} |")
    lines += [
        f"| **all (median run)** | **{found['cpu_us_per_notification']:.0f}** |",
        "",
        f"At {found['cpu_us_per_notification']:.0f} µs a notification, one core does at most "
        f"{1e6 / found['cpu_us_per_notification']:,.0f} a second.",
        "",
    ]
    return lines


def _save(figure: Any, name: str) -> Path:
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _fanout_table(results: dict[str, Any], latency: float) -> list[str]:
    lines = [
        "| devices | system | send p50 (ms) | send p99 (ms) | last device p50 (s) "
        "| last device max (s) | sends |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    rows = [r for r in results["fanout"] if r["latency"] == latency]
    for row in sorted(rows, key=lambda r: (r["size"], list(LABELS).index(r["system"]))):
        label = LABELS[row["system"]]
        if "skipped" in row:
            lines.append(
                f"| {row['size']:,} | {label} | not run | | ≥ {row['floor_s']:.0f} (serial) | | 0 |"
            )
            continue
        lines.append(
            f"| {row['size']:,} | {label} | {_ms(row['send_p50'])} | {_ms(row['send_p99'])} | "
            f"{row['last_p50']:.3f} | {row['last_max']:.3f} | {len(row['samples'])} |"
        )
    return lines


def _ratio_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| provider latency | devices | baseline | send p50: baseline ÷ chinwag "
        "| last device: baseline ÷ chinwag |",
        "|---:|---:|---|---:|---:|",
    ]
    for entry in results["ratios"]["fanout"]:
        label = LABELS[entry["baseline"]]
        head = f"| {entry['latency'] * 1000:.0f} ms | {entry['size']:,} | {label} |"
        if "last_at_least" in entry:
            lines.append(f"{head} not run | ≥ {entry['last_at_least']:.0f}x (serial floor) |")
        else:
            lines.append(f"{head} {entry['send_p50']:.2f}x | {entry['last_p50']:.2f}x |")
    return lines


def write_report(results: dict[str, Any]) -> Path:
    send_png = plot_send_latency(results)
    last_png = plot_last_device(results)
    tp_png = plot_throughput(results)
    m = results["machine"]
    tp = results["throughput"]
    r = results["ratios"]
    lines = [
        "# Benchmarks",
        "",
        "Every number on this page was written by a run of the benchmark command; nothing is",
        "typed in by hand (section 7 may come from a run of its own command, `python -m",
        "bench.live`; its date is below). Run it yourself and this page is rewritten with your",
        "machine's numbers:",
        "",
        "```sh",
        "make bench            # = .venv/bin/python -m bench   (about 20 minutes)",
        "make bench-quick      # = .venv/bin/python -m bench --quick   (CI: checks delivery only)",
        "```",
        "",
        f"- date: {results['date']} · run took {results['duration_s']:.0f} s",
        f"- machine: {m['nproc']} cores, {m['cpu']}, {m['memory_gib']} GiB memory, "
        f"Python {m['python']}, {m['platform']}",
        f"- command: `{results['command']}` · raw results: `bench/results/results.json`",
        *(
            [
                f"- section 7, the live gateway: {results['live']['date']} · command "
                f"`{results['live']['command']}` (also part of `python -m bench`)"
            ]
            if "live" in results
            else []
        ),
        "",
        "## Set-up",
        "",
        "- The APNs fake (`chinwag.fakes.apns.FakeApns`: HTTP/2 over TLS, JWT checked as Apple",
        "  does) runs in a process of its own pinned to core 0; provider latency is its injected",
        "  delay per request. Group members have one APNs device each.",
        "- chinwag runs as users run it: `chinwag migrate`, `chinwag web` (waitress) and one",
        "  `chinwag worker` process (`CHINWAG_WORKER_PROCESSES=1`; measurements 8 and 9 run",
        "  `--processes 2` and `chinwag serve`), SQLite (WAL) and the SQLite doorbell queue,",
        "  default settings otherwise (`CHINWAG_MAX_IN_FLIGHT=2000`).",
        "- Baselines in `bench/baselines/`: (1) `sync_bottle` pushes to each device one after",
        "  another before answering; (2) `mp_bottle` answers, then a `multiprocessing.Process`",
        "  started per request runs the same loop; both are Bottle on waitress, SQLite, HTTP/2",
        "  with a real ES256 JWT, one request at a time (the original protocol, APNs binary, is",
        "  shut down).",
        "  (3) `aioapns_peer` sends the same notifications with aioapns.",
        "- A send = `POST` of one message; *last device* = the time the fake accepted the last",
        "  notification minus the moment the send request started. Each send's fan-out finishes",
        "  before the next send starts.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    for target in results["targets"]:
        lines.append(
            f"| {target['name']} | {target['measured']} | "
            f"{'met' if target['met'] else '**missed**'} |"
        )
    lines += [
        "",
        "## 1. Send latency against group size",
        "",
        f"![send latency]({send_png.relative_to(DOCS)})",
        "",
        "Provider latency 0 ms:",
        "",
        *_fanout_table(results, 0.0),
        "",
        "## 2. Time from send to the last device notified",
        "",
        f"![last device]({last_png.relative_to(DOCS)})",
        "",
        "Provider latency 200 ms (the 0 ms rows are in the table above). A baseline row marked",
        "*not run* would take at least devices x 200 ms per send by construction, since it sends",
        "one request at a time; that floor is shown instead. The row *CHINWAG_MAX_IN_FLIGHT=500*",
        "is chinwag with one setting changed, run in the same session: 500 sends in flight per",
        "provider, the default before this run's changes (now 2,000); at 200 ms, 500 in flight",
        "caps a worker at 2,500 notifications/s.",
        "",
        *_fanout_table(results, 0.2),
        "",
        "### Ratios (greater than 1: chinwag is ahead)",
        "",
        *_ratio_table(results),
        "",
        "## 3. Notifications per second per worker process on one core",
        "",
        f"![throughput]({tp_png.relative_to(DOCS)})",
        "",
        f"{tp['size']:,} notifications at 0 ms provider latency, the measured process pinned to",
        "core 1 and the fake to core 0, median of "
        f"{tp['repeats']} runs. The chinwag worker is measured end to end (claim, expand into",
        "delivery rows, send, record every outcome in SQLite) from the send request to the last",
        "device; the two clients only send.",
        "",
        "| what | notifications/s | CPU seconds (median run) |",
        "|---|---:|---:|",
    ]
    for key, label in (
        ("worker", "chinwag worker, end to end"),
        ("sender", "chinwag APNs sender alone"),
        ("aioapns", "aioapns (peer)"),
    ):
        runs = sorted(tp[key]["runs"], key=lambda run: run["per_second"])
        lines.append(
            f"| {label} | {tp[key]['per_second']:.0f} | {runs[len(runs) // 2]['cpu_seconds']:.2f} |"
        )
    lines += [
        "",
        f"chinwag worker ÷ aioapns: {r['worker_vs_aioapns']:.2f}x · chinwag sender ÷ aioapns: "
        f"{r['sender_vs_aioapns']:.2f}x",
        "",
        *_stages_lines(results),
        "## 4. Worker peak RSS",
        "",
        f"Peak resident memory (the kernel's VmHWM) of the worker process after {tp['repeats']}",
        f"fan-outs of {results['rss']['size']:,} devices: **{results['rss']['peak_mb']:.1f} MiB**"
        f" (after start-up and one warm-up send: {results['rss']['after_warm_up_mb']:.1f} MiB).",
        "",
        "## 5. Web tier: sends per second",
        "",
        "gunicorn, `chinwag.wsgi:application`, no fan-out worker running (the web tier alone",
        "stores message + outbox row and rings the doorbell). Load by wrk over keep-alive",
        "connections. The per-user send limit is raised for this run only",
        "(`CHINWAG_RATE_SENDS_PER_MINUTE`): one load-test user would otherwise be refused with",
        "429 after 300 sends a minute. sends/s counts 2xx answers only.",
        "",
        "| database (queue) | gunicorn workers | connections | sends/s | send p50 / p99 (ms) "
        "| GET /healthz/s | sends ÷ healthz | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["web"]:
        if "skipped" in row:
            lines.append(f"| {row['database']} | — | — | skipped: {row['skipped']} | | | | |")
            continue
        send, health = row["send"], row["healthz"]
        queue = "SQLite" if row["database"] == "sqlite" else "Redis"
        latency = (
            f"{send['p50_ms']:.1f} / {send['p99_ms']:.1f}" if send["p50_ms"] is not None else "—"
        )
        lines.append(
            f"| {row['database']} ({queue}) | {row['gunicorn_workers']} | {row['connections']} | "
            f"{send['per_second']:.0f} | {latency} | {health['per_second']:.0f} | "
            f"{row['ratio']:.2f} | {send['non_2xx']} |"
        )
    if "statements" in results:
        lines += [
            "",
            "What one send costs the database (`python -m bench.statements`: the web app in",
            "process, a SQLAlchemy event listener counting one `POST` after warm-up sends; round",
            "trips = statements + BEGINs + COMMITs; the doorbell's enqueue is apart):",
            "",
            "| database | statements | transactions | round trips | pool checkouts "
            "| doorbell rings |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in results["statements"]:
            lines.append(
                f"| {row['database']} | {row['statements']} | {row['transactions']} | "
                f"{row['round_trips']} | {row['checkouts']} | {row['doorbell_rings']} |"
            )
    lines += ["", "## 6. Scale-out: one and two worker processes on PostgreSQL + Redis", ""]
    scale = [row for row in results["scaleout"] if "skipped" not in row]
    if scale:
        lines += [
            "| provider latency | workers | devices | last device p50 (s) | notifications/s |",
            "|---:|---:|---:|---:|---:|",
        ]
        for row in sorted(scale, key=lambda x: (x["latency"], x["workers"])):
            lines.append(
                f"| {row['latency'] * 1000:.0f} ms | {row['workers']} | {row['size']:,} | "
                f"{row['last_p50']:.2f} | {row['per_second']:.0f} |"
            )
        lines += [
            "",
            "Two workers ÷ one: "
            + ", ".join(
                f"{v:.2f}x at {float(k) * 1000:.0f} ms" for k, v in r["two_workers_vs_one"].items()
            )
            + f". This machine has {m['nproc']} cores shared by both workers, the fake, the web",
            "tier and PostgreSQL, so the second worker adds concurrency (more streams in flight),",
            "not CPU.",
        ]
    else:
        lines.append("Skipped: PostgreSQL or Redis was not reachable.")
    if "cores" in results:
        lines += ["", *cores_section(results)]
    if "live" in results:
        lines += ["", *live_section(results["live"])]
    for notes in (PROFILE_NOTES, PROFILE_NOTES.with_name("profile-raw.md")):
        if notes.exists():
            lines += ["", notes.read_text().rstrip()]
    path = DOCS / "benchmarks.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# The live gateway

LIVE_NOTES = PROFILE_NOTES.with_name("live-notes.md")


def plot_live(live: dict[str, Any]) -> Path:
    single = live["single"]
    phases = [
        ("idle", "idle"),
        ("loaded", f"{single['loaded']['open_now']:,} open"),
        ("idle_after", "idle again"),
    ]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, what, title in zip(
        axes, ("healthz", "send"), ("GET /healthz", "send (POST a message)"), strict=True
    ):
        for offset, share in ((-0.2, "p50_s"), (0.2, "p99_s")):
            values = [single[key][what][share] * 1000 for key, _ in phases]
            bars = axis.bar(
                [i + offset for i in range(len(phases))], values, width=0.4, label=share[:3]
            )
            axis.bar_label(bars, fmt="%.1f")
        axis.set_xticks(range(len(phases)), [label for _, label in phases])
        axis.set(ylabel="latency (ms)", title=title)
        axis.legend()
    return _save(figure, "live_latency.png")


def _lat(summary: dict[str, Any]) -> str:
    return (
        f"{summary['p50_s'] * 1000:.1f} | {summary['p99_s'] * 1000:.1f} | "
        f"{summary['max_s'] * 1000:.1f} | {summary['count']:,}"
    )


def live_section(live: dict[str, Any]) -> list[str]:
    single = live["single"]
    plan = single["plan"]
    opened = single["open"]
    held = single["loaded"]["open_now"]
    png = plot_live(live)
    command = f"`{live['command']}`"
    lines = [
        "## 7. Live gateway: 10,000 connections on one process"
        if opened["requested"] >= 10_000
        else f"## 7. Live gateway: {opened['requested']:,} connections on one process",
        "",
        f"Reproduce with {command} (about {live['duration_s'] / 60:.0f} minutes; it also runs as",
        "part of `python -m bench`). One `chinwag live` process (the gateway and the web tier on",
        "one port, uvicorn + uvloop + httptools, SQLite) is measured; the connections come from a",
        "load client in another process (`bench/live_client.py`: raw asyncio streams for SSE, the",
        "`websockets` client for `/v1/ws`, as a browser would, offering permessage-deflate).",
        f"{plan['users']:,} users with {plan['per_user']} connections each, alternately SSE and",
        "WebSocket, all members of one chat; users and tokens are written straight into the store",
        "(tokens as SHA-256 digests, `accounts.token_digest`). Open-file limits: gateway "
        f"{single['open_files_limit']['gateway']:,}, "
        f"client {single['open_files_limit']['client']:,}.",
        f"Run {live['date']}; load average (1, 5, 15 min) at the start {live['load_start']}, with "
        f"the connections open {single['load_open']}, at the end {live['load_end']} — the two",
        "cores are shared with other work, so compare the ratios measured side by side.",
        "",
        "### Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    for target in live["targets"]:
        lines.append(
            f"| {target['name']} | {target['measured']} | "
            f"{'met' if target['met'] else '**missed**'} |"
        )
    lines += [
        "",
        "### Connections and memory",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| connections opened / requested (failed) | {opened['opened']:,} / "
        f"{opened['requested']:,} ({opened['failed']}) |",
        f"| time to open all of them, 200 at a time (SSE, then WebSocket) | "
        f"{opened['total_s']:.1f} s |",
        f"| per connection p50 / p99 / max | {opened['p50_s'] * 1000:.0f} / "
        f"{opened['p99_s'] * 1000:.0f} / {opened['max_s'] * 1000:.0f} ms |",
        f"| gateway RSS before (after a warm-up) | {single['rss_idle_kib'] / 1024:.1f} MiB |",
        f"| gateway RSS with {held:,} open | {single['rss_open_kib'] / 1024:.1f} MiB |",
        f"| per connection | {single['kib_per_connection']:.1f} KiB "
        f"({single['kib_per_connection'] * 1.024:.1f} KB) |",
        f"| per SSE connection (opened first) | {single['kib_per_sse']:.1f} KiB |",
        f"| per WebSocket connection (opened second) | {single['kib_per_ws']:.1f} KiB |",
        f"| gateway peak RSS (VmHWM) after the latency test | {single['rss_peak_kib'] / 1024:.1f}"
        " MiB |",
    ]
    ws_memory = single.get("ws_memory")
    if ws_memory:
        lines += [
            "",
            "WebSocket memory by compression, each on a fresh gateway process (the same client,",
            "`websockets`, with and without its offer of permessage-deflate, which uvicorn",
            "accepts by default):",
            "",
            "| WebSocket connections | permessage-deflate | KiB per connection |",
            "|---:|---|---:|",
        ]
        for key, label in (("deflate", "negotiated"), ("no_compression", "not offered")):
            row = ws_memory[key]
            lines.append(f"| {row['connections']:,} | {label} | {row['kib_per_connection']:.1f} |")
    lines += [
        "",
        "### Web tier idle and with the connections open",
        "",
        f"![live latency]({png.relative_to(DOCS)})",
        "",
        "Sequential requests on one keep-alive connection: "
        f"{plan['healthz_probes']} `GET /healthz`",
        f"then {plan['send_probes']} sends to a chat whose only member holds no connection (so a",
        "send costs the same in every phase: this measures holding the connections, not fanning",
        "out to them). *idle again* is after every connection closed, a check on the noise.",
        "",
        "| phase | open | healthz p50 | p99 | max | n | send p50 | p99 | max | n |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (
        ("idle", "idle"),
        ("loaded", "connections open"),
        ("idle_after", "idle again"),
    ):
        row = single[key]
        lines.append(
            f"| {label} | {row['open_now']:,} | {_lat(row['healthz'])} | {_lat(row['send'])} |"
        )
    latency = single["latency"]
    lines += [
        "",
        "(ms; n = requests)",
        "",
        "### Send to receive",
        "",
        f"{latency['messages']} messages sent one every {latency['spacing_s']:g} s to the chat of",
        f"all {plan['users']:,} users; every one of the {latency['connections']:,} connections",
        "records when each arrived (in the load client, whose one event loop reads them all);",
        "latency = arrival minus the start of the send request.",
        "",
        "| connections | p50 (ms) | p99 (ms) | max (ms) | arrivals |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in ("all", "sse", "ws"):
        if key in latency:
            lines.append(f"| {key} | {_lat(latency[key])} |")
    own = latency.get("gateway_fanout", {})
    lines += [
        "",
        f"Arrived {latency['arrived']:,} of {latency['expected']:,}; the sends themselves: "
        f"p50 {latency['send']['p50_s'] * 1000:.1f} ms, p99 {latency['send']['p99_s'] * 1000:.1f}"
        " ms. The gateway's own histogram `chinwag_live_fanout_seconds` (event row created to",
        f"frame written, {own.get('writes', 0):,.0f} writes) puts p50 at or under "
        f"{own.get('p50_le_s')} s and p99 at or under {own.get('p99_le_s')} s (bucket bounds).",
        f"CPU time over the test: the gateway {latency.get('gateway_cpu_s', 0):.1f} s "
        f"({latency.get('gateway_cpu_us_per_frame', 0):.0f} µs per frame written), the load "
        f"client {latency.get('client_cpu_s', 0):.1f} s "
        f"({latency.get('client_cpu_us_per_frame', 0):.0f} µs per frame read); load average "
        f"at the start {single.get('load_latency_start')}, at the end {single['load_latency']}.",
        "",
        "### Event-log reads against connections",
        "",
        f"The gateway's own counter `chinwag_live_tail_reads_total` (from its `/metrics`) over "
        f"{plan['reads_seconds']:g} s",
        f"while {plan['reads_rate']:g} messages a second go to the big chat, at each number of",
        "open connections, and the gateway's CPU time over the same interval. On SQLite the hub",
        "reads the log once per 50 ms tick; connecting costs reads of its own (token, chats,",
        "resume) once per connection, not per second.",
        "",
        "| open connections | tail reads | reads/s | sends (answered in the interval) "
        "| gateway CPU s/s | load average |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for point in single["reads"]:
        lines.append(
            f"| {point['connections']:,} | {point['tail_reads']:.0f} | "
            f"{point['tail_reads_per_s']:.1f} | {point['messages']} "
            f"({point['messages_answered_in_interval']}) | {point['cpu_per_s']:.2f} | "
            f"{point['load']} |"
        )
    cluster = live["cluster"]
    lines += ["", "### Two gateway processes on PostgreSQL + Redis", ""]
    if "skipped" in cluster:
        lines.append(f"Skipped: {cluster['skipped']}.")
    else:
        c_latency = cluster["latency"]
        lines += [
            "Two `chinwag live` processes on one PostgreSQL schema (Redis as the queue), half of",
            "the users connected to each; every message is sent through gateway *a*. Gateway *b*",
            "learns of it by PostgreSQL `LISTEN/NOTIFY` and reads the log itself.",
            "",
            "| received on | p50 (ms) | p99 (ms) | max (ms) | arrivals |",
            "|---|---:|---:|---:|---:|",
        ]
        for key in ("gateway a", "gateway b"):
            if key in c_latency:
                lines.append(f"| {key} | {_lat(c_latency[key])} |")
        lines += [
            "",
            f"{c_latency['messages']} messages, one every {c_latency['spacing_s']:g} s, to "
            f"{c_latency['connections']:,} connections; arrived {c_latency['arrived']:,} of "
            f"{c_latency['expected']:,}; load average {cluster['load']}.",
        ]
    for notes in (
        LIVE_NOTES,
        LIVE_NOTES.with_name("live-memory.md"),
        LIVE_NOTES.with_name("live-profile.md"),
    ):
        if notes.exists():
            lines += ["", notes.read_text().rstrip()]
    return lines
