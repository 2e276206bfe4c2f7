"""An HTTP/2-over-TLS server for the fake providers, on the sans-IO ``h2`` library.

One asyncio protocol per connection; every request stream is answered by its own task, so
latency, stalls and slow handlers never hold up the other streams of a connection. Faults from a
``FaultPlan`` are applied before the handler sees a request. Responses go out as a HEADERS frame
followed by the whole body in one DATA frame carrying END_STREAM, as APNs answers (clients have
broken on exactly that shape before); only a body larger than the peer's frame size or flow-control
window is split, waiting for WINDOW_UPDATEs as needed. An answer without a body (APNs's 200) is
one HEADERS frame carrying END_STREAM, as Apple sends it (aioapns, which reads every DATA frame as
JSON, fails on an empty one).

Writes are coalesced: answers finished in the same loop iteration leave in one TLS record batch,
which is what lets one process answer thousands of requests a second. A request that needs no
delay or fault, to a handler that answers at once (a plain function), is answered in the same
step that read it, without a task.

Every request's header block is checked by ``malformed`` in one pass, to exactly the rules of h2's
own inbound validation (which the fake turns off: its chain of generators was a seventh of the
fake's CPU); a malformed block ends the connection with GOAWAY PROTOCOL_ERROR, as h2 does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import Encoder

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


# A handler answers at once (a plain function returning the response) or later (a coroutine).
Handler = Callable[[FakeRequest], Awaitable[FakeResponse] | FakeResponse]


async def answer_of(handler: Handler, request: FakeRequest) -> FakeResponse:
    """The handler's answer, whichever kind of handler it is (for code that wraps one)."""
    result = handler(request)
    return result if isinstance(result, FakeResponse) else await result


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
        self.encoder = _PlainLiteralEncoder()
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


