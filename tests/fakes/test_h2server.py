"""The shared HTTP/2 fake server: framing, flow control, concurrency, faults, and its PKI."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.utilities
import httpx
import pytest

from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.h2server import FakeRequest, FakeResponse, H2FakeServer, malformed
from chinwag.fakes.tls import TestPKI, client_ssl_context, make_pki, server_ssl_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def _echo(request: FakeRequest) -> FakeResponse:
    return FakeResponse(
        200,
        {"x-method": request.method, "x-path": request.path, "x-authority": request.authority},
        request.body,
    )


def _run(
    pki: TestPKI,
    scenario: Callable[[H2FakeServer, httpx.AsyncClient], Awaitable[None]],
    *,
    handler: Callable[[FakeRequest], Awaitable[FakeResponse] | FakeResponse] = _echo,
    faults: FaultPlan | None = None,
    max_concurrent_streams: int = 1000,
    fault_body: Callable[[str, int], bytes] | None = None,
) -> H2FakeServer:
    async def main() -> H2FakeServer:
        server = H2FakeServer(
            handler,
            server_ssl_context(pki),
            faults=faults,
            max_concurrent_streams=max_concurrent_streams,
            fault_body=fault_body,
        )
        async with server:
            verify = client_ssl_context(pki, alpn=())
            async with httpx.AsyncClient(http2=True, verify=verify, timeout=10) as client:
                await scenario(server, client)
        return server

    return asyncio.run(main())


async def _raw_exchange(server: H2FakeServer, pki: TestPKI, body: bytes) -> list[h2.events.Event]:
    """One POST over a hand-driven h2 connection, returning every event the server caused."""
    reader, writer = await asyncio.open_connection(
        server.host, server.port, ssl=client_ssl_context(pki), server_hostname="localhost"
    )
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    stream_id = connection.get_next_available_stream_id()
    connection.send_headers(
        stream_id,
        [(":method", "POST"), (":path", "/raw"), (":scheme", "https"), (":authority", "x")],
    )
    connection.send_data(stream_id, body, end_stream=True)
    writer.write(connection.data_to_send())
    events: list[h2.events.Event] = []
    while not any(isinstance(event, h2.events.StreamEnded) for event in events):
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, "server closed the connection early"
        events += connection.receive_data(data)
    writer.close()
    return [event for event in events if getattr(event, "stream_id", None) == stream_id]


def test_request_reaches_handler_and_answer_comes_back_over_h2(pki: TestPKI) -> None:
    """Method, path, authority, lower-cased headers and body reach the handler over TLS+ALPN h2."""
    seen: list[FakeRequest] = []

    async def handler(request: FakeRequest) -> FakeResponse:
        seen.append(request)
        return await _echo(request)

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        response = await client.post(
            f"{server.url}/3/device/abc", content=b"hello", headers={"X-Custom": "Yes"}
        )
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200
        assert response.content == b"hello"
        assert response.headers["x-path"] == "/3/device/abc"
        assert response.headers["x-authority"] == f"127.0.0.1:{server.port}"

    server = _run(pki, scenario, handler=handler)
    assert seen[0].method == "POST"
    assert seen[0].headers["x-custom"] == "Yes"
    assert seen[0].body == b"hello"
    assert server.stats.requests == 1
    assert server.stats.connections_opened == 1


def test_answer_is_headers_then_one_data_frame_with_end_stream(pki: TestPKI) -> None:
    """Like APNs, the body arrives as exactly one DATA frame that ends the stream."""

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        events = await _raw_exchange(server, pki, b'{"ok": true}')
        kinds = [type(event).__name__ for event in events]
        assert kinds[0] == "ResponseReceived"
        data = [event for event in events if isinstance(event, h2.events.DataReceived)]
        assert len(data) == 1
        assert data[0].data == b'{"ok": true}'
        assert data[0].stream_ended is not None

    _run(pki, scenario)


@pytest.mark.parametrize("latency", [0.0, 0.01])
def test_an_answer_without_body_is_one_headers_frame_with_end_stream(
    pki: TestPKI, latency: float
) -> None:
    """Like APNs's 200: HEADERS carrying END_STREAM, no DATA frame (not even an empty one)."""

    def handler(request: FakeRequest) -> FakeResponse:
        return FakeResponse(200, {"apns-id": "x"})

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        events = await _raw_exchange(server, pki, b"{}")
        assert [type(event).__name__ for event in events] == ["ResponseReceived", "StreamEnded"]
        response = events[0]
        assert isinstance(response, h2.events.ResponseReceived)
        assert response.stream_ended is not None

    _run(pki, scenario, handler=handler, faults=FaultPlan(latency=latency))


