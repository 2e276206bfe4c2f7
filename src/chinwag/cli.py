"""The ``chinwag`` command: serve, web, live, worker, migrate, fakes, admin."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from chinwag import __version__
from chinwag.config import SETTING, ConfigError, Settings
from chinwag.supervisor import (
    SERVE_WORKER_BATCH,
    SERVE_WORKER_NICENESS,
    stop_with_supervisor,
    supervise,
    worker_commands,
    worker_processes,
)

log = logging.getLogger("chinwag")


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
    stop_with_supervisor()
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chinwag", description="Group chat with push that lands.")
    parser.add_argument("--version", action="version", version=f"chinwag {__version__}")
    parser.add_argument("--log-level", default=SETTING["CHINWAG_LOG_LEVEL"].read(os.environ))
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="web + workers + SQLite in this directory, one command")
    serve.add_argument(
        "--workers",
        "--worker-processes",
        dest="processes",
        type=int,
        default=None,
        help="worker processes (CHINWAG_WORKER_PROCESSES; default: one per core)",
    )
    serve.add_argument(
        "--worker-nice",
        type=int,
        default=SERVE_WORKER_NICENESS,
        help="niceness added to the worker processes, so the web process keeps the CPU "
        f"during fan-outs (default {SERVE_WORKER_NICENESS}; 0: same priority)",
    )
    web = sub.add_parser("web", help="the HTTP tier (waitress); use gunicorn for many processes")
    web.add_argument("--threads", type=int, default=16)
    live = sub.add_parser(
        "live", help="the live gateway (/v1/events, /v1/ws) and the API on one port (asyncio)"
    )
    worker = sub.add_parser(
        "worker", help="the fan-out worker: N processes sharing the work through the database"
    )
    worker.add_argument(
        "--processes",
        type=int,
        default=None,
        help="worker processes, supervised by this one (CHINWAG_WORKER_PROCESSES; "
        "default: one per core)",
    )
    worker.add_argument(
        "--nice",
        type=int,
        default=0,
        help="add this to each worker process's niceness (lower scheduling priority), as nice(1)",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve this process's /metrics here (CHINWAG_METRICS_PORT; with N processes, "
        "the n-th uses that port + n)",
    )
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


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    count = worker_processes(args.processes or settings.worker_processes)
    metrics_port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    if count > 1:
        log.info("starting %d worker processes", count)
        commands = worker_commands(count, nice=args.nice, metrics_port=metrics_port)
        return supervise(commands, dict(os.environ), args.log_level)
    if args.nice:
        # Before any thread starts: the database thread and the doorbell listener inherit it.
        os.nice(args.nice)
    return _run_worker(settings, metrics_port)


def _run_worker(settings: Settings, metrics_port: int) -> int:
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
    doorbell = Doorbell(settings.effective_queue_url)
    # A ring with no message: "there is more to claim", for the other workers.
    worker = build_worker(settings, db, senders, wake_peers=lambda: doorbell.ring(0))
    if metrics_port:
        # The push counters and histograms live in this process; the web tier cannot see them.
        import prometheus_client

        prometheus_client.start_http_server(metrics_port, addr=settings.host)
        log.info("worker metrics on http://%s:%d/metrics", settings.host, metrics_port)
    stop_listening = threading.Event()
    doorbell.listen(worker.wake, stop_listening)

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
    """Migrate, then run and supervise one web process and N workers until told to stop. The
    workers are the processes of `chinwag worker --processes N`, at a lower scheduling priority:
    a fan-out then takes the CPU the web process leaves, and a send is answered as fast during
    one as without."""
    from chinwag.bootstrap import open_database

    open_database(settings, migrate=True).dispose()
    env = {
        "CHINWAG_WORKER_BATCH": str(SERVE_WORKER_BATCH),
        **os.environ,
        "CHINWAG_HOST": settings.host,
        "CHINWAG_PORT": str(settings.port),
    }
    count = worker_processes(args.processes or settings.worker_processes)
    # The web child is the ASGI app: the API and the live gateway on the one port.
    commands = {
        "web": ["live"],
        **worker_commands(count, nice=args.worker_nice, metrics_port=settings.metrics_port),
    }
    print(
        f"chinwag {__version__} serving http://{settings.host}:{settings.port} "
        f"(database {settings.database_url}, {count} worker processes); Ctrl-C stops",
        flush=True,
    )
    return supervise(commands, env, args.log_level)


if __name__ == "__main__":
    raise SystemExit(main())
