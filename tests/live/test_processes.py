"""Gateways as separate processes share one database: on PostgreSQL a send through one gateway
wakes the others through NOTIFY and typing crosses processes; ``chinwag serve`` holds 200 open
streams and still answers /healthz and a send at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from tests.conftest import Api, LiveGateway
from tests.live.support import chat, person, send, sse, websocket
from tests.support.network import free_port
from tests.support.processes import wait_until

from chinwag.live.hub import SAFETY_TAIL_SECONDS
from chinwag.store.database import Database


def test_postgres_notify_wakes_every_gateway_and_carries_typing(
    start_gateway: Callable[..., LiveGateway], db: Database
) -> None:
    """A message sent through gateway B reaches a stream on gateway A sooner than A's safety
    tail would find it, and typing on B reaches a member connected to A."""
    if not db.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite runs one gateway process")
    first, second = start_gateway(), start_gateway()
    for gateway in (first, second):
        wakeups = gateway.gateway.wakeups
        assert wakeups is not None
        wait_until(wakeups.connected.is_set, 15, "the LISTEN connection")
    api_b = Api(second)
    alice, bob = person(api_b, "alice"), person(api_b, "bob")
    chat_id = chat(alice, "Across", bob)
    with sse(first, bob) as stream, websocket(first, bob) as bob_ws:
        sent = time.monotonic()
        send(alice, chat_id, "over the wire")
        (event,) = stream.wait_for(1)
        assert event.data["body"] == "over the wire"
        assert time.monotonic() - sent < SAFETY_TAIL_SECONDS  # woken, not found by the tail
        assert bob_ws.next()["kind"] == "message"
        with websocket(second, alice) as alice_ws:
            alice_ws.send({"type": "typing", "chat_id": chat_id})
            typing = bob_ws.next(timeout=5)
            assert typing["kind"] == "typing" and typing["data"]["username"] == "alice"


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class HeldStreams:
    """Many SSE streams held open by one asyncio client in a thread, until told to let go."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self.url, self.tokens = url, tokens
        self.opened = 0
        self.messages = 0
        self.failure: BaseException | None = None
        self._release = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)
        self._thread.start()

    async def _hold(self) -> None:
        limits = httpx.Limits(max_connections=len(self.tokens) + 10)
        try:
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(30, read=120), limits=limits) as client,
                AsyncExitStack() as stack,
            ):
                responses = []
                for token in self.tokens:
                    response = await stack.enter_async_context(
                        client.stream(
                            "GET",
                            f"{self.url}/v1/events",
                            headers={
                                "Authorization": f"Bearer {token}",
                                "Accept": "text/event-stream",
                            },
                        )
                    )
                    assert response.status_code == 200, response.status_code
                    responses.append(response)
                    self.opened += 1
                readers = [asyncio.create_task(self._count(r)) for r in responses]
                await asyncio.to_thread(self._release.wait)
                for reader in readers:
                    reader.cancel()
        except BaseException as exc:
            self.failure = exc

    async def _count(self, response: httpx.Response) -> None:
        async for line in response.aiter_lines():
            if line.startswith("event: message"):
                self.messages += 1

    def release(self) -> None:
        self._release.set()
        self._thread.join(timeout=30)


@pytest.mark.slow
def test_serve_holds_200_streams_and_still_answers(tmp_path: Path) -> None:
    """200 open SSE streams on a real `chinwag serve` (one port): /healthz and a send still
    answer within 5 s, and the send reaches the streams."""
    workdir = tmp_path / "app"
    workdir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
    env.update(CHINWAG_PORT=str(port), CHINWAG_SWEEP_INTERVAL="0.5")
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "chinwag", "serve"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    held: HeldStreams | None = None
    try:
        wait_until(lambda: _up(url), 60, "chinwag serve to answer /healthz")
        client = httpx.Client(base_url=url, timeout=10)
        tokens = {}
        names = [f"user{i}" for i in range(10)]  # 20 streams each: the default cap
        for name in ["alice", *names]:
            assert client.post(
                "/v1/users", json={"username": name, "password": "long enough"}
            ).is_success
            tokens[name] = client.post(
                "/v1/tokens", json={"username": name, "password": "long enough"}
            ).json()["token"]
        alice = {"Authorization": f"Bearer {tokens['alice']}"}
        created = client.post("/v1/chats", headers=alice, json={"title": "All", "members": names})
        chat_id = created.json()["id"]
        held = HeldStreams(url, [tokens[name] for name in names for _ in range(20)])
        wait_until(
            lambda: held.opened == 200 or held.failure is not None, 60, "200 streams to open"
        )
        assert held.failure is None, repr(held.failure)
        started = time.monotonic()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        sent = client.post(
            f"/v1/chats/{chat_id}/messages", headers=alice, json={"body": "hello, crowd"}, timeout=5
        )
        assert sent.status_code == 201, sent.text
        assert time.monotonic() - started < 10
        wait_until(lambda: held.messages >= 200, 30, "the message on all 200 streams")
    finally:
        if held is not None:
            held.release()
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait(timeout=10)
        log.close()
    assert serve.returncode == 0, (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