def test_large_body_respects_flow_control(pki: TestPKI) -> None:
    """A body far above the initial 64 KiB window arrives whole, in both directions."""
    payload = bytes(range(256)) * 2000  # 512 KB

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        response = await client.post(f"{server.url}/big", content=payload)
        assert response.content == payload

    _run(pki, scenario)


def test_latency_is_per_stream_and_streams_share_one_connection(pki: TestPKI) -> None:
    """100 requests with 200 ms latency finish together on one connection, not one by one."""
    faults = FaultPlan(latency=0.2)

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(client.post(f"{server.url}/n/{i}", content=b"x") for i in range(100))
        )
        elapsed = time.perf_counter() - started
        assert all(response.status_code == 200 for response in responses)
        assert 0.2 <= elapsed < 5  # one after the other would take 20 s

    server = _run(pki, scenario, faults=faults)
    assert server.stats.connections_opened == 1
    assert server.stats.max_streams_per_connection > 50
    assert server.stats.streams_in_flight == 0


def test_max_concurrent_streams_is_advertised_and_obeyed(pki: TestPKI) -> None:
    """A client honouring SETTINGS never has more streams open than the server allows."""
    faults = FaultPlan(latency=0.05)

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        # Let SETTINGS arrive before the burst, as a long-lived client connection would.
        await client.post(f"{server.url}/warm", content=b"x")
        responses = await asyncio.gather(
            *(client.post(f"{server.url}/n/{i}", content=b"x") for i in range(40))
        )
        assert all(response.status_code == 200 for response in responses)

    server = _run(pki, scenario, faults=faults, max_concurrent_streams=5)
    assert server.stats.max_streams_per_connection <= 5


def test_5xx_and_429_faults_carry_retry_after_and_provider_body(pki: TestPKI) -> None:
    """Injected 503/429 answers carry Retry-After and the body the fault_body hook supplies."""

    def fault_body(fault: str, status: int) -> bytes:
        return f'{{"fault": "{fault}", "status": {status}}}'.encode()

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        server.faults = FaultPlan(error_rate=1.0, faults=("5xx",), retry_after=7)
        response = await client.post(f"{server.url}/x", content=b"x")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert response.json() == {"fault": "5xx", "status": 503}
        server.faults = FaultPlan(error_rate=1.0, faults=("429",), retry_after=3)
        response = await client.post(f"{server.url}/x", content=b"x")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        server.faults = FaultPlan()
        response = await client.post(f"{server.url}/x", content=b"ok")
        assert response.status_code == 200

    server = _run(pki, scenario, fault_body=fault_body)
    assert server.stats.faults_injected == {"5xx": 1, "429": 1}


def test_drop_cuts_the_connection_and_the_next_request_reconnects(pki: TestPKI) -> None:
    """A "drop" fault fails the request at the transport level; a new connection then works."""

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        await client.post(f"{server.url}/warm", content=b"x")
        server.faults = FaultPlan(error_rate=1.0, faults=("drop",))
        with pytest.raises(httpx.TransportError):
            await client.post(f"{server.url}/x", content=b"x")
        server.faults = FaultPlan()
        response = await client.post(f"{server.url}/x", content=b"x")
        assert response.status_code == 200

    server = _run(pki, scenario)
    assert server.stats.connections_opened == 2
    assert server.stats.faults_injected == {"drop": 1}


