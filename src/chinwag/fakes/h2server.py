"""An HTTP/2-over-TLS server for the fake providers, on the sans-IO ``h2`` library.

One asyncio protocol per connection; every request stream is answered by its own task, so
latency, stalls and slow handlers never hold up the other streams of a connection. Faults from a
``FaultPlan`` are applied before the handler sees a request. Responses go out as a HEADERS frame
followed by the whole body in one DATA frame carrying END_STREAM, as APNs answers (clients have
broken on exactly that shape before); only a body larger than the peer's frame size or flow-control
window is split, waiting for WINDOW_UPDATEs as needed.

Writes are coalesced: answers finished in the same loop iteration leave in one TLS record batch,
which is what lets one process answer thousands of requests a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from chinwag.fakes.faults import FaultPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names, pseudo-headers excluded
    body: bytes
    authority: str


@dataclass
class FakeResponse:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


Handler = Callable[[FakeRequest], Awaitable[FakeResponse]]
# (fault, status) -> body of the injected answer. fault is "5xx", "429" or "stall" with the
# HTTP status, or "goaway" with status 0, where the bytes become the GOAWAY debug data.
FaultBody = Callable[[str, int], bytes]


def _no_body(fault: str, status: int) -> bytes:
    return b""


@dataclass
class ServerStats:
    requests: int = 0
    faults_injected: Counter[str] = field(default_factory=Counter)
    connections_opened: int = 0
    goaways_sent: int = 0
    streams_in_flight: int = 0
    max_streams_in_flight: int = 0  # across all connections at once
    max_streams_per_connection: int = 0  # most streams open at once on a single connection


class H2FakeServer:
    def __init__(
        self,
        handler: Handler,
        ssl_context: ssl.SSLContext,
        *,
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_concurrent_streams: int = 1000,
        fault_body: FaultBody | None = None,
    ) -> None:
        self.handler = handler
        self.faults = faults if faults is not None else FaultPlan()
        self.fault_body = fault_body or _no_body
        self.stats = ServerStats()
        self.max_concurrent_streams = max_concurrent_streams
        self._ssl_context = ssl_context
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[_H2Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _H2Connection(self),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=1024,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.drop_connections()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> H2FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def drop_connections(self) -> int:
        """Cut every open connection at the TCP level; returns how many were cut."""
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        return len(connections)

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"https://{self._host}:{self._port}"

    # Bookkeeping called by the connections.

    def _opened(self, connection: _H2Connection) -> None:
        self._connections.add(connection)
        self.stats.connections_opened += 1

    def _closed(self, connection: _H2Connection) -> None:
        if connection in self._connections:
            self._connections.discard(connection)

    def _stream_opened(self, streams_on_connection: int) -> None:
        stats = self.stats
        stats.requests += 1
        stats.streams_in_flight += 1
        stats.max_streams_in_flight = max(stats.max_streams_in_flight, stats.streams_in_flight)
        stats.max_streams_per_connection = max(
            stats.max_streams_per_connection, streams_on_connection
        )

    def _stream_closed(self) -> None:
        self.stats.streams_in_flight -= 1

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@dataclass
class _Stream:
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    task: asyncio.Task[None] | None = None


class _LeanH2Connection(h2.connection.H2Connection):
    """h2 walks every stream to count the open ones on each new stream, O(n) per request; we
    count our own and let h2's walk (which also forgets closed streams) run every 128th time.
    h2 is pinned for this private method (see chinwag.push.h2pool).
    """

    def __init__(self, config: h2.config.H2Configuration, open_streams: Callable[[], int]) -> None:
        super().__init__(config)
        self._count_open = open_streams
        self._counts_since_walk = 0

    def _open_streams(self, remainder: int) -> int:
        if remainder != 1:  # not the client's (odd) streams: h2's own count
            return super()._open_streams(remainder)
        self._counts_since_walk += 1
        if self._counts_since_walk >= 128:
            self._counts_since_walk = 0
            return super()._open_streams(remainder)
        return self._count_open()


class _H2Connection(asyncio.Protocol):
    def __init__(self, server: H2FakeServer) -> None:
        self._server = server
        self._streams: dict[int, _Stream] = {}
        self._h2 = _LeanH2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None),
            open_streams=self._streams.__len__,
        )
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_concurrent_streams
            },
        )
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._flush_scheduled = False
        self._window_opened = asyncio.Event()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server._opened(self)
        self._h2.initiate_connection()
        # A large connection window: request bodies then never wait for our WINDOW_UPDATEs.
        self._h2.increment_flow_control_window(2**24)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("closing HTTP/2 connection after a protocol error: %s", exc)
            self._flush()
            self._close()
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server._closed(self)
        for stream in self._streams.values():
            if stream.task is not None:
                stream.task.cancel()
            self._server._stream_closed()
        self._streams.clear()
        self._window_opened.set()

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    # HTTP/2 events

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            self._streams[event.stream_id] = _Stream(list(event.headers))
            self._server._stream_opened(len(self._streams))
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None and event.data is not None
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body += event.data
            self._h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.task = asyncio.get_running_loop().create_task(
                    self._answer(event.stream_id, _request_from(stream))
                )
                self._server._track(stream.task)
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            self._finish(event.stream_id, cancel=True)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_opened.set()
            self._window_opened = asyncio.Event()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close()

    def _finish(self, stream_id: int, *, cancel: bool = False) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._server._stream_closed()
        if cancel and stream.task is not None:
            stream.task.cancel()

    # Answering one stream

    async def _answer(self, stream_id: int, request: FakeRequest) -> None:
        server = self._server
        plan = server.faults
        fault = plan.pick()
        if fault is not None:
            server.stats.faults_injected[fault] += 1
        try:
            if plan.latency > 0:
                await asyncio.sleep(plan.latency)
            if fault == "drop":
                self.abort()
                return
            if fault == "goaway":
                self._goaway(refuse_from=stream_id)
                return
            if fault == "stall":
                await asyncio.sleep(plan.stall_seconds)
                response = self._fault_response(fault, 503, plan.retry_after)
            elif fault == "5xx":
                response = self._fault_response(fault, 503, plan.retry_after)
            elif fault == "429":
                response = self._fault_response(fault, 429, plan.retry_after)
            else:
                try:
                    response = await server.handler(request)
                except Exception:
                    log.exception("fake handler failed on %s %s", request.method, request.path)
                    response = FakeResponse(500)
            await self._respond(stream_id, response)
        finally:
            # Pop without cancelling: this task is the one finishing.
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                server._stream_closed()

    def _fault_response(self, fault: str, status: int, retry_after: int) -> FakeResponse:
        body = self._server.fault_body(fault, status)
        headers = {"retry-after": str(retry_after)}
        if body:
            headers["content-type"] = "application/json"
        return FakeResponse(status, headers, body)

    async def _respond(self, stream_id: int, response: FakeResponse) -> None:
        if self._closed or stream_id not in self._streams:
            return
        headers = [(":status", str(response.status))]
        headers += [(name.lower(), value) for name, value in response.headers.items()]
        body = response.body
        if body and "content-length" not in response.headers:
            headers.append(("content-length", str(len(body))))
        try:
            self._h2.send_headers(stream_id, headers)
            while True:
                window = min(
                    self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
                )
                if len(body) <= window:
                    self._h2.send_data(stream_id, body, end_stream=True)
                    break
                if window > 0:
                    self._h2.send_data(stream_id, body[:window])
                    body = body[window:]
                    continue
                self._flush()
                waiter = self._window_opened
                await waiter.wait()
                if self._closed or stream_id not in self._streams:
                    return
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client reset the stream or the connection is going away
        self._schedule_flush()

    def _goaway(self, *, refuse_from: int) -> None:
        """GOAWAY naming the stream before ``refuse_from`` as the last one processed, then close.

        The client learns that this stream and every later one were never processed, so it may
        send them again on a new connection.
        """
        if self._closed:
            return
        debug_data = self._server.fault_body("goaway", 0) or None
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(
                error_code=h2.errors.ErrorCodes.NO_ERROR,
                additional_data=debug_data,
                last_stream_id=max(0, refuse_from - 2),
            )
        self._server.stats.goaways_sent += 1
        self._flush()
        self._close()

    # Output

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()


def _request_from(stream: _Stream) -> FakeRequest:
    pseudo: dict[bytes, bytes] = {}
    headers: dict[str, str] = {}
    for raw_name, raw_value in stream.headers:
        if raw_name.startswith(b":"):
            pseudo[raw_name] = raw_value
            continue
        name = raw_name.decode("ascii", "replace").lower()
        value = raw_value.decode("utf-8", "replace")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    authority = pseudo.get(b":authority", b"").decode("ascii", "replace") or headers.get("host", "")
    return FakeRequest(
        method=pseudo.get(b":method", b"").decode("ascii", "replace"),
        path=pseudo.get(b":path", b"").decode("utf-8", "replace"),
        headers=headers,
        body=bytes(stream.body),
        authority=authority,
    )
