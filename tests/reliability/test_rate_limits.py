"""Abuse: sign-in limited per account and per client address, sends limited per user, 429 with
Retry-After, configured from the environment and shared by several ``chinwag web`` processes on
one database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.reliability.support import WebProcess, sign_in, write_figures
from tests.support.processes import chinwag_env
from tests.web.support import assert_error

from chinwag.store.database import Database
from chinwag.store.migrate import upgrade

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PASSWORD = "limit-password"


@pytest.fixture
def webs(tmp_path: Path) -> Iterator[list[WebProcess]]:
    """Three web processes on one SQLite database, with small limits from the environment."""
    db = Database(f"sqlite:///{tmp_path / 'chinwag.db'}")
    upgrade(db)
    db.dispose()
    env = chinwag_env(
        f"sqlite:///{tmp_path / 'chinwag.db'}",
        f"sqlite:///{tmp_path / 'queue.db'}",
        {},
        CHINWAG_RATE_SIGNIN_PER_MINUTE="4",
        CHINWAG_RATE_SIGNIN_PER_ADDRESS_PER_MINUTE="12",
        CHINWAG_RATE_SENDS_PER_MINUTE="6",
    )
    processes = [WebProcess(env, tmp_path / f"web-{n}.log") for n in range(3)]
    try:
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        for process in processes:
            process.process.stop()


def _sign_in(web: WebProcess, username: str, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(
        f"{web.url}/v1/tokens", json={"username": username, "password": password}, timeout=10
    )


def _assert_limited(response: httpx.Response) -> int:
    assert_error(response, 429, "rate_limited")
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


def test_sign_in_per_account_is_limited_across_web_processes(webs: list[WebProcess]) -> None:
    """Four sign-ins a minute per account, counted together whichever process answers: the fifth,
    even with the right password, is 429 + Retry-After; another account is not affected."""
    sign_in(webs[0].url, "mallory", PASSWORD)  # sign-up and the first sign-in
    sign_in(webs[0].url, "alice", PASSWORD)
    answers = [_sign_in(webs[n % 3], "mallory", "wrong-guess").status_code for n in range(3)]
    assert answers == [401, 401, 401]
    refused = _sign_in(webs[1], "mallory")
    retry_after = _assert_limited(refused)
    assert "token" not in refused.json()
    assert _sign_in(webs[2], "alice").status_code == 201
    write_figures(
        "rate_limit_signin_account",
        {"limit_per_minute": 4, "web_processes": 3, "refused_with_retry_after": retry_after},
    )


def test_sign_in_per_address_is_limited_whatever_the_account(webs: list[WebProcess]) -> None:
    """Twelve sign-ins a minute from one address, over many accounts and processes; then 429,
    and a forged X-Forwarded-For does not buy another budget."""
    statuses = [_sign_in(webs[n % 3], f"nobody{n}").status_code for n in range(12)]
    assert statuses == [401] * 12
    _assert_limited(_sign_in(webs[0], "nobody-else"))
    forged = httpx.post(
        f"{webs[1].url}/v1/tokens",
        json={"username": "nobody-more", "password": PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.7"},
        timeout=10,
    )
    _assert_limited(forged)


def test_sends_per_user_are_limited_across_web_processes(webs: list[WebProcess]) -> None:
    """Six sends a minute per user over three processes (both send routes count); the seventh is
    429 + Retry-After and stores nothing; another sender still gets through."""
    alice = {"Authorization": f"Bearer {sign_in(webs[0].url, 'alice', PASSWORD)}"}
    bob = {"Authorization": f"Bearer {sign_in(webs[0].url, 'bob', PASSWORD)}"}
    chat = httpx.post(
        f"{webs[0].url}/v1/chats", json={"title": "Flood", "members": ["bob"]}, headers=alice
    ).json()
    for n in range(6):
        web = webs[n % 3]
        if n % 2:
            sent = httpx.post(
                f"{web.url}/groupchat/send",
                json={"conversation": chat["id"], "message": f"legacy {n}"},
                headers=alice,
            )
        else:
            sent = httpx.post(
                f"{web.url}/v1/chats/{chat['id']}/messages", json={"body": f"m{n}"}, headers=alice
            )
        assert sent.status_code == 201, sent.text
    flood = httpx.post(
        f"{webs[2].url}/v1/chats/{chat['id']}/messages", json={"body": "one more"}, headers=alice
    )
    _assert_limited(flood)
    history = httpx.get(f"{webs[1].url}/v1/chats/{chat['id']}/messages", headers=bob).json()
    assert len(history["messages"]) == 6
    ok = httpx.post(
        f"{webs[1].url}/v1/chats/{chat['id']}/messages", json={"body": "me too"}, headers=bob
    )
    assert ok.status_code == 201, ok.text