def test_goaway_refuses_the_stream_then_closes(pki: TestPKI) -> None:
    """A "goaway" fault sends GOAWAY whose last stream id excludes the faulted stream."""

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        server.faults = FaultPlan(error_rate=1.0, faults=("goaway",))
        reader, writer = await asyncio.open_connection(
            server.host, server.port, ssl=client_ssl_context(pki), server_hostname="localhost"
        )
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        headers = [(":method", "POST"), (":path", "/g"), (":scheme", "https"), (":authority", "x")]
        connection.send_headers(1, headers, end_stream=True)
        connection.send_headers(3, headers, end_stream=True)
        writer.write(connection.data_to_send())
        terminated: list[h2.events.ConnectionTerminated] = []
        while True:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                break
            events = connection.receive_data(data)
            terminated += [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        writer.close()
        assert terminated
        # Whichever stream drew the fault first, it and later ones are refused.
        assert terminated[0].last_stream_id in (0, 1)

    server = _run(pki, scenario)
    assert server.stats.goaways_sent == 1


def test_stall_holds_the_stream_then_answers_503(pki: TestPKI) -> None:
    """A "stall" answers 503 only after stall_seconds, while other streams are served meanwhile."""

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        server.faults = FaultPlan(error_rate=1.0, faults=("stall",), stall_seconds=1.0)
        started = time.perf_counter()
        stalled = asyncio.create_task(client.post(f"{server.url}/stall", content=b"x"))
        while not server.stats.faults_injected["stall"]:  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(0.01)
        server.faults = FaultPlan()
        quick = await client.post(f"{server.url}/quick", content=b"x")
        assert quick.status_code == 200
        assert not stalled.done()
        response = await stalled
        assert response.status_code == 503
        assert time.perf_counter() - started >= 1.0

    _run(pki, scenario)


def test_handler_error_becomes_500_not_a_dead_server(pki: TestPKI) -> None:
    """A bug in a fake's handler answers 500 on that stream and the server keeps serving."""

    async def handler(request: FakeRequest) -> FakeResponse:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return FakeResponse(204)

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        assert (await client.post(f"{server.url}/boom")).status_code == 500
        assert (await client.post(f"{server.url}/fine")).status_code == 204

    _run(pki, scenario, handler=handler)


def test_fault_plan_is_reproducible_with_a_seed() -> None:
    """The same seed gives the same fault sequence; rates 0 and 1 are exact."""
    first = FaultPlan(error_rate=0.3, seed=42)
    second = FaultPlan(error_rate=0.3, seed=42)
    picks = [first.pick() for _ in range(200)]
    assert picks == [second.pick() for _ in range(200)]
    assert 30 < sum(pick is not None for pick in picks) < 90
    assert all(FaultPlan().pick() is None for _ in range(50))
    assert all(FaultPlan(error_rate=1.0, faults=("429",)).pick() == "429" for _ in range(50))
    with pytest.raises(ValueError, match="unknown faults"):
        FaultPlan(faults=("teapot",))


def test_make_pki_reuses_valid_files_and_replaces_broken_ones(tmp_path: Path) -> None:
    """A second call keeps the same CA; a damaged key file makes it issue a fresh chain."""
    first = make_pki(tmp_path)
    ca_pem = first.ca_file.read_bytes()
    assert make_pki(tmp_path).ca_file.read_bytes() == ca_pem
    first.key_file.write_bytes(b"not a key")
    again = make_pki(tmp_path)
    assert again.ca_file.read_bytes() != ca_pem
    context = ssl.create_default_context(cafile=str(again.ca_file))
    assert context.cert_store_stats()["x509_ca"] == 1
    server_ssl_context(again)  # the new key and certificate pair up


# --- the header block checks (h2's own validation is off in the fake; malformed holds the rules)

_REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"api.push.apple.com"),
    (b":path", b"/3/device/abc"),
]
_HEADER_BLOCKS: list[tuple[str, list[tuple[bytes, bytes]], bool]] = [
    ("a plain request", [*_REQUEST, (b"apns-topic", b"com.example")], False),
    ("an empty value", [*_REQUEST, (b"x-empty", b"")], False),
    ("upper-case name", [*_REQUEST, (b"Apns-Topic", b"x")], False),
    ("space in name", [*_REQUEST, (b"apns topic", b"x")], False),
    ("colon in name", [*_REQUEST, (b"apns:topic", b"x")], False),
    ("byte above 0x7e in name", [*_REQUEST, (b"caf\xe9", b"x")], False),
    ("empty name", [*_REQUEST, (b"", b"x")], False),
    ("NUL in value", [*_REQUEST, (b"x-a", b"a\x00b")], False),
    ("LF in value", [*_REQUEST, (b"x-a", b"a\nb")], False),
    ("CR in value", [*_REQUEST, (b"x-a", b"a\rb")], False),
    ("leading space", [*_REQUEST, (b"x-a", b" a")], False),
    ("trailing tab", [*_REQUEST, (b"x-a", b"a\t")], False),
    ("inner space is fine", [*_REQUEST, (b"x-a", b"a b")], False),
    ("te: trailers", [*_REQUEST, (b"te", b"Trailers")], False),
    ("te: gzip", [*_REQUEST, (b"te", b"gzip")], False),
    ("connection header", [*_REQUEST, (b"connection", b"keep-alive")], False),
    ("transfer-encoding", [*_REQUEST, (b"transfer-encoding", b"chunked")], False),
    ("upgrade", [*_REQUEST, (b"upgrade", b"h2c")], False),
    ("duplicate :path", [*_REQUEST, (b":path", b"/x")], False),
    ("pseudo after regular", [_REQUEST[0], (b"x-a", b"1"), *_REQUEST[1:]], False),
    ("custom pseudo", [*_REQUEST, (b":custom", b"1")], False),
    ("bare colon", [*_REQUEST, (b":", b"1")], False),
    (":status in a request", [(b":status", b"200"), *_REQUEST], False),
    ("no :method", _REQUEST[1:], False),
    ("no :scheme", [_REQUEST[0], *_REQUEST[2:]], False),
    ("no :path", _REQUEST[:3], False),
    ("empty :path", [*_REQUEST[:3], (b":path", b"")], False),
    ("no :authority, host", [*_REQUEST[:2], _REQUEST[3], (b"host", b"h")], False),
    ("neither :authority nor host", [*_REQUEST[:2], _REQUEST[3]], False),
    ("host equal to :authority", [*_REQUEST, (b"host", b"api.push.apple.com")], False),
    ("host not :authority", [*_REQUEST, (b"host", b"elsewhere")], False),
    ("two hosts", [*_REQUEST[:2], _REQUEST[3], (b"host", b"h"), (b"host", b"h")], False),
    ("CONNECT", [(b":method", b"CONNECT"), (b":authority", b"h:443")], False),
    (
        "CONNECT with :path",
        [(b":method", b"CONNECT"), (b":authority", b"h"), (b":path", b"/")],
        False,
    ),
    (":protocol without CONNECT", [*_REQUEST, (b":protocol", b"websocket")], False),
    (
        "extended CONNECT",
        [(b":method", b"CONNECT"), (b":protocol", b"ws"), *_REQUEST[1:]],
        False,
    ),
    ("cookie before pseudo (moved last)", [(b"cookie", b"a=1"), *_REQUEST], False),
    ("split cookies", [*_REQUEST, (b"cookie", b"a=1"), (b"cookie", b"b=2")], False),
    ("an empty split cookie", [*_REQUEST, (b"cookie", b"a=1"), (b"cookie", b"")], False),
    ("trailers", [(b"x-checksum", b"1")], True),
    ("pseudo in trailers", [(b":path", b"/")], True),
    ("upper case in trailers", [(b"X-Checksum", b"1")], True),
]


