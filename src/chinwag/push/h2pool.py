"""A small HTTP/2 client: a few long-lived TLS connections, many streams on each.

Why not httpx: measured against the APNs fake in one process, httpx's HTTP/2 path managed a few
hundred requests a second, an order of magnitude below what one worker must send. This client
drives the sans-IO ``h2`` state machine from an ``asyncio.Protocol`` directly: a request is one
future, answers are matched to it by stream id, and every frame written in the same loop iteration
leaves in a single write.

Failures that are the connection's (refused by GOAWAY, reset, dropped, timed out, cannot connect,
no HTTP/2 offered) raise one of the typed ``chinwag.push.errors.TransportError`` subclasses, never
a library's exception; ``chinwag.push.outcome.classify_transport`` turns them into outcomes.
Whatever the server answered, even an error status, is an ``H2Response``.

Each request's time limit is kept by its connection, not by a timer of its own: one timer per
connection, at the earliest deadline of its streams, fails what is overdue with
``TransportTimeout`` and resets those streams (a timer and a cancel scope per request were a few
per cent of the sender's CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import Encoder, NeverIndexedHeaderTuple

from chinwag.push.errors import (
    ConnectFailed,
    ConnectionDropped,
    Goaway,
    NoHttp2,
    NoStream,
    TransportError,
    TransportTimeout,
    transport_error,
)

log = logging.getLogger(__name__)

# Our receive windows: large, so a burst of answers never waits for our WINDOW_UPDATEs.
_RECEIVE_WINDOW = 2**24
_FIRST_CONNECT_BACKOFF = 0.5
_MAX_CONNECT_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class H2Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class PreparedHeaders:
    """The headers every request of one kind repeats (method, authority, credentials, …),
    encoded to bytes once (``H2Pool.prepare``) instead of once per request."""

    pseudo: tuple[tuple[bytes, bytes], ...]  # :method, :scheme, :authority
    regular: tuple[tuple[bytes, bytes], ...]


class H2Pool:
    """Connections to one origin (``https://host[:port]``), opened lazily, reused forever.

    A new connection is opened only when every open one is at the server's
    SETTINGS_MAX_CONCURRENT_STREAMS, up to ``max_connections``; beyond that requests wait for a
    free stream. A failed connect is not retried for a growing moment (Apple treats rapid
    reconnects as abuse); requests in that moment fail fast with the connect error.
    """

    def __init__(
        self,
        origin: str,
        ssl_context: ssl.SSLContext,
        *,
        max_connections: int = 2,
        connect_timeout: float = 10.0,
        connect_address: str | None = None,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"an HTTP/2 origin must be https://host[:port], got {origin!r}")
        self.host = parts.hostname
        # Where to connect when the caller resolved (and checked) the name itself; TLS SNI, the
        # certificate check and :authority still use the name.
        self.connect_address = connect_address or self.host
        self.port = parts.port or 443
        self.authority = parts.netloc.rsplit("@", 1)[-1]
        self._authority = self.authority.encode()
        self.base_path = parts.path.rstrip("/")
        self.connections_opened = 0
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._connections: list[_ClientConnection] = []
        self._connecting: asyncio.Task[_ClientConnection] | None = None
        self._stream_freed = asyncio.Event()
        self._backoff = 0.0
        self._retry_connect_at = 0.0
        self._connect_error: TransportError = ConnectFailed("connect failed")
        self._closed = False

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        time_limit: float,
        unindexed: Sequence[tuple[str, str]] = (),
    ) -> H2Response:
        """Send one request and wait for the whole answer, at most ``time_limit`` seconds.

        ``unindexed`` headers are unique to this request (an id, say): they are kept out of the
        HPACK table, as the path is, so that the repeated ones (the bearer token) stay indexed
        and cost one byte per request instead of being evicted and re-sent in full.
        """
        return await self.send(
            self.prepare(method, headers), path, body, time_limit=time_limit, unindexed=unindexed
        )

    def prepare(self, method: str, headers: Sequence[tuple[str, str]]) -> PreparedHeaders:
        pseudo = (
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self._authority),
        )
        return PreparedHeaders(
            pseudo, tuple((name.encode(), value.encode()) for name, value in headers)
        )

    async def send(
        self,
        prepared: PreparedHeaders,
        path: str,
        body: bytes,
        *,
        time_limit: float,
        headers: Sequence[tuple[str, str]] = (),
        unindexed: Sequence[tuple[str, str]] = (),
    ) -> H2Response:
        """``request`` with the repeated headers prepared; ``headers`` are this request's own
        (sent after the prepared ones), ``unindexed`` as for ``request``."""
        deadline = time.monotonic() + time_limit
        # Most requests find a connection with a free stream at once: no timer for them.
        connection = self._free_connection()
        if connection is None:
            try:
                async with asyncio.timeout(time_limit):
                    connection = await self._connection()
            except TimeoutError:
                raise TransportTimeout("timeout waiting for a connection") from None
        if deadline <= time.monotonic():
            raise TransportTimeout("timeout")
        block: list[tuple[bytes, bytes]] = [
            *prepared.pseudo,
            NeverIndexedHeaderTuple(b":path", (self.base_path + path).encode()),
            *prepared.regular,
        ]
        block += [(name.encode(), value.encode()) for name, value in headers]
        block += [
            NeverIndexedHeaderTuple(name.encode(), value.encode()) for name, value in unindexed
        ]
        try:
            exchange = connection.start(block, body, deadline)
        except (OSError, h2.exceptions.ProtocolError) as exc:
            raise transport_error(exc) from None
        try:
            # Past the deadline, the connection fails the future with TransportTimeout.
            return await exchange.future
        except asyncio.CancelledError:
            connection.cancel(exchange.stream_id)  # the caller gave up: free the stream
            raise

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        for connection in self._connections:
            connection.close()
        self._connections.clear()

    @property
    def open_connections(self) -> int:
        return sum(1 for connection in self._connections if connection.usable)

    def _free_connection(self) -> _ClientConnection | None:
        if self._closed:
            return None
        for connection in self._connections:
            if connection.usable and connection.has_capacity():
                return connection
        return None

    async def _connection(self) -> _ClientConnection:
        while True:
            if self._closed:
                raise ConnectionDropped("closed")
            self._connections = [c for c in self._connections if c.usable]
            connection = self._free_connection()
            if connection is not None:
                return connection
            if len(self._connections) < self._max_connections:
                # Loop again rather than take the new connection: every waiter of a shared
                # attempt gets it, and together they may be more than it has streams for.
                await self._connect_once()
                continue
            self._stream_freed.clear()
            await self._stream_freed.wait()

    def _freed(self) -> None:
        self._stream_freed.set()

    async def _connect_once(self) -> _ClientConnection:
        """Open one connection; concurrent callers share the attempt."""
        if self._connecting is None:
            if time.monotonic() < self._retry_connect_at:
                error = self._connect_error
                raise type(error)(error.reason)
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _connect(self) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        connection = _ClientConnection(self._freed, ping_timeout=self._connect_timeout)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(
                    lambda: connection,
                    self.connect_address,
                    self.port,
                    ssl=self._ssl_context,
                    server_hostname=self.host,
                )
                await connection.ready
        except (OSError, TransportError) as exc:
            connection.close()
            error = transport_error(exc)
            self._backoff = min(_MAX_CONNECT_BACKOFF, self._backoff * 2 or _FIRST_CONNECT_BACKOFF)
            self._retry_connect_at = time.monotonic() + self._backoff
            # Whatever went wrong, it is a failed connect; NoHttp2 and TLS failures keep their type.
            kind = type(error) if isinstance(error, ConnectFailed) else ConnectFailed
            self._connect_error = kind(f"connect failed: {error.reason}")
            log.warning(
                "cannot connect to %s:%s (%s); next try in %.1f s",
                self.host,
                self.port,
                error.reason,
                self._backoff,
            )
            raise kind(self._connect_error.reason) from None
        self._backoff = 0.0
        self.connections_opened += 1
        self._connections.append(connection)
        return connection


class _LeanH2Connection(h2.connection.H2Connection):
    """h2 counts open streams by walking all of them for every new stream: O(n) per request,
    a fifth of the sender's CPU at 500 in flight. We count our own streams; h2's walk, which
    also forgets closed streams, runs every 128th time only.

    ``_open_streams`` is private to h2: pyproject.toml pins h2 to the tested range and
    tests/push/test_h2_private.py fails if its name, signature or meaning changes.
    """

    def __init__(self, config: h2.config.H2Configuration, open_streams: Callable[[], int]) -> None:
        super().__init__(config)
        self.encoder = _PlainLiteralEncoder()
        self._count_open = open_streams
        self._counts_since_walk = 0

    def _open_streams(self, remainder: int) -> int:
        if remainder != 1:  # not our (odd, client-initiated) streams: h2's own count
            return super()._open_streams(remainder)
        self._counts_since_walk += 1
        if self._counts_since_walk >= 128:
            self._counts_since_walk = 0
            return super()._open_streams(remainder)
        return self._count_open()


class _PlainLiteralEncoder(Encoder):
    """HPACK without Huffman coding of literals. The literals left are the per-request ones
    (path, id); Huffman would save ~20 bytes of each, at a pure-Python cost on both ends that
    capped the fake's throughput below the sender's.

    It also remembers how each field that was sent as a table index was encoded: the constant
    APNs headers (authorization, topic, push type, priority, …) are such indexes in every request
    after the first, and hpack searches its tables for each of them, every time. An index is
    valid until the dynamic table changes (an insertion shifts every dynamic index; a resize may
    evict), so any change forgets them all. ``add`` is hpack's public per-field step of
    ``encode``; tests/push/test_h2_private.py holds the output to a plain encoder's, byte for byte.
    """

    def __init__(self) -> None:
        super().__init__()
        self._indexed: dict[tuple[bytes, bytes], bytes] = {}

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if self.header_table.resized:
            self._indexed.clear()
        return super().encode(headers, huffman=False)

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        encoded = self._indexed.get(to_add)
        if encoded is not None:
            return encoded
        encoded = super().add(to_add, sensitive, huffman)
        if encoded[0] & 0x80:  # the indexed representation: the table did not change
            self._indexed[to_add] = encoded
        elif not sensitive:  # a literal added to the table: every dynamic index moved
            self._indexed.clear()
        return encoded


class _Exchange:
    __slots__ = ("body", "deadline", "future", "headers", "status", "stream_id")

    def __init__(self, stream_id: int, future: asyncio.Future[H2Response], deadline: float) -> None:
        self.stream_id = stream_id
        self.future = future
        self.deadline = deadline  # time.monotonic()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()


class _ClientConnection(asyncio.Protocol):
    def __init__(self, on_stream_freed: Callable[[], None], *, ping_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._ping_timeout = ping_timeout
        # The one timer for every stream's deadline, and when it fires (time.monotonic()).
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._exchanges: dict[int, _Exchange] = {}
        self._h2 = _LeanH2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                # We build the headers ourselves, lower-case and valid; checking them again per
                # request costs more than the rest of the send.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                # Nor are the answers' headers checked against every rule of RFC 9113 (13% of
                # the worker's event-loop samples at 0 ms provider latency, bench.stages): the
                # senders read the status and a few headers by name, and h2 still rejects a
                # malformed frame or header block.
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
            ),
            open_streams=self._exchanges.__len__,
        )
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _RECEIVE_WINDOW,
            },
        )
        self._on_stream_freed = on_stream_freed
        self._transport: asyncio.Transport | None = None
        self._unsent: dict[int, memoryview] = {}  # request bodies waiting for flow-control window
        self._flush_scheduled = False
        self._ping_deadline: asyncio.TimerHandle | None = None
        self.usable = False
        self.ready: asyncio.Future[None] = self._loop.create_future()

    def has_capacity(self) -> bool:
        return len(self._exchanges) < self._h2.remote_settings.max_concurrent_streams

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            self._fail_ready(NoHttp2("server did not agree to HTTP/2 (ALPN h2)"))
            transport.close()
            return
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_RECEIVE_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._terminate(ConnectionDropped(f"protocol error: {exc}"))
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self._ping_deadline is not None:
            self._ping_deadline.cancel()
            self._ping_deadline = None
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._fail_ready(ConnectionDropped("connection closed during setup"))
        self._fail_all(ConnectionDropped("connection_lost"))
        self._on_stream_freed()  # requests waiting for a stream may now open a new connection

    # Requests

    def start(self, headers: list[tuple[bytes, bytes]], body: bytes, deadline: float) -> _Exchange:
        try:
            stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream_id, headers, end_stream=not body)
        except h2.exceptions.TooManyStreamsError:
            raise NoStream("no free stream") from None  # the connection itself is fine
        except h2.exceptions.NoAvailableStreamIDError:
            self.usable = False  # a billion streams: time for a fresh connection
            raise NoStream("stream ids exhausted") from None
        except h2.exceptions.ProtocolError as exc:
            self.usable = False
            raise ConnectionDropped(f"cannot open stream: {exc}") from None
        exchange = _Exchange(stream_id, self._loop.create_future(), deadline)
        self._exchanges[stream_id] = exchange
        if self._deadline_timer is None or deadline < self._timer_at:
            self._arm_deadline_timer(deadline)
        if body:
            self._unsent[stream_id] = memoryview(body)
            self._send_bodies()
        self._schedule_flush()
        return exchange

    def cancel(self, stream_id: int) -> None:
        """The caller gave up (timeout, cancellation): free the stream on both sides."""
        if self._exchanges.pop(stream_id, None) is None:
            return
        self._unsent.pop(stream_id, None)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._schedule_flush()
        self._on_stream_freed()
        self._close_if_drained()

    def _arm_deadline_timer(self, at: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._timer_at = at
        self._deadline_timer = self._loop.call_later(
            max(0.0, at - time.monotonic()), self._deadlines_passed
        )

    def _deadlines_passed(self) -> None:
        """Fail the requests whose time is up, then wait for the next deadline. Most deadlines
        pass long after their answer: the timer fires about once per time limit, not per request."""
        self._deadline_timer = None
        now = time.monotonic()
        overdue = [e.stream_id for e in self._exchanges.values() if e.deadline <= now]
        if overdue:
            self.check_alive()
            for stream_id in overdue:
                exchange = self._exchanges[stream_id]
                if not exchange.future.done():
                    exchange.future.set_exception(TransportTimeout("timeout"))
                self.cancel(stream_id)
        if self._exchanges:
            self._arm_deadline_timer(min(e.deadline for e in self._exchanges.values()))

    def check_alive(self) -> None:
        """A request timed out: one slow answer, or a dead peer (a NAT forgot us, say)? A PING
        tells; without its ACK in the connect timeout the connection is abandoned, so later
        requests do not all wait out their timeouts on it."""
        if self._ping_deadline is not None or not self.usable:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.ping(b"chinwag!")
            self._schedule_flush()
        self._ping_deadline = self._loop.call_later(self._ping_timeout, self._ping_unanswered)

    def _ping_unanswered(self) -> None:
        self._ping_deadline = None
        self.usable = False
        log.warning("HTTP/2 connection does not answer PING; abandoning it")
        if self._transport is not None:
            self._transport.abort()
        self._fail_all(ConnectionDropped("connection_lost"))

    def close(self) -> None:
        self.usable = False
        if self._transport is not None and not self._transport.is_closing():
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.close_connection()
            self._flush()
            self._transport.close()
        self._fail_all(ConnectionDropped("closed"))

    # Events

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None and event.data is not None
            exchange = self._exchanges.get(event.stream_id)
            if exchange is not None:
                exchange.body += event.data
            self._h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
        elif isinstance(event, h2.events.ResponseReceived):
            assert event.stream_id is not None and event.headers is not None
            exchange = self._exchanges.get(event.stream_id)
            if exchange is not None:
                _read_headers(exchange, event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            exchange = self._exchanges.pop(event.stream_id, None)
            if exchange is not None:
                if not exchange.future.done():
                    exchange.future.set_result(
                        H2Response(exchange.status, exchange.headers, bytes(exchange.body))
                    )
                self._on_stream_freed()
                self._close_if_drained()
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            reset = ConnectionDropped(f"stream reset ({_error_name(event.error_code)})")
            self._fail(event.stream_id, reset)
        elif isinstance(event, h2.events.WindowUpdated):
            if self._unsent:
                self._send_bodies()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.ready.done():
                self.usable = True
                self.ready.set_result(None)
            if self._unsent:
                self._send_bodies()
            self._on_stream_freed()  # the stream limit may have grown
        elif isinstance(event, h2.events.PingAckReceived):
            if self._ping_deadline is not None:
                self._ping_deadline.cancel()
                self._ping_deadline = None
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event)

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """Streams above last_stream_id were never processed: fail them now, let the rest finish."""
        self.usable = False
        last = event.last_stream_id if event.last_stream_id is not None else 0
        for stream_id in [sid for sid in self._exchanges if sid > last]:
            self._fail(stream_id, Goaway("goaway"))
        self._fail_ready(Goaway("goaway during setup"))
        self._close_if_drained()

    def _send_bodies(self) -> None:
        for stream_id, body in list(self._unsent.items()):
            try:
                window = min(
                    self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
                )
                while window > 0 and body:
                    chunk, body = body[:window], body[window:]
                    self._h2.send_data(stream_id, chunk.tobytes(), end_stream=not body)
                    window = min(
                        self._h2.local_flow_control_window(stream_id),
                        self._h2.max_outbound_frame_size,
                    )
            except h2.exceptions.ProtocolError:
                self._unsent.pop(stream_id, None)
                self._fail(stream_id, ConnectionDropped("stream closed while sending"))
                continue
            if body:
                self._unsent[stream_id] = body
            else:
                del self._unsent[stream_id]

    def _fail(self, stream_id: int, error: TransportError) -> None:
        self._unsent.pop(stream_id, None)
        exchange = self._exchanges.pop(stream_id, None)
        if exchange is None:
            return
        if not exchange.future.done():
            # One instance per stream: a raised exception carries its own traceback.
            exchange.future.set_exception(type(error)(error.reason))
        self._on_stream_freed()
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        """After GOAWAY, the connection lives only as long as its last processed streams."""
        if not self.usable and not self._exchanges and self._transport is not None:
            self._transport.close()

    def _fail_all(self, error: TransportError) -> None:
        for stream_id in list(self._exchanges):
            self._fail(stream_id, error)

    def _fail_ready(self, exc: TransportError) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()  # retrieved here: nobody may be waiting any more

    def _terminate(self, error: TransportError) -> None:
        self.usable = False
        log.warning("HTTP/2 connection abandoned: %s", error.reason)
        self._flush()
        if self._transport is not None:
            self._transport.close()
        self._fail_all(error)

    # Output

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


def _read_headers(exchange: _Exchange, headers: list[tuple[bytes, bytes]]) -> None:
    for name, value in headers:
        if name == b":status":
            exchange.status = int(value)
        else:
            exchange.headers[name.decode("ascii", "replace")] = value.decode("utf-8", "replace")


def _error_name(code: int | None) -> str:
    if code is None:
        return "unknown"
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)
