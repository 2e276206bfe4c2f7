"""Clients of the live gateway for tests: an SSE reader, a WebSocket reader, users with tokens."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from tests.conftest import Api, LiveGateway
from tests.support.processes import wait_until
from websockets.sync.client import ClientConnection, connect


@dataclass
class Person:
    name: str
    token: str
    client: httpx.Client


def person(api: Api, name: str) -> Person:
    """A signed-up user with a token and a client of the API carrying it."""
    api.user(name)
    token = api.anonymous.post(
        "/v1/tokens", json={"username": name, "password": "correct horse"}
    ).json()["token"]
    return Person(name, token, api.server.client(token))


def send(sender: Person, chat_id: int, body: str) -> int:
    response = sender.client.post(f"/v1/chats/{chat_id}/messages", json={"body": body})
    assert response.status_code == 201, response.text
    return int(response.json()["message"]["id"])


def chat(creator: Person, title: str, *members: Person) -> int:
    response = creator.client.post(
        "/v1/chats", json={"title": title, "members": [m.name for m in members]}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@dataclass
class SseEvent:
    id: int | None
    kind: str
    data: dict[str, Any]


@dataclass
class SseReader:
    """A real ``text/event-stream`` response read in a thread; events collected as they come."""

    url: str
    token: str
    last_event_id: str | None = None
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    error: httpx.HTTPError | None = None

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=60))
        self._closing = threading.Event()
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_until(self.opened.is_set, 15, "the SSE stream to open")

    def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            with self._client.stream("GET", f"{self.url}/v1/events", headers=headers) as response:
                self.status = response.status_code
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line)
                        self.opened.set()  # the gateway's first line is a comment
                    elif not line:
                        if "data" in fields:
                            raw_id = fields.get("id")
                            self.events.append(
                                SseEvent(
                                    int(raw_id) if raw_id is not None else None,
                                    fields.get("event", "message"),
                                    json.loads(fields["data"]),
                                )
                            )
                        fields = {}
                    else:
                        name, _, value = line.partition(": ")
                        fields[name] = value
        except httpx.HTTPError as exc:
            if not self._closing.is_set():
                self.error = exc  # e.g. the server cut the stream without the body's clean end
                raise
        finally:
            self.opened.set()
            self.ended.set()

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    def wait_for(self, count: int, timeout: float = 15) -> list[SseEvent]:
        wait_until(
            lambda: len(self.events) >= count,
            timeout,
            f"{count} events, got {[(e.id, e.kind) for e in self.events][-20:]}",
        )
        return self.events

    def close(self) -> None:
        self.hang_up()
        self._thread.join(timeout=10)

    def hang_up(self) -> None:
        """Close the connection; the reading thread ends at the stream's next line (a heartbeat
        at the latest), so hang up many readers before joining any (``close_all``)."""
        self._closing.set()
        self._client.close()


def close_all(readers: list[SseReader]) -> None:
    for reader in readers:
        reader.hang_up()
    for reader in readers:
        reader.close()


def wait_until_waiting(gateway: LiveGateway, transport: str) -> None:
    """Until a connection of this transport (sse, ws, longpoll) has joined the gateway's hub."""
    hub = gateway.gateway.hub
    wait_until(
        lambda: any(s.transport == transport for subs in hub.subscribers.values() for s in subs),
        15,
        f"a {transport} connection in the hub",
    )


@contextmanager
def sse(gateway: LiveGateway, who: Person, last_event_id: str | None = None) -> Iterator[SseReader]:
    reader = SseReader(gateway.url, who.token, last_event_id)
    try:
        yield reader
    finally:
        reader.close()


@contextmanager
def websocket(
    gateway: LiveGateway, who: Person, after: int | str | None = None
) -> Iterator[WsClient]:
    query = f"?after={after}" if after is not None else ""
    with connect(
        f"{gateway.ws_url}/v1/ws{query}",
        additional_headers={"Authorization": f"Bearer {who.token}"},
        open_timeout=15,
    ) as connection:
        yield WsClient(connection)


class WsClient:
    """A real WebSocket client, reading JSON frames with a bound on every wait."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    def send(self, frame: Any) -> None:
        self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    def next(self, timeout: float = 15) -> dict[str, Any]:
        frame = json.loads(self.connection.recv(timeout=timeout))
        assert isinstance(frame, dict), frame
        return frame

    def next_matching(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15
    ) -> dict[str, Any]:
        """Skip frames until one matches (e.g. the chat's own member_added when it was created)."""
        while True:
            frame = self.next(timeout)
            if predicate(frame):
                return frame