@pytest.mark.parametrize(
    ("headers", "trailers"),
    [(headers, trailers) for _, headers, trailers in _HEADER_BLOCKS],
    ids=[name for name, _, _ in _HEADER_BLOCKS],
)
def test_malformed_refuses_exactly_what_h2s_validation_refuses(
    headers: list[tuple[bytes, bytes]], trailers: bool
) -> None:
    """The fake's one-pass check agrees with h2's inbound normalization and validation (which
    the fake turns off for speed) on every block of the table, valid or not."""
    flags = h2.utilities.HeaderValidationFlags(
        is_client=False, is_trailer=trailers, is_response_header=False, is_push_promise=False
    )
    try:
        list(
            h2.utilities.validate_headers(
                h2.utilities.normalize_inbound_headers(headers, flags), flags
            )
        )
    except h2.exceptions.ProtocolError:
        h2_refuses = True
    else:
        h2_refuses = False
    assert (malformed(headers, trailers=trailers) is not None) == h2_refuses


def test_a_malformed_request_ends_the_connection_with_protocol_error(pki: TestPKI) -> None:
    """An upper-case header name never reaches the handler: GOAWAY PROTOCOL_ERROR, as h2 did."""
    seen: list[FakeRequest] = []

    def handler(request: FakeRequest) -> FakeResponse:
        seen.append(request)
        return FakeResponse(200)

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        reader, writer = await asyncio.open_connection(
            server.host, server.port, ssl=client_ssl_context(pki), server_hostname="localhost"
        )
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
            )
        )
        connection.initiate_connection()
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(
            stream_id,
            [*_REQUEST, (b"Apns-Topic", b"com.example")],
            end_stream=True,
        )
        writer.write(connection.data_to_send())
        events: list[h2.events.Event] = []
        while not any(isinstance(event, h2.events.ConnectionTerminated) for event in events):
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, "closed without GOAWAY"
            events += connection.receive_data(data)
        writer.close()
        goaway = next(e for e in events if isinstance(e, h2.events.ConnectionTerminated))
        assert goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert not any(isinstance(event, h2.events.ResponseReceived) for event in events)

    _run(pki, scenario, handler=handler)
    assert seen == []


