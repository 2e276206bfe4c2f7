"""The web tier under real pre-fork servers, including the original failure: every web process
dies right after its response (max-requests 1), and every notification is still delivered."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.support.network import free_port
from tests.support.processes import ChinwagProcess, chinwag_env, wait_until

from chinwag.fakes.suite import RunningFakes

pytestmark = pytest.mark.slow


SENDS = 5  # each a worker process started and retired: the web server's import dominates


def _server_command(kind: str, port: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if kind == "gunicorn":
        return [
            str(bin_dir / "gunicorn"),
            "chinwag.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--max-requests",
            "1",
        ]
    uwsgi = shutil.which("uwsgi", path=str(bin_dir)) or shutil.which("uwsgi")
    if uwsgi is None:
        pytest.fail("uwsgi is a dev dependency (make install-dev) but is not installed")
    return [
        uwsgi,
        "--http",
        f"127.0.0.1:{port}",
        "--module",
        "chinwag.wsgi:application",
        "--master",
        "--processes",
        "2",
        "--max-requests",
        "1",
        "--lazy-apps",
        "--need-app",
        "--die-on-term",
        "--disable-logging",
    ]


class Client:
    """Retries refused, reset or dropped connections: between two requests the only web process
    may be respawning. A timed-out read is not retried (that POST may still be carried out), so
    it waits long enough for a fresh process to import chinwag on a loaded machine."""

    def __init__(self, base: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base, headers=headers, timeout=60)

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        for _ in range(100):
            try:
                return self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
            except httpx.TimeoutException:
                raise
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"{method} {path}: server never answered")


@pytest.fixture(params=["gunicorn", "uwsgi"])
def server_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_max_requests_one_loses_no_notification(
    server_kind: str, tmp_path: Path, fakes: RunningFakes
) -> None:
    """Under gunicorn/uWSGI with max-requests 1 (every request in a fresh process), each of five
    sends gives its notification."""
    env = chinwag_env(
        f"sqlite:///{tmp_path / 'chinwag.db'}", f"sqlite:///{tmp_path / 'queue.db'}", fakes.env()
    )
    subprocess.run(
        [sys.executable, "-m", "chinwag", "migrate"], env=env, check=True, capture_output=True
    )
    port = free_port()
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115
    web = subprocess.Popen(
        _server_command(server_kind, port),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    worker = ChinwagProcess(["worker"], env, tmp_path / "worker.log")
    try:
        base = f"http://127.0.0.1:{port}"
        anonymous = Client(base)
        wait_until(lambda: _answers(base), 90, f"{server_kind} to listen")
        for name in ("alice", "bob"):
            assert (
                anonymous.call(
                    "POST", "/v1/users", json={"username": name, "password": "pass-word"}
                ).status_code
                == 201
            )
        tokens = {
            name: anonymous.call(
                "POST", "/v1/tokens", json={"username": name, "password": "pass-word"}
            ).json()["token"]
            for name in ("alice", "bob")
        }
        alice, bob = Client(base, tokens["alice"]), Client(base, tokens["bob"])
        bob.call("POST", "/v1/devices", json={"platform": "apns", "token": "b0" * 32})
        chat = alice.call("POST", "/v1/chats", json={"title": "Orig", "members": ["bob"]}).json()
        for n in range(SENDS):
            sent = alice.call(
                "POST",
                "/groupchat/send",
                json={"conversation": chat["id"], "message": f"hello {n}"},
            )
            assert sent.status_code == 201, sent.text
        accepted = fakes.providers.apns.accepted
        wait_until(lambda: len(accepted) == SENDS, 30, "a notification per send")
        bodies = sorted(record.payload["aps"]["alert"]["body"] for record in accepted)
        assert bodies == sorted(f"alice: hello {n}" for n in range(SENDS))
    finally:
        worker.stop()
        web.terminate()
        try:
            web.wait(timeout=20)
        except subprocess.TimeoutExpired:
            # A master still waiting on a worker that is importing chinwag on a loaded machine:
            # stop it the hard way rather than hide how the test itself went.
            web.kill()
            web.wait(timeout=20)
        log.close()


def _answers(base: str) -> bool:
    # A probe must wait for its answer: with max-requests 1, a probe that gives up while a fresh
    # worker is still importing chinwag (seconds on a loaded machine) still costs that worker its
    # one request, and the next probe meets the next fresh worker: it would never see an answer.
    try:
        return httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    except httpx.TransportError:
        return False
