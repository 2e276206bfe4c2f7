"""chinwag as a user runs it: ``chinwag migrate``, a web tier and worker processes, as children.

The benchmark talks to the web tier over HTTP like any client, and builds big groups straight in
the store (sign-ups hash passwords with argon2, which would only measure argon2).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
from tests.support.network import free_port

from bench.support import (
    Child,
    add_members_with_devices,
    base_env,
    python_argv,
    wait_for_http,
)
from chinwag.store.database import Database

# The engine's own timers, shortened only where a benchmark would otherwise wait on them idle.
# One process per `chinwag worker` unless a benchmark asks for more (start_worker(processes=)).
ENGINE_ENV = {
    "CHINWAG_SWEEP_INTERVAL": "1",
    "CHINWAG_LOG_LEVEL": "INFO",
    "CHINWAG_WORKER_PROCESSES": "1",
}


class ChinwagStack:
    def __init__(
        self,
        workdir: Path,
        database_url: str,
        queue_url: str,
        provider_env: dict[str, str],
        *,
        web: str = "waitress",
        web_workers: int = 4,
        web_core: int | None = None,
        src: Path | None = None,
        **extra_env: str,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = base_env(
            CHINWAG_DATABASE_URL=database_url,
            CHINWAG_QUEUE_URL=queue_url,
            CHINWAG_HOST="127.0.0.1",
            CHINWAG_PORT=str(self.port),
            **ENGINE_ENV,
            **provider_env,
            **extra_env,
        )
        if src is not None:  # every child runs chinwag from another source tree
            self.env["PYTHONPATH"] = os.pathsep.join([str(src), self.env["PYTHONPATH"]])
        self.db = Database(database_url)
        self.workers: list[Child] = []
        self._groups = 0
        migrate = Child(python_argv("-m", "chinwag", "migrate"), self.env, workdir / "migrate.log")
        if migrate.process.wait(timeout=120) != 0:
            raise RuntimeError(f"chinwag migrate failed:\n{migrate.output()}")
        migrate.stop()
        if web == "gunicorn":
            argv = python_argv(
                "-m",
                "gunicorn",
                "chinwag.wsgi:application",
                "--workers",
                str(web_workers),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
            )
        else:
            argv = python_argv("-m", "chinwag", "web")
        self.web = Child(argv, self.env, workdir / "web.log", core=web_core)
        wait_for_http(f"{self.url}/healthz", child=self.web)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        self.token = self._sign_up("sender")
        self.client.headers["Authorization"] = f"Bearer {self.token}"

    def _sign_up(self, username: str) -> str:
        password = "benchmark password"
        created = self.client.post("/v1/users", json={"username": username, "password": password})
        if created.status_code != 201:
            raise RuntimeError(f"sign-up failed: {created.status_code} {created.text}")
        token = self.client.post("/v1/tokens", json={"username": username, "password": password})
        return str(token.json()["token"])

    def start_worker(self, *, core: int | None = None, processes: int = 1) -> Child:
        """``chinwag worker --processes N``; returns once every process has started."""
        log = self.workdir / f"worker-{len(self.workers)}.log"
        argv = python_argv("-m", "chinwag", "worker")
        if processes != 1:  # one is ENGINE_ENV's default (and all an older tree knows)
            argv += ["--processes", str(processes)]
        worker = Child(argv, self.env, log, core=core)
        self.workers.append(worker)
        deadline = time.monotonic() + 30
        while worker.output().lower().count("started") < processes:
            if worker.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{worker.output()[-3000:]}")
            time.sleep(0.05)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def group(self, size: int) -> int:
        """A new chat: the sender plus ``size`` members with one APNs device each."""
        self._groups += 1
        chat = self.client.post("/v1/chats", json={"title": f"Group of {size}", "members": []})
        if chat.status_code != 201:
            raise RuntimeError(f"chat creation failed: {chat.status_code} {chat.text}")
        chat_id = int(chat.json()["id"])
        add_members_with_devices(self.db, chat_id, self._groups, size)
        return chat_id

    def send(self, chat_id: int, body: str = "Lunch at noon?") -> tuple[float, float]:
        """POST one message; return (wall-clock start, seconds until the 201 answer)."""
        started_wall, started = time.time(), time.perf_counter()
        answer = self.client.post(f"/v1/chats/{chat_id}/messages", json={"body": body})
        seconds = time.perf_counter() - started
        if answer.status_code != 201:
            raise RuntimeError(f"send failed: {answer.status_code} {answer.text}")
        return started_wall, seconds

    def stop(self) -> None:
        self.stop_workers()
        self.client.close()
        self.web.stop()
        self.db.dispose()
