"""The issue's targets and the side-by-side ratios, computed from one run's results."""

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


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = sorted({row["size"] for row in results["fanout"]})
    largest = sizes[-1]
    found: list[dict[str, Any]] = []
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
    tp = results["throughput"]
    worker, peer = tp["worker"]["per_second"], tp["aioapns"]["per_second"]
    found.append(
        {
            "name": ">= 3,000 notifications/s per worker process on one core, ahead of aioapns",
            "measured": f"worker {worker:.0f}/s, aioapns {peer:.0f}/s, "
            f"chinwag sender alone {tp['sender']['per_second']:.0f}/s",
            "value": worker,
            "met": worker >= 3000 and worker > peer,
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
