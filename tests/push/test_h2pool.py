"""The HTTP/2 client's request bodies against the shared fake server, over TLS."""

from __future__ import annotations

import asyncio

import pytest

from chinwag.fakes.h2server import FakeRequest, FakeResponse, H2FakeServer
from chinwag.fakes.tls import TestPKI, client_ssl_context, make_pki, server_ssl_context
from chinwag.push.h2pool import H2Pool


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _echo(request: FakeRequest) -> FakeResponse:
    return FakeResponse(200, {"x-length": str(len(request.body))}, request.body)


def test_small_and_large_bodies_arrive_whole_side_by_side(pki: TestPKI) -> None:
    """Bodies that fit the flow-control window leave at once in one DATA frame; larger ones
    (above the 64 KiB initial window) wait for WINDOW_UPDATEs; mixed on one connection, every
    one arrives whole and its answer comes back to its own request."""
    bodies = [bytes([i % 251]) * size for i, size in enumerate([10, 200_000, 300, 70_000, 1] * 4)]

    async def main() -> None:
        async with H2FakeServer(_echo, server_ssl_context(pki)) as server:
            pool = H2Pool(server.url, client_ssl_context(pki), max_connections=1)
            try:
                answers = await asyncio.gather(
                    *(
                        pool.request("POST", f"/{i}", [], body, time_limit=10)
                        for i, body in enumerate(bodies)
                    )
                )
            finally:
                await pool.aclose()
        for body, answer in zip(bodies, answers, strict=True):
            assert answer.status == 200
            assert answer.headers["x-length"] == str(len(body))
            assert answer.body == body

    asyncio.run(main())
