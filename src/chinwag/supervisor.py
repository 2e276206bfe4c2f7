"""``chinwag serve``'s supervisor: it runs the web and worker processes, restarts a child that
dies, and its children stop when it dies, however it dies. ``chinwag worker --processes N`` and
``chinwag demo`` use it too."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("chinwag")

# `chinwag serve` hands each child the read end of a pipe whose write end only it holds. However
# the supervisor dies (SIGKILL included), the kernel closes that end, the child reads EOF and
# stops as on SIGTERM. Unlike PR_SET_PDEATHSIG it works beyond Linux, and it is not tied to the
# thread that started the child.
SUPERVISOR_FD_ENV = "CHINWAG_SUPERVISOR_FD"
# A child whose supervisor died gets this long to stop gracefully (a worker finishes in-flight
# sends within its 10 s grace) before it exits regardless.
ORPHAN_GRACE_SECONDS = 30.0


# `chinwag serve` runs its workers this much nicer than the web process (nice(1) units): under
# contention Linux then gives the web process about nine tenths of a core a worker wants.
SERVE_WORKER_NICENESS = 10
# ... and bounds their write transactions to this many rows (CHINWAG_WORKER_BATCH, unless set):
# on SQLite a send waits for the worker's transaction under way, so it should be short.
SERVE_WORKER_BATCH = 200


def worker_processes(requested: int) -> int:
    """How many worker processes to run: ``requested`` if positive, else one per core this
    process may run on (its CPU affinity, which taskset or a container may narrow)."""
    if requested > 0:
        return requested
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def worker_commands(count: int, *, nice: int = 0, metrics_port: int = 0) -> dict[str, list[str]]:
    """The supervisor's commands for ``count`` worker processes: each one a plain single-process
    ``chinwag worker``, so they share the work through the database as separate workers do."""
    commands: dict[str, list[str]] = {}
    for index in range(count):
        argv = ["worker", "--processes", "1"]
        if nice:
            argv += ["--nice", str(nice)]
        if metrics_port:
            argv += ["--metrics-port", str(metrics_port + index)]
        commands[f"worker-{index}"] = argv
    return commands


def supervise(commands: dict[str, list[str]], env: dict[str, str], log_level: str) -> int:
    """Run the commands under a Supervisor until SIGTERM or SIGINT, which it passes on to each
    child as SIGTERM (a graceful stop) before it exits."""
    supervisor = Supervisor(commands, env, log_level=log_level)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: supervisor.request_stop())
    return supervisor.run()


class Supervisor:
    """Keeps child processes running: a child that dies is restarted, with a growing pause.
    The children stop when the supervisor dies, even by SIGKILL (see SUPERVISOR_FD_ENV)."""

    def __init__(self, commands: dict[str, list[str]], env: dict[str, str], log_level: str) -> None:
        self.commands = commands
        self.env = env
        self.log_level = log_level
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = dict.fromkeys(commands, 0)
        self._stop = threading.Event()
        # Both ends are not inheritable: only the read end is passed, to our children alone.
        self._lifeline: tuple[int, int] | None = os.pipe() if os.name == "posix" else None

    def request_stop(self) -> None:
        self._stop.set()

    def _start(self, name: str) -> None:
        argv = [
            sys.executable,
            "-m",
            "chinwag",
            "--log-level",
            self.log_level,
            *self.commands[name],
        ]
        if self._lifeline is None:
            self.children[name] = subprocess.Popen(argv, env=self.env)  # noqa: S603 -- our argv
            return
        read_end = self._lifeline[0]
        self.children[name] = subprocess.Popen(  # noqa: S603 -- our own argv
            argv, env={**self.env, SUPERVISOR_FD_ENV: str(read_end)}, pass_fds=(read_end,)
        )

    def run(self) -> int:
        for name in self.commands:
            self._start(name)
        next_start: dict[str, float] = {}
        while not self._stop.wait(0.2):
            for name, child in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                if name not in next_start:
                    self.restarts[name] += 1
                    pause = min(30.0, 0.5 * 2 ** min(self.restarts[name], 6))
                    log.warning("%s exited with %s; restarting in %.1fs", name, code, pause)
                    next_start[name] = time.monotonic() + pause
                elif time.monotonic() >= next_start[name]:
                    del next_start[name]
                    self._start(name)
        return self._terminate()

    def _terminate(self) -> int:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        return 0


def stop_with_supervisor() -> None:
    """In a child of `chinwag serve`: stop when the supervisor is gone (see SUPERVISOR_FD_ENV)."""
    raw = os.environ.pop(SUPERVISOR_FD_ENV, None)
    if not raw or not raw.isdigit():
        return
    fd = int(raw)

    def watch() -> None:
        try:
            while os.read(fd, 1):  # nothing is ever written: this returns b"" at EOF
                pass
        except OSError:
            pass
        log.warning("the supervisor is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE_SECONDS)
        log.error("still running %.0fs after the supervisor died; exiting", ORPHAN_GRACE_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="supervisor-lifeline", daemon=True).start()
