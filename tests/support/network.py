"""Ports for servers the tests and benchmarks start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nothing listened on a moment ago (connecting to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
