"""``chinwag serve``, the README's first command: one process tree on SQLite that migrates, serves,
fans out, restarts a child that dies, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.support.network import free_port
from tests.support.processes import ChinwagProcess, child_pids, wait_until

from chinwag.fakes.suite import RunningFakes
from chinwag.supervisor import SERVE_WORKER_NICENESS

pytestmark = pytest.mark.slow


def _worker_pids(pid: int) -> list[int]:
    workers = []
    for child in child_pids(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in argv:
            workers.append(child)
    return workers


def _niceness(pid: int) -> int:
    """The process's nice value (field 19 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _bodies(fakes: RunningFakes) -> list[str]:
    return [r.payload["aps"]["alert"]["body"] for r in list(fakes.providers.apns.accepted)]


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_migrates_serves_fans_out_restarts_a_dead_worker_and_stops(
    tmp_path: Path, fakes: RunningFakes
) -> None:
    """serve creates its database here, delivers, restarts a SIGKILLed worker, stops on SIGTERM."""
    workdir = tmp_path / "app"
    workdir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
    env.update(fakes.env(), CHINWAG_PORT=str(port), CHINWAG_SWEEP_INTERVAL="0.5")
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "chinwag", "serve"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so that a failed test can take down the whole tree
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), 30, "chinwag serve to answer /healthz")
        # the database is created in the current directory, as the README says
        assert (workdir / "chinwag.db").exists()
        client = httpx.Client(base_url=url, timeout=10)
        for name in ("alice", "bob"):
            assert client.post(
                "/v1/users", json={"username": name, "password": f"{name} password"}
            ).is_success
        tokens = {
            name: client.post(
                "/v1/tokens", json={"username": name, "password": f"{name} password"}
            ).json()["token"]
            for name in ("alice", "bob")
        }
        alice = {"Authorization": f"Bearer {tokens['alice']}"}
        bob = {"Authorization": f"Bearer {tokens['bob']}"}
        device = client.post(
            "/v1/devices", headers=bob, json={"platform": "apns", "token": "ab" * 32}
        )
        assert device.status_code == 201, device.text
        chat = client.post("/v1/chats", headers=alice, json={"title": "Lunch", "members": ["bob"]})
        assert chat.status_code == 201, chat.text
        chat_id = chat.json()["id"]

        def send_and_wait(body: str) -> None:
            response = client.post(
                f"/v1/chats/{chat_id}/messages",
                headers=alice,
                json={"body": body, "client_id": body},
            )
            assert response.status_code == 201, response.text
            sent = response.json()["message"]

            def delivered() -> bool:
                page = client.get(f"/v1/messages/{sent['id']}/deliveries", headers=alice).json()
                return bool(page["summary"] == {"delivered": 1})

            wait_until(delivered, 30, f"{body!r} delivered")

        send_and_wait("first")
        assert _bodies(fakes) == ["alice: first"]

        # One worker process per core, each nicer than the web process by SERVE_WORKER_NICENESS.
        started = _worker_pids(serve.pid)
        assert len(started) == len(os.sched_getaffinity(0)), started
        (web,) = set(child_pids(serve.pid)) - set(started)
        assert {_niceness(p) - _niceness(web) for p in started} == {SERVE_WORKER_NICENESS}

        # A worker dies as if the machine's OOM killer took it: serve starts a new one.
        worker = started[0]
        os.kill(worker, signal.SIGKILL)

        def replaced() -> bool:
            now = _worker_pids(serve.pid)  # one snapshot: the killed one may still be exiting
            return len(now) == len(started) and worker not in now

        wait_until(replaced, 30, "the supervisor to restart the worker")
        send_and_wait("second")
        assert _bodies(fakes) == ["alice: first", "alice: second"]

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
        assert not _up(url)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=10)
        log.close()
    output = (tmp_path / "serve.log").read_text(errors="replace")
    assert "restarting" in output, output[-3000:]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init, which may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads children from /proc")
def test_children_stop_when_serve_is_sigkilled(tmp_path: Path, fakes: RunningFakes) -> None:
    """SIGKILL the `chinwag serve` supervisor: its web process and workers are gone within 15 s."""
    workdir = tmp_path / "app"
    workdir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
    env.update(fakes.env(), CHINWAG_PORT=str(port))
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "chinwag", "serve", "--workers", "2"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    children: list[int] = []
    try:
        wait_until(lambda: _up(f"http://127.0.0.1:{port}"), 30, "chinwag serve to answer")
        wait_until(lambda: len(_worker_pids(serve.pid)) == 2, 30, "two workers")
        children = child_pids(serve.pid)
        assert len(children) == 3, children
        serve.send_signal(signal.SIGKILL)
        serve.wait(timeout=10)
        took = wait_until(
            lambda: not any(_running(pid) for pid in children), 15, "every child to stop"
        )
        print(f"children of a SIGKILLed supervisor gone after {took:.2f} s")
    finally:
        for pid in [serve.pid, *children]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        serve.wait(timeout=10)
    output = (tmp_path / "serve.log").read_text(errors="replace")
    assert output.count("the supervisor is gone") == 3, output[-3000:]


def test_worker_serves_its_push_metrics_when_asked(tmp_path: Path, fakes: RunningFakes) -> None:
    """The push counters live in the worker process; CHINWAG_METRICS_PORT exports them."""
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
    env.update(
        fakes.env(),
        CHINWAG_DATABASE_URL=f"sqlite:///{tmp_path / 'chinwag.db'}",
        CHINWAG_METRICS_PORT=str(port),
    )
    subprocess.run([sys.executable, "-m", "chinwag", "migrate"], env=env, check=True)
    worker = ChinwagProcess(["worker"], env, tmp_path / "worker.log")
    try:

        def scrape() -> str | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            except httpx.HTTPError:
                return None

        wait_until(lambda: scrape() is not None, 30, "the worker's /metrics")
        families = {family.name for family in text_string_to_metric_families(scrape() or "")}
        assert {"chinwag_push_sends", "chinwag_push_in_flight"} <= families, families
    finally:
        worker.stop()
