"""The benchmark harness in quick mode, run as users and CI run it, so it never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


# About 60 s on a quiet 2-core machine, twice that under load: more than the suite's 120 s.
@pytest.mark.timeout(360)
def test_quick_benchmark_delivers_every_notification_and_reports_every_measurement(
    tmp_path: Path,
) -> None:
    """`python -m bench --quick` exits 0, every notification and live message arrived, all ten
    measurements and the targets are in its JSON."""
    out = tmp_path / "quick.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=330,  # the live gateway adds about 10 s, measurements 8-10 about 30 s
    )
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "quick"
    assert results["all_arrived"] is True
    fanout = results["fanout"]
    for system in ("chinwag", "sync_bottle", "mp_bottle"):
        measured = [row for row in fanout if row["system"] == system and "skipped" not in row]
        assert {row["size"] for row in measured} >= {1, 100} or system != "chinwag"
        assert measured, system
        for row in measured:
            assert row["all_arrived"], row
            assert all(s["notified"] >= row["size"] for s in row["samples"]), row
            assert row["send_p50"] > 0 and row["last_p50"] > 0
    assert {row["latency"] for row in fanout} == {0.0, 0.2}
    throughput = results["throughput"]
    assert throughput["all_arrived"]
    for kind in ("worker", "sender", "aioapns"):
        assert throughput[kind]["per_second"] > 0
    assert results["rss"]["peak_mb"] > 0
    sqlite = next(row for row in results["web"] if row["database"] == "sqlite")
    assert sqlite["send"]["per_second"] > 0 and sqlite["healthz"]["per_second"] > 0
    assert sqlite["send"]["non_2xx"] == 0
    assert results["scaleout"], "scale-out measurement missing"
    for row in results["scaleout"]:
        assert "skipped" in row or row["all_arrived"], row
    assert len(results["targets"]) >= 10
    cores = results["cores"]
    assert [row["processes"] for row in cores["processes"]["rows"]] == [1, 2]
    assert cores["serve"]["rounds"][0]["worker_processes"] >= 1
    assert cores["growth"]["peak_rss_mb"] > 0
    assert results["machine"]["nproc"] >= 1
    live = results["live"]
    assert live["all_arrived"] is True
    single = live["single"]
    assert single["open"]["opened"] == single["open"]["requested"] > 0
    assert single["latency"]["arrived"] == single["latency"]["expected"] > 0
    assert single["kib_per_connection"] > 0
    assert single["reads"][0]["connections"] == 0
    assert all(point["tail_reads"] > 0 for point in single["reads"])
    assert len(live["targets"]) >= 5