@pytest.mark.parametrize("latency", [0.0, 0.05])
def test_a_plain_function_handler_is_answered_with_and_without_latency(
    pki: TestPKI, latency: float
) -> None:
    """A handler that is a plain function (answered in the step that read the request at 0 ms,
    by a task after the delay otherwise) gives the same answer, over many concurrent streams."""

    def handler(request: FakeRequest) -> FakeResponse:
        return FakeResponse(201, {"x-path": request.path}, request.body)

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        responses = await asyncio.gather(
            *(client.post(f"{server.url}/n/{i}", content=b"x" * i) for i in range(50))
        )
        for i, response in enumerate(responses):
            assert response.status_code == 201
            assert response.headers["x-path"] == f"/n/{i}"
            assert response.content == b"x" * i

    server = _run(pki, scenario, handler=handler, faults=FaultPlan(latency=latency))
    assert server.stats.requests == 50
    assert server.stats.streams_in_flight == 0


def test_a_plain_function_handler_with_a_body_above_the_window(pki: TestPKI) -> None:
    """An answer larger than the window still arrives whole: it waits for WINDOW_UPDATEs in a
    task instead of going out at once."""
    payload = bytes(range(256)) * 2000

    def handler(request: FakeRequest) -> FakeResponse:
        return FakeResponse(200, {}, request.body)

    async def scenario(server: H2FakeServer, client: httpx.AsyncClient) -> None:
        response = await client.post(f"{server.url}/big", content=payload)
        assert response.content == payload

    _run(pki, scenario, handler=handler)
