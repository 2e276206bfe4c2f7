"""The ``chinwag`` command: serve, web, live, worker, migrate, fakes, admin."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from chinwag import __version__
from chinwag.config import ConfigError, Settings

log = logging.getLogger("chinwag")

# `chinwag serve` hands each child the read end of a pipe whose write end only it holds. However
# the supervisor dies (SIGKILL included), the kernel closes that end, the child reads EOF and
# stops as on SIGTERM. Unlike PR_SET_PDEATHSIG it works beyond Linux, and it is not tied to the
# thread that started the child.
SUPERVISOR_FD_ENV = "CHINWAG_SUPERVISOR_FD"
# A child whose supervisor died gets this long to stop gracefully (a worker finishes in-flight
# sends within its 10 s grace) before it exits regardless.
ORPHAN_GRACE_SECONDS = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["fakes"]:
        # The fakes have their own options (and --help); hand everything after "fakes" over.
        from chinwag.fakes.suite import main as fakes_main

        return fakes_main(arguments[1:])
    if arguments[:1] == ["demo"]:
        from chinwag.demo import run_demo
        from chinwag.logs import configure_logging

        configure_logging(json_lines=False, level="WARNING")
        return run_demo(Settings.from_env(), arguments[1:])
    args = _parser().parse_args(arguments)
    _stop_with_supervisor()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"chinwag: configuration error: {exc}", file=sys.stderr)
        return 2
    from chinwag.logs import configure_logging

    configure_logging(json_lines=settings.log_json, level=args.log_level)
    if args.host:
        settings = settings.with_overrides(host=args.host)
    if args.port:
        settings = settings.with_overrides(port=args.port)
    command = {
        "serve": _serve,
        "web": _web,
        "live": _live,
        "worker": _worker,
        "migrate": _migrate,
        "admin": _admin,
        "backup": _backup,
    }[args.command]
    return command(settings, args)


def _stop_with_supervisor() -> None:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chinwag", description="Group chat with push that lands.")
    parser.add_argument("--version", action="version", version=f"chinwag {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("CHINWAG_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="web + worker + SQLite in this directory, one command")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    web = sub.add_parser("web", help="the HTTP tier (waitress); use gunicorn for many processes")
    web.add_argument("--threads", type=int, default=16)
    live = sub.add_parser(
        "live", help="the live gateway (/v1/events, /v1/ws) and the API on one port (asyncio)"
    )
    sub.add_parser("worker", help="the fan-out worker")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    backup = sub.add_parser(
        "backup", help="a consistent copy of the SQLite database, while serving"
    )
    backup.add_argument("path", help="where to write the copy (a new file)")
    sub.add_parser("fakes", help="local fake APNs/FCM/Web Push/SMTP/webhook servers (--help)")
    sub.add_parser("demo", help="fakes + seeded users + web + worker: see a fan-out (--help)")
    admin = sub.add_parser("admin", help="grant (or --revoke) operator rights to a user")
    admin.add_argument("username")
    admin.add_argument("--revoke", action="store_true")
    for command in (serve, web, live):
        command.add_argument("--host", default=None, help="listen address (CHINWAG_HOST)")
        command.add_argument("--port", type=int, default=None, help="listen port (CHINWAG_PORT)")
    for command in (sub.choices["worker"], sub.choices["migrate"], admin, backup):
        command.set_defaults(host=None, port=None)
    return parser


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from chinwag.bootstrap import open_database
    from chinwag.store.migrate import current_revision

    db = open_database(settings, migrate=True)
    print(f"database at revision {current_revision(db)}")
    return 0


def _backup(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from chinwag.store.backup import BackupRefused, backup_sqlite

    try:
        pages = backup_sqlite(settings.database_url, Path(args.path))
    except BackupRefused as exc:
        print(f"chinwag backup: {exc}", file=sys.stderr)
        return 2
    print(f"backed up {pages} pages to {args.path}")
    return 0


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    from chinwag.bootstrap import open_database
    from chinwag.chat.accounts import set_admin
    from chinwag.chat.errors import ChinwagError

    try:
        user = set_admin(open_database(settings), args.username, not args.revoke)
    except ChinwagError as exc:
        print(f"chinwag admin: {exc.message}", file=sys.stderr)
        return 1
    print(f"{user.username} is {'now' if user.is_admin else 'no longer'} an admin")
    return 0


def _web(settings: Settings, args: argparse.Namespace) -> int:
    from waitress import serve

    from chinwag.bootstrap import web_services
    from chinwag.web import create_app
    from chinwag.web.app import server_options

    app = create_app(web_services(settings))
    log.info("web listening on http://%s:%s", settings.host, settings.port)
    serve(
        app,
        host=settings.host,
        port=settings.port,
        threads=args.threads,
        ident="chinwag",
        **server_options(settings),
    )
    return 0


def _live(settings: Settings, _args: argparse.Namespace) -> int:
    from chinwag.asgi import create_application
    from chinwag.bootstrap import web_services
    from chinwag.live.server import listening_socket, serve_forever

    app = create_application(web_services(settings))
    sock = listening_socket(settings.host, settings.port)
    log.info("live gateway and web listening on http://%s:%s", settings.host, settings.port)
    serve_forever(app, settings, app.state.gateway.hub.close_all, sock)
    return 0


def _worker(settings: Settings, _args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from chinwag.bootstrap import build_worker, open_database, with_vapid_key
    from chinwag.fanout import Doorbell
    from chinwag.fanout.verification import VerificationMailer
    from chinwag.push.registry import Senders

    db = open_database(settings)
    while True:
        try:
            settings = with_vapid_key(settings, db)
            break
        except (OperationalError, ProgrammingError) as exc:
            # Nothing can be sent without the database anyway: wait for it (or its migration).
            log.warning("cannot read the Web Push key yet (%s); retrying", type(exc).__name__)
            time.sleep(2)
    senders = Senders.from_settings(settings.push)
    configured = senders.configured()
    log.info("providers configured: %s", configured or "none (deliveries will wait)")
    worker = build_worker(settings, db, senders)
    if settings.metrics_port:
        # The push counters and histograms live in this process; the web tier cannot see them.
        import prometheus_client

        prometheus_client.start_http_server(settings.metrics_port, addr=settings.host)
        log.info("worker metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    stop_listening = threading.Event()
    Doorbell(settings.effective_queue_url).listen(worker.wake, stop_listening)

    def install_signals(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

    mailer = VerificationMailer(db, senders, worker.owner, lease_seconds=settings.lease_seconds)

    async def main() -> None:
        # The verification mailer shares the worker's loop and senders (and so its SMTP pool).
        stop = asyncio.Event()
        install_signals(stop)
        mailing = asyncio.create_task(mailer.run(stop))
        try:
            await worker.run(stop)
        finally:
            stop.set()
            await mailing
            await senders.aclose()

    try:
        asyncio.run(main())
    finally:
        stop_listening.set()
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    """Migrate, then run and supervise one web process and N workers until told to stop."""
    from chinwag.bootstrap import open_database

    open_database(settings, migrate=True).dispose()
    env = {**os.environ, "CHINWAG_HOST": settings.host, "CHINWAG_PORT": str(settings.port)}
    # The web child is the ASGI app: the API and the live gateway on the one port.
    commands = {"web": ["live"], **{f"worker-{i}": ["worker"] for i in range(args.workers)}}
    supervisor = Supervisor(commands, env, log_level=args.log_level)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: supervisor.request_stop())
    print(
        f"chinwag {__version__} serving http://{settings.host}:{settings.port} "
        f"(database {settings.database_url}); Ctrl-C stops",
        flush=True,
    )
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


if __name__ == "__main__":
    raise SystemExit(main())
