"""Limits against a hostile client (security findings 4, 7, 8): body size before reading,
sign-ups per address, bounded password hashing, trusted proxies, IPv6 /64, sign-in per
(account, address)."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher, profiles
from tests.conftest import LiveServer
from tests.web.support import assert_error, at_once

from chinwag.chat import accounts
from chinwag.config import Settings
from chinwag.store.database import Database
from chinwag.web import Services
from chinwag.web.api import HttpError, read_body

LIMIT = 64 * 1024


def _live(db: Database, **settings: Any) -> LiveServer:
    return LiveServer(Services(Settings(database_url=db.url, **settings), db))


@pytest.fixture
def proxied(db: Database) -> Iterator[LiveServer]:
    """A server behind a trusted proxy on loopback, with small limits."""
    live = _live(
        db,
        trusted_proxies=("127.0.0.1/32",),
        rate_signup_per_address_per_hour=3,
        rate_signin_per_account=3,
    )
    yield live
    live.stop()


def _raw_answer(url: str, head: bytes, body: bytes, timeout: float = 10.0) -> bytes:
    """Send a request head and part of a body, never finishing it; return what the server says."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):  # the server may close while we still send: fine
            sock.sendall(body)
        answer = b""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in answer and time.monotonic() < deadline:
            try:
                part = sock.recv(4096)
            except TimeoutError:
                break
            if not part:
                break
            answer += part
        return answer


def test_a_huge_content_length_is_refused_before_the_body_is_read(server: LiveServer) -> None:
    """A 300 MB Content-Length gets 413 at once, without the server waiting for the body."""
    head = (
        b"POST /v1/users HTTP/1.1\r\nHost: chinwag\r\nContent-Type: application/json\r\n"
        b"Content-Length: 300000000\r\n\r\n"
    )
    started = time.monotonic()
    answer = _raw_answer(server.url, head, b'{"username": ')
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert time.monotonic() - started < 5


def test_a_chunked_body_is_cut_off_while_it_arrives(server: LiveServer) -> None:
    """A chunked body that never ends is refused once it passes the bound, not buffered on."""
    head = (
        b"POST /v1/users HTTP/1.1\r\nHost: chinwag\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (8192, b"x" * 8192)
    answer = _raw_answer(server.url, head, chunk * 64)  # 512 KiB and no last chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


def test_the_application_never_reads_past_the_limit() -> None:
    """Under any WSGI server: a large Content-Length reads nothing, a stream at most limit+1."""
    stream = io.BytesIO(b"x" * (10 * LIMIT))
    with pytest.raises(HttpError) as refused:
        read_body({"wsgi.input": stream, "CONTENT_LENGTH": str(300_000_000)}, LIMIT)
    assert refused.value.status == 413 and stream.tell() == 0
    with pytest.raises(HttpError):
        read_body({"wsgi.input": stream}, LIMIT)  # no Content-Length: chunked under gunicorn
    assert stream.tell() == LIMIT + 1
    assert read_body({"wsgi.input": io.BytesIO(b"{}"), "CONTENT_LENGTH": "2"}, LIMIT) == b"{}"


def _sign_up(client: httpx.Client, name: str, forwarded: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    body = {"username": name, "password": "correct horse"}
    return client.post("/v1/users", json=body, headers=headers)


def test_sign_ups_per_address_are_limited_and_forged_forwarding_does_not_help(
    db: Database,
) -> None:
    """The 4th sign-up from one address in an hour is a 429; without a trusted proxy a forged
    X-Forwarded-For changes nothing."""
    live = _live(db, rate_signup_per_address_per_hour=3)
    try:
        client = live.client()
        for n in range(3):
            assert _sign_up(client, f"u{n}", forwarded=f"203.0.113.{n}").status_code == 201
        refused = _sign_up(client, "u3", forwarded="203.0.113.99")
        assert_error(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    finally:
        live.stop()


def test_trusted_proxy_forwarding_counts_clients_and_ipv6_per_64(proxied: LiveServer) -> None:
    """Behind a trusted proxy each client has its own budget, and one IPv6 /64 is one client."""
    client = proxied.client()
    for n in range(3):
        assert _sign_up(client, f"v6n{n}", forwarded=f"2001:db8:0:7::{n + 1}").status_code == 201
    assert_error(_sign_up(client, "v6x", forwarded="2001:db8:0:7:ffff::9"), 429)
    other = _sign_up(client, "v6other", forwarded="2001:db8:0:8::1")
    assert other.status_code == 201, other.text
    assert _sign_up(client, "v4", forwarded="198.51.100.4").status_code == 201
    # A client's own forged hop before the proxy's is not believed past the first untrusted hop.
    spoofed = _sign_up(client, "spoof", forwarded="192.0.2.1, 2001:db8:0:7::5")
    assert_error(spoofed, 429)


def test_wrong_passwords_slow_down_the_guesser_not_the_owner(
    proxied: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guesses from one address are refused after the limit; the owner elsewhere still signs in."""
    client = proxied.client()
    assert _sign_up(client, "alice", forwarded="198.51.100.1").status_code == 201
    guess = {"username": "alice", "password": "wrong guess"}
    attacker = {"X-Forwarded-For": "198.51.100.66"}
    answers = [client.post("/v1/tokens", json=guess, headers=attacker) for _ in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    owner = client.post(
        "/v1/tokens",
        json={"username": "alice", "password": "correct horse"},
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    assert owner.status_code == 201, owner.text


class CountingHasher(PasswordHasher):
    """argon2 for real (at its cheapest), slowed a little, counting how many run at once."""

    def __init__(self) -> None:
        cheapest = profiles.CHEAPEST
        super().__init__(
            time_cost=cheapest.time_cost,
            memory_cost=cheapest.memory_cost,
            parallelism=cheapest.parallelism,
            hash_len=cheapest.hash_len,
            salt_len=cheapest.salt_len,
        )
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)
            return super().hash(password, salt=salt)
        finally:
            with self._lock:
                self.running -= 1


def test_password_hashing_is_bounded_per_process(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 sign-ups at once: at most MAX_CONCURRENT_HASHES hash together; the overflow waits or
    gets 503 with Retry-After, never a pile of 64 MiB hashes."""
    hasher = CountingHasher()
    monkeypatch.setattr(accounts, "_hasher", hasher)
    monkeypatch.setattr(accounts, "HASH_WAIT_SECONDS", 0.1)
    live = _live(db, rate_signup_per_address_per_hour=0)
    try:
        client = live.client()
        answers = at_once(24, lambda n: _sign_up(client, f"rush{n}"))
    finally:
        live.stop()
    assert hasher.most <= accounts.MAX_CONCURRENT_HASHES
    statuses = sorted({a.status_code for a in answers})
    assert set(statuses) <= {201, 503}, statuses
    busy = [a for a in answers if a.status_code == 503]
    assert busy, "24 at once with a 0.1 s wait must overflow 2 slots of 0.05 s"
    for answer in busy:
        assert_error(answer, 503, "overloaded")
        assert answer.headers["Retry-After"] == "1"
    assert any(a.status_code == 201 for a in answers)