class _PlainLiteralEncoder(Encoder):
    """Answers' literals (an apns-id, say) without Huffman coding: pure-Python work on both ends
    that saves a few bytes on a loopback connection."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        return super().encode(headers, huffman=False)


class _H2Connection(asyncio.Protocol):
    def __init__(self, server: H2FakeServer) -> None:
        self._server = server
        self._streams: dict[int, _Stream] = {}
        self._h2 = _LeanH2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                # Requests are checked by ``malformed`` instead, to the same rules, in one pass.
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
                # The answers' headers are the fakes' own, lower-case and valid.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            ),
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
            if self._closed:
                return
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
            problem = malformed(event.headers, trailers=False)
            if problem is not None:
                self._protocol_error(problem)
                return
            self._streams[event.stream_id] = _Stream(event.headers)
            self._server._stream_opened(len(self._streams))
        elif isinstance(event, h2.events.TrailersReceived):
            assert event.headers is not None
            problem = malformed(event.headers, trailers=True)
            if problem is not None:
                self._protocol_error(problem)
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
                self._start_answer(event.stream_id, stream)
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

    def _protocol_error(self, problem: str) -> None:
        """What h2 does with a malformed header block: GOAWAY PROTOCOL_ERROR, then close."""
        log.info("closing HTTP/2 connection after a protocol error: %s", problem)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
        self._flush()
        self._close()

    # Answering one stream

    def _start_answer(self, stream_id: int, stream: _Stream) -> None:
        server = self._server
        request = _request_from(stream)
        plan = server.faults
        fault = plan.pick()
        if fault is not None:
            server.stats.faults_injected[fault] += 1
        if fault is None and plan.latency <= 0:
            # The common case: nothing to wait for, so no task unless the handler needs one.
            try:
                result = server.handler(request)
            except Exception:
                log.exception("fake handler failed on %s %s", request.method, request.path)
                result = FakeResponse(500)
            if isinstance(result, FakeResponse) and self._respond_now(stream_id, result):
                self._finish(stream_id)
                return
            answer = self._answer_later(stream_id, request, result)
        else:
            answer = self._answer(stream_id, request, fault)
        stream.task = asyncio.get_running_loop().create_task(answer)
        server._track(stream.task)

    async def _answer_later(
        self, stream_id: int, request: FakeRequest, result: Awaitable[FakeResponse] | FakeResponse
    ) -> None:
        """The handler's answer, once it is ready and the window lets it out."""
        try:
            if not isinstance(result, FakeResponse):
                try:
                    result = await result
                except Exception:
                    log.exception("fake handler failed on %s %s", request.method, request.path)
                    result = FakeResponse(500)
            await self._respond(stream_id, result)
        finally:
            self._finish(stream_id)

    async def _answer(self, stream_id: int, request: FakeRequest, fault: str | None) -> None:
        server = self._server
        plan = server.faults
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
                    result = server.handler(request)
                    response = result if isinstance(result, FakeResponse) else await result
                except Exception:
                    log.exception("fake handler failed on %s %s", request.method, request.path)
                    response = FakeResponse(500)
            await self._respond(stream_id, response)
        finally:
            self._finish(stream_id)  # without cancelling: this task is the one finishing

    def _fault_response(self, fault: str, status: int, retry_after: int) -> FakeResponse:
        body = self._server.fault_body(fault, status)
        headers = {"retry-after": str(retry_after)}
        if body:
            headers["content-type"] = "application/json"
        return FakeResponse(status, headers, body)

    def _respond_now(self, stream_id: int, response: FakeResponse) -> bool:
        """Answer at once if the flow-control window takes the whole body (the usual case);
        False when it must wait for WINDOW_UPDATEs, and nothing was sent."""
        if self._closed or stream_id not in self._streams:
            return True
        window = min(
            self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
        )
        if len(response.body) > window:
            return False
        try:
            if not response.body:
                self._h2.send_headers(stream_id, _response_headers(response), end_stream=True)
            else:
                self._h2.send_headers(stream_id, _response_headers(response))
                self._h2.send_data(stream_id, response.body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return True  # the client reset the stream or the connection is going away
        self._schedule_flush()
        return True

    async def _respond(self, stream_id: int, response: FakeResponse) -> None:
        if self._closed or stream_id not in self._streams:
            return
        body = response.body
        try:
            if not body:
                self._h2.send_headers(stream_id, _response_headers(response), end_stream=True)
                self._schedule_flush()
                return
            self._h2.send_headers(stream_id, _response_headers(response))
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


def _response_headers(response: FakeResponse) -> list[tuple[bytes, bytes]]:
    headers = [(b":status", str(response.status).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in response.headers.items()]
    if response.body and "content-length" not in response.headers:
        headers.append((b"content-length", str(len(response.body)).encode()))
    return headers


def _request_from(stream: _Stream) -> FakeRequest:
    pseudo: dict[bytes, bytes] = {}
    headers: dict[str, str] = {}
    for raw_name, raw_value in stream.headers:
        if raw_name.startswith(b":"):
            pseudo[raw_name] = raw_value
            continue
        name = raw_name.decode("ascii", "replace")
        value = raw_value.decode("utf-8", "replace")
        if name in headers:
            # Split cookies are joined as RFC 9113 8.2.3 says (h2's normalization did this).
            value = f"{headers[name]}{'; ' if name == 'cookie' else ', '}{value}"
        headers[name] = value
    authority = pseudo.get(b":authority", b"").decode("ascii", "replace") or headers.get("host", "")
    return FakeRequest(
        method=pseudo.get(b":method", b"").decode("ascii", "replace"),
        path=pseudo.get(b":path", b"").decode("utf-8", "replace"),
        headers=headers,
        body=bytes(stream.body),
        authority=authority,
    )


# --- the header block checks ---------------------------------------------------------------
# The rules of h2's inbound validation (h2.utilities.validate_headers after
# normalize_inbound_headers), RFC 9113 8.2 and 8.3, as one loop. tests/fakes/test_h2server.py
# holds them to h2's own on a table of header blocks.

_PSEUDO_HEADERS = frozenset(
    {b":method", b":scheme", b":authority", b":path", b":status", b":protocol"}
)
_CONNECTION_HEADERS = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
# A field name: no control characters, space, upper case, colon (but a pseudo-header's first) or
# byte above 0x7e.
_FIELD_NAME = re.compile(rb"[^\x00-\x20A-Z:\x7f-\xff]+")
_WHITESPACE = frozenset(b" \t")


def _bad_value(value: bytes) -> bool:
    """A field value has no NUL, CR or LF, nor whitespace at either end (byte searches in C: a
    regular expression took longer over a JWT)."""
    return bool(value) and (
        value[0] in _WHITESPACE
        or value[-1] in _WHITESPACE
        or b"\n" in value
        or b"\r" in value
        or b"\x00" in value
    )


def malformed(headers: Sequence[tuple[bytes, bytes]], *, trailers: bool) -> str | None:
    """Why a received header block (a request's, or trailers) breaks HTTP/2's rules, else None."""
    pseudo: set[bytes] = set()
    regular_seen = False
    method: bytes | None = None
    authority: bytes | None = None
    cookies: list[bytes] = []
    hosts: list[bytes] = []
    for header in headers:
        name, value = header
        if name[:1] == b":":
            if name in pseudo:
                return f"duplicate pseudo-header field {name!r}"
            if regular_seen:
                return f"pseudo-header field out of sequence: {name!r}"
            if name not in _PSEUDO_HEADERS:
                return f"custom pseudo-header field {name!r}"
            pseudo.add(name)
            if name == b":method":
                method = value
            elif name == b":authority":
                authority = value
            elif name == b":path" and not value and not trailers:
                return "empty :path"
            if _bad_value(value):
                return f"bad value of {name!r}: {value!r}"
        elif name == b"cookie":
            cookies.append(value)  # joined first, as h2 does, and checked as one field below
        else:
            regular_seen = True
            if header in _GOOD_FIELDS:
                continue
            problem = _field_problem(name, value)
            if problem is not None:
                return problem
            if name == b"host":
                hosts.append(value)
            else:
                _remember_good(header)
    if cookies and _bad_value(b"; ".join(cookies)):
        return "bad cookie value"
    if trailers:
        return f"pseudo-header fields in trailers: {sorted(pseudo)}" if pseudo else None
    return _request_problem(pseudo, method, authority, hosts)


# Fields (name and value) that passed ``_field_problem``: most of a request's headers repeat
# those of the one before (authorization, topic, priority, …), and a set lookup is cheaper
# than checking them again.
_GOOD_FIELDS: set[tuple[bytes, bytes]] = set()


def _remember_good(field: tuple[bytes, bytes]) -> None:
    if len(_GOOD_FIELDS) >= 4096:
        _GOOD_FIELDS.clear()  # unique values (ids) would otherwise pile up
    _GOOD_FIELDS.add(field)


def _field_problem(name: bytes, value: bytes) -> str | None:
    """What is wrong with one regular (not pseudo-header, not cookie) field, else None."""
    if _FIELD_NAME.fullmatch(name) is None:
        return f"bad header name {name!r}"
    if name in _CONNECTION_HEADERS:
        return f"connection-specific header field {name!r}"
    if name == b"te" and value.lower() != b"trailers":
        return f"te: {value!r}"
    if _bad_value(value):
        return f"bad value of {name!r}: {value!r}"
    return None


def _request_problem(
    pseudo: set[bytes], method: bytes | None, authority: bytes | None, hosts: list[bytes]
) -> str | None:
    if b":method" not in pseudo:
        return "no :method"
    if b":status" in pseudo:
        return ":status in a request"
    connect = method == b"CONNECT"
    if connect and b":protocol" not in pseudo:
        if pseudo & {b":scheme", b":path"}:
            return "CONNECT with :scheme or :path"
    elif not {b":scheme", b":path"} <= pseudo:
        return "no :scheme or no :path"
    if not connect and b":protocol" in pseudo:
        return ":protocol without CONNECT"
    if len(hosts) > 1:
        return "several host headers"
    if authority is None and not hosts:
        return "neither :authority nor host"
    if authority is not None and hosts and hosts[0] != authority:
        return ":authority and host differ"
    return None
