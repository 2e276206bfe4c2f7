"""The original design chinwag replaces, kept faithful so the comparison is honest.

A Bottle app with one route, ``POST /groupchat/send {conversation, message}``: it stores the
message in SQLite, reads the conversation's device tokens, and pushes "message from <sender>" to
each device one after another, in one ``try``, so the first exception ends the batch. The only
modernisation is the protocol: the legacy APNs binary protocol is gone, so each push is one
HTTP/2 request to the APNs provider API with a real ES256 JWT, one request at a time, over a
connection opened for the batch (as the original opened its APNs socket per batch).

``sync_bottle`` pushes before answering; ``mp_bottle`` answers and pushes from a
``multiprocessing.Process`` started per request (the original's fix for slow sends).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bottle
import httpx
import jwt

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, conversation INTEGER NOT NULL, sender TEXT NOT NULL,
    body TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY, conversation INTEGER NOT NULL, token TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS devices_conversation ON devices (conversation);
"""


class ApnsConfig:
    """The APNs settings, read from the same CHINWAG_APNS_* variables chinwag uses."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        values = dict(os.environ if env is None else env)
        self.key = Path(values["CHINWAG_APNS_KEY_FILE"]).read_bytes()
        self.key_id = values["CHINWAG_APNS_KEY_ID"]
        self.team_id = values["CHINWAG_APNS_TEAM_ID"]
        self.topic = values["CHINWAG_APNS_TOPIC"]
        self.url = values["CHINWAG_APNS_URL"]
        self.ca_file = values.get("CHINWAG_CA_FILE")

    def provider_token(self) -> str:
        return jwt.encode(
            {"iss": self.team_id, "iat": int(time.time())},
            self.key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )


def open_store(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.executescript(SCHEMA)
    return conn


def add_devices(path: str, conversation: int, tokens: list[str]) -> None:
    with open_store(path) as conn:
        conn.executemany(
            "INSERT INTO devices (conversation, token) VALUES (?, ?)",
            [(conversation, token) for token in tokens],
        )


def store_message(path: str, conversation: int, sender: str, body: str) -> list[str]:
    """Save the message and return the conversation's device tokens."""
    conn = open_store(path)
    try:
        with conn:
            conn.execute(
                "INSERT INTO messages (conversation, sender, body, created_at) VALUES (?,?,?,?)",
                (conversation, sender, body, time.time()),
            )
        rows = conn.execute(
            "SELECT token FROM devices WHERE conversation = ? ORDER BY id", (conversation,)
        ).fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows]


def push_to_devices(config: ApnsConfig, tokens: list[str], sender: str) -> int:
    """The original loop: one device after another, one request at a time; returns how many
    were accepted before the batch ended."""
    payload = json.dumps({"aps": {"alert": f"message from {sender}", "sound": "default"}})
    context = ssl.create_default_context(cafile=config.ca_file)
    headers = {
        "authorization": f"bearer {config.provider_token()}",
        "apns-topic": config.topic,
        "apns-push-type": "alert",
    }
    sent = 0
    try:
        with httpx.Client(http2=True, http1=False, verify=context, timeout=30) as client:
            for token in tokens:
                answer = client.post(
                    f"{config.url}/3/device/{token}", content=payload, headers=headers
                )
                answer.raise_for_status()
                sent += 1
    except Exception as exc:  # the original logged and gave up on the rest of the batch
        print(f"push batch stopped after {sent} devices: {exc!r}", flush=True)
    return sent


def build_app(
    store_path: str, respond: Callable[[ApnsConfig, list[str], str], None]
) -> bottle.Bottle:
    config = ApnsConfig()
    app = bottle.Bottle()

    @app.post("/groupchat/send")  # type: ignore[untyped-decorator]  # bottle has no types
    def send() -> dict[str, Any]:
        request: Any = bottle.request
        conversation = int(request.json["conversation"])
        body = str(request.json["message"])
        sender = request.get_header("X-User", "someone")
        tokens = store_message(store_path, conversation, sender, body)
        respond(config, tokens, sender)
        return {"ok": True, "devices": len(tokens)}

    @app.get("/healthz")  # type: ignore[untyped-decorator]  # bottle has no types
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(respond: Callable[[ApnsConfig, list[str], str], None], description: str) -> None:
    """Serve the app on waitress (chinwag's own web server, so the servers are alike)."""
    from waitress import serve as waitress_serve

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True)
    args = parser.parse_args()
    open_store(args.store).close()
    app = build_app(args.store, respond)
    waitress_serve(app, host="127.0.0.1", port=args.port, threads=8, ident="original")
