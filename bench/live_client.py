"""The load client of ``bench.live``: thousands of live connections from one asyncio process.

It runs in a process of its own (spawned, driven over a pipe like the APNs fake), so the gateway's
figures are the gateway's own. SSE streams are raw asyncio streams (an HTTP/1.1 GET with
``Accept: text/event-stream``); WebSockets use the ``websockets`` client, as a browser would, with
its default offer of permessage-deflate. Every connection records when each benchmark message
reached it; the messages' bodies carry a marker (``lb<number>``) that is found in the raw bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from bench.support import percentile

MARKER = re.compile(rb"lb(\d+)#")
OPEN_IN_FLIGHT = 200  # connections being opened at once
CONNECT_TIMEOUT = 60.0


def raise_open_files(wanted: int = 65_536) -> int:
    """Lift RLIMIT_NOFILE for this process (root may lift the hard limit too); the new soft one."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new_hard in (max(hard, wanted), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(eq=False)
class LiveConnection:
    """One open stream and what arrived on it: message number -> perf_counter at arrival."""

    transport: str
    user: int
    gateway: str
    arrivals: dict[int, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    ended: bool = False

    def note(self, data: bytes, now: float) -> None:
        for match in MARKER.finditer(data):
            self.arrivals.setdefault(int(match.group(1)), now)


class LoadClient:
    """Connections to one or more gateways (labelled), and requests through one of them."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.connections: list[LiveConnection] = []
        self.http = httpx.AsyncClient(timeout=60)

    async def target(self, port: int) -> None:
        """Send requests (probes, messages) through the gateway on ``port``."""
        await self.http.aclose()
        self.http = httpx.AsyncClient(base_url=f"http://{self.host}:{port}", timeout=60)

    # -- opening --------------------------------------------------------------------------------

    async def open(
        self,
        tokens: Sequence[tuple[int, str]],
        per_user: int,
        port: int,
        gateway: str,
        only: str | None = None,
        deflate: bool = True,
    ) -> dict[str, Any]:
        """``per_user`` connections for each (user, token) to the gateway on ``port``,
        alternately SSE and WebSocket; with ``only``, just the slots of that transport."""
        plan = [
            (user, token, "sse" if (i * per_user + k) % 2 == 0 else "ws")
            for i, (user, token) in enumerate(tokens)
            for k in range(per_user)
        ]
        if only is not None:
            plan = [item for item in plan if item[2] == only]
        gate = asyncio.Semaphore(OPEN_IN_FLIGHT)
        times: list[float] = []
        failures: list[str] = []

        async def one(user: int, token: str, transport: str) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        if transport == "sse":
                            connection = await self._open_sse(user, token, port, gateway)
                        else:
                            connection = await self._open_ws(user, token, port, gateway, deflate)
                except Exception as exc:  # counted and reported, never fatal to the run
                    failures.append(f"{transport}: {type(exc).__name__}: {exc}"[:200])
                    return
                times.append(time.perf_counter() - started)
                self.connections.append(connection)

        started = time.perf_counter()
        await asyncio.gather(*(one(*item) for item in plan))
        total = time.perf_counter() - started
        return {
            "requested": len(plan),
            "opened": len(times),
            "failed": len(failures),
            "failures": sorted(set(failures))[:10],
            "total_s": total,
            "p50_s": percentile(times, 0.5),
            "p99_s": percentile(times, 0.99),
            "max_s": max(times, default=float("nan")),
            "open_now": self.open_count(),
            "times": times,
        }

    async def _open_sse(self, user: int, token: str, port: int, gateway: str) -> LiveConnection:
        reader, writer = await asyncio.open_connection(self.host, port)
        writer.write(
            (
                f"GET /v1/events HTTP/1.1\r\nHost: {self.host}:{port}\r\n"
                f"Accept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            writer.close()
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        connection = LiveConnection("sse", user, gateway)
        connection.task = asyncio.create_task(self._read_sse(connection, reader, writer))
        return connection

    @staticmethod
    async def _read_sse(
        connection: LiveConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        tail = b""  # a marker may be cut between two reads
        try:
            while True:
                data = await reader.read(65_536)
                if not data:
                    return
                connection.note(tail + data, time.perf_counter())
                tail = data[-16:]
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            connection.ended = True
            writer.close()

    async def _open_ws(
        self, user: int, token: str, port: int, gateway: str, deflate: bool
    ) -> LiveConnection:
        socket = await ws_connect(
            f"ws://{self.host}:{port}/v1/ws?access_token={token}",
            compression="deflate" if deflate else None,  # browsers offer permessage-deflate
            ping_interval=None,  # the server pings; the client answers
            open_timeout=CONNECT_TIMEOUT,
            max_queue=None,
        )
        connection = LiveConnection("ws", user, gateway)
        connection.task = asyncio.create_task(self._read_ws(connection, socket))
        return connection

    @staticmethod
    async def _read_ws(connection: LiveConnection, socket: ClientConnection) -> None:
        try:
            async for message in socket:
                data = message.encode() if isinstance(message, str) else message
                connection.note(data, time.perf_counter())
        except Exception:  # closed by the server or by us: the connection has ended either way
            return
        finally:
            connection.ended = True
            with contextlib.suppress(Exception):
                await socket.close()

    def open_count(self) -> int:
        return sum(1 for c in self.connections if not c.ended)

    async def count_open(self) -> int:
        return self.open_count()

    async def close(self, keep: int = 0) -> dict[str, Any]:
        """Close all connections but the first ``keep``; wait until they have ended."""
        closing, self.connections = self.connections[keep:], self.connections[:keep]
        for connection in closing:
            if connection.task is not None:
                connection.task.cancel()
        await asyncio.gather(
            *(c.task for c in closing if c.task is not None), return_exceptions=True
        )
        return {"closed": len(closing), "open_now": self.open_count()}

    # -- requests -------------------------------------------------------------------------------

    async def probe(self, token: str, chat_id: int, healthz: int, sends: int) -> dict[str, Any]:
        """Sequential ``GET /healthz`` then ``POST`` sends on one keep-alive connection."""
        health_times: list[float] = []
        for _ in range(healthz):
            started = time.perf_counter()
            answer = await self.http.get("/healthz")
            health_times.append(time.perf_counter() - started)
            answer.raise_for_status()
        send_times: list[float] = []
        for i in range(sends):
            started = time.perf_counter()
            answer = await self.http.post(
                f"/v1/chats/{chat_id}/messages",
                json={"body": f"probe {i}"},
                headers={"Authorization": f"Bearer {token}"},
            )
            send_times.append(time.perf_counter() - started)
            if answer.status_code != 201:
                raise RuntimeError(f"send failed: {answer.status_code} {answer.text[:200]}")
        return {
            "healthz": {**_summary(health_times), "samples": health_times},
            "send": {**_summary(send_times), "samples": send_times},
            "open_now": self.open_count(),
        }

    async def latency(
        self, token: str, chat_id: int, messages: int, spacing: float, first: int, settle: float
    ) -> dict[str, Any]:
        """Send ``messages`` spaced out; latency = arrival on each connection - send start."""
        receivers = [c for c in self.connections if not c.ended]
        cpu = time.process_time()
        sent: dict[int, float] = {}
        send_times: list[float] = []
        for number in range(first, first + messages):
            due = time.perf_counter() + spacing
            sent[number] = time.perf_counter()
            await self._post(token, chat_id, f"lb{number}# live benchmark")
            send_times.append(time.perf_counter() - sent[number])
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        deadline = time.perf_counter() + settle
        expected = len(receivers) * messages
        while time.perf_counter() < deadline:
            if sum(sum(1 for n in sent if n in c.arrivals) for c in receivers) >= expected:
                break
            await asyncio.sleep(0.1)
        groups: dict[str, list[float]] = {}
        every: list[float] = []
        for connection in receivers:
            for number, started in sent.items():
                if number in connection.arrivals:
                    seconds = connection.arrivals[number] - started
                    every.append(seconds)
                    groups.setdefault(connection.transport, []).append(seconds)
                    groups.setdefault(f"gateway {connection.gateway}", []).append(seconds)
        return {
            "connections": len(receivers),
            "messages": messages,
            "spacing_s": spacing,
            "expected": expected,
            "arrived": len(every),
            "all": _summary(every),
            **{name: _summary(values) for name, values in sorted(groups.items())},
            "send": _summary(send_times),
            "client_cpu_s": time.process_time() - cpu,
        }

    async def _post(self, token: str, chat_id: int, body: str) -> None:
        answer = await self.http.post(
            f"/v1/chats/{chat_id}/messages",
            json={"body": body},
            headers={"Authorization": f"Bearer {token}"},
        )
        if answer.status_code != 201:
            raise RuntimeError(f"send failed: {answer.status_code} {answer.text[:200]}")


def _summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_s": percentile(values, 0.5),
        "p99_s": percentile(values, 0.99),
        "max_s": max(values, default=float("nan")),
    }


# -- the process ---------------------------------------------------------------------------------


def _serve(channel: Connection) -> None:
    limit = raise_open_files()

    async def serve() -> None:
        client = LoadClient()
        channel.send({"open_files_limit": limit})
        loop = asyncio.get_running_loop()
        while True:
            command, arguments = await loop.run_in_executor(None, channel.recv)
            if command == "stop":
                await client.close()
                await client.http.aclose()
                channel.send(None)
                return
            try:
                result: Any = await getattr(client, command)(*arguments)
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
            channel.send(result)

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


class LoadClientProcess:
    """The load client in a spawned child process; each call waits for its answer."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._channel, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), daemon=True)
        self.process.start()  # it starts while the parent prepares the gateway
        self._limit: int | None = None

    @property
    def open_files_limit(self) -> int:
        if self._limit is None:
            if not self._channel.poll(60):
                raise RuntimeError("the load client did not start")
            self._limit = int(self._channel.recv()["open_files_limit"])
        return self._limit

    def ask(self, command: str, *arguments: Any, timeout: float = 600) -> Any:
        _ = self.open_files_limit  # started
        self._channel.send((command, arguments))
        if not self._channel.poll(timeout):
            raise RuntimeError(f"the load client did not answer {command!r} within {timeout} s")
        answer = self._channel.recv()
        if isinstance(answer, dict) and "error" in answer:
            raise RuntimeError(f"load client, {command}: {answer['error']}")
        return answer

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.ask("stop", timeout=60)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
