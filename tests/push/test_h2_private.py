"""h2's private ``_open_streams``, which the HTTP/2 client and the fakes override for speed, and
hpack's per-field ``Encoder.add``, which the client's encoder overrides to remember indexes.

pyproject.toml pins h2 to the range these tests passed on; a release that renames the method,
changes its signature or its meaning fails here, before it silently breaks every APNs send.
"""

from __future__ import annotations

import inspect

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

from chinwag.fakes import h2server
from chinwag.push import h2pool

OVERRIDES = [h2pool._LeanH2Connection, h2server._LeanH2Connection]


def test_the_private_method_keeps_its_name_and_signature() -> None:
    """H2Connection._open_streams(self, remainder: int) -> int exists, and h2 calls it to count
    the streams each side opened (so the override is what guards the stream limit)."""
    method = h2.connection.H2Connection.__dict__.get("_open_streams")
    assert method is not None, "h2 no longer has H2Connection._open_streams"
    signature = inspect.signature(method)
    assert list(signature.parameters) == ["self", "remainder"]
    assert signature.parameters["remainder"].annotation in (int, "int")
    assert signature.return_annotation in (int, "int")
    source = inspect.getsource(h2.connection.H2Connection)
    assert "self._open_streams(" in source


def _connected_pair() -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


HEADERS = [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/")]


def test_h2_counts_open_streams_the_way_the_override_assumes() -> None:
    """h2's own walk counts a side's open streams by parity (remainder 1: the client's) and
    forgets closed ones; the overrides answer the same count for the client's streams."""
    client, server = _connected_pair()
    opened = [client.get_next_available_stream_id() for _ in range(1)]
    for _ in range(6):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, HEADERS, end_stream=True)
        opened.append(stream_id)
    server.receive_data(client.data_to_send())
    assert client._open_streams(1) == 6  # half-closed (local) still counts as open
    assert client._open_streams(0) == 0
    assert server._open_streams(1) == 6
    # The server answers three: those streams close and the walk forgets them.
    for stream_id in (1, 3, 5):
        server.send_headers(stream_id, [(":status", "200")], end_stream=True)
    events = client.receive_data(server.data_to_send())
    assert sum(isinstance(event, h2.events.StreamEnded) for event in events) == 3
    assert client._open_streams(1) == 3
    assert not {1, 3, 5} & set(client.streams)
    assert client.open_outbound_streams == 3


@pytest.mark.parametrize("override", OVERRIDES)
def test_each_override_agrees_with_h2s_walk(
    override: type[h2.connection.H2Connection],
) -> None:
    """With our own count right, the override returns it, and every 128th call h2's walk; for
    the other parity it always defers to h2."""
    counted = {"open": 0}
    config = h2.config.H2Configuration(client_side=True)
    connection = override(config, lambda: counted["open"])  # type: ignore[call-arg]
    connection.initiate_connection()
    for _ in range(5):
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(stream_id, HEADERS, end_stream=True)
        counted["open"] += 1
    walked = h2.connection.H2Connection._open_streams(connection, 1)
    assert walked == counted["open"] == 5
    assert all(connection._open_streams(1) == walked for _ in range(300))
    assert connection._open_streams(0) == h2.connection.H2Connection._open_streams(connection, 0)


def test_the_encoder_that_remembers_indexes_encodes_as_hpack_does() -> None:
    """The client's encoder, which remembers the fields it sent as table indexes, writes the
    same bytes as a plain hpack encoder through insertions, evictions, an oversized field that
    empties the table, never-indexed fields and table resizes; a decoder reads them back."""
    ours, plain, decoder = h2pool._PlainLiteralEncoder(), Encoder(), Decoder()
    constant = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"api.push.apple.com"),
        (b"authorization", b"bearer " + b"j" * 300),
        (b"apns-topic", b"com.example.chat"),
        (b"apns-push-type", b"alert"),
    ]
    for step in range(120):
        block = [
            *constant,
            NeverIndexedHeaderTuple(b":path", f"/3/device/{step:064x}".encode()),
            (b"apns-expiration", str(1000 + step // 7).encode()),  # a new value now and then
            (b"apns-collapse-id", f"m{step % 5}".encode()),
            NeverIndexedHeaderTuple(b"apns-id", f"{step:032x}".encode()),
        ]
        if step % 17 == 3:
            block.append((b"x-big", b"b" * 5000))  # larger than the table: empties it
        if step % 29 == 11:
            for encoder in (ours, plain):
                encoder.header_table_size = 256 if step % 2 else 4096
        encoded = ours.encode(block)
        assert encoded == plain.encode(block, huffman=False), f"step {step}"
        assert [tuple(field) for field in decoder.decode(encoded, raw=True)] == [
            tuple(field) for field in block
        ]
    assert ours._indexed, "some fields were sent as remembered indexes"
