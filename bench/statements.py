"""What one send costs the database: ``python -m bench.statements``.

The web app runs in this process (no server: each request is one WSGI call) on a fresh SQLite file
and, when reachable, a PostgreSQL schema. A SQLAlchemy event listener counts, for one
``POST /v1/chats/{id}/messages`` after a few warm-up sends, the statements executed, the
transactions begun and committed, and the connections checked out of the pool. Round trips to
the server (PostgreSQL) = statements + BEGINs + COMMITs (a statement on an AUTOCOMMIT connection
has neither); on SQLite the same calls go through the library in-process. The doorbell's
enqueue (Huey, its own connection) is counted apart.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from bench.webtier import postgres_available, postgres_schema
from chinwag.config import Settings
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.web import Services, create_app

WARM_UP_SENDS = 5


class Counting:
    """Statements, transactions and checkouts seen on one engine while ``active``."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.active = False
        self.statements: list[str] = []
        self.counts: Counter[str] = Counter()
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._count("commit"))
        event.listen(engine, "rollback", self._count("rollback"))
        event.listen(engine.pool, "checkout", self._count("checkout"))

    def _statement(self, *args: Any) -> None:
        statement = str(args[2])
        # SQLite's BEGIN goes through execute(); it is counted as the transaction it begins.
        if self.active and not statement.lstrip().upper().startswith("BEGIN"):
            self.statements.append(" ".join(statement.split())[:140])
            self.counts["statements"] += 1

    def _begin(self, conn: sa.engine.Connection) -> None:
        # An AUTOCOMMIT connection "begins" in SQLAlchemy's terms, but sends no BEGIN; nor does
        # a SQLite one told so (sqlite_begin=None: Database.read_statement).
        options = conn.get_execution_options()
        if (
            self.active
            and options.get("isolation_level") != "AUTOCOMMIT"
            and options.get("sqlite_begin", "BEGIN") is not None
        ):
            self.counts["begin"] += 1

    def _count(self, name: str) -> Any:
        def counted(*_args: Any) -> None:
            if self.active:
                self.counts[name] += 1

        return counted

    @contextmanager
    def watching(self) -> Iterator[None]:
        self.statements, self.counts = [], Counter()
        self.active = True
        try:
            yield
        finally:
            self.active = False


def call(app: Any, method: str, path: str, body: Any, token: str | None = None) -> Any:
    """One WSGI request, as a server would make it; returns (status, parsed JSON body)."""
    raw = json.dumps(body).encode() if body is not None else b""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    status: list[str] = []
    chunks = app(environ, lambda s, _headers, _exc=None: status.append(s))
    text = b"".join(chunks).decode()
    return status[0], json.loads(text) if text else None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_per_request(app: Any, path: str, token: str, repeats: int) -> dict[str, float]:
    """µs of this process's CPU per send and per ``GET /healthz``, one request after another
    (no server, no contention, no doorbell): what the web app itself costs."""
    for _ in range(repeats // 10):
        call(app, "GET", "/healthz", None)
    started = cpu_seconds()
    for _ in range(repeats):
        call(app, "GET", "/healthz", None)
    healthz = cpu_seconds() - started
    started = cpu_seconds()
    for _ in range(repeats):
        call(app, "POST", path, {"body": "Lunch at noon?"}, token)
    sends = cpu_seconds() - started
    return {"send_us": sends * 1e6 / repeats, "healthz_us": healthz * 1e6 / repeats}


def count_one_send(database_url: str, cpu_repeats: int = 0) -> dict[str, Any]:
    db = Database(database_url)
    upgrade(db)
    rings: list[int] = []
    settings = Settings(database_url=database_url, rate_sends_per_user=10**9)
    app = create_app(Services(settings, db, ring_doorbell=rings.append))
    counting = Counting(db.engine)
    try:
        tokens = {}
        for name in ("ann", "bob"):
            call(app, "POST", "/v1/users", {"username": name, "password": f"{name} password 1"})
            _, answer = call(
                app, "POST", "/v1/tokens", {"username": name, "password": f"{name} password 1"}
            )
            tokens[name] = answer["token"]
        _, chat = call(
            app, "POST", "/v1/chats", {"title": "Lunch", "members": ["bob"]}, tokens["ann"]
        )
        path = f"/v1/chats/{chat['id']}/messages"
        for index in range(WARM_UP_SENDS):
            call(app, "POST", path, {"body": f"warm-up {index}"}, tokens["ann"])
        with counting.watching():
            status, _ = call(app, "POST", path, {"body": "Lunch at noon?"}, tokens["ann"])
        rung = len(rings) - WARM_UP_SENDS
        cpu = cpu_per_request(app, path, tokens["ann"], cpu_repeats) if cpu_repeats else None
    finally:
        db.dispose()
    counts = dict(counting.counts)
    statements = counts.get("statements", 0)
    transactions = counts.get("begin", 0)
    return {
        "database": "postgresql" if database_url.startswith("postgresql") else "sqlite",
        "status": status,
        "statements": statements,
        "transactions": transactions,
        "commits": counts.get("commit", 0),
        "rollbacks": counts.get("rollback", 0),
        "checkouts": counts.get("checkout", 0),
        "round_trips": statements + transactions + counts.get("commit", 0),
        "doorbell_rings": rung,
        "sql": counting.statements,
        "cpu": cpu,
    }


def run(cpu_repeats: int = 0) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="chinwag-statements-") as scratch:
        results.append(count_one_send(f"sqlite:///{Path(scratch) / 'chinwag.db'}", cpu_repeats))
    if postgres_available():
        with postgres_schema() as url:
            results.append(count_one_send(url, cpu_repeats))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statements", description=__doc__)
    parser.add_argument("--sql", action="store_true", help="print each statement too")
    parser.add_argument(
        "--cpu", type=int, default=0, metavar="N", help="also time N sends and N GET /healthz"
    )
    args = parser.parse_args()
    for result in run(args.cpu):
        print(
            f"{result['database']}: {result['status']}; {result['statements']} statements in "
            f"{result['transactions']} transactions ({result['commits']} commits, "
            f"{result['rollbacks']} rollbacks), {result['checkouts']} pool checkouts, "
            f"{result['round_trips']} round trips; {result['doorbell_rings']} doorbell ring"
        )
        if result["cpu"]:
            print(
                f"    CPU in process: {result['cpu']['send_us']:.0f} µs per send, "
                f"{result['cpu']['healthz_us']:.0f} µs per GET /healthz ({args.cpu} each)"
            )
        if args.sql:
            for statement in result["sql"]:
                print(f"    {statement}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
