"""The issues' targets and the side-by-side ratios, computed from one run's results.

Issue 15's targets come first (worker rate, every core, sends during fan-outs, the web tier,
growth); the earlier ones that still hold follow."""

from __future__ import annotations

from typing import Any


def _row(results: dict[str, Any], system: str, latency: float, size: int) -> dict[str, Any] | None:
    for row in results["fanout"]:
        if (row["system"], row["latency"], row["size"]) == (system, latency, size):
            return row if "skipped" not in row else None
    return None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """How many times slower each baseline is than chinwag (> 1 means chinwag is ahead)."""
    fanout = []
    for row in results["fanout"]:
        if row["system"].startswith("chinwag"):
            continue
        ours = _row(results, "chinwag", row["latency"], row["size"])
        if ours is None:
            continue
        entry = {"baseline": row["system"], "latency": row["latency"], "size": row["size"]}
        if "skipped" in row:
            entry["last_at_least"] = row["floor_s"] / ours["last_p50"]
        else:
            entry["send_p50"] = row["send_p50"] / ours["send_p50"]
            entry["last_p50"] = row["last_p50"] / ours["last_p50"]
        fanout.append(entry)
    tp = results["throughput"]
    peer = tp["aioapns"]["per_second"]
    scale: dict[str, float] = {}
    for row in results["scaleout"]:
        if row.get("workers") == 2:
            one = next(
                r
                for r in results["scaleout"]
                if r.get("workers") == 1 and r["latency"] == row["latency"]
            )
            scale[f"{row['latency']:g}"] = row["per_second"] / one["per_second"]
    return {
        "fanout": fanout,
        "worker_vs_aioapns": tp["worker"]["per_second"] / peer,
        "sender_vs_aioapns": tp["sender"]["per_second"] / peer,
        "web_send_vs_healthz": {
            row["database"]: row["ratio"] for row in results["web"] if "ratio" in row
        },
        "two_workers_vs_one": scale,
    }


def _target(name: str, measured: str, value: float, met: bool) -> dict[str, Any]:
    return {"name": name, "measured": measured, "value": value, "met": met}


def issue15_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    tp = results["throughput"]
    worker, peer = tp["worker"]["per_second"], tp["aioapns"]["per_second"]
    found.append(
        _target(
            "1. worker end to end >= 6,000 notifications/s on one core (0 ms), >= 2x aioapns",
            f"worker {worker:.0f}/s, aioapns {peer:.0f}/s = {worker / peer:.2f}x "
            f"(chinwag sender alone {tp['sender']['per_second']:.0f}/s)",
            worker,
            worker >= 6000 and worker >= 2 * peer,
        )
    )
    cores = results["cores"]
    processes = cores["processes"]
    one, two = processes["rows"][0], processes["rows"][1]
    found.append(
        _target(
            "2. every core used: `worker --processes 2` >= 1.5x `--processes 1` "
            f"({processes['nproc']} cores, the fake pinned to core 0)",
            f"{two['per_second']:.0f}/s vs {one['per_second']:.0f}/s = "
            f"{processes['two_vs_one']:.2f}x; cores busy {two['cores_busy']:.2f} vs "
            f"{one['cores_busy']:.2f}",
            processes["two_vs_one"],
            processes["two_vs_one"] >= 1.5,
        )
    )
    serve = cores["serve"]["rounds"][0]
    found.append(
        _target(
            f"3. under `chinwag serve`, send p50 to {serve['size']:,} devices during fan-outs "
            "<= 1.25x a 1-member group's",
            f"{serve['busy_big_p50'] * 1000:.1f} ms vs {serve['idle_one_p50'] * 1000:.1f} ms = "
            f"{serve['ratio']:.2f}x (workers at nice {serve['worker_nice']}, "
            f"{serve['worker_batch']}-row batches)",
            serve["ratio"],
            serve["ratio"] <= 1.25 and serve["all_arrived"],
        )
    )
    for row in results["web"]:
        if "skipped" in row:
            continue
        found.append(
            _target(
                f"4. web tier sends >= 0.25 of GET /healthz, {row['database']}",
                f"{row['send']['per_second']:.0f} vs {row['healthz']['per_second']:.0f}/s = "
                f"{row['ratio']:.2f}",
                row["ratio"],
                row["ratio"] >= 0.25,
            )
        )
    growth = cores["growth"]
    large = f"{growth['large']:,}"
    found += [
        _target(
            f"5. {large}-device group: send p50 within 1.25x of a 1-device group",
            f"{growth['large_send_p50'] * 1000:.1f} ms vs {growth['one_send_p50'] * 1000:.1f} ms"
            f" = {growth['send_ratio']:.2f}x",
            growth["send_ratio"],
            growth["send_ratio"] <= 1.25,
        ),
        _target(
            f"5. {large}-device group: worker peak RSS <= 200 MB",
            f"{growth['peak_rss_mb']:.1f} MiB",
            growth["peak_rss_mb"],
            growth["peak_rss_mb"] * 1.048576 <= 200,
        ),
        _target(
            f"5. {large}-device group: last device within 1.2x of {large} ÷ the "
            f"{growth['small']:,}-device rate",
            f"{growth['large_last_p50']:.1f} s vs {growth['large_expected']:.1f} s "
            f"({growth['small_rate']:.0f}/s) = {growth['last_ratio']:.2f}x",
            growth["last_ratio"],
            growth["last_ratio"] <= 1.2 and growth["all_arrived"],
        ),
    ]
    return found


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = sorted({row["size"] for row in results["fanout"]})
    largest = sizes[-1]
    found: list[dict[str, Any]] = issue15_targets(results)
    one = _row(results, "chinwag", 0.0, 1)
    big = _row(results, "chinwag", 0.0, largest)
    if one and big:
        factor = big["send_p50"] / one["send_p50"]
        found.append(
            {
                "name": f"send p50 for {largest:,} devices within 1.25x of 1 device",
                "measured": f"{big['send_p50'] * 1000:.1f} ms vs {one['send_p50'] * 1000:.1f} ms "
                f"= {factor:.2f}x",
                "value": factor,
                "met": factor <= 1.25,
            }
        )
    slow = _row(results, "chinwag", 0.2, largest)
    if slow:
        found.append(
            {
                "name": f"{largest:,} devices at 200 ms provider latency all notified within 5 s",
                "measured": f"{slow['last_max']:.2f} s (worst of {len(slow['samples'])} sends)",
                "value": slow["last_max"],
                "met": slow["last_max"] <= 5.0 and slow["all_arrived"],
            }
        )
    rss = results["rss"]
    found.append(
        {
            "name": "worker peak RSS under 150 MB during a 10,000-device fan-out"
            if rss["size"] >= 10_000
            else f"worker peak RSS under 150 MB ({rss['size']} devices in quick mode)",
            "measured": f"{rss['peak_mb']:.1f} MiB",
            "value": rss["peak_mb"],
            "met": rss["peak_mb"] * 1.048576 < 150,
        }
    )
    return found
