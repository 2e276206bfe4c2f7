"""The network edge of the user-supplied providers: SSRF guard, TLS trust, per-origin clients.

Web Push endpoints and webhook URLs come from users, so a sender must never let one of them
point chinwag at its own network (loopback, private ranges, cloud metadata at link-local
addresses). Operators who run providers on private addresses on purpose (the local fakes, an
intranet webhook) name them in ``CHINWAG_ALLOW_PRIVATE_ENDPOINTS``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from chinwag.push.base import Network, provider_ssl_context
from chinwag.push.errors import NETWORK_ERRORS, NoHttp2, transport_error
from chinwag.push.h2pool import H2Pool
from chinwag.push.model import (
    Allowance,
    IPAddress,
    ParsedEndpoint,
    address_refusal,
    is_public,
    parse_endpoint,
    precheck_endpoint,
)
from chinwag.push.outcome import UNREACHABLE

__all__ = [
    "UNREACHABLE",
    "Allowance",
    "EndpointClient",
    "EndpointResponse",
    "ResolvedEndpoint",
    "check_endpoint",
    "check_endpoint_async",
    "is_public",
    "resolve_endpoint",
]


def _addresses(infos: Iterable[tuple[object, ...]]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for info in infos:
        sockaddr = info[4]
        assert isinstance(sockaddr, tuple)
        # Strip an IPv6 zone ("fe80::1%eth0") which ip_address does not accept.
        found.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    return found


@dataclass(frozen=True, slots=True)
class ResolvedEndpoint:
    """An endpoint whose name was resolved once and whose address passed the check: connect to
    ``address`` (TLS SNI and Host stay the name), so a second lookup cannot be answered with a
    private address (DNS rebinding)."""

    url: str
    address: str


async def resolve_endpoint(url: str, allowance: Allowance) -> ResolvedEndpoint | str:
    """Resolve once and check: the address to connect to, or why not (for the logs)."""
    parsed = parse_endpoint(url)
    if isinstance(parsed, str):
        return parsed
    verdict = precheck_endpoint(url, allowance, resolve=True)
    if isinstance(verdict, str):
        return verdict
    if parsed.literal is not None:
        return ResolvedEndpoint(url, str(parsed.literal))
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"endpoint host {parsed.host!r} does not resolve"
    addresses = _addresses(infos)
    if not addresses:
        return f"endpoint host {parsed.host!r} does not resolve"
    if verdict is not None:  # not an allowed host: every address must pass
        refusal = address_refusal(parsed.host, addresses, allowance)
        if refusal is not None:
            return refusal
    return ResolvedEndpoint(url, str(addresses[0]))


def check_endpoint(url: str, allow: Sequence[str], *, resolve: bool = True) -> str | None:
    """Why ``url`` may not be contacted, or None when it may.

    With ``resolve`` every address the host resolves to must be public (or allowed); without it
    (at registration time) only what the URL itself shows is checked.
    """
    allowance = Allowance.parse(allow)
    verdict = precheck_endpoint(url, allowance, resolve)
    if not isinstance(verdict, ParsedEndpoint):
        return verdict
    try:
        infos = socket.getaddrinfo(verdict.host, verdict.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"endpoint host {verdict.host!r} does not resolve"
    return address_refusal(verdict.host, _addresses(infos), allowance)


async def check_endpoint_async(url: str, allowance: Allowance) -> str | None:
    """``check_endpoint`` without blocking the event loop; senders call it before each request."""
    verdict = precheck_endpoint(url, allowance, resolve=True)
    if not isinstance(verdict, ParsedEndpoint):
        return verdict
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(verdict.host, verdict.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"endpoint host {verdict.host!r} does not resolve"
    return address_refusal(verdict.host, _addresses(infos), allowance)


@dataclass(frozen=True, slots=True)
class EndpointResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names


class EndpointClient:
    """POSTs to user-supplied https endpoints, many origins, connections kept per origin.

    HTTP/2 through the project's h2 pool (httpx's HTTP/2 manages only a few hundred requests a
    second); origins that do not offer HTTP/2 (plenty of webhook receivers) fall back to HTTP/1.1
    through httpx. Redirects are never followed: the SSRF guard checked only the first URL.
    Network failures raise ``chinwag.push.errors.TransportError``.
    """

    def __init__(self, network: Network, *, max_origins: int = 256) -> None:
        self.timeout = network.timeout
        self._max_connections = network.max_connections
        self._max_origins = max_origins
        self._h2_context = provider_ssl_context(network.ca_file)
        self._h2_context.set_alpn_protocols(["h2"])
        # One pool per (origin, checked address): a name that now resolves elsewhere gets a new
        # pool, checked again, and never reuses a connection to the old address.
        self._pools: OrderedDict[tuple[str, str], H2Pool] = OrderedDict()
        self._http1_origins: set[str] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._http1 = httpx.AsyncClient(
            http2=False,
            verify=provider_ssl_context(network.ca_file),
            timeout=httpx.Timeout(network.timeout),
            follow_redirects=False,
        )

    async def post(
        self, endpoint: ResolvedEndpoint, headers: Sequence[tuple[str, str]], body: bytes
    ) -> EndpointResponse:
        """POST to the endpoint's checked address; the name is kept for TLS and Host."""
        url = endpoint.url
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._http1_origins:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            try:
                answer = await self._pool(origin, endpoint.address).request(
                    "POST", path, headers, body, time_limit=self.timeout
                )
                return EndpointResponse(answer.status, answer.headers)
            except NoHttp2:
                # The origin speaks HTTP/1.1 only: remember it, and send this one that way.
                self._http1_origins.add(origin)
                self._forget((origin, endpoint.address))
            except NETWORK_ERRORS as exc:
                raise transport_error(exc) from None
        host = parts.hostname or ""
        literal = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        pinned = parts._replace(netloc=netloc).geturl()
        try:
            response = await self._http1.post(
                pinned,
                content=body,
                headers=[*headers, ("host", parts.netloc)],
                extensions={"sni_hostname": host},
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None
        return EndpointResponse(response.status_code, dict(response.headers))

    def _pool(self, origin: str, address: str) -> H2Pool:
        key = (origin, address)
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        pool = self._pools[key] = H2Pool(
            origin,
            self._h2_context,
            max_connections=self._max_connections,
            connect_timeout=self.timeout,
            connect_address=address,
        )
        while len(self._pools) > self._max_origins:
            self._forget(next(iter(self._pools)))
        return pool

    def _forget(self, key: tuple[str, str]) -> None:
        pool = self._pools.pop(key, None)
        if pool is not None:
            task = asyncio.get_running_loop().create_task(pool.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await self._http1.aclose()
