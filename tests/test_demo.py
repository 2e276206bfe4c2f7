"""``chinwag demo``: fakes, seeded users, web and worker in a temporary directory that goes away
when the demo is stopped with Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow


def test_ctrl_c_stops_the_demo_and_removes_its_temporary_directory(tmp_path: Path) -> None:
    """The demo serves its seeded chat, and SIGINT stops it and deletes the directory it made."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
    env["TMPDIR"] = str(tmp_path)  # so the test can see what the demo leaves behind
    log = tmp_path / "demo.log"
    with open(log, "wb") as output:
        demo = subprocess.Popen(
            [sys.executable, "-m", "chinwag", "demo", "--port", "0"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: "Ctrl-C stops" in log.read_text(), 60, "the demo's banner")
            banner = log.read_text()
            url = re.search(r"running at (http://\S+)", banner)
            assert url is not None, banner
            assert httpx.get(f"{url.group(1)}/healthz", timeout=5).status_code == 200
            made = [p for p in tmp_path.iterdir() if p.name.startswith("chinwag-demo-")]
            assert len(made) == 1 and (made[0] / "chinwag.db").exists()
            demo.send_signal(signal.SIGINT)
            assert demo.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
    assert not made[0].exists(), log.read_text()[-3000:]
