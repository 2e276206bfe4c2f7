"""Serving the ASGI application with uvicorn: ``chinwag live``, ``chinwag serve``'s web child, and
the tests' in-process gateway all go through here so they behave alike.

The listening socket is ours: TCP keepalive and ``TCP_USER_TIMEOUT`` set on it are inherited by
every accepted connection (Linux), so a client that vanished without closing (a laptop lid, a
dropped mobile network) is noticed within a minute once a heartbeat goes unacknowledged.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from chinwag.config import Settings

log = logging.getLogger("chinwag.live")

# Unacknowledged data (a heartbeat, a keepalive probe) for this long ends a connection: with the
# 25 s heartbeat a vanished peer is dropped within a minute.
DEAD_PEER_SECONDS = 30
GRACEFUL_SHUTDOWN_SECONDS = 5
WS_MAX_FRAME_BYTES = 64 * 1024


class _QuietUvicorn(logging.Filter):
    """Two kinds of uvicorn's records are dropped.

    Its per-WebSocket lines ("... "WebSocket /v1/ws?access_token=..." [accepted]", "connection
    open") would write browsers' tokens to the log, and a line per connection is noise at
    thousands of them. And a stream dropped for being too slow ends without completing its
    response on purpose; the gateway logs that itself.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "ASGI callable returned without completing response.":
            return False
        per_connection = '"WebSocket ' in message or message in (
            "connection open",
            "connection closed",
        )
        return not (per_connection and record.levelno <= logging.INFO)


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", 20),
        ("TCP_KEEPINTVL", 10),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", DEAD_PEER_SECONDS * 1000),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    heartbeat = settings.stream_heartbeat_seconds
    return uvicorn.Config(
        app,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        ws="websockets-sansio",
        lifespan="on",
        log_config=None,  # chinwag's own logging (CHINWAG_LOG_FORMAT) stays in charge
        access_log=False,
        # The web tier reads X-Forwarded-For itself, trusting only CHINWAG_TRUSTED_PROXIES.
        proxy_headers=False,
        server_header=False,
        ws_ping_interval=heartbeat,
        ws_ping_timeout=heartbeat,
        ws_max_size=WS_MAX_FRAME_BYTES,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


_QUIET = _QuietUvicorn()


class GatewayServer(uvicorn.Server):
    """uvicorn, which ends the live streams when it starts shutting down: they never end by
    themselves, and clients reconnect (to another process) and resume from the log."""

    def __init__(self, config: uvicorn.Config, close_streams: Callable[[], None]) -> None:
        super().__init__(config)
        self.close_streams = close_streams
        logging.getLogger("uvicorn.error").addFilter(_QUIET)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.close_streams()
        await super().shutdown(sockets=sockets)


def serve_forever(
    app: Any, settings: Settings, close_streams: Callable[[], None], sock: socket.socket
) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn handles both in the main thread)."""
    GatewayServer(uvicorn_config(app, settings), close_streams).run(sockets=[sock])
